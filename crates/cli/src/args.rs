//! The command line: every command, subcommand and flag of `sotto`.

use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Sotto: end-to-end encrypted messaging on a server you can run yourself.
#[derive(Parser, Debug)]
#[command(name = "sotto", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Profile directory holding this device's keys and history
    /// [default: the platform data directory, e.g. ~/.local/share/sotto].
    #[arg(long, global = true, env = "SOTTO_PROFILE")]
    pub(crate) profile: Option<PathBuf>,
    /// Print one JSON object per line instead of text.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Refuse the server's key-log head once it is older than this and a
    /// newer one was seen (the server may be hiding newer entries): `30m`,
    /// `12h`, `2d` [default: 1d].
    #[arg(long, global = true, env = "SOTTO_MAX_HEAD_AGE", value_parser = parse_duration)]
    pub(crate) max_head_age: Option<std::time::Duration>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
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
    /// Send a text to a user (`sotto send bob hello`) or a group (`sotto send --group team hello`),
    /// or a file with `--file PATH` (the text is then optional).
    Send {
        /// Send to this group instead of a user.
        #[arg(long)]
        group: Option<String>,
        /// Reply to this message (its id, from `history --json`).
        #[arg(long, value_name = "ID", conflicts_with = "file")]
        reply_to: Option<String>,
        /// Send this file, encrypted (the server keeps it until every
        /// recipient fetched it, or for its retention period).
        #[arg(long, value_name = "PATH")]
        file: Option<std::path::PathBuf>,
        /// USERNAME TEXT, or just TEXT with --group. Several words are joined with spaces.
        #[arg(required_unless_present = "file", num_args = 0..)]
        args: Vec<String>,
    },
    /// Save the file a message carries to PATH (`sotto save ID PATH`): its
    /// hash is checked and it is decrypted before anything is written.
    Save {
        /// The message's id (from `history --json`).
        id: String,
        /// Where to write the file (replaced atomically).
        path: std::path::PathBuf,
    },
    /// React to a message with an emoji (one reaction per message: a new
    /// one replaces yours; the same one again takes it back).
    React {
        /// The message's id (from `history --json`).
        id: String,
        emoji: String,
    },
    /// Change the text of a message you sent, for everyone.
    Edit {
        /// The message's id (from `history --json`).
        id: String,
        /// The new text. Several words are joined with spaces.
        #[arg(required = true, num_args = 1..)]
        text: Vec<String>,
    },
    /// Delete a message you sent, for everyone: every device erases its text.
    Delete {
        /// The message's id (from `history --json`).
        id: String,
    },
    /// Report a message you received to the server's operator. Sends only
    /// that message's content, the server's frank (its proof of when it
    /// delivered it, in which group) and the sender's signature, with your
    /// reason and note: nothing else from the conversation. The operator
    /// learns that your account reported it.
    Report {
        /// The message's id (from `history --json`).
        id: String,
        #[arg(long, value_enum)]
        reason: ReportReasonArg,
        /// Your own words for the operator (at most 1024 bytes).
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Set disappearing messages for a conversation (`sotto timer bob 1h`,
    /// `sotto timer --group team 7d`, `sotto timer bob off`): later
    /// messages are deleted from every member's history and database that
    /// long after they are sent, and from the server if still undelivered.
    /// Any member may change it; everyone sees the change.
    Timer {
        /// Set it for this group instead of a user.
        #[arg(long)]
        group: Option<String>,
        /// USERNAME DURATION, or just DURATION with --group. DURATION: like
        /// 30s, 5m, 1h, 7d, or `off`.
        #[arg(required = true, num_args = 1..=2)]
        args: Vec<String>,
    },
    /// Tell a conversation you are typing (`sotto typing bob`,
    /// `sotto typing --group team`; `--stop` when you stopped). Nobody
    /// stores it; a device that is offline never sees it.
    Typing {
        /// Tell this group instead of a user.
        #[arg(long, conflicts_with = "username")]
        group: Option<String>,
        #[arg(required_unless_present = "group")]
        username: Option<String>,
        /// You stopped typing.
        #[arg(long)]
        stop: bool,
    },
    /// Profile settings: `sotto config read-receipts on|off` (default on;
    /// delivery receipts are always sent, to conversations you wrote in).
    Config {
        /// The setting: `read-receipts`.
        setting: String,
        /// `on` or `off`; shows the current value when left out.
        value: Option<String>,
    },
    /// Create and manage groups.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Receive everything waiting on the server, print new messages, exit.
    Sync,
    /// Stay connected and print messages as they arrive (Ctrl-C to stop).
    Listen,
    /// A terminal UI: your conversations, messages as they arrive, and a
    /// compose line with /commands (/reply, /react, /edit, /delete, /timer,
    /// /members, /verify; /help lists them and the keys).
    Chat {
        /// Write log lines to this file (the screen has no room for them;
        /// without it they are dropped).
        #[arg(long, value_name = "FILE")]
        log: Option<PathBuf>,
    },
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
    /// Audit a server's key directory: check that every epoch only appended
    /// to the one before (akd's append-only proofs), learning no username.
    /// Then check its web app: every file of the web release the directory
    /// publishes (and `/`) must be served byte for byte as logged.
    Audit {
        /// The server, e.g. https://chat.example.org
        server: String,
        /// The log key you expect (64 hex digits, from a second source such
        /// as the operator's website); the audit fails if the server
        /// announces another.
        #[arg(long, value_name = "HEX")]
        log_key: Option<String>,
        /// Act as a third-party auditor: after the full audit, keep
        /// following the server, checking every new epoch extends the last
        /// one audited (stopping with a FORK report if not).
        #[arg(long, requires = "sign")]
        follow: bool,
        /// Countersign every epoch audited with this auditor key (made by
        /// `sotto auditor-key`) and hand the countersignature to the server
        /// (whose operator must have invited the key).
        #[arg(long, value_name = "KEYFILE")]
        sign: Option<std::path::PathBuf>,
        /// Resume from the epoch the last audit with this file reached, and
        /// record the epoch this one reaches (made if missing).
        #[arg(long, value_name = "FILE", conflicts_with = "sign")]
        state: Option<std::path::PathBuf>,
        /// Fail if the server publishes no web release (by default that is
        /// only reported: a server may serve no web app).
        #[arg(long, conflicts_with = "sign")]
        require_web: bool,
        /// With --follow: how long to wait between rounds.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        interval: std::time::Duration,
        #[command(flatten)]
        trust: TrustArgs,
    },
    /// Make an auditor key (Ed25519) in KEYFILE, readable only by you, and
    /// print its public key (give it to the server's users); with an
    /// existing KEYFILE, print its public key.
    AuditorKey { keyfile: std::path::PathBuf },
    /// Require a third-party auditor: from now on a key-directory epoch the
    /// server presents is refused unless that auditor countersigned it (or
    /// an epoch it extends) within --max-lag.
    TrustAuditor {
        /// The auditor's public key (64 hex digits, from the auditor).
        pubkey: String,
        /// How old the auditor's newest countersignature may be.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        max_lag: std::time::Duration,
        /// Stop requiring this auditor instead.
        #[arg(long)]
        remove: bool,
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
    /// Print a shell completion script: `sotto completions bash >
    /// ~/.local/share/bash-completion/completions/sotto`.
    Completions { shell: clap_complete::Shell },
    /// Print the manual page (roff): `sotto man | man -l -`.
    Man,
}

/// What to trust on the way to a server; a profile remembers it.
#[derive(clap::Args, Debug)]
pub(crate) struct TrustArgs {
    /// Trust this CA certificate (PEM) too, for a server with a
    /// self-signed certificate.
    #[arg(long, value_name = "FILE")]
    pub(crate) ca_file: Option<PathBuf>,
    /// Allow plain http:// to a host other than this machine. Anyone on the
    /// network path can then read and change what is sent; only for a
    /// network you control.
    #[arg(long)]
    pub(crate) insecure_transport: bool,
}

impl TrustArgs {
    pub(crate) fn trust(&self) -> Result<sotto_client::Trust> {
        let trust =
            sotto_client::Trust::web_roots().allow_insecure_transport(self.insecure_transport);
        Ok(match &self.ca_file {
            Some(path) => trust.with_ca_file(path)?,
            None => trust,
        })
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum DeviceCommand {
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
pub(crate) enum GroupCommand {
    /// Create a group with the given members.
    Create {
        name: String,
        /// Comma-separated usernames.
        #[arg(long, value_delimiter = ',', required = true)]
        members: Vec<String>,
        /// Give the group admins, you the first: only admins then remove
        /// members, change admins and settings, and delete others'
        /// messages for everyone. Without it every member may remove others.
        #[arg(long)]
        admins: bool,
        /// Only admins may post (an announcement channel); implies --admins.
        #[arg(long)]
        read_only: bool,
    },
    /// Make a member an admin of a group with admins, or no longer one
    /// (`sotto group admin team add bob`). Only an admin may.
    Admin {
        name: String,
        /// `add` or `remove`.
        #[arg(value_parser = ["add", "remove"])]
        action: String,
        username: String,
    },
    /// Change a group's settings (`sotto group set team --read-only on`).
    /// Only an admin may.
    Set {
        name: String,
        /// `on`: only admins may post (an announcement channel); `off`: everyone.
        #[arg(long, value_name = "on|off", value_parser = parse_on_off, action = clap::ArgAction::Set, required = true)]
        read_only: bool,
    },
    /// Open an invite link for a group with admins and print it (or print
    /// the one it has). Only an admin may. Anyone with the link can join
    /// (`sotto group join LINK`), in plain sight of every member, until the
    /// server's operator closes it.
    Invite {
        name: String,
        /// Close the group's link instead: every member refuses joiners by
        /// it from then on (run `invite` again for a new one).
        #[arg(long)]
        close: bool,
    },
    /// Join a group by an invite link (`sotto+invite://SERVER/LINK_ID#SECRET`).
    /// You read what is sent from then on, not what came before.
    Join { link: String },
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

/// `on` or `off`.
pub(crate) fn parse_on_off(text: &str) -> Result<bool, String> {
    match text {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("{text:?} is neither `on` nor `off`")),
    }
}

/// A disappearing-messages timer: a duration, or `off` (0).
pub(crate) fn parse_timer(text: &str) -> Result<u64, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(0);
    }
    let secs = parse_duration(text)?.as_secs();
    if secs == 0 {
        return Err("a timer of 0 is `off`".into());
    }
    Ok(secs)
}

/// A duration as people write it: a whole number and a unit, `s`, `m`, `h`
/// or `d` (`30s`, `5m`, `1h`, `7d`).
pub(crate) fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 5m, 1h or 7d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{text:?} needs a unit: s, m, h or d (like 30s, 5m, 1h, 7d)"
            ));
        }
    };
    number
        .checked_mul(seconds)
        .map(std::time::Duration::from_secs)
        .ok_or_else(|| format!("{text:?} is too long"))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(604_800)));
        for bad in ["", "5", "m", "1.5h", "-1d", "1w", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was accepted");
        }
    }
}

/// Why a message is reported (`sotto report --reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportReasonArg {
    Spam,
    Harassment,
    Illegal,
    Other,
}

impl From<ReportReasonArg> for sotto_client::ReportReason {
    fn from(reason: ReportReasonArg) -> Self {
        match reason {
            ReportReasonArg::Spam => Self::Spam,
            ReportReasonArg::Harassment => Self::Harassment,
            ReportReasonArg::Illegal => Self::Illegal,
            ReportReasonArg::Other => Self::Other,
        }
    }
}
