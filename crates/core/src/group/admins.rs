//! Admins of a group, recorded in its group context (an MLS group-context
//! extension of Sotto's own type), so that every member holds the same
//! list, bound into the epoch's key schedule: a member whose client
//! disagreed about who the admins are could not decrypt anything.
//!
//! A group without the extension is *flat* (every group before admins
//! existed, and every group created without `--admins`): any member may
//! remove any other, and nobody may add the extension later, since any
//! member could then make themselves its only admin. A group created with
//! the extension has its creator as first admin. In such a group (checked
//! by every client on every commit and message, DESIGN.md §5):
//!
//! - only an admin removes another account's devices (a member may still
//!   remove devices of its own account and leave; anyone's own leave is
//!   committed by whoever syncs next);
//! - only an admin changes the extension (the admin list, read-only); the
//!   list may not become empty and may only name members;
//! - only an admin deletes another member's message for everyone;
//! - when the group is read-only (an announcement channel), only admins'
//!   chat content (texts, files, edits, deletes, reactions, timers) is
//!   shown; receipts and typing still flow.
//!
//! Any member may add members, as in a flat group.

use super::invite::InviteLink;
use super::{GroupError, mls};
use crate::identity::Username;
use openmls::prelude::*;

/// The extension type (from the private-use range, RFC 9420 §17.3).
pub const ADMIN_EXTENSION_TYPE: u16 = 0xF5A0;

/// Format version of the extension's content.
const VERSION: u8 = 1;
/// More admins than this is refused (the extension sits in every commit's
/// group context).
pub const MAX_ADMINS: usize = 64;

/// Who the admins are and whether others may post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminPolicy {
    /// Accounts, sorted, no duplicates, at least one.
    pub admins: Vec<Username>,
    /// Only admins may post (an announcement channel).
    pub read_only: bool,
    /// The group's open invite link (`super::invite`): while it is set,
    /// members accept a joiner's external commit; an admin drops it to
    /// close the link for members too.
    pub invite: Option<InviteLink>,
}

/// Flag bits of the encoding (the others are reserved).
const READ_ONLY: u8 = 1;
/// An invite link (id and secret) follows the admin list.
const INVITE_LINK: u8 = 2;

impl AdminPolicy {
    /// A policy with `admin` as its only admin.
    pub fn new(admin: Username) -> Self {
        Self {
            admins: vec![admin],
            read_only: false,
            invite: None,
        }
    }

    pub fn is_admin(&self, user: &Username) -> bool {
        self.admins.contains(user)
    }

    /// `version, flags, count, (len, username)*, [link id, link secret]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut flags = 0;
        if self.read_only {
            flags |= READ_ONLY;
        }
        if self.invite.is_some() {
            flags |= INVITE_LINK;
        }
        let mut out = vec![VERSION, flags];
        out.push(u8::try_from(self.admins.len()).unwrap_or(u8::MAX));
        for admin in &self.admins {
            let name = admin.as_str().as_bytes();
            out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
            out.extend_from_slice(name);
        }
        if let Some(link) = &self.invite {
            link.encode_into(&mut out);
        }
        out
    }

    /// Parses the extension strictly: one encoding per policy (sorted,
    /// unique, non-empty admin list, known flags, nothing left over).
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let (&version, rest) = bytes.split_first().ok_or("empty admin extension")?;
        if version != VERSION {
            return Err(format!("admin extension version {version}"));
        }
        let (&flags, rest) = rest.split_first().ok_or("truncated admin extension")?;
        if flags & !(READ_ONLY | INVITE_LINK) != 0 {
            return Err(format!("unknown admin extension flags {flags}"));
        }
        let read_only = flags & READ_ONLY != 0;
        let (&count, mut rest) = rest.split_first().ok_or("truncated admin extension")?;
        let mut admins: Vec<Username> = Vec::with_capacity(usize::from(count).min(MAX_ADMINS));
        for _ in 0..count {
            let (&len, tail) = rest.split_first().ok_or("truncated admin extension")?;
            let (name, tail) = tail
                .split_at_checked(usize::from(len))
                .ok_or("truncated admin extension")?;
            let name = std::str::from_utf8(name).map_err(|_| "admin name is not UTF-8")?;
            let user = Username::parse(name).map_err(|e| e.to_string())?;
            if admins
                .last()
                .is_some_and(|last| last.as_str() >= user.as_str())
            {
                return Err("admin list not sorted or has duplicates".into());
            }
            admins.push(user);
            rest = tail;
        }
        let invite = if flags & INVITE_LINK != 0 {
            let (link, tail) =
                InviteLink::decode_from(rest).ok_or("truncated invite link in admin extension")?;
            rest = tail;
            Some(link)
        } else {
            None
        };
        if !rest.is_empty() {
            return Err("bytes after the admin list".into());
        }
        if admins.is_empty() || admins.len() > MAX_ADMINS {
            return Err(format!(
                "an admin list has 1 to {MAX_ADMINS} accounts, not {}",
                admins.len()
            ));
        }
        Ok(Self {
            admins,
            read_only,
            invite,
        })
    }

    /// Adds or removes an admin, keeping the list sorted.
    pub fn with_admin(mut self, user: Username, admin: bool) -> Self {
        self.admins.retain(|a| a != &user);
        if admin {
            self.admins.push(user);
            self.admins.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        }
        self
    }

    /// The group-context extensions that carry this policy: the extension
    /// and the required capability that makes every member (and every
    /// KeyPackage added later) support it.
    pub fn extensions(&self) -> Result<Extensions<GroupContext>, GroupError> {
        Self::decode(&self.encode()).map_err(GroupError::Misuse)?;
        Extensions::from_vec(vec![
            Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
                &[ExtensionType::Unknown(ADMIN_EXTENSION_TYPE)],
                &[],
                &[],
            )),
            Extension::Unknown(ADMIN_EXTENSION_TYPE, UnknownExtension(self.encode())),
        ])
        .map_err(|e| mls("admin extension")(&e))
    }
}

