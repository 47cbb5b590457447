//! Files received or sent as attachments: what the message said about
//! each (name, type, size) and how to fetch and open it (blob URL, key,
//! nonce, ciphertext hash). The row goes with its message: deleted with it
//! (`ON DELETE CASCADE`), and when the message is deleted for everyone.

use rusqlite::{Connection, OptionalExtension as _, params};
use sotto_core::mimi::ExternalPart;

use super::StoreError;

/// An attachment as `history --json` shows it.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize)]
pub struct AttachmentInfo {
    /// The file name the sender gave (no directories).
    pub name: String,
    /// Bytes to download: the encrypted file, padded to its size bucket.
    pub size: u64,
    pub content_type: String,
}

/// Records the attachment of message `message_id`.
pub fn insert_attachment(
    conn: &Connection,
    message_id: &[u8],
    file: &ExternalPart,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO attachments (message_id, filename, content_type, size, url, key, nonce, content_hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) ON CONFLICT (message_id) DO NOTHING",
        params![
            message_id,
            base_name(&file.filename),
            file.content_type,
            i64::try_from(file.size).unwrap_or(i64::MAX),
            file.url,
            file.key,
            file.nonce,
            file.content_hash,
        ],
    )?;
    Ok(())
}

/// The last component of a sender's file name: a name like
/// `../../.profile` or `C:\x\run.bat` must not read as a place to save.
fn base_name(name: &str) -> &str {
    match name.rsplit(['/', '\\']).next() {
        Some("" | "." | "..") | None => "file",
        Some(last) => last,
    }
}

/// What the history line shows of message `message_id`'s attachment.
pub fn attachment_info(
    conn: &Connection,
    message_id: &[u8],
) -> Result<Option<AttachmentInfo>, StoreError> {
    conn.prepare_cached(
        "SELECT filename, size, content_type FROM attachments WHERE message_id = ?1",
    )?
    .query_row([message_id], |r| {
        Ok(AttachmentInfo {
            name: r.get(0)?,
            size: r.get::<_, i64>(1)?.max(0) as u64,
            content_type: r.get(2)?,
        })
    })
    .optional()
}

/// Everything needed to fetch and open message `message_id`'s attachment.
pub fn attachment(
    conn: &Connection,
    message_id: &[u8],
) -> Result<Option<ExternalPart>, StoreError> {
    conn.query_row(
        "SELECT filename, content_type, size, url, key, nonce, content_hash
         FROM attachments WHERE message_id = ?1",
        [message_id],
        |r| {
            Ok(ExternalPart {
                filename: r.get(0)?,
                content_type: r.get(1)?,
                size: r.get::<_, i64>(2)?.max(0) as u64,
                url: r.get(3)?,
                key: r.get(4)?,
                nonce: r.get(5)?,
                content_hash: r.get(6)?,
                expires: 0,
                enc_alg: ExternalPart::AES_128_GCM,
                aad: Vec::new(),
                hash_alg: ExternalPart::SHA256,
                description: String::new(),
            })
        },
    )
    .optional()
}

/// Forgets message `message_id`'s attachment (deleted for everyone).
pub fn delete_attachment(conn: &Connection, message_id: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM attachments WHERE message_id = ?1",
        [message_id],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::base_name;

    #[test]
    fn a_received_file_name_keeps_no_directories() {
        for (given, kept) in [
            ("photo.jpg", "photo.jpg"),
            ("../../.profile", ".profile"),
            ("C:\\x\\run.bat", "run.bat"),
            ("dir/", "file"),
            ("..", "file"),
            ("", "file"),
        ] {
            assert_eq!(base_name(given), kept, "{given}");
        }
    }
}
