//! Damage to a server's stored key directory, for audit tests: what a
//! faulty disk or a tampering operator would leave behind.

use std::path::Path;

/// Flips one byte of the hash of a leaf node stored in `epoch`, in the
/// key-directory file under the server's data directory `data_dir`.
pub fn flip_stored_leaf_hash(data_dir: &Path, epoch: u64) {
    let db =
        rusqlite::Connection::open(data_dir.join(sotto_server::key_directory::DIRECTORY_FILE_NAME))
            .unwrap();
    let (len, val, mut latest): (u32, Vec<u8>, Vec<u8>) = db
        .query_row(
            "SELECT label_len, label_val, latest FROM akd_tree_nodes
             WHERE last_epoch = ?1 AND label_len = 256 LIMIT 1",
            [i64::try_from(epoch).unwrap()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    *latest
        .get_mut(sotto_directory::STORED_NODE_HASH_OFFSET)
        .expect("a stored node holds its hash") ^= 1;
    db.execute(
        "UPDATE akd_tree_nodes SET latest = ?1 WHERE label_len = ?2 AND label_val = ?3",
        rusqlite::params![latest, len, val],
    )
    .unwrap();
}
