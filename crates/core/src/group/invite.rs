//! Invite links for public groups (docs/PUBLIC_GROUPS.md, "Invite links"):
//! `sotto+invite://SERVER/LINK_ID#SECRET`. An admin records the link in the
//! group's admin policy, so every member holds it; committers publish the
//! group's GroupInfo sealed under a key derived from the secret, keyed by
//! the link id; a joiner opens it, checks every member against the key log
//! and joins by an MLS external commit, which every member checks
//! ([`super::policy::check_external_commit`]).
//!
//! The server sees the link id and the sealed bytes, never the secret, and
//! so never the roster the GroupInfo holds.

use super::{
    CIPHERSUITE, GroupError, KeyDirectory, admins, check_members, join_config, members, mls,
    pad_to_bucket, send_token, serialize, token_hash,
};
use crate::identity::{Account, DeviceId, DeviceKey, MemberId};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use hkdf::Hkdf;
use openmls::prelude::tls_codec::DeserializeBytes as _;
use openmls::prelude::*;
use openmls_traits::OpenMlsProvider;
use sha2::Sha256;
use std::fmt;
use zeroize::Zeroizing;

/// Bytes of a link id (what the server keys the sealed GroupInfo by).
pub const INVITE_LINK_ID_LEN: usize = 16;
/// Bytes of a link secret (the bearer credential).
pub const INVITE_SECRET_LEN: usize = 32;
/// Bytes of the random nonce in front of a sealed GroupInfo.
pub const SEAL_NONCE_LEN: usize = 12;
/// The scheme of an invite link.
pub const INVITE_SCHEME: &str = "sotto+invite://";
/// HKDF info of the sealing key.
const SEAL_INFO: &[u8] = b"sotto invite group info";
/// Longest group name a sealed GroupInfo carries (as group names).
const MAX_NAME_BYTES: usize = 64;

/// An invite link: its id and its secret. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct InviteLink {
    id: [u8; INVITE_LINK_ID_LEN],
    secret: Zeroizing<[u8; INVITE_SECRET_LEN]>,
}

impl fmt::Debug for InviteLink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "InviteLink({}, secret: <redacted>)",
            hex::encode(self.id)
        )
    }
}

impl InviteLink {
    /// A link from fresh random bytes (passed in, so tests are
    /// deterministic).
    pub fn from_random(id: [u8; INVITE_LINK_ID_LEN], secret: [u8; INVITE_SECRET_LEN]) -> Self {
        Self {
            id,
            secret: Zeroizing::new(secret),
        }
    }

    /// The id the server knows the link by.
    pub fn id(&self) -> [u8; INVITE_LINK_ID_LEN] {
        self.id
    }

    /// `sotto+invite://SERVER/LINK_ID#SECRET`; `server` is the host (and
    /// port) of the server's URL.
    pub fn url(&self, server: &str) -> String {
        format!(
            "{INVITE_SCHEME}{server}/{}#{}",
            hex::encode(self.id),
            hex::encode(*self.secret)
        )
    }

    /// Parses a link: the server (host and port) and the link.
    pub fn parse_url(url: &str) -> Result<(String, Self), GroupError> {
        let bad = || {
            GroupError::Misuse(
                "this is not an invite link; it looks like sotto+invite://SERVER/LINK_ID#SECRET"
                    .into(),
            )
        };
        let rest = url.trim().strip_prefix(INVITE_SCHEME).ok_or_else(bad)?;
        let (rest, secret) = rest.split_once('#').ok_or_else(bad)?;
        let (server, id) = rest.rsplit_once('/').ok_or_else(bad)?;
        if server.is_empty() || server.contains('/') {
            return Err(bad());
        }
        let id: [u8; INVITE_LINK_ID_LEN] = hex::decode(id)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        let secret = Zeroizing::new(hex::decode(secret).map_err(|_| bad())?);
        let secret: [u8; INVITE_SECRET_LEN] = secret.as_slice().try_into().map_err(|_| bad())?;
        Ok((server.to_owned(), Self::from_random(id, secret)))
    }

