//! `sotto-server invite …`, `account …` and `stats`: the operator's
//! bookkeeping. Nothing here reveals content or who talks to whom: invites
//! are listed by hash (codes are never stored), and the statistics are
//! totals.

use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use sotto_server::legal;
use sotto_server::store::{
    AdminStore as _, AnyStore, DISABLED_UNTIL_ENABLED, Store as _, StoreLocation, invite_hash,
    new_invite_code,
};

use crate::block_on;

/// The data directory flag every operator command takes.
#[derive(Debug, clap::Args)]
pub(crate) struct DataDir {
    /// The server's data directory.
    #[arg(
        long = "data",
        env = "SOTTO_DATA",
        default_value = "./sotto-data",
        value_name = "DIR"
    )]
    pub(crate) data: PathBuf,

    /// The server's PostgreSQL database instead of --data's SQLite file.
    #[arg(long, env = "SOTTO_STORE", value_name = "URL", value_parser = crate::postgres_url)]
    pub(crate) store: Option<String>,
}

impl DataDir {
    /// The store these flags name.
    pub(crate) fn location(&self) -> StoreLocation {
        StoreLocation::choose(self.store.as_deref(), &self.data)
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum InviteCommand {
    /// Creates one-time invite codes and prints them, one per line. Only a
    /// hash of each is stored.
    Create {
        /// How many codes.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
        count: u32,
        #[command(flatten)]
        data: DataDir,
    },
    /// Lists invite codes by the first 16 hex digits of their hash (the
    /// codes themselves are not stored), with the day each was created and
    /// used.
    List {
        #[command(flatten)]
        data: DataDir,
    },
    /// Revokes an unused invite code, given as the code itself or as the
    /// hash prefix `invite list` shows.
    Revoke {
        /// The code, or at least 8 hex digits of its hash.
        code: String,
        #[command(flatten)]
        data: DataDir,
    },
}

/// Runs an invite command, printing its result on stdout.
pub(crate) fn invite(command: InviteCommand) -> anyhow::Result<()> {
    match command {
        InviteCommand::Create { count, data } => {
            for code in create_invites(&data, count)? {
                println!("{code}");
            }
        }
        InviteCommand::List { data } => {
            let store = open_read_only(&data)?;
            let invites = block_on(store.invites())??;
            println!("{:<16}  {:<10}  used", "hash", "created");
            for invite in invites {
                let used = invite
                    .used_day
                    .map_or_else(|| "no".to_owned(), crate::legal_cli::date);
                println!(
                    "{:<16}  {:<10}  {used}",
                    &hex::encode(invite.code_hash)[..16],
                    crate::legal_cli::date(invite.created_day),
                );
            }
        }
        InviteCommand::Revoke { code, data } => {
            let store = open_existing(&data)?;
            let hash = match hash_of(&store, &code) {
                Ok(hash) => hash,
                Err(e) => {
                    block_on(store.close())?;
                    return Err(e);
                }
            };
            let revoked = block_on(async {
                let revoked = store.revoke_invite(hash).await;
                store.close().await;
                revoked
            })??;
            if !revoked {
                bail!("that invite was already used or revoked");
            }
            println!("revoked {}", &hex::encode(hash)[..16]);
        }
    }
    Ok(())
}

/// The hash an operator means: the code's, or the one stored hash that
/// starts with these hex digits.
fn hash_of(store: &AnyStore, code: &str) -> anyhow::Result<[u8; 32]> {
    let prefix = code.trim().to_ascii_lowercase();
    let looks_like_prefix = prefix.len() >= 8 && prefix.chars().all(|c| c.is_ascii_hexdigit());
    if !looks_like_prefix {
        return Ok(invite_hash(code.trim()));
    }
    let matching: Vec<[u8; 32]> = block_on(store.invites())??
        .into_iter()
        .map(|i| i.code_hash)
        .filter(|hash| hex::encode(hash).starts_with(&prefix))
        .collect();
    match matching.as_slice() {
        [hash] => Ok(*hash),
        // Not a stored prefix: it may be a code that happens to be hex.
        [] => Ok(invite_hash(code.trim())),
        _ => bail!("{prefix} matches several invites; give more digits"),
    }
}

/// Creates `count` invite codes, stores their hashes, and returns them.
fn create_invites(data: &DataDir, count: u32) -> anyhow::Result<Vec<String>> {
    let store = open_existing(data)?;
    let codes: Vec<String> = (0..count).map(|_| new_invite_code()).collect();
    let hashes = codes.iter().map(|code| invite_hash(code)).collect();
    block_on(async {
        let added = store.add_invites(hashes, crate::legal_cli::today()).await;
        store.close().await;
        added
    })??;
    Ok(codes)
}

fn open_existing(data: &DataDir) -> anyhow::Result<AnyStore> {
    block_on(AnyStore::open_existing(&data.location()))?.context("cannot open the server database")
}

fn open_read_only(data: &DataDir) -> anyhow::Result<AnyStore> {
    block_on(AnyStore::open_read_only(&data.location()))?.context("cannot open the server database")
}

#[derive(Debug, Subcommand)]
pub(crate) enum AccountCommand {
    /// Disables an account: its devices are refused at login ("this
    /// account is disabled by the server operator") and its name stays
    /// taken. Devices connected now keep their connection until it drops
    /// or the server restarts. Counted in the transparency report (kind
    /// `disable`, without the name).
    #[command(
        after_help = "Example: sotto-server account disable mallory --until 7d --request-id abuse-42"
    )]
    Disable {
        /// The account.
        #[arg(value_name = "USERNAME")]
        username: String,
        /// Suspend for this long (`7d`, `2w`: whole days) instead of until
        /// `account enable`.
        #[arg(long, value_name = "DURATION", value_parser = parse_days)]
        until: Option<u64>,
        /// Your reference for the action (published in the report).
        #[arg(long, value_name = "ID", default_value = "operator")]
        request_id: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// Enables a disabled account again. Counted in the transparency
    /// report (kind `enable`).
    Enable {
        /// The account.
        #[arg(value_name = "USERNAME")]
        username: String,
        /// Your reference for the action (published in the report).
        #[arg(long, value_name = "ID", default_value = "operator")]
        request_id: String,
        #[command(flatten)]
        data: DataDir,
    },
}

/// Days in a duration written `Nd` or `Nw` (N ≥ 1).
fn parse_days(text: &str) -> Result<u64, String> {
    let bad = || format!("{text:?} is not a duration like 7d or 2w");
    let (number, unit) = text.split_at(text.len().saturating_sub(1));
    let count: u64 = number.parse().map_err(|_| bad())?;
    let days = match unit {
        "d" => count,
        "w" => count.checked_mul(7).ok_or_else(bad)?,
        _ => return Err(bad()),
    };
    if days == 0 || days > 36_500 {
        return Err(format!("{text:?}: a suspension lasts 1 day to 100 years"));
    }
    Ok(days)
}

/// Runs an account command, printing what it did on stdout.
pub(crate) fn account(command: AccountCommand) -> anyhow::Result<()> {
    let today = crate::legal_cli::today();
    let (username, until, request_id, data) = match command {
        AccountCommand::Disable {
            username,
            until,
            request_id,
            data,
        } => {
            let until = until.map_or(DISABLED_UNTIL_ENABLED, |days| today.saturating_add(days));
            (username, Some(until), request_id, data)
        }
        AccountCommand::Enable {
            username,
            request_id,
            data,
        } => (username, None, request_id, data),
    };
    let store = open_existing(&data)?;
    let entry = block_on(async {
        let set = legal::set_account_disabled(&store, &username, until, &request_id, today).await;
        store.close().await;
        set
    })??;
    match until {
        Some(DISABLED_UNTIL_ENABLED) => println!("disabled {username} until enabled"),
        Some(day) => println!("disabled {username} until {}", crate::legal_cli::date(day)),
        None => println!("enabled {username}"),
    }
    println!(
        "recorded as transparency report entry {} (kind {}, without the name)",
        entry.seq, entry.kind
    );
    Ok(())
}

/// `sotto-server stats`: totals only, read without disturbing a running
/// server.
pub(crate) fn stats(data: &DataDir) -> anyhow::Result<()> {
    let store = open_read_only(data)?;
    let (stats, queued_bytes) = block_on(async {
        let stats = store.stats().await?;
        let bytes = store.queued_bytes().await?;
        Ok::<_, sotto_server::store::StoreError>((stats, bytes))
    })??;
    let file_size = |name: &str| std::fs::metadata(data.data.join(name)).map_or(0, |m| m.len());
    println!("accounts:         {}", stats.accounts);
    println!("active devices:   {}", stats.devices);
    println!("queued entries:   {}", stats.mailbox_entries);
    println!("queued payloads:  {}", stats.payloads);
    println!("queued bytes:     {queued_bytes}");
    match data.location() {
        StoreLocation::Sqlite(_) => {
            let database = file_size("sotto.db") + file_size("sotto.db-wal");
            println!("database bytes:   {database} (sotto.db and its write-ahead log)");
        }
        // PostgreSQL's own statistics say how large its database is.
        StoreLocation::Postgres(_) => {}
    }
    Ok(())
}
