//! Sotto's wire protocol: the frames exchanged over WebSocket, the content
//! carried inside MLS, and the limits both sides enforce. No I/O.
//!
//! The schema is `proto/sotto.proto`; other languages can generate code from
//! it. Rust types are generated at build time by `prost`.
//!
//! ```
//! use prost::Message;
//! use sotto_proto::v1::{client_frame::Body, ClientFrame, Sync};
//!
//! let frame = ClientFrame { request_id: 7, body: Some(Body::Sync(Sync {})) };
//! let bytes = frame.encode_to_vec();
//! assert_eq!(sotto_proto::decode_client_frame(&bytes).unwrap(), frame);
//! ```

pub use prost::Message;

pub mod missed_notice;
pub mod mls_framing;

/// Generated protocol types, version 1.
#[allow(missing_debug_implementations, clippy::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/sotto.v1.rs"));

    /// Redacted: the secret never prints.
    impl std::fmt::Debug for IdentityHandover {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("IdentityHandover")
                .field("identity_secret", &"<redacted>")
                .finish()
        }
    }

    impl Drop for IdentityHandover {
        fn drop(&mut self) {
            zeroize::Zeroize::zeroize(&mut self.identity_secret);
        }
    }

    impl std::fmt::Debug for LinkBundle {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("LinkBundle")
                .field("username", &self.username)
                .field("identity_secret", &"<redacted>")
                .field("log_key", &self.log_key)
                .field("head", &self.head)
                .field("own_history", &self.own_history.len())
                .finish()
        }
    }

    impl Drop for LinkBundle {
        fn drop(&mut self) {
            zeroize::Zeroize::zeroize(&mut self.identity_secret);
        }
    }
}

/// The protocol version announced in `Challenge`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Largest WebSocket message either side accepts. Bigger messages close the
/// connection (close code 1009).
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Largest MLS payload (application message, commit or welcome) the server
/// queues. Bigger payloads are refused with `TOO_LARGE`, and the connection
/// stays open.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// Most recipient devices one message may name.
pub const MAX_RECIPIENTS: usize = 1000;
/// Most KeyPackages one upload may carry.
pub const MAX_KEY_PACKAGES_PER_UPLOAD: usize = 100;
/// Length of device ids and message ids.
pub const ID_LEN: usize = 16;
/// Length of the login challenge nonce.
pub const NONCE_LEN: usize = 32;

/// Domain separator for the login signature.
pub const AUTH_CONTEXT: &[u8] = b"sotto-auth-v1";
/// Domain separator for the identity key's signature over a device certificate.
pub const DEVICE_CONTEXT: &[u8] = b"sotto-device-v1";
/// Domain separator for the identity key's signature over a log event.
pub const LOG_EVENT_CONTEXT: &[u8] = b"sotto-log-event-v1";
/// Domain separation for a device key vouching that its device made a log
/// event.
pub const LOG_AUTHOR_CONTEXT: &[u8] = b"sotto-log-author-v1";
/// Domain separator for the log key's signature over a tree head.
pub const TREE_HEAD_CONTEXT: &[u8] = b"sotto-tree-head-v1";
/// Domain separation for an auditor's countersignature of a directory
/// epoch ([`countersign_transcript`]). (`sotto-countersign-v1` was over key
/// log heads; such signatures never verify as epoch countersignatures.)
pub const COUNTERSIGN_CONTEXT: &[u8] = b"sotto-countersign-epoch-v1";

/// Domain separation for the log key's signature over a directory epoch
/// ([`directory_epoch_transcript`]).
pub const DIRECTORY_EPOCH_CONTEXT: &[u8] = b"sotto-directory-epoch-v1";

/// Domain separation for the log key's signature of a web release
/// ([`web_release_transcript`]).
pub const WEB_RELEASE_CONTEXT: &[u8] = b"sotto-web-release-v1";

/// The username a web-release log entry is filed under: empty, which
/// [`is_valid_username`] refuses, so no account's log ever includes one.
pub const WEB_RELEASE_USERNAME: &str = "";

