//! Message franking and verifiable abuse reports, after the "Message
//! Franking" section of draft-ietf-mimi-protocol. Pure: no I/O, no clock, no
//! randomness of its own, so the CLI, the server and a browser client share
//! it.
//!
//! * The **sender** picks a fresh 32-byte salt for every application
//!   message and computes the franking tag = HMAC-SHA256(key = salt,
//!   franked content) ([`franked_content`], [`tag`]). The salt and the
//!   sender device's signature over (group id, tag) travel inside the
//!   encrypted content ([`Franking`]); the tag travels in the clear in the
//!   MLS authenticated data of the `PrivateMessage` ([`aad`]): openmls's
//!   plain `set_aad`, not the `extensions-draft` Safe AAD, whose framing
//!   (component ids) is still a moving draft and would pull an unstable
//!   feature into a pinned, security-critical dependency for one field. The
//!   AAD is covered by the MLS AEAD and the sender's MLS signature, so no
//!   member can swap another's tag.
//! * The **server** sees only the tag. On accepting the message it signs a
//!   frank over (tag, group id, acceptance time) with its franking key
//!   ([`sign_frank`]) and attaches it to every delivery. Nothing about the
//!   sender is involved: franking works with sealed sender.
//! * The **receiver** checks everything ([`check_received`]) and keeps the
//!   [`Evidence`] with the message; a message whose tag, signature or frank
//!   does not check is shown but cannot be reported ([`Unreportable`]).
//! * The **operator** of a report checks it ([`verify_report`]): the frank
//!   is its own over this tag, group and time; the content and salt give the
//!   tag; the content was franked for that group; the named sender device
//!   signed the tag.
//!
//! Why a signature of our own for the sender: openmls 0.9 verifies the MLS
//! signature of a received message and keeps it to itself (the
//! `FramedContent` signature is crate-private, and re-verifying it would
//! also need the group context of that epoch), so a receiver cannot hand
//! it to anyone. The device key that signs [`sender_transcript`] is the
//! device's MLS signature key, the one the transparency log lists for it.
//!
//! ```
//! use sotto_core::franking::{self, Frank};
//! use sotto_core::content::{AppContent, Body, Text};
//! use sotto_core::identity::DeviceKey;
//!
//! let device = DeviceKey::generate();
//! let server = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
//! let content = AppContent {
//!     id: vec![1; 16], sent_at_ms: 5, body: Some(Body::Text(Text { text: "hi".into() })),
//!     log_head: None, padding: Vec::new(), franking: None,
//! };
//! let sealed = franking::seal(&device, b"group", &content, [9; 32]);
//! let tag = franking::tag_from_aad(&sealed.aad).unwrap();
//! let frank = Frank { signature: franking::sign_frank(&server, &tag, b"group", 1000), accepted_at_ms: 1000 };
//! let content = AppContent { franking: Some(sealed.franking), ..content };
//! let evidence = franking::check_received(
//!     &sealed.aad, b"group", &content, &device.public(), Some(&frank), Some(&server.verifying_key()),
//! ).unwrap();
//! assert_eq!(evidence.tag, tag);
//! ```

use crate::content::AppContent;
use crate::identity::DeviceKey;
use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use hmac::{Hmac, Mac};
use prost::Message as _;
use sha2::Sha256;
pub use sotto_proto::v1::{AbuseReport, Franking, ReportReason};
use zeroize::Zeroizing;

/// Length of a franking salt, tag and frank.
pub const SALT_LEN: usize = 32;
pub const TAG_LEN: usize = 32;
pub const FRANK_LEN: usize = 64;

/// The first byte of a franked message's authenticated data; the 32-byte
/// tag follows. Other AAD (none today) is not a franking tag.
pub const AAD_VERSION: u8 = 1;

pub use sotto_proto::{
    FRANK_CONTEXT, FRANKING_KEY_CONTEXT, FRANKING_SENDER_CONTEXT as SENDER_CONTEXT,
};

