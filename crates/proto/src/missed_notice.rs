//! The notice the server queues for a device whose mailbox was full
//! (`MissedMessages` in `sotto.proto`): a `Delivery` payload made of
//! [`MISSED_NOTICE_PREFIX`] and the encoded message.
//!
//! An MLS message starts with its protocol version (`0x0001`), so the
//! prefix (starting `0xff`) cannot be mistaken for one, and the server
//! refuses any client payload that is not MLS-framed: only the server
//! writes notices.
//!
//! ```
//! use sotto_proto::missed_notice;
//! use sotto_proto::v1::MissedMessages;
//!
//! let notice = MissedMessages { group_id: vec![1], messages: 2, commits: 1, welcomes: 0 };
//! let payload = missed_notice::encode(&notice);
//! assert_eq!(missed_notice::parse(&payload), Some(notice));
//! assert_eq!(missed_notice::parse(&[0, 1, 0, 1]), None);
//! ```

use crate::v1::MissedMessages;
use prost::Message as _;

/// What every notice payload starts with.
pub const MISSED_NOTICE_PREFIX: &[u8] = b"\xffsotto-missed-v1\x00";

/// The payload of a notice.
pub fn encode(notice: &MissedMessages) -> Vec<u8> {
    let mut payload = MISSED_NOTICE_PREFIX.to_vec();
    payload.extend(notice.encode_to_vec());
    payload
}

/// The notice in a delivery's payload; `None` if the payload is not one
/// (an MLS message) or does not decode.
pub fn parse(payload: &[u8]) -> Option<MissedMessages> {
    let body = payload.strip_prefix(MISSED_NOTICE_PREFIX)?;
    MissedMessages::decode(body).ok()
}
