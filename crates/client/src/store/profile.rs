//! The profile row (account keys, server), contacts' pinned identity keys,
//! and the newest key-log head this device verified.

use super::StoreError;
use rusqlite::{Connection, OptionalExtension, params};

/// The row of the `profile` table.
pub struct ProfileRow {
    pub username: String,
    pub server_url: String,
    pub identity_secret: Vec<u8>,
    pub device_id: Vec<u8>,
    pub device_secret: Vec<u8>,
    pub log_key: Vec<u8>,
    /// PEM of the CA given with `--ca-file`, if any.
    pub ca_pem: Option<String>,
    /// `--insecure-transport`.
    pub insecure_transport: bool,
}

impl std::fmt::Debug for ProfileRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProfileRow")
            .field("username", &self.username)
            .field("server_url", &self.server_url)
            .finish_non_exhaustive()
    }
}

pub fn load_profile(conn: &Connection) -> Result<Option<ProfileRow>, StoreError> {
    conn.query_row(
        "SELECT username, server_url, identity_secret, device_id, device_secret, log_key,
                ca_pem, insecure_transport
         FROM profile",
        [],
        |r| {
            Ok(ProfileRow {
                username: r.get(0)?,
                server_url: r.get(1)?,
                identity_secret: r.get(2)?,
                device_id: r.get(3)?,
                device_secret: r.get(4)?,
                log_key: r.get(5)?,
                ca_pem: r.get(6)?,
                insecure_transport: r.get(7)?,
            })
        },
    )
    .optional()
}

pub fn save_profile(conn: &Connection, row: &ProfileRow) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO profile (id, username, server_url, identity_secret, device_id, device_secret,
                              log_key, ca_pem, insecure_transport)
         VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        params![
            row.username,
            row.server_url,
            row.identity_secret,
            row.device_id,
            row.device_secret,
            row.log_key,
            row.ca_pem,
            row.insecure_transport
        ],
    )?;
    Ok(())
}

/// What this device knows of another account's identity key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Contact {
    pub identity_key: Vec<u8>,
    pub verified: bool,
}

/// Points the profile at another server URL, trusting `ca_pem` for it.
pub fn set_server_url(
    conn: &Connection,
    url: &str,
    ca_pem: Option<&str>,
    insecure_transport: bool,
) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE profile SET server_url = ?1, ca_pem = ?2, insecure_transport = ?3",
        params![url, ca_pem, insecure_transport],
    )?;
    Ok(())
}

pub fn contact(conn: &Connection, username: &str) -> Result<Option<Contact>, StoreError> {
    conn.query_row(
        "SELECT identity_key, verified FROM contacts WHERE username = ?1",
        [username],
        |r| {
            Ok(Contact {
                identity_key: r.get(0)?,
                verified: r.get(1)?,
            })
        },
    )
    .optional()
}

/// Records `identity_key` for `username`; a changed key loses the
/// verified mark.
pub fn save_contact(
    conn: &Connection,
    username: &str,
    identity_key: &[u8],
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO contacts (username, identity_key) VALUES (?1, ?2)
         ON CONFLICT (username) DO UPDATE SET identity_key = excluded.identity_key, verified = 0
         WHERE identity_key != excluded.identity_key",
        params![username, identity_key],
    )?;
    Ok(())
}

pub fn set_verified(conn: &Connection, username: &str, verified: bool) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE contacts SET verified = ?2 WHERE username = ?1",
        params![username, verified],
    )?;
    Ok(())
}

pub fn log_head(conn: &Connection) -> Result<Option<Vec<u8>>, StoreError> {
    conn.query_row("SELECT head FROM log_head", [], |r| r.get(0))
        .optional()
}

pub fn save_log_head(conn: &Connection, head: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO log_head (id, head) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET head = excluded.head",
        [head],
    )?;
    Ok(())
}

/// The newest signed directory epoch this device verified a lookup against (encoded).
pub fn directory_epoch(conn: &Connection) -> Result<Option<Vec<u8>>, StoreError> {
    conn.query_row("SELECT epoch FROM directory_epoch", [], |r| r.get(0))
        .optional()
}

