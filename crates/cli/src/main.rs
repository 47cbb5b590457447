//! `sotto`: the command-line client. Each command opens the profile, does its
//! work over one connection, prints the result and exits; `listen` stays.

mod args;
mod attachments;
mod auditor;
mod chat;
mod output;
mod profile;

use anyhow::{Context as _, Result, bail};
use args::{Cli, Command, DeviceCommand, GroupCommand};
use clap::Parser as _;
use output::{Printer, confirm, date_of, qr};
use profile::{default_profile, lock_command, open, open_profile};
use sotto_client::{Client, ConversationKind};
use std::process::ExitCode;
use tracing_subscriber::fmt::writer::BoxMakeWriter;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // `sotto chat` owns the screen: its log goes to a file or nowhere.
    let (writer, ansi) = match &cli.command {
        Command::Chat { log } => match chat::log_writer(log.as_deref()) {
            Ok(writer) => (writer, false),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::FAILURE;
            }
        },
        _ => (BoxMakeWriter::new(std::io::stderr), true),
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(writer)
        .with_ansi(ansi)
        .init();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Completions { shell } => {
            // Into a buffer: clap_complete panics if stdout closes early.
            let mut script = Vec::new();
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(*shell, &mut command, "sotto", &mut script);
            std::io::Write::write_all(&mut std::io::stdout(), &script)?;
            return Ok(());
        }
        Command::Man => {
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut std::io::stdout())?;
            return Ok(());
        }
        _ => {}
    }
    let profile = match cli.profile {
        Some(dir) => dir,
        None => default_profile()?,
    };
    if let Some(age) = cli.max_head_age {
        profile::set_max_head_age(age);
    }
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
        Command::Send {
            group,
            file: Some(file),
            args,
            ..
        } => attachments::send(&profile, &out, group, &args, &file).await?,
        Command::Save { id, path } => attachments::save(&profile, &out, &id, &path).await?,
        Command::Send {
            group,
            reply_to,
            args,
            file: None,
        } => {
            let mut client = open(&profile)?;
            let reply_to = reply_to.as_deref();
            let sent = match group {
                Some(name) => client.reply_group(&name, &args.join(" "), reply_to).await?,
                None => {
                    let Some((user, words)) = args.split_first() else {
                        bail!("usage: sotto send USERNAME TEXT")
                    };
                    if words.is_empty() {
                        bail!("nothing to send: usage is `sotto send USERNAME TEXT`");
                    }
                    client
                        .reply_direct(user, &words.join(" "), reply_to)
                        .await?
                }
            };
            client.disconnect().await;
            out.entry(&sent);
        }
        Command::Timer { group, args } => {
            let (kind, name, duration) = match (group, args.as_slice()) {
                (Some(name), [duration]) => (ConversationKind::Group, name, duration),
                (None, [user, duration]) => (ConversationKind::Direct, user.clone(), duration),
                _ => bail!(
                    "usage: sotto timer USERNAME DURATION|off, or sotto timer --group NAME DURATION|off"
                ),
            };
            let secs = args::parse_timer(duration).map_err(anyhow::Error::msg)?;
            let mut client = open(&profile)?;
            let line = client.set_timer(kind, &name, secs).await?;
            client.disconnect().await;
            out.entry(&line);
        }
        Command::Typing {
            group,
            username,
            stop,
        } => {
            let (kind, name) = match (group, username) {
                (Some(name), _) => (ConversationKind::Group, name),
                (None, Some(user)) => (ConversationKind::Direct, user),
                (None, None) => bail!("name a user or --group NAME"),
            };
            let mut client = open(&profile)?;
            client.send_typing(kind, &name, !stop).await?;
            client.disconnect().await;
        }
        Command::Config { setting, value } => {
            if setting != "read-receipts" {
                bail!("unknown setting {setting:?}; the settings are: read-receipts");
            }
            let client = open(&profile)?;
            match value.as_deref() {
                None => {}
                Some("on") => client.set_read_receipts(true)?,
                Some("off") => client.set_read_receipts(false)?,
                Some(other) => bail!("read-receipts is `on` or `off`, not {other:?}"),
            }
            let on = client.read_receipts()?;
            out.line(
                &format!("read-receipts {}", if on { "on" } else { "off" }),
                &serde_json::json!({ "read_receipts": on }),
            );
        }
        Command::React { id, emoji } => {
            let mut client = open(&profile)?;
            let changed = client.react(&id, &emoji).await;
            client.disconnect().await;
            out.entry(&changed?);
        }
        Command::Edit { id, text } => {
            let mut client = open(&profile)?;
            let changed = client.edit(&id, &text.join(" ")).await;
            client.disconnect().await;
            out.entry(&changed?);
        }
        Command::Delete { id } => {
            let mut client = open(&profile)?;
            let changed = client.delete(&id).await;
            client.disconnect().await;
            out.entry(&changed?);
        }
        Command::Report { id, reason, note } => {
            let mut client = open(&profile)?;
            let sent = client.report(&id, reason.into(), &note).await;
            client.disconnect().await;
            sent?;
            out.line(
                &format!("reported message {id} to the server's operator"),
                &serde_json::json!({ "reported": id }),
            );
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
        Command::Chat { .. } => chat::run(open(&profile)?).await?,
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
            follow,
            sign: Some(keyfile),
            interval,
            trust,
            ..
        } => {
            let log_key = log_key
                .map(|key| hex::decode(key.trim()).context("--log-key is not hex"))
                .transpose()?;
            let key = auditor::load_key(&keyfile)?;
            auditor::follow(
                &out,
                &server,
                &trust.trust()?,
                key,
                log_key.as_deref(),
                follow.then_some(interval),
            )
            .await?;
        }
        Command::AuditorKey { keyfile } => {
            let (public, created) = auditor::make_key(&keyfile)?;
            let text = if created {
                format!(
                    "auditor key written to {}; its public key: {public}",
                    keyfile.display()
                )
            } else {
                format!(
                    "auditor key in {}; its public key: {public}",
                    keyfile.display()
                )
            };
            out.line(
                &text,
                &serde_json::json!({ "public_key": public, "created": created }),
            );
        }
        Command::TrustAuditor {
            pubkey,
            max_lag,
            remove,
        } => {
            let key = hex::decode(pubkey.trim()).context("the auditor key is not hex")?;
            let mut client = open(&profile)?;
            if remove {
                let removed = client.distrust_auditor(&key)?;
                let text = if removed {
                    format!("auditor {} is no longer required", hex::encode(&key))
                } else {
                    format!("auditor {} was not required", hex::encode(&key))
                };
                out.line(
                    &text,
                    &serde_json::json!({ "auditor": hex::encode(&key), "removed": removed }),
                );
            } else {
                client.trust_auditor(&key, max_lag)?;
                out.line(
                    &format!(
                        "key-directory epochs now need a countersignature by auditor {} at most {} minutes old",
                        hex::encode(&key),
                        max_lag.as_secs() / 60
                    ),
                    &serde_json::json!({ "auditor": hex::encode(&key), "max_lag_secs": max_lag.as_secs() }),
                );
            }
        }
        Command::Audit {
            server,
            log_key,
            trust,
            state,
            require_web,
            ..
        } => {
            let log_key = log_key
                .map(|key| hex::decode(key.trim()).context("--log-key is not hex"))
                .transpose()?;
            auditor::audit_once(
                &out,
                &server,
                &trust.trust()?,
                log_key.as_deref(),
                state.as_deref(),
                require_web,
            )
            .await?;
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
        // Printed above, before any profile is opened.
        Command::Completions { .. } | Command::Man => {}
    }
    Ok(())
}