/// Largest franked content a report may carry: a text's limit plus room for
/// the content's other fields.
pub const MAX_REPORT_CONTENT_BYTES: usize = crate::content::MAX_TEXT_BYTES + 4096;
/// Longest reporter's note, in bytes.
pub const MAX_NOTE_BYTES: usize = 1024;
/// Longest group id a report may name.
pub const MAX_GROUP_ID_BYTES: usize = 256;

/// The bytes the tag covers: the group id (so a tag, and a frank, cannot be
/// moved to another group) and the content without its padding and its
/// franking fields (the salt cannot cover itself).
///
/// Zeroized on drop: the content may be an identity handover.
pub fn franked_content(group_id: &[u8], content: &AppContent) -> Zeroizing<Vec<u8>> {
    let bare = AppContent {
        padding: Vec::new(),
        franking: None,
        ..content.clone()
    };
    let mut out = Zeroizing::new(Vec::with_capacity(2 + group_id.len() + bare.encoded_len()));
    out.extend_from_slice(&length_prefixed(group_id));
    bare.encode(&mut *out).ok();
    out
}

/// Splits franked content into its group id and its content bytes.
pub fn split_franked(franked: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = franked.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// HMAC-SHA256 keyed by the salt over the franked content.
pub fn tag(salt: &[u8; SALT_LEN], franked: &[u8]) -> [u8; TAG_LEN] {
    // HMAC accepts keys of any length: `new_from_slice` cannot fail here.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(salt) else {
        return [0; TAG_LEN];
    };
    mac.update(franked);
    mac.finalize().into_bytes().into()
}

/// Whether `tag` is HMAC(salt, franked), compared in constant time.
fn tag_matches(salt: &[u8; SALT_LEN], franked: &[u8], tag: &[u8]) -> bool {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(salt) else {
        return false;
    };
    mac.update(franked);
    mac.verify_slice(tag).is_ok()
}

/// The MLS authenticated data carrying a tag.
pub fn aad(tag: &[u8; TAG_LEN]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + TAG_LEN);
    out.push(AAD_VERSION);
    out.extend_from_slice(tag);
    out
}

/// The tag in a message's authenticated data, if it holds one.
pub fn tag_from_aad(aad: &[u8]) -> Option<[u8; TAG_LEN]> {
    match aad.split_first() {
        Some((&AAD_VERSION, tag)) => tag.try_into().ok(),
        _ => None,
    }
}

/// What the server's franking key signs.
pub fn frank_transcript(tag: &[u8; TAG_LEN], group_id: &[u8], accepted_at_ms: u64) -> Vec<u8> {
    let mut out = FRANK_CONTEXT.to_vec();
    out.extend_from_slice(tag);
    out.extend_from_slice(&length_prefixed(group_id));
    out.extend_from_slice(&accepted_at_ms.to_be_bytes());
    out
}

/// What the sender's device key signs.
pub fn sender_transcript(group_id: &[u8], tag: &[u8; TAG_LEN]) -> Vec<u8> {
    let mut out = SENDER_CONTEXT.to_vec();
    out.extend_from_slice(&length_prefixed(group_id));
    out.extend_from_slice(tag);
    out
}

/// What the log key signs to vouch for the franking key.
pub fn franking_key_transcript(franking_key: &[u8]) -> Vec<u8> {
    [FRANKING_KEY_CONTEXT, franking_key].concat()
}

