//! What travels inside MLS application messages: the `AppContent` of the
//! protocol schema.

use prost::Message as _;
pub use sotto_proto::v1::{
    AppContent, ConversationInfo, ConversationKind, Text, app_content::Body,
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
}

pub fn encode(content: &AppContent) -> Vec<u8> {
    content.encode_to_vec()
}

pub fn decode(bytes: &[u8]) -> Result<AppContent, ContentError> {
    let content = AppContent::decode(bytes)?;
    if content.body.is_none() {
        return Err(ContentError::Empty);
    }
    Ok(content)
}
