//! `sotto`: the command-line client. Each command opens the profile, does its
//! work over one connection, prints the result and exits; `listen` stays.

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};
use sotto_client::{Client, ConversationKind, EntryKind, HistoryEntry, Passphrase};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// Sotto: end-to-end encrypted messaging on a server you can run yourself.
#[derive(Parser, Debug)]
#[command(name = "sotto", version, about, long_about = None)]
struct Cli {
    /// Profile directory holding this device's keys and history
    /// [default: the platform data directory, e.g. ~/.local/share/sotto].
    #[arg(long, global = true, env = "SOTTO_PROFILE")]
    profile: Option<PathBuf>,
    /// Print one JSON object per line instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create an account on a server, with this device as its first device.
    Register {
        username: String,
        /// The server, e.g. https://chat.example.org (or http://127.0.0.1:8420
        /// for one on this machine)
        #[arg(long)]
        server: String,
        /// The invite code, for servers where registration needs one.
        #[arg(long)]
        invite: Option<String>,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Show this profile's account, device and server.
    Whoami,
    /// Encrypt this profile at rest under a passphrase (asked twice, or
    /// SOTTO_PASSPHRASE); every later command asks for it.
    Lock,
    /// Decrypt a locked profile (asks its passphrase, or SOTTO_PASSPHRASE).
    Unlock,
    /// Change a locked profile's passphrase (the new one from
    /// SOTTO_NEW_PASSPHRASE when SOTTO_PASSPHRASE gives the old one).
    ChangePassphrase,
    /// Send a text to a user (`sotto send bob hello`) or a group (`sotto send --group team hello`).
    Send {
        /// Send to this group instead of a user.
        #[arg(long)]
        group: Option<String>,
        /// USERNAME TEXT, or just TEXT with --group. Several words are joined with spaces.
        #[arg(required = true, num_args = 1..)]
        args: Vec<String>,
    },
    /// Create and manage groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Receive everything waiting on the server, print new messages, exit.
    Sync,
    /// Stay connected and print messages as they arrive (Ctrl-C to stop).
    Listen,
    /// Link, list and remove this account's devices.
    #[command(subcommand)]
    Device(DeviceCommand),
    /// Show the safety number you share with a user, to compare in person.
    Verify {
        username: String,
        /// Mark the user as verified after you compared the numbers.
        #[arg(long)]
        mark: bool,
        /// Accept the user's new identity key after a key-change warning
        /// (it starts unverified).
        #[arg(long)]
        accept_new_key: bool,
    },
    /// Download a server's whole key log and check every entry, signature and head.
    Audit {
        /// The server, e.g. https://chat.example.org
        server: String,
        /// The log key you expect (64 hex digits, from a second source such
        /// as the operator's website); the audit fails if the server
        /// announces another.
        #[arg(long, value_name = "HEX")]
        log_key: Option<String>,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Fetch and check a server's warrant canary (a dated statement signed by
    /// its operator).
    ///
    /// The canary's key must be vouched for: by the server's log key (your
    /// profile's, when it is registered on this server, or --log-key), or
    /// given directly with --legal-key.
    Canary {
        /// The server, e.g. https://chat.example.org
        server: String,
        /// The server's log key (64 hex digits) to check the canary's key
        /// against, e.g. from `sotto whoami` on a profile registered there.
        #[arg(long, value_name = "HEX", conflicts_with = "legal_key")]
        log_key: Option<String>,
        /// The operator's legal key (64 hex digits), published by them.
        #[arg(long, value_name = "HEX")]
        legal_key: Option<String>,
        #[command(flatten)]
        trust: TrustArgs,
        /// Warn (and exit 1) if the statement is older than this.
        #[arg(long, default_value_t = 31)]
        max_age_days: u64,
    },
    /// List who can read a conversation with a user (`sotto members bob`) or
    /// a group (`sotto members --group team`): every member device, as of
    /// your last sync.
    Members {
        /// List this group's members.
        #[arg(long, conflicts_with = "username")]
        group: Option<String>,
        #[arg(required_unless_present = "group")]
        username: Option<String>,
    },
    /// Show warnings about your account (a device that none of your devices
    /// added, ...) and about messages that belonged to no conversation (for
    /// example, ones that could not be decrypted).
    ///
    /// Account warnings are printed by every command until acknowledged
    /// with --ack (or, for an unknown device, until you remove it).
    Warnings {
        /// Acknowledge the account warnings: stop printing them with every
        /// command. An unknown device stays marked in `sotto device list`
        /// until you remove it.
        #[arg(long)]
        ack: bool,
    },
    /// Show the history of a conversation with a user, or of a group.
    History {
        /// Show this group's history.
        #[arg(long, conflicts_with = "username")]
        group: Option<String>,
        #[arg(required_unless_present = "group")]
        username: Option<String>,
    },
}

/// What to trust on the way to a server; a profile remembers it.
#[derive(clap::Args, Debug)]
struct TrustArgs {
    /// Trust this CA certificate (PEM) too, for a server with a
    /// self-signed certificate.
    #[arg(long, value_name = "FILE")]
    ca_file: Option<PathBuf>,
    /// Allow plain http:// to a host other than this machine. Anyone on the
    /// network path can then read and change what is sent; only for a
    /// network you control.
    #[arg(long)]
    insecure_transport: bool,
}

impl TrustArgs {
    fn trust(&self) -> Result<sotto_client::Trust> {
        let trust =
            sotto_client::Trust::web_roots().allow_insecure_transport(self.insecure_transport);
        Ok(match &self.ca_file {
            Some(path) => trust.with_ca_file(path)?,
            None => trust,
        })
    }
}

#[derive(Subcommand, Debug)]
enum DeviceCommand {
    /// On an existing device: show a one-time code for a new device, and
    /// approve it when it joins.
    Link {
        /// Approve the joining device without asking.
        #[arg(long)]
        yes: bool,
    },
    /// On a new device (with a new --profile): join an account with a code
    /// from `sotto device link`.
    Join {
        code: String,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// List this account's devices, from the key log.
    List,
    /// Remove a device: it can no longer log in or read new messages.
    Remove { device_id: String },
}

#[derive(Subcommand, Debug)]
enum GroupCommand {
    /// Create a group with the given members.
    Create {
        name: String,
        /// Comma-separated usernames.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
    },
    /// Add a user (all their devices) to a group.
    Add { name: String, username: String },
    /// Remove a user (all their devices) from a group.
    Remove { name: String, username: String },
    /// Leave a group.
    Leave { name: String },
    /// List the groups you are in.
    List,
    /// List a group's members (as of your last sync).
    Members { name: String },
}

/// Opens the profile, first printing (on stderr) every warning about the
/// account that the user has not acknowledged: a device that none of the
/// account's devices added is shown by every command until then.
/// Opens the profile (asking for its passphrase if it is locked) and
/// prints the account warnings not yet acknowledged.
fn open(profile: &std::path::Path) -> Result<Client> {
    let client = open_profile(profile)?;
    let alerts = client.account_warnings(false)?;
    for alert in &alerts {
        eprintln!("{}", alert.text);
    }
    if !alerts.is_empty() {
        eprintln!("(`sotto warnings --ack` stops showing these warnings)");
    }
    Ok(client)
}

fn default_profile() -> Result<PathBuf> {
    Ok(dirs::data_dir()
        .context("cannot find a data directory; pass --profile DIR")?
        .join("sotto"))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    let profile = match cli.profile {
        Some(dir) => dir,
        None => default_profile()?,
    };
    let out = Printer { json: cli.json };
    match cli.command {
        Command::Register {
            username,
            server,
            invite,
            trust,
        } => {
            let mut client = Client::register_with_invite(
                &profile,
                &username,
                &server,
                invite.as_deref(),
                &trust.trust()?,
            )
            .await?;
            client.disconnect().await;
            out.line(
                &format!(
                    "registered {username} on {server} (profile {})",
                    profile.display()
                ),
                &serde_json::json!({ "username": username, "server": server, "profile": profile }),
            );
        }
        command @ (Command::Lock | Command::Unlock | Command::ChangePassphrase) => {
            let done = lock_command(&profile, &command)?;
            out.line(
                &format!("{done}: {}", profile.display()),
                &serde_json::json!({ "profile": profile, "done": done }),
            );
        }
        Command::Whoami => {
            let client = open(&profile)?;
            out.line(
                &format!(
                    "{} on {}\ndevice {}\nidentity key {}\nserver's log key {}",
                    client.username(),
                    client.server_url(),
                    client.device_id(),
                    client.identity_key(),
                    hex::encode(client.log_key())
                ),
                &serde_json::json!({
                    "username": client.username().as_str(),
                    "server": client.server_url(),
                    "device_id": client.device_id().to_string(),
                    "identity_key": client.identity_key(),
                    "log_key": hex::encode(client.log_key()),
                }),
            );
        }
        Command::Send { group, args } => {
            let mut client = open(&profile)?;
            let sent = match group {
                Some(name) => client.send_group(&name, &args.join(" ")).await?,
                None => {
                    let Some((user, words)) = args.split_first() else {
                        bail!("usage: sotto send USERNAME TEXT")
                    };
                    if words.is_empty() {
                        bail!("nothing to send: usage is `sotto send USERNAME TEXT`");
                    }
                    client.send_direct(user, &words.join(" ")).await?
                }
            };
            client.disconnect().await;
            out.entry(&sent);
        }
        Command::Group(command) => group(&profile, command, &out).await?,
        Command::Sync => {
            let mut client = open(&profile)?;
            let entries = client.sync().await?;
            client.disconnect().await;
            for entry in &entries {
                out.entry(entry);
            }
        }
        Command::Listen => {
            let mut client = open(&profile)?;
            tokio::select! {
                result = client.listen(|entry| out.entry(entry)) => result?,
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Command::Device(command) => device(&profile, command, &out).await?,
        Command::Verify {
            username,
            mark,
            accept_new_key,
        } => {
            let mut client = open(&profile)?;
            let (number, verified) = if mark {
                (client.mark_verified(&username).await?, true)
            } else {
                client.safety_number(&username, accept_new_key).await?
            };
            client.disconnect().await;
            let status = if verified { "verified" } else { "not verified" };
            out.line(
                &format!(
                    "safety number with {username} ({status}):\n\n  {}\n\n{}\nCompare it with {username}'s screen; if it matches, run `sotto verify {username} --mark`.",
                    number.grouped(),
                    qr(number.digits())
                ),
                &serde_json::json!({ "username": username, "safety_number": number.digits(), "verified": verified }),
            );
        }
        Command::Audit {
            server,
            log_key,
            trust,
        } => {
            let log_key = log_key
                .map(|key| hex::decode(key.trim()).context("--log-key is not hex"))
                .transpose()?;
            let report = sotto_client::audit(&server, &trust.trust()?, log_key.as_deref()).await?;
            out.line(
                &format!(
                    "key log of {server} verified: {} entries, {} accounts, {} active devices, root {}",
                    report.entries,
                    report.accounts,
                    report.devices,
                    hex::encode(report.root)
                ),
                &serde_json::json!({
                    "entries": report.entries, "accounts": report.accounts,
                    "devices": report.devices, "tree_size": report.tree_size,
                    "root": hex::encode(report.root),
                }),
            );
        }
        Command::Canary {
            server,
            log_key,
            legal_key,
            max_age_days,
            trust,
        } => {
            let hex_key = |key: &str, flag: &str| {
                hex::decode(key.trim()).with_context(|| format!("{flag} is not hex"))
            };
            let (pin_key, by_log_key) = match (log_key, legal_key) {
                (_, Some(key)) => (hex_key(&key, "--legal-key")?, false),
                (Some(key), None) => (hex_key(&key, "--log-key")?, true),
                (None, None) => match open_profile(&profile) {
                    Ok(client)
                        if client.server_url().trim_end_matches('/')
                            == server.trim_end_matches('/') =>
                    {
                        (client.log_key().to_vec(), true)
                    }
                    _ => bail!(
                        "give --log-key HEX (the log key, e.g. from `sotto whoami` on a profile registered on {server}) or --legal-key HEX (from the operator)"
                    ),
                },
            };
            let pin = if by_log_key {
                sotto_client::canary::CanaryPin::LogKey(&pin_key)
            } else {
                sotto_client::canary::CanaryPin::LegalKey(&pin_key)
            };
            let Some(canary) =
                sotto_client::canary::fetch_canary(&server, &trust.trust()?, pin).await?
            else {
                bail!("WARNING: {server} publishes no warrant canary");
            };
            let today = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs() / 86_400)
                .unwrap_or(0);
            let age = today.saturating_sub(canary.day);
            out.line(
                &format!(
                    "signed {} ({age} days ago) by key {}:\n\n  {}",
                    date_of(canary.day),
                    canary.key,
                    canary.statement
                ),
                &serde_json::json!({
                    "statement": canary.statement, "day": canary.day, "date": date_of(canary.day),
                    "age_days": age, "key": canary.key,
                }),
            );
            if age > max_age_days {
                bail!("WARNING: the warrant canary is {age} days old (more than {max_age_days})");
            }
        }
        Command::Members { group, username } => {
            let client = open(&profile)?;
            let members = match (group, username) {
                (Some(name), _) => client.conversation_members(ConversationKind::Group, &name)?,
                (None, Some(user)) => {
                    client.conversation_members(ConversationKind::Direct, &user)?
                }
                (None, None) => bail!("name a user or --group NAME"),
            };
            for member in members {
                out.line(
                    &format!("{} (device {})", member.username, member.device_id),
                    &serde_json::to_value(&member)?,
                );
            }
        }
        Command::Warnings { ack } => {
            let client = open_profile(&profile)?;
            if ack {
                let n = client.acknowledge_account_warnings()?;
                out.line(
                    &format!("acknowledged {n} account warning(s)"),
                    &serde_json::json!({ "acknowledged": n }),
                );
                return Ok(());
            }
            for alert in client.account_warnings(true)? {
                let mark = if alert.acknowledged {
                    " (acknowledged)"
                } else {
                    ""
                };
                out.line(
                    &format!("{}{mark}", alert.text),
                    &serde_json::json!({
                        "at": alert.raised_at_ms, "text": alert.text,
                        "acknowledged": alert.acknowledged, "account": true,
                    }),
                );
            }
            for (at_ms, text) in client.device_warnings()? {
                out.line(&text, &serde_json::json!({ "at": at_ms, "text": text }));
            }
        }
        Command::History { group, username } => {
            let client = open(&profile)?;
            let entries = match (group, username) {
                (Some(name), _) => client.history(ConversationKind::Group, &name)?,
                (None, Some(user)) => client.history(ConversationKind::Direct, &user)?,
                (None, None) => bail!("name a user or --group NAME"),
            };
            for entry in &entries {
                out.entry(entry);
            }
        }
    }
    Ok(())
}

async fn group(profile: &std::path::Path, command: GroupCommand, out: &Printer) -> Result<()> {
    let mut client = open(profile)?;
    match command {
        GroupCommand::Create { name, members } => {
            client.create_group(&name, &members).await?;
            out.line(
                &format!("created {name}"),
                &serde_json::json!({ "created": name }),
            );
        }
        GroupCommand::Add { name, username } => {
            client.add_member(&name, &username).await?;
            out.line(
                &format!("added {username} to {name}"),
                &serde_json::json!({ "added": username, "group": name }),
            );
        }
        GroupCommand::Remove { name, username } => {
            client.remove_member(&name, &username).await?;
            out.line(
                &format!("removed {username} from {name}"),
                &serde_json::json!({ "removed": username, "group": name }),
            );
        }
        GroupCommand::Leave { name } => {
            client.leave_group(&name).await?;
            out.line(
                &format!("left {name}"),
                &serde_json::json!({ "left": name }),
            );
        }
        GroupCommand::List => {
            for name in client.groups()? {
                let members = client.members(&name)?;
                let mut users: Vec<&str> = members.iter().map(|m| m.username.as_str()).collect();
                users.dedup();
                out.line(
                    &format!("{name} ({})", users.join(", ")),
                    &serde_json::json!({ "name": name, "members": users }),
                );
            }
        }
        GroupCommand::Members { name } => {
            for member in client.members(&name)? {
                out.line(
                    &format!("{} (device {})", member.username, member.device_id),
                    &serde_json::to_value(&member)?,
                );
            }
        }
    }
    client.disconnect().await;
    Ok(())
}

async fn device(profile: &std::path::Path, command: DeviceCommand, out: &Printer) -> Result<()> {
    if let DeviceCommand::Join { code, trust } = &command {
        let show = |fingerprint: String| {
            eprintln!(
                "Waiting for approval on your other device. It will show a number: check it is\n\n  {fingerprint}\n\nIf it is not, someone else used the code: refuse there."
            );
        };
        let mut client = Client::join_link(profile, code, &trust.trust()?, show).await?;
        client.disconnect().await;
        out.line(
            &format!("this device is now linked to {} (device {})", client.username(), client.device_id()),
            &serde_json::json!({ "username": client.username().as_str(), "device_id": client.device_id().to_string() }),
        );
        return Ok(());
    }
    let mut client = open(profile)?;
    match command {
        DeviceCommand::Join { .. } => {}
        DeviceCommand::Link { yes } => {
            let code = client.open_link().await?;
            let text = code.reveal();
            eprintln!(
                "On the new device, run:\n\n  sotto --profile DIR device join {text}\n\nor scan:\n{}\nWaiting for the new device (10 minutes)...",
                qr(&text)
            );
            out.line(
                &format!("code {text}"),
                &serde_json::json!({ "code": text }),
            );
            let request = client.wait_for_link_request(&code).await?;
            eprintln!(
                "A device asks to join your account. The new device shows a number; it must be\n\n  {}\n",
                request.fingerprint
            );
            if !yes
                && !confirm(&format!(
                    "Is that the number on the new device (device {})? Approve? [y/N] ",
                    request.device_id
                ))?
            {
                bail!("not approved; the device was not linked");
            }
            for entry in client.approve_link(&code, &request).await? {
                out.entry(&entry);
            }
            out.line(
                &format!("linked device {}", request.device_id),
                &serde_json::json!({ "linked": request.device_id.to_string() }),
            );
        }
        DeviceCommand::List => {
            let shown = client.account_warnings(false)?.len();
            let devices = client.devices().await?;
            // Warnings this listing raised (the older ones were printed
            // when the profile was opened).
            for alert in client.account_warnings(false)?.iter().skip(shown) {
                eprintln!("{}", alert.text);
            }
            for device in devices {
                let marker = if device.this_device {
                    " (this device)"
                } else if device.unknown {
                    " UNKNOWN: none of your devices added it (see `sotto warnings`)"
                } else {
                    ""
                };
                out.line(
                    &format!("{}{marker}", device.device_id),
                    &serde_json::to_value(&device)?,
                );
            }
        }
        DeviceCommand::Remove { device_id } => {
            client.remove_device(&device_id).await?;
            out.line(
                &format!("removed device {device_id}"),
                &serde_json::json!({ "removed": device_id }),
            );
        }
    }
    client.disconnect().await;
    Ok(())
}

fn confirm(question: &str) -> Result<bool> {
    use std::io::BufRead as _;
    eprint!("{question}");
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes"))
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01), by the civil
/// calendar algorithm of H. Hinnant.
fn date_of(day: u64) -> String {
    let z = i64::try_from(day).unwrap_or(i64::MAX / 2) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// A QR code drawn with Unicode half blocks.
fn qr(text: &str) -> String {
    match qrcode::QrCode::new(text.as_bytes()) {
        Ok(code) => code
            .render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build(),
        Err(_) => String::new(),
    }
}

/// Prints text for people or JSON lines for programs, flushing each line so
/// `listen` output can be piped.
struct Printer {
    json: bool,
}

impl Printer {
    fn line(&self, text: &str, json: &serde_json::Value) {
        let mut stdout = std::io::stdout().lock();
        let _ = if self.json {
            writeln!(stdout, "{json}")
        } else {
            writeln!(stdout, "{text}")
        };
        let _ = stdout.flush();
    }

    fn entry(&self, entry: &HistoryEntry) {
        let place = match entry.conversation_kind {
            ConversationKind::Direct => entry.conversation.clone(),
            ConversationKind::Group => format!("#{}", entry.conversation),
        };
        let text = match entry.kind {
            EntryKind::Text => format!("[{place}] {}: {}", entry.sender, entry.text),
            EntryKind::System if entry.conversation.is_empty() => entry.text.clone(),
            EntryKind::System => format!("[{place}] * {}", entry.text),
        };
        if !self.json && entry.text.starts_with("WARNING") {
            eprintln!("{text}");
        }
        self.line(&text, &serde_json::to_value(entry).unwrap_or_default());
    }
}

// ------------------------------------------------------------ locked profiles

/// Opens the profile, asking for its passphrase if it is locked.
fn open_profile(profile: &std::path::Path) -> Result<Client> {
    let passphrase = if sotto_client::store::lock::is_locked(profile)? {
        Some(ask_passphrase(&format!(
            "Passphrase for the locked profile {}: ",
            profile.display()
        ))?)
    } else {
        None
    };
    Ok(Client::open_with_passphrase(profile, passphrase.as_ref())?)
}

/// `lock`, `unlock`, `change-passphrase`; says what it did.
fn lock_command(profile: &std::path::Path, command: &Command) -> Result<&'static str> {
    use sotto_client::store::lock;
    match command {
        Command::Lock => {
            if lock::is_locked(profile)? {
                bail!(sotto_client::LockError::AlreadyLocked(profile.to_owned()));
            }
            lock::lock(profile, &new_passphrase("SOTTO_PASSPHRASE")?)?;
            Ok("locked")
        }
        Command::Unlock => {
            if !lock::is_locked(profile)? {
                bail!(sotto_client::LockError::NotLocked(profile.to_owned()));
            }
            lock::unlock(profile, &ask_passphrase("Passphrase: ")?)?;
            Ok("unlocked")
        }
        _ => {
            if !lock::is_locked(profile)? {
                bail!(sotto_client::LockError::NotLocked(profile.to_owned()));
            }
            let old = ask_passphrase("Current passphrase: ")?;
            let new = new_passphrase("SOTTO_NEW_PASSPHRASE")?;
            lock::change_passphrase(profile, &old, &new)?;
            Ok("passphrase changed")
        }
    }
}

/// The passphrase from SOTTO_PASSPHRASE (for scripts), or asked on the
/// terminal without echo.
fn ask_passphrase(prompt: &str) -> Result<Passphrase> {
    if let Ok(text) = std::env::var("SOTTO_PASSPHRASE") {
        return Ok(Passphrase::new(text)?);
    }
    let mut text = prompt_passphrase(prompt, "SOTTO_PASSPHRASE")?;
    Ok(Passphrase::new(std::mem::take(&mut *text))?)
}

/// A new passphrase from the variable `var`, or asked twice.
fn new_passphrase(var: &str) -> Result<Passphrase> {
    if let Ok(text) = std::env::var(var) {
        return Ok(Passphrase::new(text)?);
    }
    let mut first = prompt_passphrase("New passphrase: ", var)?;
    let second = prompt_passphrase("The same passphrase again: ", var)?;
    if first != second {
        bail!("the two passphrases differ; nothing was changed");
    }
    Ok(Passphrase::new(std::mem::take(&mut *first))?)
}

/// Asks on the terminal, without echo; without a terminal, says which
/// variable to set instead of waiting.
fn prompt_passphrase(prompt: &str, var: &str) -> Result<zeroize::Zeroizing<String>> {
    use std::io::IsTerminal as _;
    if !std::io::stdin().is_terminal() {
        bail!(
            "the profile's passphrase is needed and there is no terminal to ask it on: set {var}"
        );
    }
    rpassword::prompt_password(prompt)
        .map(zeroize::Zeroizing::new)
        .with_context(|| format!("cannot read the passphrase; set {var} instead"))
}
