//! The `sotto-server` binary: parses flags, starts the server, and shuts it
//! down gracefully on Ctrl-C or SIGTERM; or, with `audit`, checks the
//! transparency log of a data directory.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use sotto_server::config_file::{self, FileConfig};
use sotto_server::{RegistrationPolicy, Server, ServerConfig};

mod admin_cli;
mod invite_link_cli;
mod legal_cli;
mod moderation_cli;

/// Sotto delivery server: relays end-to-end encrypted (MLS) messages
/// between devices. It stores only ciphertext, public keys, and day-granular
/// creation / last-seen dates; it never stores IP addresses, logs them
/// only with --log-connections, and never sees message content.
#[derive(Debug, Parser)]
#[command(
    name = "sotto-server",
    version,
    about,
    long_about = None,
    after_help = "Example: sotto-server --listen 127.0.0.1:8420 --data ./sotto-data\n\
                  Logs go to stderr; set RUST_LOG=debug for more. Stop with Ctrl-C or SIGTERM."
)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,

    /// Read settings from this TOML file (`sotto-server config example`
    /// prints one with every key). Flags and SOTTO_* variables override it.
    #[arg(long, env = "SOTTO_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:8420]. Use 0.0.0.0:PORT to
    /// accept connections from other machines (with --tls-cert and
    /// --tls-key, or a TLS proxy in front), or port 0 for any free port.
    #[arg(long, env = "SOTTO_LISTEN", value_name = "ADDR")]
    listen: Option<SocketAddr>,

    /// Directory for the database (sotto.db); created if missing
    /// [default: ./sotto-data].
    #[arg(long = "data", env = "SOTTO_DATA", value_name = "DIR")]
    data: Option<PathBuf>,

    /// Keep the data in PostgreSQL instead of --data's SQLite file, e.g.
    /// postgres://sotto@db.example.org/sotto (the schema is created or
    /// upgraded at start; see also `sotto-server migrate`).
    #[arg(long, env = "SOTTO_STORE", value_name = "URL", value_parser = postgres_url)]
    store: Option<String>,

    /// With several nodes on one --store database: the NATS server that
    /// carries wake-ups, typing indicators and device links between them,
    /// e.g. nats://127.0.0.1:4222. The server starts and serves without
    /// it (delivery across nodes then waits for sync) and keeps retrying.
    #[arg(long, env = "SOTTO_BUS", value_name = "URL", value_parser = bus_url)]
    bus: Option<String>,

    /// What every NATS subject of this deployment starts with [default:
    /// sotto]. Give each deployment sharing one NATS server its own (all
    /// nodes of one deployment the same), or they wake each other's
    /// devices.
    #[arg(long, env = "SOTTO_BUS_PREFIX", value_name = "PREFIX", value_parser = bus_prefix)]
    bus_prefix: Option<String>,

    /// Days an undelivered message is kept before it is deleted [default: 30].
    #[arg(long, env = "SOTTO_RETENTION_DAYS", value_name = "N", value_parser = clap::value_parser!(u64).range(1..=3650))]
    retention_days: Option<u64>,

    /// Set SO_REUSEPORT on the listening socket, so several sotto-server
    /// processes (on the same data directory) can share one port.
    #[arg(long)]
    reuse_port: bool,

    /// Log the IP address and port of every connection as it opens and
    /// closes (stderr, INFO), for operators legally required to keep such
    /// logs. Off by default: then no IP address is logged. Addresses are
    /// never written to the database.
    #[arg(long)]
    log_connections: bool,

    /// Who may create accounts: anyone (open), holders of a one-time code
    /// from `sotto-server invite create` (invite), or nobody (closed)
    /// [default: open].
    #[arg(long, env = "SOTTO_REGISTRATION", value_enum)]
    registration: Option<RegistrationPolicy>,

    /// A web origin allowed to connect (for the browser client), e.g.
    /// https://chat.example.org; repeat for several. Native clients and the
    /// server's own origin are always allowed.
    #[arg(long = "allowed-origin", value_name = "ORIGIN")]
    allowed_origins: Vec<String>,

    /// Turn off every rate limit and per-address cap (for benchmarks, or a
    /// server only trusted clients can reach). Not for a public server.
    #[arg(long)]
    no_rate_limits: bool,

    /// Quota on the database size, in bytes: once it is reached, sends are
    /// refused ("storage is full") instead of acknowledged, until space is
    /// freed or the quota raised. Default: no quota.
    #[arg(long, env = "SOTTO_MAX_DB_BYTES", value_name = "BYTES")]
    max_db_bytes: Option<u64>,

    /// Largest encrypted attachment a client may upload, in bytes
    /// [default: 104857600, 100 MiB].
    #[arg(long, env = "SOTTO_MAX_BLOB_BYTES", value_name = "BYTES")]
    max_blob_bytes: Option<u64>,

    /// Seconds after a commit during which messages sent with the previous
    /// epoch's capability are still accepted (they were sent just before
    /// the commit). A removed member can post for at most this long
    /// [default: 60].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(0..=3600))]
    previous_epoch_grace_secs: Option<u64>,

    /// Seconds between signed key-directory epochs when nothing changes
    /// (changes are published within a second) [default: 300].
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    directory_epoch_interval: Option<u64>,

    /// Invite a third-party auditor: its public key (64 hex digits, from
    /// `sotto auditor-key`). Repeat for several. Countersignatures of the
    /// directory's epochs are stored from invited auditors only (8 each).
    #[arg(long = "auditor", value_name = "HEX", value_parser = sotto_server::config_file::parse_auditor_key)]
    auditors: Vec<[u8; 32]>,

    /// A push service whose endpoints browsers may register for Web Push
    /// (an empty wake-up, no content): a host name or *.domain; repeat for
    /// several. Replaces the default list (fcm.googleapis.com,
    /// updates.push.services.mozilla.com, *.push.apple.com,
    /// *.notify.windows.com).
    #[arg(long = "push-service", value_name = "HOST")]
    push_services: Vec<String>,

    /// Turn Web Push off: no device may register a push endpoint.
    #[arg(long, conflicts_with = "push_services")]
    no_web_push: bool,

    /// Who browser push services may contact about this server's pushes
    /// (VAPID "sub"): a mailto: or https: URI [default: https:// and the
    /// first --server-name].
    #[arg(long, env = "SOTTO_PUSH_CONTACT", value_name = "URI")]
    push_contact: Option<String>,

    /// Most active devices one account may have (each is a key-log entry
    /// every contact downloads) [default: 16].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=1000))]
    max_devices_per_account: Option<u64>,

    /// Serve TLS (https:// and wss://) with this certificate chain (PEM,
    /// server certificate first). Re-read when the file changes or on
    /// SIGHUP, without dropping open connections.
    #[arg(
        long,
        env = "SOTTO_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    tls_cert: Option<PathBuf>,

    /// A host name this server answers to (e.g. chat.example.org), when
    /// clients reach it by a name its TLS certificate does not list (a
    /// proxy in front, say); repeat for several. Requests for other names
    /// are refused, against DNS rebinding. IP addresses, localhost and the
    /// certificate's names are always accepted.
    #[arg(long = "server-name", env = "SOTTO_SERVER_NAME", value_name = "NAME")]
    server_names: Vec<String>,

    /// Serve Prometheus metrics (GET /metrics) on this address, e.g.
    /// 127.0.0.1:9420: aggregates only, no account, device, group or
    /// address. Keep it off the internet. Default: no metrics.
    #[arg(long, env = "SOTTO_METRICS_LISTEN", value_name = "ADDR")]
    metrics_listen: Option<SocketAddr>,

    /// Log format on stderr: human-readable text, or one JSON object per
    /// line for a log collector. Either way logs hold no identifier
    /// docs/SERVER_DATA.md does not list (addresses only with
    /// --log-connections).
    #[arg(long, env = "SOTTO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// The private key (PEM) of --tls-cert.
    #[arg(
        long,
        env = "SOTTO_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    tls_key: Option<PathBuf>,
}

