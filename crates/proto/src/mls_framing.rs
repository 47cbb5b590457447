//! The clear-text framing of an MLS message (RFC 9420 §6): what the
//! delivery service can see without any key — the wire format, and for
//! handshake and application messages the group id, epoch and content type.
//!
//! The server reads it to refuse a message whose MLS group or epoch is not
//! the one the request names (a former member or an outsider replaying a
//! capability, or a forged future epoch). It proves nothing about the sender:
//! clients authenticate everything with MLS. Parsing stops after the fields
//! it needs, except for a `PrivateMessage`, which is read to its end.

/// `MLSMessage.wire_format` values (RFC 9420 §6).
const PUBLIC_MESSAGE: u16 = 1;
const PRIVATE_MESSAGE: u16 = 2;
const WELCOME: u16 = 3;
const GROUP_INFO: u16 = 4;
const KEY_PACKAGE: u16 = 5;
/// `ProtocolVersion.mls10`.
const MLS10: u16 = 1;

/// What a handshake or application message carries (RFC 9420 §6 `ContentType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentType {
    Application,
    Proposal,
    Commit,
}

/// The clear-text framing of one MLS message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Framing {
    /// A `PublicMessage` or `PrivateMessage`: bound to a group and an epoch.
    Group {
        group_id: Vec<u8>,
        epoch: u64,
        content_type: ContentType,
        /// `false` for a `PublicMessage`, whose content is signed but clear.
        encrypted: bool,
    },
    Welcome,
    GroupInfo,
    KeyPackage,
}

/// The bytes are not an MLS 1.0 message the framing can be read from.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an MLS message: {0}")]
pub struct FramingError(&'static str);

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], FramingError> {
        if self.0.len() < n {
            return Err(FramingError("truncated"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, FramingError> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    fn u16(&mut self) -> Result<u16, FramingError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes(
            b.try_into().map_err(|_| FramingError("truncated"))?,
        ))
    }

    fn u64(&mut self) -> Result<u64, FramingError> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes(
            b.try_into().map_err(|_| FramingError("truncated"))?,
        ))
    }

    /// A variable-length vector (RFC 9420 §2.1.2): a 1-, 2- or 4-byte
    /// length whose top two bits give the length of the length.
    fn vector(&mut self) -> Result<&'a [u8], FramingError> {
        let first = self.u8()?;
        let len = match first >> 6 {
            0 => usize::from(first & 0x3f),
            1 => (usize::from(first & 0x3f) << 8) | usize::from(self.u8()?),
            2 => {
                let rest = self.take(3)?;
                rest.iter()
                    .fold(usize::from(first & 0x3f), |n, b| (n << 8) | usize::from(*b))
            }
            _ => return Err(FramingError("invalid vector length")),
        };
        self.take(len)
    }

    fn content_type(&mut self) -> Result<ContentType, FramingError> {
        match self.u8()? {
            1 => Ok(ContentType::Application),
            2 => Ok(ContentType::Proposal),
            3 => Ok(ContentType::Commit),
            _ => Err(FramingError("unknown content type")),
        }
    }
}

impl Framing {
    /// Reads the framing of a serialized `MLSMessage`.
    pub fn parse(bytes: &[u8]) -> Result<Self, FramingError> {
        let mut r = Reader(bytes);
        if r.u16()? != MLS10 {
            return Err(FramingError("not MLS 1.0"));
        }
        match r.u16()? {
            PUBLIC_MESSAGE => {
                let group_id = r.vector()?.to_vec();
                let epoch = r.u64()?;
                // Sender: member(1) and external(2) carry a u32 index.
                match r.u8()? {
                    1 | 2 => {
                        r.take(4)?;
                    }
                    3 | 4 => {}
                    _ => return Err(FramingError("unknown sender type")),
                }
                r.vector()?; // authenticated_data
                let content_type = r.content_type()?;
                Ok(Self::Group {
                    group_id,
                    epoch,
                    content_type,
                    encrypted: false,
                })
            }
            PRIVATE_MESSAGE => {
                let group_id = r.vector()?.to_vec();
                let epoch = r.u64()?;
                let content_type = r.content_type()?;
                r.vector()?; // authenticated_data
                r.vector()?; // encrypted_sender_data
                r.vector()?; // ciphertext
                // Commits are padded with zeros to a size bucket (see
                // `sotto_core::group`); anything else after the message is
                // not MLS.
                if r.0.iter().any(|&b| b != 0) {
                    return Err(FramingError("trailing bytes"));
                }
                Ok(Self::Group {
                    group_id,
                    epoch,
                    content_type,
                    encrypted: true,
                })
            }
            WELCOME => Ok(Self::Welcome),
            GROUP_INFO => Ok(Self::GroupInfo),
            KEY_PACKAGE => Ok(Self::KeyPackage),
            _ => Err(FramingError("unknown wire format")),
        }
    }
}

