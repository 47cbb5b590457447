//! Every column the server stores is in the published inventory
//! (docs/SERVER_DATA.md), and every inventory row still exists, on SQLite
//! and (with `SOTTO_TEST_POSTGRES`) on PostgreSQL.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod inventory_doc;

use std::collections::BTreeSet;

use sotto_server::store::SqliteStore;

/// `(table, column)` for every column of every table in a fresh database.
async fn schema() -> BTreeSet<(String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_owned();
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(&path))
        .await
        .unwrap()
        .unwrap();
    store.close().await;
    let mut columns = BTreeSet::new();
    // The key directory keeps its own file beside the database.
    let directory = dir
        .path()
        .join(sotto_server::key_directory::DIRECTORY_FILE_NAME);
    drop(sotto_directory::storage::sqlite::SqliteDatabase::open(&directory).unwrap());
    for file in [dir.path().join("sotto.db"), directory] {
        columns.extend(file_columns(&file));
    }
    assert!(
        columns.iter().any(|(t, _)| t == "akd_tree_nodes"),
        "the key directory's tables are missing"
    );
    columns
}

/// `(table, column)` for every column of every table in one SQLite file.
fn file_columns(path: &std::path::Path) -> BTreeSet<(String, String)> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(tables.len() >= 5, "schema looks empty: {tables:?}");
    let mut columns = BTreeSet::new();
    for table in tables {
        let names: Vec<String> = conn
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(!names.is_empty(), "table {table} has no columns?");
        for name in names {
            columns.insert((table.clone(), name));
        }
    }
    columns
}

#[tokio::test]
async fn every_stored_column_is_in_the_inventory_and_nothing_else() {
    let stored = schema().await;
    let rows = inventory_doc::rows();
    let mut listed = BTreeSet::new();
    for row in &rows {
        assert!(
            listed.insert((row.table.clone(), row.column.clone())),
            "docs/SERVER_DATA.md lists {}.{} twice",
            row.table,
            row.column
        );
    }
    let missing: Vec<String> = stored
        .difference(&listed)
        .map(|(t, c)| format!("{t}.{c}"))
        .collect();
    assert!(
        missing.is_empty(),
        "stored but not in docs/SERVER_DATA.md (add a row saying what it holds, why, how long, \
         and whether a legal export includes it): {}",
        missing.join(", ")
    );
    let stale: Vec<String> = listed
        .difference(&stored)
        .map(|(t, c)| format!("{t}.{c}"))
        .collect();
    assert!(
        stale.is_empty(),
        "docs/SERVER_DATA.md lists columns the schema no longer has: {}",
        stale.join(", ")
    );
}

#[test]
fn inventory_promises_the_core_export_fields() {
    let paths = inventory_doc::export_paths();
    for path in [
        "account.username",
        "account.identity_key",
        "account.created_day",
        "account.devices[].device_id",
        "account.devices[].last_seen_day",
    ] {
        assert!(paths.contains(path), "inventory lost export field {path}");
    }
}

/// The PostgreSQL schema holds exactly the inventory's columns plus its
/// "PostgreSQL only" rows.
#[tokio::test]
async fn postgres_schema_is_the_inventory() {
    let Some(db) =
        sotto_testkit::postgres::TestDatabase::create("postgres_schema_is_the_inventory").await
    else {
        return;
    };
    let store = sotto_server::store::PostgresStore::open(db.url())
        .await
        .unwrap();
    store.close().await;
    let client = db.client().await;
    let stored: BTreeSet<(String, String)> = client
        .query(
            "SELECT table_name::text, column_name::text FROM information_schema.columns \
             WHERE table_schema = $1",
            &[&db.schema()],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // The key directory (`akd_*`) has its own SQLite file on either backend.
    let mut expected: BTreeSet<(String, String)> = inventory_doc::rows()
        .into_iter()
        .filter(|r| !r.table.starts_with("akd_"))
        .map(|r| (r.table, r.column))
        .collect();
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../docs/SERVER_DATA.md"
    ))
    .unwrap();
    for line in doc.lines() {
        let Some(rest) = line.strip_prefix("| PostgreSQL only: `") else {
            continue;
        };
        let cells: Vec<&str> = rest.split('|').map(str::trim).collect();
        let table = cells[0].trim_end_matches('`');
        let column = cells[1].trim_matches('`');
        expected.insert((table.to_owned(), column.to_owned()));
    }
    assert_eq!(
        stored, expected,
        "the PostgreSQL schema and docs/SERVER_DATA.md differ"
    );
}