/// The bytes the log key signs for a web release: the context, then the
/// encoded `WebRelease`.
pub fn web_release_transcript(encoded_release: &[u8]) -> Vec<u8> {
    [WEB_RELEASE_CONTEXT, encoded_release].concat()
}

/// Most epochs one `GetDirectoryAudit` covers: an audit's cost follows its
/// epochs' changes, so a request is kept to a few.
pub const MAX_AUDIT_EPOCHS_PER_REQUEST: u64 = 16;

/// Most bytes of an audit proof one `DirectoryAudit` answer carries; a
/// larger proof (an epoch of many changes) comes in several.
pub const AUDIT_PROOF_PART_BYTES: usize = 256 * 1024;

/// Largest whole audit proof a server builds for one request (about 850,000
/// changes): fewer epochs per request beyond it.
pub const MAX_AUDIT_PROOF_BYTES: usize = 64 * 1024 * 1024;

/// Most auditors one `GetCountersignatures` may name.
pub const MAX_AUDITORS_PER_REQUEST: usize = 16;

/// Domain separation for the server's frank of a franking tag
/// (`sotto_core::franking`).
pub const FRANK_CONTEXT: &[u8] = b"sotto-frank-v1";
/// Domain separation for the sender device's signature over a franking tag.
pub const FRANKING_SENDER_CONTEXT: &[u8] = b"sotto-franking-sender-v1";
/// Domain separation for the log key's signature over the franking key.
pub const FRANKING_KEY_CONTEXT: &[u8] = b"sotto-franking-key-v1";

/// Length of a device-link id.
pub const LINK_ID_LEN: usize = 16;

/// A frame could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("malformed frame: {0}")]
pub struct DecodeError(#[from] prost::DecodeError);

/// Decodes one frame sent by a client.
pub fn decode_client_frame(bytes: &[u8]) -> Result<v1::ClientFrame, DecodeError> {
    Ok(v1::ClientFrame::decode(bytes)?)
}

/// Decodes one frame sent by the server.
pub fn decode_server_frame(bytes: &[u8]) -> Result<v1::ServerFrame, DecodeError> {
    Ok(v1::ServerFrame::decode(bytes)?)
}

/// The bytes a device signs to log in (or register) on a connection whose
/// challenge carried `nonce`.
pub fn auth_transcript(nonce: &[u8], username: &str, device_id: &[u8]) -> Vec<u8> {
    let name = username.as_bytes();
    let mut out =
        Vec::with_capacity(AUTH_CONTEXT.len() + nonce.len() + 1 + name.len() + device_id.len());
    out.extend_from_slice(AUTH_CONTEXT);
    out.extend_from_slice(nonce);
    // Usernames are at most 32 bytes (see `is_valid_username`); saturate
    // rather than wrap for anything longer, which fails validation anyway.
    out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(name);
    out.extend_from_slice(device_id);
    out
}

/// The bytes an identity key signs to vouch for a device certificate.
pub fn device_transcript(certificate: &[u8]) -> Vec<u8> {
    [DEVICE_CONTEXT, certificate].concat()
}

/// The bytes an identity key signs for a log event.
pub fn log_event_transcript(event: &[u8]) -> Vec<u8> {
    [LOG_EVENT_CONTEXT, event].concat()
}

/// The bytes a device key signs to say that its device made a log event
/// of its own account (`LogEntry.author_signature`).
pub fn log_author_transcript(event: &[u8]) -> Vec<u8> {
    [LOG_AUTHOR_CONTEXT, event].concat()
}

/// The bytes a new identity key signs to prove that whoever rotated the
/// account's identity to it holds it (`IdentityRotated.new_key_signature`).
pub fn identity_rotation_transcript(
    username: &str,
    old_key: &[u8],
    new_key: &[u8],
    account_seq: u64,
) -> Vec<u8> {
    let name = username.as_bytes();
    let mut out = Vec::with_capacity(ROTATION_CONTEXT.len() + 1 + name.len() + 72);
    out.extend_from_slice(ROTATION_CONTEXT);
    out.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    out.extend_from_slice(name);
    out.extend_from_slice(old_key);
    out.extend_from_slice(new_key);
    out.extend_from_slice(&account_seq.to_be_bytes());
    out
}

/// Domain separation for [`identity_rotation_transcript`].
pub const ROTATION_CONTEXT: &[u8] = b"sotto-identity-rotation-v1";

/// The bytes the log key signs for a tree head.
pub fn tree_head_transcript(tree_size: u64, root_hash: &[u8], timestamp_ms: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(TREE_HEAD_CONTEXT.len() + 16 + root_hash.len());
    out.extend_from_slice(TREE_HEAD_CONTEXT);
    out.extend_from_slice(&tree_size.to_be_bytes());
    out.extend_from_slice(root_hash);
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out
}

/// The bytes the log key signs for a directory epoch: that the directory
/// under `vrf_public_key` had root `root_hash` at `epoch`, as of `timestamp_ms`.
pub fn directory_epoch_transcript(
    vrf_public_key: &[u8],
    epoch: u64,
    root_hash: &[u8],
    timestamp_ms: u64,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        DIRECTORY_EPOCH_CONTEXT.len() + vrf_public_key.len() + 16 + root_hash.len(),
    );
    out.extend_from_slice(DIRECTORY_EPOCH_CONTEXT);
    out.extend_from_slice(vrf_public_key);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(root_hash);
    out.extend_from_slice(&timestamp_ms.to_be_bytes());
    out
}