    /// `id || secret`, as the admin policy extension carries it.
    pub(super) fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.id);
        out.extend_from_slice(self.secret.as_ref());
    }

    /// Reads what [`Self::encode_into`] wrote from the front of `bytes`;
    /// returns the link and the rest.
    pub(super) fn decode_from(bytes: &[u8]) -> Option<(Self, &[u8])> {
        let (id, rest) = bytes.split_at_checked(INVITE_LINK_ID_LEN)?;
        let (secret, rest) = rest.split_at_checked(INVITE_SECRET_LEN)?;
        Some((
            Self::from_random(id.try_into().ok()?, secret.try_into().ok()?),
            rest,
        ))
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        let mut key = Zeroizing::new([0u8; 32]);
        // 32 bytes is always a valid HKDF-SHA256 output length.
        let _ = Hkdf::<Sha256>::new(None, self.secret.as_ref()).expand(SEAL_INFO, key.as_mut());
        ChaCha20Poly1305::new(Key::from_slice(key.as_ref()))
    }

    /// What the seal binds besides the content: the link id and the epoch,
    /// so the server can neither move a GroupInfo to another link nor
    /// relabel its epoch.
    fn aad(&self, epoch: u64) -> Vec<u8> {
        [SEAL_INFO, &self.id, &epoch.to_be_bytes()].concat()
    }

    /// Seals `plaintext` of `epoch` with the random `nonce`.
    pub fn seal(&self, epoch: u64, plaintext: &[u8], nonce: [u8; SEAL_NONCE_LEN]) -> Vec<u8> {
        let aad = self.aad(epoch);
        let sealed = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            // ChaCha20-Poly1305 fails only beyond 256 GiB.
            .unwrap_or_default();
        [nonce.as_slice(), &sealed].concat()
    }

    /// Opens what [`Self::seal`] sealed for `epoch`.
    pub fn open(&self, epoch: u64, sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, GroupError> {
        let refused = || {
            GroupError::PeerMisbehaved(
                "the invite link's group info does not open: the link's secret is wrong, or the \
                 server altered what it stored"
                    .into(),
            )
        };
        let (nonce, ciphertext) = sealed
            .split_at_checked(SEAL_NONCE_LEN)
            .ok_or_else(refused)?;
        let aad = self.aad(epoch);
        self.cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| refused())
    }
}

/// The group's GroupInfo, sealed for its invite link, to publish
/// (`PublishGroupInfo`).
#[derive(Debug, Clone)]
pub struct SealedGroupInfo {
    pub link_id: [u8; INVITE_LINK_ID_LEN],
    pub epoch: u64,
    pub sealed: Vec<u8>,
}

/// The group's GroupInfo of its current epoch (with the ratchet tree and
/// the `external_pub` key a joiner needs) and the group's `name`, sealed
/// under its invite link. `Ok(None)`: the group has no open link.
pub fn sealed_group_info(
    provider: &impl OpenMlsProvider,
    group: &MlsGroup,
    signer: &DeviceKey,
    name: &str,
    nonce: [u8; SEAL_NONCE_LEN],
) -> Result<Option<SealedGroupInfo>, GroupError> {
    let Some(link) = admins::admin_policy(group)?.and_then(|p| p.invite) else {
        return Ok(None);
    };
    let info = group
        .export_group_info(provider.crypto(), signer, true)
        .map_err(|e| mls("export group info")(&e))?;
    let mut end = name.len().min(MAX_NAME_BYTES);
    while !name.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    let name = name.get(..end).unwrap_or_default().as_bytes();
    let mut plaintext = Zeroizing::new(Vec::new());
    plaintext.push(u8::try_from(name.len()).unwrap_or(0));
    plaintext.extend_from_slice(name);
    plaintext.extend_from_slice(&serialize(&info)?);
    let epoch = group.epoch().as_u64();
    Ok(Some(SealedGroupInfo {
        link_id: link.id(),
        epoch,
        sealed: link.seal(epoch, &plaintext, nonce),
    }))
}

/// This device's external commit into a group, built from a sealed
/// GroupInfo; the group is stored at the new epoch. If the server refuses
/// the commit, delete the group ([`abandon_join`]).
pub struct ExternalJoin {
    pub group_id: Vec<u8>,
    /// The group's name as the publishing member knows it.
    pub name: String,
    /// The epoch the commit was made in.
    pub epoch: u64,
    /// The commit (an MLS `PublicMessage`, padded).
    pub commit: Vec<u8>,
    /// Every member but this device.
    pub recipients: Vec<DeviceId>,
    /// SHA-256 of the new epoch's send capability.
    pub next_token_hash: Vec<u8>,
    pub members: Vec<MemberId>,
}

impl fmt::Debug for ExternalJoin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExternalJoin")
            .field("group_id", &hex::encode(&self.group_id))
            .field("name", &self.name)
            .field("epoch", &self.epoch)
            .field("commit_len", &self.commit.len())
            .field("recipients", &self.recipients)
            .finish_non_exhaustive()
    }
}

/// Opens the sealed GroupInfo of `epoch` with `link`, checks every member
/// against `directory` (as for a Welcome: nobody reads a group whose
/// members the key log does not list), and builds this device's external
/// commit. The group is stored (at the new epoch) by `provider`.
pub fn join_by_link(
    provider: &impl OpenMlsProvider,
    account: &Account,
    link: &InviteLink,
    epoch: u64,
    sealed: &[u8],
    directory: &impl KeyDirectory,
) -> Result<ExternalJoin, GroupError> {
    let plaintext = link.open(epoch, sealed)?;
    let peer = |what: &str| GroupError::PeerMisbehaved(format!("invite link group info: {what}"));
    let (&name_len, rest) = plaintext.split_first().ok_or_else(|| peer("empty"))?;
    let (name, info) = rest
        .split_at_checked(usize::from(name_len))
        .ok_or_else(|| peer("truncated"))?;
    let name = std::str::from_utf8(name)
        .map_err(|_| peer("the group name is not UTF-8"))?
        .to_owned();
    let message =
        MlsMessageIn::tls_deserialize_exact_bytes(info).map_err(|e| peer(&e.to_string()))?;
    let MlsMessageBodyIn::GroupInfo(info) = message.extract() else {
        return Err(peer("not a GroupInfo"));
    };
    if info.epoch().as_u64() != epoch {
        return Err(peer("published for another epoch"));
    }
    let (group, join) = external_commit(provider, account, info, name)?;
    // The GroupInfo must be the one this link was made for: its group's
    // policy names exactly this open link.
    if admins::admin_policy(&group)?
        .and_then(|p| p.invite)
        .as_ref()
        != Some(link)
    {
        return Err(peer("its group has no such open invite link"));
    }
    let own = group.own_leaf_index();
    let roster: Vec<Member> = group.members().filter(|m| m.index != own).collect();
    check_members(
        directory,
        roster
            .iter()
            .map(|m| (&m.credential, m.signature_key.as_slice())),
    )?;
    Ok(join)
}

