//! akd's [`Database`] on SQLite (the workspace's `rusqlite`).
//!
//! One connection behind a mutex: akd's calls are short point reads and one
//! batch write per publish, and SQLite has one writer anyway. The calls block
//! the calling task while they run; the server should drive the directory
//! from a blocking-friendly task (a later session decides how).
//!
//! Every publish reaches us as one `batch_set` (akd buffers the epoch's
//! records in its transaction and commits them at once); we write it in one
//! SQLite transaction, together with the epoch's root hash, so an epoch is
//! either wholly stored or not at all.

use crate::Config;
use crate::storage::codec::{self, NodeFields};
use akd::errors::StorageError;
use akd::storage::types::{
    DbRecord, KeyData, StorageType, ValueState, ValueStateKey, ValueStateRetrievalFlag,
};
use akd::storage::{Database, DbSetState, Storable};
use akd::tree_node::{NodeKey, TreeNodeWithPreviousValue};
use akd::{AkdLabel, AkdValue, Configuration, NodeLabel};
use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// The schema version this code writes (`PRAGMA user_version`).
const SCHEMA_VERSION: i64 = 1;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS akd_azks (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    latest_epoch INTEGER NOT NULL,
    num_nodes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS akd_tree_nodes (
    label_len INTEGER NOT NULL,
    label_val BLOB NOT NULL,
    last_epoch INTEGER NOT NULL,
    latest BLOB NOT NULL,
    previous BLOB,
    PRIMARY KEY (label_len, label_val)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS akd_tree_nodes_by_epoch ON akd_tree_nodes (last_epoch);
CREATE TABLE IF NOT EXISTS akd_value_states (
    username BLOB NOT NULL,
    epoch INTEGER NOT NULL,
    version INTEGER NOT NULL,
    label_len INTEGER NOT NULL,
    label_val BLOB NOT NULL,
    value BLOB NOT NULL,
    PRIMARY KEY (username, epoch)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS akd_meta (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS akd_epoch_roots (
    epoch INTEGER PRIMARY KEY,
    root_hash BLOB NOT NULL
);
";

/// akd's storage on one SQLite file.
#[derive(Clone)]
pub struct SqliteDatabase {
    conn: Arc<Mutex<Connection>>,
}

impl fmt::Debug for SqliteDatabase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteDatabase").finish_non_exhaustive()
    }
}

impl SqliteDatabase {
    /// Opens (creating if needed) the directory's tables in the SQLite file at `path`.
    pub fn open(path: &Path) -> Result<Self, rusqlite::Error> {
        Self::init(Connection::open(path)?)
    }

    /// An in-memory database, for tests and for auditors that rebuild nothing.
    pub fn open_in_memory() -> Result<Self, rusqlite::Error> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, rusqlite::Error> {
        // WAL + FULL: a publish that returned is on disk (DESIGN.md's durability contract).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if version > SCHEMA_VERSION {
            return Err(rusqlite::Error::InvalidParameterName(format!(
                "directory schema version {version} is newer than this build understands ({SCHEMA_VERSION})"
            )));
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Connection>, StorageError> {
        self.conn
            .lock()
            .map_err(|_| StorageError::Connection("directory database lock poisoned".into()))
    }

    /// The root hash published for `epoch`, if that epoch exists.
    pub fn epoch_root(&self, epoch: u64) -> Result<Option<[u8; 32]>, StorageError> {
        let conn = self.lock()?;
        let root: Option<Vec<u8>> = conn
            .query_row(
                "SELECT root_hash FROM akd_epoch_roots WHERE epoch = ?1",
                params![to_sql_u64(epoch)?],
                |r| r.get(0),
            )
            .optional()
            .map_err(sql)?;
        root.map(|bytes| digest(&bytes)).transpose()
    }

    /// Records the directory's VRF public key on first use; afterwards
    /// returns whether `public_key` is the recorded one. (Opening with a
    /// different VRF secret would silently hide every existing account.)
    pub fn bind_vrf_public_key(&self, public_key: &[u8; 32]) -> Result<bool, StorageError> {
        let conn = self.lock()?;
        conn.execute(
            "INSERT INTO akd_meta (name, value) VALUES ('vrf_public_key', ?1)
             ON CONFLICT (name) DO NOTHING",
            params![&public_key[..]],
        )
        .map_err(sql)?;
        let stored: Vec<u8> = conn
            .query_row(
                "SELECT value FROM akd_meta WHERE name = 'vrf_public_key'",
                [],
                |r| r.get(0),
            )
            .map_err(sql)?;
        Ok(stored == public_key)
    }

    /// Runs `f` on the raw connection. For tests that tamper with stored rows
    /// and for inspecting what is published; not for normal operation.
    pub fn with_connection<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StorageError> {
        let conn = self.lock()?;
        f(&conn).map_err(sql)
    }
}

fn sql(e: rusqlite::Error) -> StorageError {
    match e {
        rusqlite::Error::QueryReturnedNoRows => StorageError::NotFound("no such row".into()),
        other => StorageError::Other(format!("sqlite: {other}")),
    }
}

fn to_sql_u64(v: u64) -> Result<i64, StorageError> {
    i64::try_from(v).map_err(|_| StorageError::Other(format!("{v} does not fit SQLite's INTEGER")))
}

fn from_sql_u64(v: i64) -> Result<u64, StorageError> {
    u64::try_from(v).map_err(|_| StorageError::Other(format!("negative stored integer {v}")))
}

fn digest(bytes: &[u8]) -> Result<[u8; 32], StorageError> {
    bytes
        .try_into()
        .map_err(|_| StorageError::Other("stored hash is not 32 bytes".into()))
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Other(format!("stored {what} is malformed"))
}

fn write_record(tx: &Transaction<'_>, record: &DbRecord) -> Result<(), StorageError> {
    match record {
        DbRecord::Azks(azks) => {
            let (epoch, nodes) = (to_sql_u64(azks.latest_epoch)?, to_sql_u64(azks.num_nodes)?);
            tx.prepare_cached(
                "INSERT INTO akd_azks (id, latest_epoch, num_nodes) VALUES (1, ?1, ?2)
                 ON CONFLICT (id) DO UPDATE SET latest_epoch = excluded.latest_epoch,
                                                num_nodes = excluded.num_nodes",
            )
            .and_then(|mut s| s.execute(params![epoch, nodes]))
            .map_err(sql)?;
        }
        DbRecord::TreeNode(node) => {
            let last_epoch = to_sql_u64(node.latest_node.last_epoch)?;
            let previous = node.previous_node.as_ref().map(codec::encode_node);
            tx.prepare_cached(
                "INSERT OR REPLACE INTO akd_tree_nodes
                 (label_len, label_val, last_epoch, latest, previous) VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    node.label.label_len,
                    &node.label.label_val[..],
                    last_epoch,
                    codec::encode_node(&node.latest_node),
                    previous,
                ])
            })
            .map_err(sql)?;
        }
        DbRecord::ValueState(state) => {
            let (epoch, version) = (to_sql_u64(state.epoch)?, to_sql_u64(state.version)?);
            tx.prepare_cached(
                "INSERT OR REPLACE INTO akd_value_states
                 (username, epoch, version, label_len, label_val, value)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    &state.username.0,
                    epoch,
                    version,
                    state.label.label_len,
                    &state.label.label_val[..],
                    &state.value.0,
                ])
            })
            .map_err(sql)?;
        }
    }
    Ok(())
}