fn length_prefixed(bytes: &[u8]) -> Vec<u8> {
    let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(2 + bytes.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(bytes);
    out
}

/// What a sender adds to one message.
#[derive(Debug, Clone)]
pub struct Sealed {
    /// Goes into the content (`AppContent.franking`).
    pub franking: Franking,
    /// Goes into the MLS authenticated data (`MlsGroup::set_aad`).
    pub aad: Vec<u8>,
}

/// Franks outgoing `content` for `group_id` with a fresh `salt` (the caller
/// draws it: 32 random bytes per message).
pub fn seal(device: &DeviceKey, group_id: &[u8], content: &AppContent, salt: [u8; 32]) -> Sealed {
    let tag = tag(&salt, &franked_content(group_id, content));
    let signature = device.sign_bytes(&sender_transcript(group_id, &tag));
    Sealed {
        franking: Franking {
            salt: salt.to_vec(),
            sender_signature: signature.to_vec(),
        },
        aad: aad(&tag),
    }
}

/// The server's frank of a tag it accepted for `group_id` at `accepted_at_ms`.
pub fn sign_frank(
    key: &SigningKey,
    tag: &[u8; TAG_LEN],
    group_id: &[u8],
    accepted_at_ms: u64,
) -> [u8; FRANK_LEN] {
    key.sign(&frank_transcript(tag, group_id, accepted_at_ms))
        .to_bytes()
}

/// The server's frank as a delivery carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frank {
    pub signature: [u8; FRANK_LEN],
    pub accepted_at_ms: u64,
}

impl Frank {
    /// From a delivery's fields: `None` when it carries no frank.
    pub fn from_delivery(frank: &[u8], accepted_at_ms: u64) -> Option<Self> {
        Some(Self {
            signature: frank.try_into().ok()?,
            accepted_at_ms,
        })
    }
}

/// Checks the log key's signature over a server's franking key.
pub fn verify_franking_key(
    log_key: &VerifyingKey,
    key: &sotto_proto::v1::FrankingKey,
) -> Option<VerifyingKey> {
    let signature = Signature::from_slice(&key.log_signature).ok()?;
    log_key
        .verify(&franking_key_transcript(&key.key), &signature)
        .ok()?;
    VerifyingKey::from_bytes(key.key.as_slice().try_into().ok()?).ok()
}

/// Everything a receiver keeps to report a message later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// [`franked_content`] of the message.
    pub content: Vec<u8>,
    pub salt: [u8; SALT_LEN],
    pub tag: [u8; TAG_LEN],
    pub frank: Frank,
    pub sender_signature: [u8; 64],
}

/// Why a received message cannot be reported. It is shown all the same:
/// franking protects reports, not delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unreportable {
    #[error("the message carries no franking tag")]
    NoTag,
    #[error("the message carries no franking salt or sender signature")]
    NoSalt,
    #[error("the franking tag does not match the content (the sender franked other content)")]
    TagMismatch,
    #[error("the sender's device did not sign the franking tag")]
    BadSenderSignature,
    #[error("the server attached no frank")]
    NoFrank,
    #[error("this device does not know the server's franking key")]
    NoFrankingKey,
    #[error("the server's frank does not verify")]
    BadFrank,
}

impl Unreportable {
    /// A stable name, stored with the message.
    pub fn code(self) -> &'static str {
        match self {
            Self::NoTag => "no-tag",
            Self::NoSalt => "no-salt",
            Self::TagMismatch => "tag-mismatch",
            Self::BadSenderSignature => "bad-sender-signature",
            Self::NoFrank => "no-frank",
            Self::NoFrankingKey => "no-franking-key",
            Self::BadFrank => "bad-frank",
        }
    }
}