/// `account`'s external commit into the group of `info`, the group stored
/// at the new epoch, checking neither the key log nor the group's policy:
/// [`join_by_link`] checks both around it. (Public for tests that play a
/// modified client.)
pub fn external_commit(
    provider: &impl OpenMlsProvider,
    account: &Account,
    info: openmls::messages::group_info::VerifiableGroupInfo,
    name: String,
) -> Result<(MlsGroup, ExternalJoin), GroupError> {
    let peer = |what: &str| GroupError::PeerMisbehaved(format!("invite link group info: {what}"));
    if info.ciphersuite() != CIPHERSUITE {
        return Err(peer("an unsupported ciphersuite"));
    }
    let epoch = info.epoch().as_u64();
    let params = LeafNodeParameters::builder()
        .with_capabilities(admins::capabilities(&[]))
        .build();
    let (group, bundle) = MlsGroup::external_commit_builder()
        .with_config(join_config())
        .build_group(provider, info, account.credential_with_key())
        .map_err(|e| peer(&format!("cannot join from it: {e:?}")))?
        .leaf_node_parameters(params)
        .load_psks(provider.storage())
        .map_err(|e| mls("external commit psks")(&e))?
        .build(provider.rand(), provider.crypto(), &account.device, |_| {
            true
        })
        .map_err(|e| mls("external commit")(&e))?
        .finalize(provider)
        .map_err(|e| mls("external commit finalize")(&e))?;
    let own_device = account.device_id;
    let recipients = members(&group)
        .into_iter()
        .map(|m| m.device_id)
        .filter(|d| *d != own_device)
        .collect();
    let next = send_token(provider, &group)?;
    let join = ExternalJoin {
        group_id: group.group_id().to_vec(),
        name,
        epoch,
        commit: pad_to_bucket(serialize(bundle.commit())?),
        recipients,
        next_token_hash: token_hash(&next),
        members: members(&group),
    };
    Ok((group, join))
}

/// Deletes the group an [`ExternalJoin`] stored, after the server refused
/// its commit.
pub fn abandon_join(provider: &impl OpenMlsProvider, group_id: &[u8]) -> Result<(), GroupError> {
    let mut group = super::load(provider, group_id)?;
    group
        .delete(provider.storage())
        .map_err(|e| mls("delete group")(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_round_trip_and_never_print_their_secret() {
        let link = InviteLink::from_random([7; 16], [9; 32]);
        let url = link.url("chat.example:8420");
        assert_eq!(
            url,
            format!(
                "sotto+invite://chat.example:8420/{}#{}",
                "07".repeat(16),
                "09".repeat(32)
            )
        );
        let (server, parsed) = InviteLink::parse_url(&url).unwrap();
        assert_eq!(server, "chat.example:8420");
        assert_eq!(parsed, link);
        assert!(!format!("{link:?}").contains(&"09".repeat(32)));
        for bad in [
            "",
            "sotto+invite://",
            "sotto+invite://host/0707#09",
            &format!("sotto+invite:///{}#{}", "07".repeat(16), "09".repeat(32)),
            &format!("https://host/{}#{}", "07".repeat(16), "09".repeat(32)),
            &format!("sotto+invite://host/{}", "07".repeat(16)),
        ] {
            assert!(InviteLink::parse_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_seal_opens_only_with_its_secret_link_and_epoch() {
        let link = InviteLink::from_random([1; 16], [2; 32]);
        let sealed = link.seal(5, b"group info", [3; 12]);
        assert_eq!(link.open(5, &sealed).unwrap().as_slice(), b"group info");
        let wrong_secret = InviteLink::from_random([1; 16], [4; 32]);
        assert!(wrong_secret.open(5, &sealed).is_err());
        let other_link = InviteLink::from_random([8; 16], [2; 32]);
        assert!(other_link.open(5, &sealed).is_err());
        assert!(link.open(6, &sealed).is_err(), "the epoch is bound");
        let mut tampered = sealed.clone();
        if let Some(b) = tampered.last_mut() {
            *b ^= 1;
        }
        assert!(link.open(5, &tampered).is_err());
        assert!(link.open(5, &sealed[..8]).is_err());
    }
}