pub fn save_directory_epoch(conn: &Connection, epoch: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO directory_epoch (id, epoch) VALUES (1, ?1) ON CONFLICT (id) DO UPDATE SET epoch = excluded.epoch",
        [epoch],
    )?;
    Ok(())
}

/// The auditors this profile requires, with the largest lag (ms) allowed
/// for each one's countersignature.
pub fn trusted_auditors(conn: &Connection) -> Result<Vec<(Vec<u8>, u64)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT auditor_key, max_lag_ms FROM trusted_auditors ORDER BY auditor_key",
    )?;
    let rows = stmt.query_map([], |r| {
        let lag: i64 = r.get(1)?;
        Ok((r.get(0)?, u64::try_from(lag).unwrap_or(0)))
    })?;
    rows.collect()
}

/// Requires `auditor_key` (or changes its allowed lag).
pub fn trust_auditor(
    conn: &Connection,
    auditor_key: &[u8],
    max_lag_ms: u64,
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO trusted_auditors (auditor_key, max_lag_ms) VALUES (?1, ?2) \
         ON CONFLICT (auditor_key) DO UPDATE SET max_lag_ms = excluded.max_lag_ms",
        params![auditor_key, i64::try_from(max_lag_ms).unwrap_or(i64::MAX)],
    )?;
    Ok(())
}

/// Stops requiring `auditor_key`; `false` if it was not required.
pub fn distrust_auditor(conn: &Connection, auditor_key: &[u8]) -> Result<bool, StoreError> {
    Ok(conn.execute(
        "DELETE FROM trusted_auditors WHERE auditor_key = ?1",
        [auditor_key],
    )? > 0)
}

/// Replaces the profile's identity secret (after a rotation the log shows).
pub fn set_identity_secret(conn: &Connection, secret: &[u8]) -> Result<(), StoreError> {
    conn.execute("UPDATE profile SET identity_secret = ?1", [secret])?;
    Ok(())
}

/// Keeps an identity secret this device may adopt later (see
/// `spare_identities`).
pub fn save_spare_identity(
    conn: &Connection,
    public_key: &[u8],
    secret: &[u8],
) -> Result<(), StoreError> {
    conn.execute(
        "INSERT INTO spare_identities (public_key, secret) VALUES (?1, ?2)
         ON CONFLICT (public_key) DO NOTHING",
        params![public_key, secret],
    )?;
    Ok(())
}

/// The spare identity secret for `public_key`, if this device holds it.
pub fn spare_identity(conn: &Connection, public_key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
    conn.query_row(
        "SELECT secret FROM spare_identities WHERE public_key = ?1",
        [public_key],
        |r| r.get(0),
    )
    .optional()
}

/// Forgets the spare identity secret for `public_key` (a handed-over key
/// the log does not name).
pub fn forget_spare_identity(conn: &Connection, public_key: &[u8]) -> Result<(), StoreError> {
    conn.execute(
        "DELETE FROM spare_identities WHERE public_key = ?1",
        [public_key],
    )?;
    Ok(())
}

/// Forgets every spare identity secret (once one is adopted, the others are
/// of no use).
pub fn clear_spare_identities(conn: &Connection) -> Result<(), StoreError> {
    conn.execute("DELETE FROM spare_identities", [])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A profile of schema version 4 (before rotation) gains the table of
    /// spare identities when opened; a spare is kept until cleared.
    #[test]
    fn a_version_4_profile_gains_spare_identities() {
        let dir = std::env::temp_dir().join(format!(
            "sotto-spare-identities-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("sotto.db");
        super::super::open(&path)
            .unwrap()
            .execute_batch(&format!(
                "DROP TABLE spare_identities; {} PRAGMA user_version = 4;",
                super::super::UNDO_MIGRATION_5
            ))
            .unwrap();
        let conn = super::super::open(&path).unwrap();
        assert_eq!(spare_identity(&conn, b"pub").unwrap(), None);
        save_spare_identity(&conn, b"pub", b"secret").unwrap();
        save_spare_identity(&conn, b"pub", b"other").unwrap();
        assert_eq!(
            spare_identity(&conn, b"pub").unwrap(),
            Some(b"secret".to_vec())
        );
        clear_spare_identities(&conn).unwrap();
        assert_eq!(spare_identity(&conn, b"pub").unwrap(), None);
        drop(conn);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
