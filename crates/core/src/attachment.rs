//! Encrypted attachments: a file is padded to a size bucket, encrypted with
//! AES-128-GCM under a fresh key and nonce, and uploaded as an opaque blob;
//! the key, nonce and SHA-256 of the ciphertext travel in the E2EE message
//! (a MIMI [`ExternalPart`](crate::mimi::ExternalPart)).
//!
//! The hash is checked before anything is decrypted. AES-GCM alone is not
//! key-committing (one ciphertext can be made to decrypt under two keys);
//! the hash, carried inside the authenticated E2EE message, commits the
//! sender to exactly one ciphertext, so every member who opens it gets the
//! same file.
//!
//! Padding: the plaintext, then `0x80`, then zeros up to the bucket — the
//! Padmé size (Nikitin et al., 2019: the padded length leaks O(log log n)
//! bits of the size), at least [`MIN_PADDED`] bytes. No I/O here: keys come
//! in as arguments.

use aes_gcm::aead::AeadInPlace as _;
use aes_gcm::{Aes128Gcm, KeyInit as _, Nonce, Tag};
use sha2::{Digest as _, Sha256};

/// AES-128 key length.
pub const KEY_LEN: usize = 16;
/// AES-GCM nonce length.
pub const NONCE_LEN: usize = 12;
/// AES-GCM tag length (appended to the ciphertext).
pub const TAG_LEN: usize = 16;
/// SHA-256 output length.
pub const HASH_LEN: usize = 32;
/// The smallest padded size.
pub const MIN_PADDED: u64 = 1024;

/// Why an attachment could not be opened (or sealed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttachmentError {
    /// The downloaded bytes are not the ones the sender committed to.
    #[error(
        "the attachment's bytes do not match the hash in the message: it was changed on the server or on the way"
    )]
    HashMismatch,
    /// The hash matched but decryption failed: the sender's own doing.
    #[error("the attachment does not decrypt with the key in the message")]
    Decrypt,
    /// Decrypted, but not padded as Sotto pads.
    #[error("the attachment's padding is malformed")]
    Padding,
    /// Key, nonce or hash of the wrong length.
    #[error("the message gives an attachment key, nonce or hash of the wrong length")]
    BadParameters,
    /// Larger than this platform can hold.
    #[error("the attachment is too large")]
    TooLarge,
}

/// The padded size of a plaintext of `len` bytes (with its `0x80` marker).
pub fn padded_len(len: u64) -> u64 {
    let l = len.saturating_add(1).max(MIN_PADDED);
    let e = 63 - u64::from(l.leading_zeros()); // floor(log2 l)
    let s = 64 - u64::from(e.leading_zeros()); // floor(log2 e) + 1
    let last_bits = e.saturating_sub(s);
    let mask = (1u64 << last_bits) - 1;
    l.saturating_add(mask) & !mask
}

/// The ciphertext length of a plaintext of `len` bytes.
pub fn sealed_len(len: u64) -> u64 {
    padded_len(len).saturating_add(TAG_LEN as u64)
}

/// Pads and encrypts `plaintext` in place (it becomes the ciphertext, tag
/// appended); returns the SHA-256 of the ciphertext.
pub fn seal(
    buffer: &mut Vec<u8>,
    key: &[u8; KEY_LEN],
    nonce: &[u8; NONCE_LEN],
) -> Result<[u8; HASH_LEN], AttachmentError> {
    let padded =
        usize::try_from(padded_len(buffer.len() as u64)).map_err(|_| AttachmentError::TooLarge)?;
    buffer.reserve_exact((padded + TAG_LEN).saturating_sub(buffer.len()));
    buffer.push(0x80);
    buffer.resize(padded, 0);
    let cipher = Aes128Gcm::new(key.into());
    let tag = cipher
        .encrypt_in_place_detached(Nonce::from_slice(nonce), b"", buffer)
        .map_err(|_| AttachmentError::TooLarge)?;
    buffer.extend_from_slice(&tag);
    Ok(Sha256::digest(&buffer).into())
}