/// Checks a received application message's franking: the tag in the
/// authenticated data against the salt and content, the sender device's
/// signature (`sender_key`: the MLS leaf key, which the client already
/// checked against the transparency log) and the server's frank.
pub fn check_received(
    aad: &[u8],
    group_id: &[u8],
    content: &AppContent,
    sender_key: &[u8; 32],
    frank: Option<&Frank>,
    franking_key: Option<&VerifyingKey>,
) -> Result<Evidence, Unreportable> {
    let tag = tag_from_aad(aad).ok_or(Unreportable::NoTag)?;
    let franking = content.franking.as_ref().ok_or(Unreportable::NoSalt)?;
    let salt: [u8; SALT_LEN] = franking
        .salt
        .as_slice()
        .try_into()
        .map_err(|_| Unreportable::NoSalt)?;
    let franked = franked_content(group_id, content);
    if !tag_matches(&salt, &franked, &tag) {
        return Err(Unreportable::TagMismatch);
    }
    let sender_signature: [u8; 64] = franking
        .sender_signature
        .as_slice()
        .try_into()
        .map_err(|_| Unreportable::BadSenderSignature)?;
    let sender_key =
        VerifyingKey::from_bytes(sender_key).map_err(|_| Unreportable::BadSenderSignature)?;
    sender_key
        .verify_strict(
            &sender_transcript(group_id, &tag),
            &Signature::from_bytes(&sender_signature),
        )
        .map_err(|_| Unreportable::BadSenderSignature)?;
    let frank = frank.ok_or(Unreportable::NoFrank)?;
    let franking_key = franking_key.ok_or(Unreportable::NoFrankingKey)?;
    franking_key
        .verify_strict(
            &frank_transcript(&tag, group_id, frank.accepted_at_ms),
            &Signature::from_bytes(&frank.signature),
        )
        .map_err(|_| Unreportable::BadFrank)?;
    Ok(Evidence {
        content: franked.to_vec(),
        salt,
        tag,
        frank: frank.clone(),
        sender_signature,
    })
}

/// Why an operator must not act on a report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportRejected {
    #[error("the report is malformed: {0}")]
    Malformed(&'static str),
    #[error("the report is too large: {0}")]
    TooLarge(&'static str),
    #[error("the frank is not this server's for this tag, group and acceptance time")]
    FrankInvalid,
    #[error("the content and salt do not give the franked tag (the text was changed)")]
    ContentChanged,
    #[error("the content was franked for another group than the frank names")]
    OtherGroup,
    #[error("the named sender device did not sign this message")]
    SenderNotSigner,
}

/// A report whose every claim checked.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedReport {
    pub group_id: Vec<u8>,
    pub accepted_at_ms: u64,
    /// The reported content as the sender wrote it.
    pub content: AppContent,
}

/// Refuses a report whose fields exceed the limits, before anything else
/// (the server stores only reports that pass).
pub fn check_report_size(report: &AbuseReport) -> Result<(), ReportRejected> {
    if report.content.len() > MAX_REPORT_CONTENT_BYTES {
        return Err(ReportRejected::TooLarge("content"));
    }
    if report.note.len() > MAX_NOTE_BYTES {
        return Err(ReportRejected::TooLarge("note (at most 1024 bytes)"));
    }
    if report.group_id.len() > MAX_GROUP_ID_BYTES {
        return Err(ReportRejected::TooLarge("group id"));
    }
    if report.sender_username.len() > 32 {
        return Err(ReportRejected::TooLarge("sender username"));
    }
    for (field, len, want) in [
        ("salt", report.salt.len(), SALT_LEN),
        ("tag", report.tag.len(), TAG_LEN),
        ("frank", report.frank.len(), FRANK_LEN),
        ("sender signature", report.sender_signature.len(), 64),
        (
            "sender device id",
            report.sender_device_id.len(),
            sotto_proto::ID_LEN,
        ),
    ] {
        if len > want {
            return Err(ReportRejected::TooLarge(field));
        }
    }
    Ok(())
}