/// How `serve` writes its log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

impl Args {
    /// The server configuration: the file's keys (if --config), then every
    /// flag or variable given on top.
    fn server_config(&self) -> anyhow::Result<ServerConfig> {
        let file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let mut config = file.to_server_config();
        if let Some(listen) = self.listen {
            config.listen = listen;
        }
        if let Some(data) = &self.data {
            config.data_dir.clone_from(data);
        }
        if let Some(store) = &self.store {
            config.store = Some(store.clone());
        }
        if let Some(bus) = &self.bus {
            config.bus = Some(bus.clone());
        }
        if let Some(prefix) = &self.bus_prefix {
            config.bus_prefix.clone_from(prefix);
        }
        if let Some(days) = self.retention_days {
            config.retention = Duration::from_secs(days.saturating_mul(24 * 60 * 60));
        }
        config.reuse_port |= self.reuse_port;
        config.log_connections |= self.log_connections;
        if let Some(policy) = self.registration {
            config.registration = policy;
        }
        if !self.allowed_origins.is_empty() {
            config.allowed_origins.clone_from(&self.allowed_origins);
        }
        if self.no_rate_limits {
            config.limits.lift_rate_limits();
        }
        if self.max_db_bytes.is_some() {
            config.max_db_bytes = self.max_db_bytes;
        }
        if let Some(bytes) = self.max_blob_bytes {
            config.blobs.max_blob_bytes = bytes;
        }
        if let Some(secs) = self.previous_epoch_grace_secs {
            config.previous_epoch_grace = Duration::from_secs(secs);
        }
        if let Some(secs) = self.directory_epoch_interval {
            config.directory_epoch_interval = Duration::from_secs(secs);
        }
        if !self.auditors.is_empty() {
            config.auditors.clone_from(&self.auditors);
        }
        if !self.push_services.is_empty() {
            config.push.services.clone_from(&self.push_services);
        }
        if self.no_web_push {
            config.push.services.clear();
        }
        if let Some(contact) = &self.push_contact {
            config.push.contact = Some(contact.clone());
        }
        if let Some(n) = self.max_devices_per_account {
            config.limits.max_devices_per_account = usize::try_from(n).unwrap_or(usize::MAX);
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            config.tls = Some(sotto_server::tls::TlsConfig::new(cert.clone(), key.clone()));
        }
        if !self.server_names.is_empty() {
            config.server_names.clone_from(&self.server_names);
        }
        if self.metrics_listen.is_some() {
            config.metrics_listen = self.metrics_listen;
        }
        Ok(config)
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checks a data directory, read-only: that every key-directory epoch
    /// only appended to the one before (naming no account), and the
    /// transparency log: every entry's signature, every account's history,
    /// the tree, and that the server's tables match the log. Exits 1 naming
    /// the first bad epoch or entry.
    #[command(after_help = "Example: sotto-server audit --data ./sotto-data\n\
                      The server may keep running while this reads.")]
    Audit {
        /// The data directory (or --store database) to audit.
        #[command(flatten)]
        data: admin_cli::DataDir,

        /// The log key clients were shown (64 hex digits); the audit fails if
        /// the stored key differs.
        #[arg(long, value_name = "HEX")]
        log_key: Option<String>,
    },
    /// Creates or upgrades the PostgreSQL schema (servers also do it at
    /// start; run this first when several nodes share the database, or to
    /// upgrade before starting a new version).
    #[command(
        after_help = "Example: sotto-server migrate --store postgres://sotto@db.example.org/sotto"
    )]
    Migrate {
        /// The PostgreSQL database.
        #[arg(long, env = "SOTTO_STORE", value_name = "URL", value_parser = postgres_url)]
        store: String,
    },
    /// Court orders: export what the server holds about an account (signed),
    /// the signed transparency report of such requests, and the warrant
    /// canary. See docs/SERVER_DATA.md.
    Legal {
        #[command(subcommand)]
        command: legal_cli::LegalCommand,
    },
    /// The configuration file: `config example` prints one with every key
    /// at its default, commented.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Checks a configuration file: exits 1 naming the line and key of the
    /// first mistake.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Invite codes for `--registration invite`: create, list, revoke.
    Invite {
        #[command(subcommand)]
        command: admin_cli::InviteCommand,
    },
    /// Disable an account (its devices may not log in) or enable it again;
    /// each action is counted in the signed transparency report.
    Account {
        #[command(subcommand)]
        command: admin_cli::AccountCommand,
    },
    /// Abuse reports from users (`sotto report`): list, verify and show,
    /// resolve (optionally disabling the sender's account).
    Moderation {
        #[command(subcommand)]
        command: moderation_cli::ModerationCommand,
    },
    /// Invite links of public groups: close every link of a group (counted
    /// in the signed transparency report).
    InviteLink {
        #[command(subcommand)]
        command: invite_link_cli::InviteLinkCommand,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish,
    /// powershell).
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff): `sotto-server man | man -l -`.
    Man,
    /// Totals: accounts, devices, queued messages and bytes, database size.
    /// Read-only; the server may keep running.
    Stats {
        #[command(flatten)]
        data: admin_cli::DataDir,
    },
    /// Writes a consistent copy of the database to a new file while the
    /// server runs. It holds the server's signing keys unless
    /// --exclude-keys: keep it as safe as the keys.
    #[command(
        after_help = "Example: sotto-server backup --data ./sotto-data --out /backups/sotto-2026-12-01.db\n\
                      Messages accepted after the backup are not in it. See README, \"Backups\"."
    )]
    Backup {
        /// The data directory to back up.
        #[arg(
            long = "data",
            env = "SOTTO_DATA",
            default_value = "./sotto-data",
            value_name = "DIR"
        )]
        data: PathBuf,
        /// The backup file to write; it must not exist.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Leave out the log and legal signing keys (back them up once,
        /// apart); restoring then needs --keys-from.
        #[arg(long)]
        exclude_keys: bool,
    },
    /// Restores a backup into a new data directory, after checking it
    /// (integrity, schema, keys). Never overwrites a database.
    #[command(
        after_help = "Example: sotto-server restore --from /backups/sotto-2026-12-01.db --data ./sotto-restored"
    )]
    Restore {
        /// The backup file.
        #[arg(long, value_name = "FILE")]
        from: PathBuf,
        /// The new data directory (created if missing; must hold no database).
        #[arg(long = "data", value_name = "DIR")]
        data: PathBuf,
        /// For a backup made with --exclude-keys: a full backup, or the old
        /// data directory, of the same server to take the keys from.
        #[arg(long, value_name = "FILE_OR_DIR")]
        keys_from: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Prints a commented configuration file with every key at its default.
    Example,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match args.command {
        Some(Command::Audit { data, log_key }) => audit(&data, log_key.as_deref()),
        Some(Command::Legal { command }) => legal_cli::run(command),
        Some(Command::Migrate { store }) => report(
            block_on(sotto_server::store::PostgresStore::migrate(&store))
                .map_err(anyhow::Error::from)
                .and_then(|migrated| {
                    let (from, to) = migrated?;
                    if from == to {
                        println!("schema is at version {to}: nothing to do");
                    } else {
                        println!("schema migrated from version {from} to {to}");
                    }
                    Ok(())
                }),
        ),
        Some(Command::Config {
            command: ConfigCommand::Example,
        }) => {
            print!("{}", config_file::example());
            ExitCode::SUCCESS
        }
        Some(Command::CheckConfig { file }) => match FileConfig::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("Error: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Invite { command }) => report(admin_cli::invite(command)),
        Some(Command::Stats { data }) => report(admin_cli::stats(&data)),
        Some(Command::Account { command }) => report(admin_cli::account(command)),
        Some(Command::Moderation { command }) => report(moderation_cli::moderation(command)),
        Some(Command::InviteLink { command }) => report(invite_link_cli::invite_link(command)),
        Some(Command::Completions { shell }) => {
            // Into a buffer: clap_complete panics if stdout closes early.
            let mut script = Vec::new();
            let mut command = <Args as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "sotto-server", &mut script);
            report(
                std::io::stdout()
                    .write_all(&script)
                    .map_err(anyhow::Error::from),
            )
        }
        Some(Command::Man) => report(
            clap_mangen::Man::new(<Args as clap::CommandFactory>::command())
                .render(&mut std::io::stdout())
                .map_err(anyhow::Error::from),
        ),
        Some(Command::Backup {
            data,
            out,
            exclude_keys,
        }) => match sotto_server::store::SqliteStore::backup(&data, &out, exclude_keys) {
            Ok(summary) => {
                println!("backup written: {}\n{summary}", out.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("backup failed: {e}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Restore {
            from,
            data,
            keys_from,
        }) => match sotto_server::store::SqliteStore::restore(&from, &data, keys_from.as_deref()) {
            Ok(restored) => {
                println!(
                    "restored: {}\n{}",
                    restored.path.display(),
                    restored.contents
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("restore failed: {e}");
                ExitCode::FAILURE
            }
        },
        None => match serve(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("Error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Runs the audit and prints its summary (stdout) or failure (stderr).
fn audit(data: &admin_cli::DataDir, log_key: Option<&str>) -> ExitCode {
    let expected = match log_key.map(parse_key).transpose() {
        Ok(key) => key,
        Err(e) => {
            eprintln!("audit failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    let location = data.location();
    let audited = match block_on(async {
        let store = sotto_server::store::AnyStore::open_read_only(&location).await?;
        let audited = sotto_server::audit::audit_store(&store, expected.as_ref()).await;
        store.close().await;
        // The key directory lives in the data directory with either store.
        match audited {
            Ok(mut summary) => {
                summary.directory = sotto_server::audit::audit_directory_in(&data.data).await?;
                Ok(summary)
            }
            Err(e) => Err(e),
        }
    }) {
        Ok(audited) => audited,
        Err(e) => {
            eprintln!("audit failed: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match audited {
        Ok(summary) => {
            let r = &summary.report;
            println!("audit passed: {}", location.describe());
            println!("entries:        {}", r.entries);
            println!("accounts:       {}", r.accounts);
            println!("active devices: {}", r.devices);
            println!("web releases:   {}", r.web_releases);
            println!("tree size:      {}", r.tree_size);
            println!("root:           {}", hex::encode(r.root));
            println!("log key:        {}", hex::encode(summary.log_key));
            if let Some(directory) = summary.directory {
                println!(
                    "key directory:  {} epochs append-only, root {}",
                    directory.epoch,
                    hex::encode(directory.root_hash)
                );
            }
            if summary.unlogged_accounts > 0 {
                println!(
                    "warning: {} accounts predate the log and cannot be verified by clients",
                    summary.unlogged_accounts
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("audit failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exits 0, or 1 after printing the error.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs an operator command's future (the store is async) on a runtime of
/// its own, on this thread.
/// Accepts only a PostgreSQL URL for `--store` (a data directory is
/// `--data`).
fn bus_url(value: &str) -> Result<String, String> {
    if !sotto_server::bus::is_bus_url(value) {
        return Err("expected a nats://HOST:PORT URL".into());
    }
    Ok(value.to_owned())
}

fn bus_prefix(value: &str) -> Result<String, String> {
    if !sotto_server::bus::is_bus_prefix(value) {
        return Err("expected dot-separated tokens of letters, digits, - and _".into());
    }
    Ok(value.to_owned())
}

fn postgres_url(value: &str) -> Result<String, String> {
    if !sotto_server::store::postgres::is_postgres_url(value) {
        return Err("expected a postgres:// URL (an SQLite data directory is --data)".into());
    }
    sotto_server::store::postgres::parse_config(value).map_err(|e| e.to_string())?;
    Ok(value.to_owned())
}

/// Runs a future of an operator's command on the process's one runtime:
/// a PostgreSQL store's writer and connections are tasks on it, so they
/// must outlive each call.
fn block_on<F: std::future::Future>(future: F) -> std::io::Result<F::Output> {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    if RUNTIME.get().is_none() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let _ = RUNTIME.set(runtime);
    }
    let runtime = RUNTIME
        .get()
        .ok_or_else(|| std::io::Error::other("no runtime"))?;
    Ok(runtime.block_on(future))
}

fn parse_key(hex_key: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(hex_key.trim()).context("--log-key is not hex")?;
    <[u8; 32]>::try_from(bytes.as_slice())
        .map_err(|_| anyhow::anyhow!("--log-key must be 32 bytes (64 hex digits)"))
}

#[tokio::main]
async fn serve(args: Args) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }

    let config = args.server_config()?;
    let server = Server::bind(config)
        .await
        .context("cannot start sotto-server")?;
    let url = server.url();
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "sotto-server listening on {url}")?;
        writeln!(out, "connect with: sotto register NAME --server {url}")?;
        writeln!(
            out,
            "in a browser: {url}/ (register or link a device there, and chat)"
        )?;
        out.flush()?;
    }
    server
        .run(shutdown_signal())
        .await
        .context("sotto-server failed")?;
    Ok(())
}

/// Resolves on Ctrl-C, or on SIGTERM on Unix.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
