//! What travels inside MLS application messages: the `AppContent` of the
//! protocol schema. Chat messages ride in it as MIMI content
//! (`Body::Mimi`, see [`crate::mimi`]); Sotto's control content
//! (conversation info, log heads) is its own protobuf.

use prost::Message as _;
pub use sotto_proto::v1::{
    AppContent, ConversationInfo, ConversationKind, DisappearingTimer, Receipts, Text, Typing,
    app_content::Body,
};

/// Longest text message, in bytes. Leaves room for MLS framing within
/// [`sotto_proto::MAX_PAYLOAD_BYTES`].
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// Why content from a peer was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ContentError {
    #[error("message content is malformed: {0}")]
    Malformed(#[from] prost::DecodeError),
    #[error("message content is empty")]
    Empty,
    #[error(transparent)]
    Mimi(#[from] crate::mimi::MimiError),
}

/// Smallest size bucket: every content is padded to 512, 1024, 2048, …
/// bytes, so an observer of ciphertext lengths learns only the bucket.
/// 512, not less: a short chat message (MIMI content naming its sender and
/// room, plus the sender's log head) needs more than 256, and receipts,
/// typing indicators and timer changes must share its bucket, or their
/// size would tell them apart from texts.
pub const MIN_BUCKET: usize = 512;

/// Encodes content padded up to exactly its size bucket.
pub fn encode(content: &AppContent) -> Vec<u8> {
    let mut padded = AppContent {
        padding: Vec::new(),
        ..content.clone()
    };
    let unpadded = padded.encoded_len();
    let mut bucket = (unpadded + 2).next_power_of_two().max(MIN_BUCKET);
    loop {
        // The padding field takes a one-byte tag, a varint length, then the
        // bytes: find a length whose varint size makes the total exact.
        let fill = (1..=3).find_map(|varint| {
            let fill = bucket.checked_sub(unpadded + 1 + varint)?;
            (fill > 0 && prost::encoding::encoded_len_varint(fill as u64) == varint).then_some(fill)
        });
        if let Some(fill) = fill {
            padded.padding = vec![0; fill];
            return padded.encode_to_vec();
        }
        bucket *= 2;
    }
}

pub fn decode(bytes: &[u8]) -> Result<AppContent, ContentError> {
    let content = AppContent::decode(bytes)?;
    if content.body.is_none() {
        return Err(ContentError::Empty);
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An identity handover's secret never prints, whether the handover is
    /// printed alone or inside the content that carries it.
    #[test]
    fn an_identity_handover_never_prints_its_secret() {
        let secret = vec![0xab; 32];
        let handover = sotto_proto::v1::IdentityHandover {
            identity_secret: secret.clone(),
        };
        let content = AppContent {
            id: vec![1],
            sent_at_ms: 5,
            body: Some(Body::IdentityHandover(handover.clone())),
            log_head: None,
            padding: Vec::new(),
            franking: None,
        };
        for printed in [format!("{handover:?}"), format!("{content:?}")] {
            assert!(printed.contains("<redacted>"), "{printed}");
            assert!(!printed.contains("171"), "{printed}");
            assert!(!printed.contains("ab"), "{printed}");
        }
        let decoded = decode(&encode(&content)).unwrap();
        assert!(matches!(
            decoded.body,
            Some(Body::IdentityHandover(h)) if h.identity_secret == secret
        ));
    }

    #[test]
    fn texts_of_different_lengths_share_a_bucket() {
        let sized = |text: &str| {
            encode(&AppContent {
                id: vec![7; 16],
                sent_at_ms: 1_700_000_000_000,
                body: Some(Body::Text(Text { text: text.into() })),
                log_head: None,
                padding: Vec::new(),
                franking: None,
            })
            .len()
        };
        assert_eq!(
            sized("hi"),
            sized("a somewhat longer message, but still short")
        );
        assert!(sized("hi") <= MIN_BUCKET);
        assert!(sized(&"x".repeat(600)) > MIN_BUCKET);
        assert_eq!(sized(&"x".repeat(600)), sized(&"y".repeat(700)));
        let decoded = decode(&encode(&AppContent {
            id: vec![1],
            sent_at_ms: 5,
            body: Some(Body::Text(Text {
                text: "round trip".into(),
            })),
            log_head: None,
            padding: Vec::new(),
            franking: None,
        }))
        .unwrap();
        assert!(matches!(decoded.body, Some(Body::Text(t)) if t.text == "round trip"));
    }
}