/// Records the root hash of the epoch the azks record just moved to.
/// An epoch's root is written once; a different root for a stored epoch is refused.
fn record_epoch_root(tx: &Transaction<'_>, epoch: u64) -> Result<(), StorageError> {
    let root = read_node(tx, &NodeLabel::root())?
        .ok_or_else(|| StorageError::Other("azks written without a root node".into()))?;
    let root_hash = Config::compute_root_hash_from_val(&root.latest_node.hash);
    let epoch = to_sql_u64(epoch)?;
    let existing: Option<Vec<u8>> = tx
        .query_row(
            "SELECT root_hash FROM akd_epoch_roots WHERE epoch = ?1",
            params![epoch],
            |r| r.get(0),
        )
        .optional()
        .map_err(sql)?;
    match existing {
        Some(stored) if stored == root_hash => Ok(()),
        Some(_) => Err(StorageError::Transaction(format!(
            "epoch {epoch} already has a different root hash"
        ))),
        None => tx
            .execute(
                "INSERT INTO akd_epoch_roots (epoch, root_hash) VALUES (?1, ?2)",
                params![epoch, &root_hash[..]],
            )
            .map(|_| ())
            .map_err(sql),
    }
}

fn build_node(label: NodeLabel, latest: &NodeFields, previous: Option<&NodeFields>) -> DbRecord {
    DbRecord::TreeNode(DbRecord::build_tree_node_with_previous_value(
        label.label_val,
        label.label_len,
        latest.last_epoch,
        latest.min_descendant_epoch,
        latest.parent.label_val,
        latest.parent.label_len,
        latest.node_type,
        latest.left,
        latest.right,
        latest.hash,
        previous.map(|p| p.last_epoch),
        previous.map(|p| p.min_descendant_epoch),
        previous.map(|p| p.parent.label_val),
        previous.map(|p| p.parent.label_len),
        previous.map(|p| p.node_type),
        previous.and_then(|p| p.left),
        previous.and_then(|p| p.right),
        previous.map(|p| p.hash),
    ))
}