/// What an auditor signs: that the key directory of the server whose log
/// key is `log_key` had root `root_hash` at `epoch`, every epoch up to it
/// append-only as far as the auditor checked, at `signed_at_ms`.
pub fn countersign_transcript(
    log_key: &[u8],
    epoch: u64,
    root_hash: &[u8],
    signed_at_ms: u64,
) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(COUNTERSIGN_CONTEXT.len() + log_key.len() + 16 + root_hash.len());
    out.extend_from_slice(COUNTERSIGN_CONTEXT);
    out.extend_from_slice(log_key);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.extend_from_slice(root_hash);
    out.extend_from_slice(&signed_at_ms.to_be_bytes());
    out
}

/// Usernames are 3 to 32 characters of `a-z`, `0-9`, `_`, `.` and `-`,
/// starting with a letter or digit.
pub fn is_valid_username(name: &str) -> bool {
    let len_ok = (3..=32).contains(&name.len());
    let first_ok = name
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    len_ok
        && first_ok
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'.' | b'-')
        })
}

impl v1::Error {
    /// An error frame body with a code and a message for people.
    pub fn new(code: v1::ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code: code as i32,
            message: message.into(),
            current_epoch: 0,
            retry_after_ms: 0,
        }
    }
}

impl std::fmt::Display for v1::Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = v1::ErrorCode::try_from(self.code).unwrap_or(v1::ErrorCode::Unspecified);
        write!(f, "{} ({})", self.message, code.as_str_name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        for ok in ["alice", "bob_2", "a.b-c", "123"] {
            assert!(is_valid_username(ok), "{ok}");
        }
        for bad in ["", "ab", "Alice", "-bob", "a b", "ålice", &"x".repeat(33)] {
            assert!(!is_valid_username(bad), "{bad}");
        }
    }

    #[test]
    fn identity_secrets_never_print() {
        let secret = vec![0xab; 32];
        let mut bundle = v1::LinkBundle::default();
        bundle.username = "alice".into();
        bundle.identity_secret = secret.clone();
        let handover = v1::IdentityHandover {
            identity_secret: secret,
        };
        for printed in [format!("{bundle:?}"), format!("{handover:?}")] {
            assert!(printed.contains("<redacted>"), "{printed}");
            assert!(!printed.contains("171"), "{printed}"); // 0xab as Debug prints it
        }
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        assert!(decode_client_frame(&[0xff, 0xff, 0xff]).is_err());
        assert!(decode_server_frame(&[0x0a, 0x80]).is_err());
    }

    #[test]
    fn auth_transcript_separates_fields() {
        // "ab" + device "c…" must not collide with "a" + device "bc…".
        assert_ne!(
            auth_transcript(b"n", "ab", b"c"),
            auth_transcript(b"n", "a", b"bc")
        );
    }
}