/// Checks `buffer` against `content_hash`, then decrypts it in place and
/// removes the padding. On any error the buffer holds no plaintext the
/// caller should use.
pub fn open(
    buffer: &mut Vec<u8>,
    key: &[u8],
    nonce: &[u8],
    content_hash: &[u8],
) -> Result<(), AttachmentError> {
    let key: &[u8; KEY_LEN] = key.try_into().map_err(|_| AttachmentError::BadParameters)?;
    let nonce: &[u8; NONCE_LEN] = nonce
        .try_into()
        .map_err(|_| AttachmentError::BadParameters)?;
    if content_hash.len() != HASH_LEN {
        return Err(AttachmentError::BadParameters);
    }
    if Sha256::digest(&buffer).as_slice() != content_hash {
        return Err(AttachmentError::HashMismatch);
    }
    let body_len = buffer
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(AttachmentError::Decrypt)?;
    let tag: Tag<aes_gcm::aead::consts::U16> =
        Tag::clone_from_slice(buffer.get(body_len..).ok_or(AttachmentError::Decrypt)?);
    buffer.truncate(body_len);
    let cipher = Aes128Gcm::new(key.into());
    if cipher
        .decrypt_in_place_detached(Nonce::from_slice(nonce), b"", buffer, &tag)
        .is_err()
    {
        buffer.clear();
        return Err(AttachmentError::Decrypt);
    }
    let end = buffer.iter().rposition(|b| *b != 0);
    match end {
        Some(i) if buffer.get(i) == Some(&0x80) => {
            buffer.truncate(i);
            Ok(())
        }
        _ => {
            buffer.clear();
            Err(AttachmentError::Padding)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    #[test]
    fn padme_buckets_grow_slowly_and_hold_the_marker() {
        assert_eq!(padded_len(0), MIN_PADDED);
        assert_eq!(padded_len(MIN_PADDED - 1), MIN_PADDED);
        for len in [
            1u64,
            1000,
            1023,
            1024,
            5000,
            1 << 20,
            200 << 20,
            (1 << 30) + 7,
        ] {
            let padded = padded_len(len);
            assert!(padded > len, "{len}");
            // Padmé's overhead is at most about 12% from 1 KiB up.
            assert!(padded - len <= len / 8 + MIN_PADDED, "{len} -> {padded}");
        }
        // Nearby sizes share a bucket.
        assert_eq!(padded_len(1_000_000), padded_len(1_000_100));
    }

    #[test]
    fn a_sealed_file_opens_to_the_same_bytes() {
        let key = [7u8; KEY_LEN];
        let nonce = [9u8; NONCE_LEN];
        for len in [0usize, 1, 1023, 1024, 70_000] {
            let plain: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let mut buffer = plain.clone();
            let hash = seal(&mut buffer, &key, &nonce).unwrap();
            assert_eq!(buffer.len() as u64, sealed_len(len as u64));
            open(&mut buffer, &key, &nonce, &hash).unwrap();
            assert_eq!(buffer, plain);
        }
    }

    #[test]
    fn a_flipped_byte_fails_the_hash_before_decryption() {
        let key = [1u8; KEY_LEN];
        let nonce = [2u8; NONCE_LEN];
        let mut buffer = b"hello".to_vec();
        let hash = seal(&mut buffer, &key, &nonce).unwrap();
        buffer[3] ^= 1;
        assert_eq!(
            open(&mut buffer, &key, &nonce, &hash),
            Err(AttachmentError::HashMismatch)
        );
    }

    #[test]
    fn a_matching_hash_with_the_wrong_key_does_not_decrypt() {
        let nonce = [2u8; NONCE_LEN];
        let mut buffer = b"hello".to_vec();
        let hash = seal(&mut buffer, &[1u8; KEY_LEN], &nonce).unwrap();
        assert_eq!(
            open(&mut buffer, &[3u8; KEY_LEN], &nonce, &hash),
            Err(AttachmentError::Decrypt)
        );
        assert!(buffer.is_empty());
        assert_eq!(
            open(&mut b"x".to_vec(), &[1u8; 3], &nonce, &hash),
            Err(AttachmentError::BadParameters)
        );
    }
}