fn read_node(
    conn: &Connection,
    label: &NodeLabel,
) -> Result<Option<TreeNodeWithPreviousValue>, StorageError> {
    let row: Option<(Vec<u8>, Option<Vec<u8>>)> = conn
        .prepare_cached(
            "SELECT latest, previous FROM akd_tree_nodes WHERE label_len = ?1 AND label_val = ?2",
        )
        .and_then(|mut s| {
            s.query_row(params![label.label_len, &label.label_val[..]], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()
        })
        .map_err(sql)?;
    let Some((latest, previous)) = row else {
        return Ok(None);
    };
    let latest = codec::decode_node(&latest).ok_or_else(|| corrupt("tree node"))?;
    let previous = match previous {
        Some(bytes) => Some(codec::decode_node(&bytes).ok_or_else(|| corrupt("tree node"))?),
        None => None,
    };
    match build_node(*label, &latest, previous.as_ref()) {
        DbRecord::TreeNode(node) => Ok(Some(node)),
        _ => Err(corrupt("tree node")),
    }
}

/// One `akd_value_states` row: username, epoch, version, label length, label value, value.
type ValueStateRow = (Vec<u8>, i64, i64, u32, Vec<u8>, Vec<u8>);

const VALUE_STATE_COLUMNS: &str = "username, epoch, version, label_len, label_val, value";

fn value_state_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ValueStateRow> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn to_value_state(
    (username, epoch, version, label_len, label_val, value): ValueStateRow,
) -> Result<ValueState, StorageError> {
    Ok(DbRecord::build_user_state(
        username,
        value,
        from_sql_u64(version)?,
        label_len,
        digest(&label_val)?,
        from_sql_u64(epoch)?,
    ))
}

fn query_value_states(
    conn: &Connection,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<ValueState>, StorageError> {
    let sql_text = format!("SELECT {VALUE_STATE_COLUMNS} FROM akd_value_states WHERE {filter}");
    let mut stmt = conn.prepare_cached(&sql_text).map_err(sql)?;
    let rows = stmt
        .query_map(args, value_state_row)
        .map_err(sql)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(sql)?;
    rows.into_iter().map(to_value_state).collect()
}

impl SqliteDatabase {
    fn get_one<St: Storable>(
        conn: &Connection,
        id: &St::StorageKey,
    ) -> Result<DbRecord, StorageError> {
        let bin = St::get_full_binary_key_id(id);
        match St::data_type() {
            StorageType::Azks => {
                let row: Option<(i64, i64)> = conn
                    .query_row(
                        "SELECT latest_epoch, num_nodes FROM akd_azks WHERE id = 1",
                        [],
                        |r| Ok((r.get(0)?, r.get(1)?)),
                    )
                    .optional()
                    .map_err(sql)?;
                let (epoch, nodes) = row.ok_or_else(|| StorageError::NotFound("azks".into()))?;
                Ok(DbRecord::Azks(DbRecord::build_azks(
                    from_sql_u64(epoch)?,
                    from_sql_u64(nodes)?,
                )))
            }
            StorageType::TreeNode => {
                let NodeKey(label) = TreeNodeWithPreviousValue::key_from_full_binary(&bin)
                    .map_err(StorageError::Other)?;
                read_node(conn, &label)?
                    .map(DbRecord::TreeNode)
                    .ok_or_else(|| StorageError::NotFound(format!("tree node {label:?}")))
            }
            StorageType::ValueState => {
                let ValueStateKey(username, epoch) =
                    ValueState::key_from_full_binary(&bin).map_err(StorageError::Other)?;
                let epoch = to_sql_u64(epoch)?;
                query_value_states(conn, "username = ?1 AND epoch = ?2", &[&username, &epoch])?
                    .pop()
                    .map(DbRecord::ValueState)
                    .ok_or_else(|| StorageError::NotFound("value state".into()))
            }
        }
    }
}

#[async_trait]
impl Database for SqliteDatabase {
    async fn set(&self, record: DbRecord) -> Result<(), StorageError> {
        self.batch_set(vec![record], DbSetState::General).await
    }

    async fn batch_set(
        &self,
        records: Vec<DbRecord>,
        _state: DbSetState,
    ) -> Result<(), StorageError> {
        let mut conn = self.lock()?;
        let tx = conn
            .transaction()
            .map_err(|e| StorageError::Transaction(e.to_string()))?;
        let mut new_epoch = None;
        for record in &records {
            write_record(&tx, record)?;
            if let DbRecord::Azks(azks) = record {
                new_epoch = Some(azks.latest_epoch);
            }
        }
        if let Some(epoch) = new_epoch {
            record_epoch_root(&tx, epoch)?;
        }
        tx.commit()
            .map_err(|e| StorageError::Transaction(e.to_string()))
    }

    async fn get<St: Storable>(&self, id: &St::StorageKey) -> Result<DbRecord, StorageError> {
        let conn = self.lock()?;
        Self::get_one::<St>(&conn, id)
    }

    async fn batch_get<St: Storable>(
        &self,
        ids: &[St::StorageKey],
    ) -> Result<Vec<DbRecord>, StorageError> {
        let conn = self.lock()?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match Self::get_one::<St>(&conn, id) {
                Ok(record) => out.push(record),
                // akd's contract: a batch get leaves out what is not there.
                Err(StorageError::NotFound(_)) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(out)
    }

    async fn get_user_data(&self, username: &AkdLabel) -> Result<KeyData, StorageError> {
        let conn = self.lock()?;
        let states = query_value_states(&conn, "username = ?1 ORDER BY epoch ASC", &[&username.0])?;
        if states.is_empty() {
            return Err(StorageError::NotFound("no value states for label".into()));
        }
        Ok(KeyData { states })
    }

    async fn get_user_state(
        &self,
        username: &AkdLabel,
        flag: ValueStateRetrievalFlag,
    ) -> Result<ValueState, StorageError> {
        let conn = self.lock()?;
        let user = &username.0;
        let found = match flag {
            ValueStateRetrievalFlag::SpecificVersion(v) => {
                let v = to_sql_u64(v)?;
                query_value_states(&conn, "username = ?1 AND version = ?2 LIMIT 1", &[user, &v])?
            }
            ValueStateRetrievalFlag::SpecificEpoch(e) => {
                let e = to_sql_u64(e)?;
                query_value_states(&conn, "username = ?1 AND epoch = ?2", &[user, &e])?
            }
            ValueStateRetrievalFlag::LeqEpoch(e) => {
                let e = to_sql_u64(e)?;
                query_value_states(
                    &conn,
                    "username = ?1 AND epoch <= ?2 ORDER BY epoch DESC LIMIT 1",
                    &[user, &e],
                )?
            }
            ValueStateRetrievalFlag::MaxEpoch => {
                query_value_states(&conn, "username = ?1 ORDER BY epoch DESC LIMIT 1", &[user])?
            }
            ValueStateRetrievalFlag::MinEpoch => {
                query_value_states(&conn, "username = ?1 ORDER BY epoch ASC LIMIT 1", &[user])?
            }
        };
        found
            .into_iter()
            .next()
            .ok_or_else(|| StorageError::NotFound(format!("value state ({flag:?})")))
    }

    async fn get_user_state_versions(
        &self,
        usernames: &[AkdLabel],
        flag: ValueStateRetrievalFlag,
    ) -> Result<HashMap<AkdLabel, (u64, AkdValue)>, StorageError> {
        let mut map = HashMap::with_capacity(usernames.len());
        for username in usernames {
            match self.get_user_state(username, flag).await {
                Ok(state) => {
                    map.insert(state.username, (state.version, state.value));
                }
                Err(StorageError::NotFound(_)) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(map)
    }
}
