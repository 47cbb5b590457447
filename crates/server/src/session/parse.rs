//! Parsing request fields at the edge, once, into types that cannot hold
//! invalid values: ids, keys, envelopes, certificates, the MLS framing.

use super::wire_error::{error, mismatched_framing, shown};
use crate::link_rendezvous::{LinkId, MAX_SEALED_BYTES};
use crate::store::{DeviceId, Envelope, GroupId, MessageId};
use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message as _;
use sotto_proto::mls_framing::{ContentType, Framing};
use sotto_proto::v1::{self, ErrorCode};

pub(super) fn verifying_key(bytes: &[u8]) -> Option<VerifyingKey> {
    <[u8; 32]>::try_from(bytes)
        .ok()
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
}

pub(super) fn verifies(key: &VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    Signature::from_slice(signature).is_ok_and(|sig| key.verify_strict(message, &sig).is_ok())
}

/// Parses one payload with its recipients; `min_recipients` is 1 for
/// application messages and Welcomes, 0 for commits.
pub(super) fn envelope(
    message_id: &[u8],
    recipients: &[Vec<u8>],
    payload: Vec<u8>,
    min_recipients: usize,
    what: &str,
) -> Result<Envelope, v1::Error> {
    let message_id = MessageId::from_slice(message_id).ok_or_else(|| {
        error(
            ErrorCode::InvalidRequest,
            format!(
                "{what} id must be {} bytes, got {}",
                sotto_proto::ID_LEN,
                message_id.len()
            ),
        )
    })?;
    if payload.is_empty() {
        return Err(error(
            ErrorCode::InvalidRequest,
            format!("{what} payload is empty"),
        ));
    }
    if payload.len() > sotto_proto::MAX_PAYLOAD_BYTES {
        return Err(error(
            ErrorCode::TooLarge,
            format!(
                "{what} payload is {} bytes; the limit is {} bytes",
                payload.len(),
                sotto_proto::MAX_PAYLOAD_BYTES
            ),
        ));
    }
    if recipients.len() < min_recipients || recipients.len() > sotto_proto::MAX_RECIPIENTS {
        return Err(error(
            ErrorCode::InvalidRequest,
            format!(
                "{what} names {} recipients; it must name {min_recipients} to {}",
                recipients.len(),
                sotto_proto::MAX_RECIPIENTS
            ),
        ));
    }
    let recipients = recipients
        .iter()
        .map(|r| {
            DeviceId::from_slice(r).ok_or_else(|| {
                error(
                    ErrorCode::InvalidRequest,
                    format!(
                        "recipient device ids must be {} bytes, got {}",
                        sotto_proto::ID_LEN,
                        r.len()
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Envelope {
        message_id,
        recipients,
        payload,
        frank: None,
    })
}

pub(super) fn group_id(bytes: &[u8]) -> Result<GroupId, v1::Error> {
    GroupId::from_slice(bytes).ok_or_else(|| {
        error(
            ErrorCode::InvalidRequest,
            format!(
                "group id must be 1 to {} bytes, got {}",
                GroupId::MAX_LEN,
                bytes.len()
            ),
        )
    })
}

/// Parses a device certificate for `username` and checks the identity
/// key's signature over it.
pub(super) fn certified_device(
    device: &v1::SignedDevice,
    username: &str,
    identity_key: &VerifyingKey,
) -> Result<(DeviceId, VerifyingKey), v1::Error> {
    let certificate =
        v1::DeviceCertificate::decode(device.certificate.as_slice()).map_err(|_| {
            error(
                ErrorCode::InvalidRequest,
                "the device certificate is not a valid DeviceCertificate",
            )
        })?;
    if certificate.username != username {
        return Err(error(
            ErrorCode::InvalidRequest,
            format!(
                "the device certificate is for {:?}, not {:?}",
                shown(&certificate.username),
                username
            ),
        ));
    }
    let device_id = DeviceId::from_slice(&certificate.device_id).ok_or_else(|| {
        error(
            ErrorCode::InvalidRequest,
            format!("device_id must be {} bytes", sotto_proto::ID_LEN),
        )
    })?;
    let device_key = verifying_key(&certificate.device_key).ok_or_else(|| {
        error(
            ErrorCode::InvalidRequest,
            "device_key must be a 32-byte Ed25519 public key",
        )
    })?;
    if !verifies(
        identity_key,
        &sotto_proto::device_transcript(&device.certificate),
        &device.identity_signature,
    ) {
        return Err(error(
            ErrorCode::AuthenticationFailed,
            "the identity key's signature over the device certificate does not verify",
        ));
    }
    Ok((device_id, device_key))
}

pub(super) fn link_id(bytes: &[u8]) -> Result<LinkId, v1::Error> {
    LinkId::try_from(bytes).map_err(|_| {
        error(
            ErrorCode::InvalidRequest,
            format!(
                "a link id is {} bytes, got {}",
                sotto_proto::LINK_ID_LEN,
                bytes.len()
            ),
        )
    })
}

pub(super) fn sealed(blob: &[u8], what: &str) -> Result<(), v1::Error> {
    if blob.is_empty() {
        return Err(error(
            ErrorCode::InvalidRequest,
            format!("the {what} is empty"),
        ));
    }
    if blob.len() > MAX_SEALED_BYTES {
        return Err(error(
            ErrorCode::TooLarge,
            format!(
                "the {what} is {} bytes; the limit is {MAX_SEALED_BYTES} bytes",
                blob.len()
            ),
        ));
    }
    Ok(())
}

/// SHA-256 of a presented send capability (which must be 32 bytes).
pub(super) fn capability_hash(token: &[u8]) -> Option<[u8; 32]> {
    use sha2::Digest as _;
    (token.len() == 32).then(|| sha2::Sha256::digest(token).into())
}

/// Reads the clear-text MLS framing of a payload sent to `group` and checks
/// that it is a message of that group with one of the `allowed` content
/// types; returns the epoch it is framed in. Clients authenticate the rest.
pub(super) fn group_framing(
    payload: &[u8],
    group: &GroupId,
    allowed: &[ContentType],
    what: &str,
) -> Result<u64, v1::Error> {
    match Framing::parse(payload) {
        Ok(Framing::Group {
            group_id,
            epoch,
            content_type,
            ..
        }) => {
            if group_id.as_slice() != group.as_bytes() {
                return Err(mismatched_framing(format!(
                    "the {what}'s MLS group is not the group the request names"
                )));
            }
            if !allowed.contains(&content_type) {
                return Err(mismatched_framing(format!(
                    "a {what} cannot carry MLS content of type {content_type:?}"
                )));
            }
            Ok(epoch)
        }
        Ok(other) => Err(mismatched_framing(format!(
            "a {what} must be an MLS group message, not {other:?}"
        ))),
        Err(e) => Err(error(ErrorCode::InvalidRequest, format!("{what}: {e}"))),
    }
}