/// The clear `authenticated_data` of an application `PrivateMessage`: where
/// a sender puts its franking tag (`sotto_core::franking`), which the
/// server franks. `None` for anything else (handshake messages, public
/// messages, malformed bytes). Only the MLS AEAD and the sender's signature
/// vouch for it, which the server cannot check: a wrong tag only makes the
/// message unreportable for its receivers.
pub fn application_aad(bytes: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(bytes);
    if r.u16().ok()? != MLS10 || r.u16().ok()? != PRIVATE_MESSAGE {
        return None;
    }
    r.vector().ok()?; // group_id
    r.u64().ok()?; // epoch
    if r.content_type().ok()? != ContentType::Application {
        return None;
    }
    r.vector().ok()
}

/// Whether the bytes are a `PublicMessage` commit whose sender is a new
/// member (`new_member_commit`, RFC 9420 §6): an external commit, which a
/// joiner sends by invite link. The server reads it to route such a commit
/// to the link's checks and every other commit to the capability's.
pub fn is_new_member_commit(bytes: &[u8]) -> bool {
    fn read(r: &mut Reader<'_>) -> Result<bool, FramingError> {
        if r.u16()? != MLS10 || r.u16()? != PUBLIC_MESSAGE {
            return Ok(false);
        }
        r.vector()?; // group_id
        r.u64()?; // epoch
        if r.u8()? != 4 {
            return Ok(false);
        }
        r.vector()?; // authenticated_data
        Ok(r.content_type()? == ContentType::Commit)
    }
    read(&mut Reader(bytes)).unwrap_or(false)
}

/// Appends `bytes` as a variable-length vector (RFC 9420 §2.1.2).
fn push_vector(out: &mut Vec<u8>, bytes: &[u8]) {
    let len = bytes.len();
    if len < 1 << 6 {
        out.push(len as u8);
    } else if len < 1 << 14 {
        out.extend_from_slice(&((len as u16) | 0x4000).to_be_bytes());
    } else {
        out.extend_from_slice(&((len as u32 & 0x3fff_ffff) | 0x8000_0000).to_be_bytes());
    }
    out.extend_from_slice(bytes);
}

/// A well-framed `PrivateMessage` of `group_id` at `epoch` whose ciphertext
/// is `ciphertext`: exactly what the server sees of a real one. For load
/// generators and protocol tests that play clients without running MLS.
pub fn opaque_private_message(
    group_id: &[u8],
    epoch: u64,
    content_type: ContentType,
    ciphertext: &[u8],
) -> Vec<u8> {
    opaque_private_message_with_aad(group_id, epoch, content_type, &[], ciphertext)
}

/// [`opaque_private_message`] with clear authenticated data (a franking
/// tag, say).
pub fn opaque_private_message_with_aad(
    group_id: &[u8],
    epoch: u64,
    content_type: ContentType,
    aad: &[u8],
    ciphertext: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(ciphertext.len() + group_id.len() + 24);
    out.extend_from_slice(&MLS10.to_be_bytes());
    out.extend_from_slice(&PRIVATE_MESSAGE.to_be_bytes());
    push_vector(&mut out, group_id);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.push(match content_type {
        ContentType::Application => 1,
        ContentType::Proposal => 2,
        ContentType::Commit => 3,
    });
    push_vector(&mut out, aad); // authenticated_data
    push_vector(&mut out, &[0; 4]); // encrypted_sender_data
    push_vector(&mut out, ciphertext);
    out
}

/// A Welcome header followed by `body`: what the server sees of a Welcome
/// (see [`opaque_private_message`]).
pub fn opaque_welcome(body: &[u8]) -> Vec<u8> {
    [&MLS10.to_be_bytes()[..], &WELCOME.to_be_bytes(), body].concat()
}

