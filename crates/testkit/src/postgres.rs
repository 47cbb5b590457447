//! A PostgreSQL schema of its own for one test, on the server that
//! `SOTTO_TEST_POSTGRES` names (a `postgres://` URL or libpq's `key=value`
//! form, e.g. `host=127.0.0.1 user=postgres dbname=test`). Each
//! [`TestDatabase`] is a fresh schema with a random name, dropped when it
//! goes out of scope, so parallel tests and runs never collide. Without the
//! variable, [`TestDatabase::create`] says the test is skipped and returns
//! `None`.

use std::fmt::Write as _;

/// The variable naming the test server.
pub const ENV: &str = "SOTTO_TEST_POSTGRES";

/// One test's schema.
#[derive(Debug)]
pub struct TestDatabase {
    /// Connects to the server (no schema chosen).
    admin: tokio_postgres::Config,
    schema: String,
    url: String,
}

/// The server `SOTTO_TEST_POSTGRES` names, if it is set.
pub fn configured() -> Option<tokio_postgres::Config> {
    let value = std::env::var(ENV).ok().filter(|v| !v.trim().is_empty())?;
    Some(
        value
            .parse()
            .unwrap_or_else(|e| panic!("{ENV} is not a PostgreSQL address: {e}")),
    )
}

/// Prints (once per test binary and name) that `test` did not run against
/// PostgreSQL.
pub fn skipped(test: &str) {
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !said.iter().any(|t| t == test) {
        said.push(test.to_owned());
        eprintln!("{test}: skipped against PostgreSQL ({ENV} is not set)");
    }
}

async fn connect(config: &tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to the PostgreSQL server {ENV} names: {e}"));
    tokio::spawn(connection);
    client
}

/// Percent-encodes a URL component.
fn encode(value: &str) -> String {
    let mut out = String::new();
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

impl TestDatabase {
    /// A fresh, empty schema, or `None` (printing that `test` is skipped)
    /// when `SOTTO_TEST_POSTGRES` is not set.
    pub async fn create(test: &str) -> Option<Self> {
        let Some(admin) = configured() else {
            skipped(test);
            return None;
        };
        let schema = format!("sotto_test_{:016x}", rand::random::<u64>());
        connect(&admin)
            .await
            .batch_execute(&format!("CREATE SCHEMA {schema}"))
            .await
            .expect("create the test schema");
        let url = Self::url_for(&admin, &schema);
        Some(Self { admin, schema, url })
    }

    /// A `postgres://` URL (what `sotto-server --store` takes) whose
    /// connections use only this schema.
    fn url_for(admin: &tokio_postgres::Config, schema: &str) -> String {
        let host = match admin.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => encode(h),
            Some(tokio_postgres::config::Host::Unix(p)) => encode(&p.display().to_string()),
            None => "localhost".into(),
        };
        let port = admin.get_ports().first().copied().unwrap_or(5432);
        let user = admin.get_user().map(encode).unwrap_or_default();
        let password = admin
            .get_password()
            .map(|p| format!(":{}", encode(&String::from_utf8_lossy(p))))
            .unwrap_or_default();
        let dbname = admin.get_dbname().map(encode).unwrap_or_default();
        let options = encode(&format!("-c search_path={schema}"));
        format!("postgres://{user}{password}@{host}:{port}/{dbname}?options={options}")
    }

    /// The URL of this schema, for `sotto-server --store` or
    /// `PostgresStore::open`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The schema's name.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The tables of this schema in which any of `needles` occurs, as
    /// `"table: needle"`: in a text column as it is, in a `bytea` column
    /// as its bytes (PostgreSQL's `t::text` shows those as hex). What
    /// searching the SQLite file's bytes is for the embedded store.
    pub async fn tables_containing(&self, needles: &[&str]) -> Vec<String> {
        let client = self.client().await;
        let tables: Vec<String> = client
            .query(
                "SELECT table_name::text FROM information_schema.tables \
                 WHERE table_schema = $1 ORDER BY 1",
                &[&self.schema],
            )
            .await
            .expect("list the tables")
            .iter()
            .map(|row| row.get(0))
            .collect();
        assert!(!tables.is_empty(), "no tables in {}", self.schema);
        let mut found = Vec::new();
        for table in tables {
            let rows = client
                .query(&format!("SELECT t::text FROM \"{table}\" t"), &[])
                .await
                .expect("read a table");
            for needle in needles {
                let hex: String = needle.bytes().map(|b| format!("{b:02x}")).collect();
                let hit = rows.iter().any(|row| {
                    let text: String = row.get(0);
                    text.contains(needle) || hex_at_byte_boundary(&text, &hex)
                });
                if hit {
                    found.push(format!("{table}: {needle}"));
                }
            }
        }
        found
    }

    /// A client on this schema, for tests that look at the tables.
    pub async fn client(&self) -> tokio_postgres::Client {
        let config: tokio_postgres::Config = self.url.parse().expect("own URL parses");
        connect(&config).await
    }
}

/// Whether `hex` occurs in `text` at an even offset of a run of hex digits
/// (so it spells whole bytes of a `bytea` value, not a shifted nibble).
fn hex_at_byte_boundary(text: &str, hex: &str) -> bool {
    text.match_indices(hex).any(|(at, _)| {
        let run_start = text
            .get(..at)
            .and_then(|before| before.rfind(|c: char| !c.is_ascii_hexdigit()))
            .map_or(0, |i| i + 1);
        // `\x` precedes a bytea value; the run starts after the `x`.
        (at - run_start) % 2 == 0
    })
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin = self.admin.clone();
        let schema = self.schema.clone();
        // A runtime of its own: the test's may be gone or busy.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let (client, connection) = admin
                    .connect(tokio_postgres::NoTls)
                    .await
                    .map_err(std::io::Error::other)?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await
                    .map_err(std::io::Error::other)
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test schema {}: {dropped:?}", self.schema);
        }
    }
}