async fn group(profile: &std::path::Path, command: GroupCommand, out: &Printer) -> Result<()> {
    let mut client = open(profile)?;
    match command {
        GroupCommand::Create {
            name,
            members,
            admins,
            read_only,
        } => {
            if admins || read_only {
                client
                    .create_group_with_admins(&name, &members, read_only)
                    .await?;
            } else {
                client.create_group(&name, &members).await?;
            }
            out.line(
                &format!("created {name}"),
                &serde_json::json!({ "created": name, "admins": admins || read_only, "read_only": read_only }),
            );
        }
        GroupCommand::Admin {
            name,
            action,
            username,
        } => {
            let admin = action == "add";
            client.set_admin(&name, &username, admin).await?;
            let text = if admin {
                format!("{username} is now an admin of {name}")
            } else {
                format!("{username} is no longer an admin of {name}")
            };
            out.line(
                &text,
                &serde_json::json!({ "group": name, "username": username, "admin": admin }),
            );
        }
        GroupCommand::Set { name, read_only } => {
            client.set_read_only(&name, read_only).await?;
            let text = if read_only {
                format!("{name} is now read-only: only its admins can post")
            } else {
                format!("everyone in {name} can post")
            };
            out.line(
                &text,
                &serde_json::json!({ "group": name, "read_only": read_only }),
            );
        }
        GroupCommand::Invite { name, close: true } => {
            let closed = client.close_invite_link(&name).await?;
            let text = if closed {
                format!("closed the invite link of {name}")
            } else {
                format!("{name} has no invite link")
            };
            out.line(
                &text,
                &serde_json::json!({ "group": name, "invite_link_closed": closed }),
            );
        }
        GroupCommand::Invite { name, close: false } => {
            let link = client.create_invite_link(&name).await?;
            out.line(
                &link,
                &serde_json::json!({ "group": name, "invite_link": link }),
            );
        }
        GroupCommand::Join { link } => {
            let (name, entries) = client.join_invite_link(&link).await?;
            for entry in &entries {
                out.entry(entry);
            }
            out.line(
                &format!("joined {name}"),
                &serde_json::json!({ "joined": name }),
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
                let policy = client.group_admins(&name)?;
                let read_only = policy.as_ref().is_some_and(|p| p.read_only);
                let admins: Vec<&str> = policy
                    .as_ref()
                    .map(|p| p.admins.iter().map(|a| a.as_str()).collect())
                    .unwrap_or_default();
                let mut text = format!("{name} ({})", users.join(", "));
                if !admins.is_empty() {
                    text.push_str(&format!(" admins: {}", admins.join(", ")));
                }
                if read_only {
                    text.push_str(" [read-only]");
                }
                out.line(
                    &text,
                    &serde_json::json!({ "name": name, "members": users, "admins": admins, "read_only": read_only }),
                );
            }
        }
        GroupCommand::Members { name } => {
            // In JSON every line is a member; `group list --json` says
            // whether the group is read-only.
            if !out.json && client.group_admins(&name)?.is_some_and(|p| p.read_only) {
                out.line(
                    &format!("{name} is read-only: only its admins can post"),
                    &serde_json::json!({ "group": name, "read_only": true }),
                );
            }
            for member in client.members(&name)? {
                let role = if member.admin { " admin" } else { "" };
                out.line(
                    &format!("{} (device {}){role}", member.username, member.device_id),
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
            let removal = client.remove_device(&device_id).await?;
            let mut text = format!(
                "removed device {device_id}\n\
                 rotated your identity key (the removed device's copy of the old one can no \
                 longer change your account): {} -> {}\n\
                 your contacts see that your key was rotated by you, and your safety numbers \
                 with them changed: compare them again (`sotto verify USER`)",
                removal.old_identity_key, removal.new_identity_key
            );
            if !removal.devices_given_new_key.is_empty() {
                text.push_str(&format!(
                    "\nhanded the new key to your other devices ({}), sealed for them alone: \
                     they adopt it when they next sync",
                    removal.devices_given_new_key.join(", ")
                ));
            }
            if !removal.devices_without_new_key.is_empty() {
                text.push_str(&format!(
                    "\nyour other devices ({}) keep sending and reading, but could not be handed \
                     the new key: only this device can link or remove devices now",
                    removal.devices_without_new_key.join(", ")
                ));
            }
            out.line(
                &text,
                &serde_json::json!({
                    "removed": device_id,
                    "old_identity_key": removal.old_identity_key,
                    "new_identity_key": removal.new_identity_key,
                    "devices_given_new_key": removal.devices_given_new_key,
                    "devices_without_new_key": removal.devices_without_new_key,
                }),
            );
        }
    }
    client.disconnect().await;
    Ok(())
}