/// Verifies a report against this server's franking key and the sender
/// device key the transparency log lists for `report.sender_device_id`.
/// Each forgery fails with its own reason: a changed acceptance time (or a
/// frank not ours) → [`ReportRejected::FrankInvalid`]; changed text →
/// [`ReportRejected::ContentChanged`]; a frank from another group for the
/// same tag → [`ReportRejected::OtherGroup`]; another sender named →
/// [`ReportRejected::SenderNotSigner`].
pub fn verify_report(
    report: &AbuseReport,
    franking_key: &VerifyingKey,
    sender_device_key: &[u8],
) -> Result<VerifiedReport, ReportRejected> {
    check_report_size(report)?;
    let tag: [u8; TAG_LEN] = report
        .tag
        .as_slice()
        .try_into()
        .map_err(|_| ReportRejected::Malformed("tag"))?;
    let salt: [u8; SALT_LEN] = report
        .salt
        .as_slice()
        .try_into()
        .map_err(|_| ReportRejected::Malformed("salt"))?;
    let frank =
        Signature::from_slice(&report.frank).map_err(|_| ReportRejected::Malformed("frank"))?;
    let sender_signature = Signature::from_slice(&report.sender_signature)
        .map_err(|_| ReportRejected::Malformed("sender signature"))?;
    franking_key
        .verify_strict(
            &frank_transcript(&tag, &report.group_id, report.accepted_at_ms),
            &frank,
        )
        .map_err(|_| ReportRejected::FrankInvalid)?;
    if !tag_matches(&salt, &report.content, &tag) {
        return Err(ReportRejected::ContentChanged);
    }
    let (franked_group, content) =
        split_franked(&report.content).ok_or(ReportRejected::Malformed("content"))?;
    if franked_group != report.group_id.as_slice() {
        return Err(ReportRejected::OtherGroup);
    }
    let sender_key = sender_device_key
        .try_into()
        .ok()
        .and_then(|k| VerifyingKey::from_bytes(k).ok())
        .ok_or(ReportRejected::SenderNotSigner)?;
    sender_key
        .verify_strict(
            &sender_transcript(&report.group_id, &tag),
            &sender_signature,
        )
        .map_err(|_| ReportRejected::SenderNotSigner)?;
    let content =
        AppContent::decode(content).map_err(|_| ReportRejected::Malformed("content encoding"))?;
    Ok(VerifiedReport {
        group_id: report.group_id.clone(),
        accepted_at_ms: report.accepted_at_ms,
        content,
    })
}

/// Reported content as people read it: the text of a chat message (MIMI
/// or the older plain text), or a description of anything else.
pub fn content_text(content: &AppContent) -> String {
    use crate::content::Body;
    match &content.body {
        Some(Body::Text(text)) => text.text.clone(),
        Some(Body::Mimi(bytes)) => match crate::mimi::decode(bytes)
            .ok()
            .and_then(|mimi| crate::mimi::ChatAction::of(&mimi).ok().flatten())
        {
            Some(crate::mimi::ChatAction::Text { text, .. }) => text,
            Some(crate::mimi::ChatAction::Attachment { text, file, .. }) => {
                format!("[a file: {}] {}", file.filename, text.unwrap_or_default())
            }
            Some(crate::mimi::ChatAction::Edit { text, .. }) => format!("[an edit] {text}"),
            Some(crate::mimi::ChatAction::React { emoji, .. }) => format!("[a reaction] {emoji}"),
            Some(crate::mimi::ChatAction::Retract { .. }) => "[a deletion]".into(),
            None => "[chat content this server cannot show]".into(),
        },
        Some(_) => "[not a chat message]".into(),
        None => "[empty]".into(),
    }
}

/// The report a receiver builds from the evidence it kept.
pub fn report(
    evidence: &Evidence,
    group_id: &[u8],
    sender: &crate::identity::MemberId,
    reason: ReportReason,
    note: &str,
) -> AbuseReport {
    AbuseReport {
        content: evidence.content.clone(),
        salt: evidence.salt.to_vec(),
        group_id: group_id.to_vec(),
        accepted_at_ms: evidence.frank.accepted_at_ms,
        frank: evidence.frank.signature.to_vec(),
        sender_username: sender.username.as_str().to_owned(),
        sender_device_id: sender.device_id.as_bytes().to_vec(),
        sender_signature: evidence.sender_signature.to_vec(),
        reason: reason as i32,
        note: note.to_owned(),
        tag: evidence.tag.to_vec(),
    }
}

#[cfg(test)]
#[path = "franking_tests.rs"]
mod tests;