/// The ciphertext field of a `PrivateMessage`, or the body after a Welcome's
/// header: the inverse of [`opaque_private_message`] and [`opaque_welcome`].
pub fn private_ciphertext(bytes: &[u8]) -> Option<&[u8]> {
    let mut r = Reader(bytes);
    if r.u16().ok()? != MLS10 {
        return None;
    }
    match r.u16().ok()? {
        PRIVATE_MESSAGE => {}
        WELCOME => return Some(r.0),
        _ => return None,
    }
    r.vector().ok()?;
    r.u64().ok()?;
    r.u8().ok()?;
    r.vector().ok()?;
    r.vector().ok()?;
    let ciphertext = r.vector().ok()?;
    r.0.is_empty().then_some(ciphertext)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn private(group_id: &[u8], epoch: u64, content_type: u8) -> Vec<u8> {
        let mut out = vec![0, 1, 0, 2, u8::try_from(group_id.len()).unwrap()];
        out.extend_from_slice(group_id);
        out.extend_from_slice(&epoch.to_be_bytes());
        out.push(content_type);
        out.extend_from_slice(&[0, 1, 0xaa, 0x40, 2, 0xbb, 0xcc]);
        out
    }

    #[test]
    fn tells_a_new_member_commit_from_other_messages() {
        let public = |sender: &[u8], content_type: u8| {
            let mut out = vec![0, 1, 0, 1, 5];
            out.extend_from_slice(b"group");
            out.extend_from_slice(&7u64.to_be_bytes());
            out.extend_from_slice(sender);
            out.push(0); // authenticated_data
            out.push(content_type);
            out
        };
        assert!(is_new_member_commit(&public(&[4], 3)));
        assert!(!is_new_member_commit(&public(&[4], 2)));
        assert!(!is_new_member_commit(&public(&[1, 0, 0, 0, 1], 3)));
        assert!(!is_new_member_commit(&private(b"group", 7, 3)));
        assert!(!is_new_member_commit(&public(&[4], 3)[..10]));
    }

    #[test]
    fn reads_a_private_message_header() {
        assert_eq!(
            Framing::parse(&private(b"group", 7, 1)).unwrap(),
            Framing::Group {
                group_id: b"group".to_vec(),
                epoch: 7,
                content_type: ContentType::Application,
                encrypted: true
            }
        );
    }

    #[test]
    fn opaque_messages_frame_and_unframe() {
        for len in [0, 63, 64, 16_383, 16_384, 70_000] {
            let body = vec![7u8; len];
            let m = opaque_private_message(b"gid", 3, ContentType::Commit, &body);
            assert_eq!(
                Framing::parse(&m).unwrap(),
                Framing::Group {
                    group_id: b"gid".to_vec(),
                    epoch: 3,
                    content_type: ContentType::Commit,
                    encrypted: true
                }
            );
            assert_eq!(private_ciphertext(&m).unwrap(), body.as_slice());
        }
    }

    #[test]
    fn reads_the_authenticated_data_of_application_messages_only() {
        let tag = [1u8; 33];
        let app = opaque_private_message_with_aad(b"g", 1, ContentType::Application, &tag, b"c");
        assert_eq!(application_aad(&app), Some(tag.as_slice()));
        let commit = opaque_private_message_with_aad(b"g", 1, ContentType::Commit, &tag, b"c");
        assert_eq!(application_aad(&commit), None);
        assert_eq!(application_aad(&app[..8]), None);
        assert_eq!(application_aad(&[]), None);
    }

    #[test]
    fn refuses_what_is_not_mls() {
        let good = private(b"g", 1, 3);
        for n in 0..good.len() {
            assert!(
                Framing::parse(good.get(..n).unwrap()).is_err(),
                "prefix {n}"
            );
        }
        assert!(Framing::parse(&[good.as_slice(), &[1]].concat()).is_err());
        // Zero padding after a message (a padded commit) is not "more".
        assert!(Framing::parse(&[good.as_slice(), &[0; 100]].concat()).is_ok());
        assert!(Framing::parse(&private(b"g", 1, 9)).is_err());
        assert!(Framing::parse(&[0, 2, 0, 2]).is_err());
        assert!(Framing::parse(&[0, 1, 0, 9]).is_err());
        assert!(Framing::parse(&[0, 1, 0, 2, 0xff]).is_err());
    }
}