/// The admin policy in a set of group-context extensions: `Ok(None)` for a
/// flat group, an error for one that does not parse (never merged: a commit
/// bringing one is refused).
pub fn policy_in(extensions: &Extensions<GroupContext>) -> Result<Option<AdminPolicy>, String> {
    extensions
        .unknown(ADMIN_EXTENSION_TYPE)
        .map(|ext| AdminPolicy::decode(&ext.0))
        .transpose()
}

/// The group's admin policy (`None`: a flat group). A merged group context
/// was checked before it was merged, so a parse failure here means
/// storage was damaged.
pub fn admin_policy(group: &MlsGroup) -> Result<Option<AdminPolicy>, GroupError> {
    policy_in(group.extensions()).map_err(|e| {
        GroupError::Misuse(format!("the stored group's admin list is unreadable: {e}"))
    })
}

/// The leaf capabilities every Sotto device advertises: support for the
/// admin extension (so a group with admins can add it), plus `extra`.
pub(super) fn capabilities(extra: &[ExtensionType]) -> Capabilities {
    let mut extensions = vec![ExtensionType::Unknown(ADMIN_EXTENSION_TYPE)];
    extensions.extend_from_slice(extra);
    Capabilities::new(None, None, Some(&extensions), None, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> Username {
        Username::parse(name).unwrap()
    }

    #[test]
    fn policy_round_trips_and_parses_strictly() {
        let policy = AdminPolicy::new(user("alice")).with_admin(user("bob"), true);
        let policy = AdminPolicy {
            read_only: true,
            ..policy
        };
        assert_eq!(AdminPolicy::decode(&policy.encode()).unwrap(), policy);
        let mut trailing = policy.encode();
        trailing.push(0);
        assert!(AdminPolicy::decode(&trailing).is_err());
        let unsorted = AdminPolicy {
            admins: vec![user("bob"), user("alice")],
            ..AdminPolicy::new(user("alice"))
        };
        assert!(AdminPolicy::decode(&unsorted.encode()).is_err());
        let empty = AdminPolicy {
            admins: vec![],
            ..AdminPolicy::new(user("alice"))
        };
        assert!(AdminPolicy::decode(&empty.encode()).is_err());
        assert!(AdminPolicy::decode(&[1, 4, 0]).is_err());
        for cut in 0..policy.encode().len() {
            assert!(AdminPolicy::decode(&policy.encode()[..cut]).is_err());
        }
        let open = AdminPolicy {
            invite: Some(InviteLink::from_random([1; 16], [2; 32])),
            ..policy
        };
        assert_eq!(AdminPolicy::decode(&open.encode()).unwrap(), open);
        for cut in 0..open.encode().len() {
            assert!(AdminPolicy::decode(&open.encode()[..cut]).is_err());
        }
        let mut trailing = open.encode();
        trailing.push(0);
        assert!(AdminPolicy::decode(&trailing).is_err());
    }
}
