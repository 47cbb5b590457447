//! Playing a server that writes its own transparency log: appending entries
//! to an account's log straight into the server's database (the running
//! server picks them up before its next answer), as an operator holding a
//! stolen identity key, or colluding with a thief, could.

use sotto_core::identity::{Account, DeviceId, DeviceKey, IdentityKey, Username};
use sotto_proto::v1::LogEntry;
use sotto_transparency::leaf_bytes;
use std::path::Path;

fn open(data_dir: &Path) -> rusqlite::Connection {
    let db = rusqlite::Connection::open(data_dir.join("sotto.db")).expect("server database");
    db.busy_timeout(std::time::Duration::from_secs(10))
        .expect("busy timeout");
    db
}

/// How many log entries `username` has: the `account_seq` of its next one.
pub fn next_seq(data_dir: &Path, username: &str) -> u64 {
    let n: i64 = open(data_dir)
        .query_row(
            "SELECT count(*) FROM log_entries WHERE username = ?1",
            [username],
            |r| r.get(0),
        )
        .expect("count log entries");
    u64::try_from(n).expect("count")
}

/// Appends `entry` to `username`'s log, whatever it says.
pub fn append(data_dir: &Path, username: &str, entry: &LogEntry) {
    open(data_dir)
        .execute(
            "INSERT INTO log_entries (idx, username, entry)
             VALUES ((SELECT coalesce(max(idx) + 1, 0) FROM log_entries), ?1, ?2)",
            rusqlite::params![username, leaf_bytes(entry)],
        )
        .expect("append log entry");
}

/// Adds a device of the operator's to `username`'s account with the
/// account's identity key (stolen): a certified device row and its
/// `DeviceAdded` entry at the next `account_seq`. `attest` may mark the
/// entry as made by a device that still has its device key. Returns the
/// new device's id.
pub fn add_device(
    data_dir: &Path,
    username: &str,
    identity_secret: &[u8],
    attest: impl FnOnce(LogEntry) -> LogEntry,
) -> DeviceId {
    add_device_account(data_dir, username, identity_secret, attest).device_id
}

/// Like [`add_device`], returning the whole device (its key too), to log in
/// as it (`Mallory::log_in`).
pub fn add_device_account(
    data_dir: &Path,
    username: &str,
    identity_secret: &[u8],
    attest: impl FnOnce(LogEntry) -> LogEntry,
) -> Account {
    let identity = IdentityKey::from_secret(identity_secret).expect("identity secret");
    let user = Username::parse(username).expect("username");
    let device = DeviceKey::generate();
    let device_id = DeviceId::random();
    let entry = attest(identity.device_added(
        &user,
        next_seq(data_dir, username),
        device_id,
        device.public(),
    ));
    let certified = identity.certify(&user, device_id, device.public());
    open(data_dir)
        .execute(
            "INSERT INTO devices (device_id, username, certificate, identity_signature, device_key,
                                  created_day, last_seen_day, num)
             VALUES (?1, ?2, ?3, ?4, ?5, 0, 0, (SELECT coalesce(max(num), 0) + 1 FROM devices))",
            rusqlite::params![
                device_id.as_bytes(),
                username,
                certified.certificate,
                certified.identity_signature,
                device.public().as_slice()
            ],
        )
        .expect("insert device");
    append(data_dir, username, &entry);
    Account {
        username: user,
        identity,
        device_id,
        device,
    }
}
