//! `sotto audit`: one audit of a server's key directory (resuming from a
//! state file) and of the web app it serves against the release the
//! directory publishes, and with `--sign/--follow` the auditor's loop around
//! [`sotto_client::auditor::Follower`]; `sotto auditor-key`: the auditor's
//! key file. Nothing here prints a username: the directory shows none.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail};
use sotto_client::Trust;
use sotto_client::auditor::{AuditorKey, FollowError, Follower};

use crate::output::Printer;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Reads an auditor key file (64 hex digits of the secret).
pub(crate) fn load_key(path: &Path) -> Result<AuditorKey> {
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the auditor key {}", path.display()))?,
    );
    let secret = zeroize::Zeroizing::new(
        hex::decode(text.trim())
            .with_context(|| format!("{} is not an auditor key file", path.display()))?,
    );
    AuditorKey::from_secret(&secret)
        .with_context(|| format!("{} is not an auditor key file", path.display()))
}

/// Makes an auditor key in `path` (owner-only), or reads the one there.
/// Returns its public key in hex and whether it was made now.
pub(crate) fn make_key(path: &Path) -> Result<(String, bool)> {
    if path.exists() {
        return Ok((hex::encode(load_key(path)?.public()), false));
    }
    let key = AuditorKey::generate();
    let text = zeroize::Zeroizing::new(format!("{}\n", hex::encode(key.secret().as_slice())));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((hex::encode(key.public()), true))
}

/// Audits `server`, countersigns, and with `interval` keeps following it.
/// A fork ends it with an error (non-zero exit) after printing the report;
/// a network failure while following is reported and retried.
pub(crate) async fn follow(
    out: &Printer,
    server: &str,
    trust: &Trust,
    key: AuditorKey,
    log_key: Option<&[u8]>,
    interval: Option<Duration>,
) -> Result<()> {
    let mut follower = Follower::new(server, trust, key, log_key);
    let public = hex::encode(follower.public_key());
    loop {
        match follower.step(now_ms()).await {
            Ok(step) => out.line(
                &format!(
                    "key directory of {server} audited and countersigned by {public}: epoch {} \
                     ({} new), root {}",
                    step.epoch.epoch,
                    step.new_epochs,
                    hex::encode(&step.epoch.root_hash)
                ),
                &serde_json::json!({
                    "epoch": step.epoch.epoch, "new_epochs": step.new_epochs,
                    "root": hex::encode(&step.epoch.root_hash),
                    "countersigned_at_ms": step.countersignature.signed_at_ms,
                }),
            ),
            Err(FollowError::Fork(fork)) => {
                let epoch = |e: &sotto_client::auditor::SignedEpoch| {
                    serde_json::json!({ "epoch": e.epoch,
                        "root": hex::encode(&e.root_hash),
                        "timestamp_ms": e.timestamp_ms,
                        "vrf_public_key": hex::encode(&e.vrf_public_key),
                        "signature": hex::encode(&e.signature) })
                };
                out.line(
                    &fork.to_string(),
                    &serde_json::json!({
                        "fork": true,
                        "audited": epoch(&fork.audited),
                        "presented": epoch(&fork.presented),
                        "reason": fork.reason,
                    }),
                );
                bail!("{server} forked its key directory; stopped");
            }
            Err(FollowError::Client(e)) if e.is_transient() && follower.audited().is_some() => {
                eprintln!(
                    "warning: {e}; trying again in {}s",
                    interval.unwrap_or_default().as_secs()
                );
            }
            Err(FollowError::Client(e)) => return Err(e.into()),
        }
        let Some(interval) = interval else {
            return Ok(());
        };
        tokio::time::sleep(interval).await;
    }
}

/// Where `sotto audit --state FILE` resumes: the server's log key and the
/// epoch and root the last audit reached.
#[derive(serde::Serialize, serde::Deserialize)]
struct AuditState {
    log_key: String,
    epoch: u64,
    root: String,
}

fn read_state(path: &Path) -> Result<Option<AuditState>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(serde_json::from_str(&text).with_context(|| {
            format!("{} is not a state file of sotto audit", path.display())
        })?)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Audits `server`'s key directory once: from the epoch `state` recorded
/// (or the empty directory) to the latest, then records the epoch reached.
pub(crate) async fn audit_once(
    out: &Printer,
    server: &str,
    trust: &Trust,
    log_key: Option<&[u8]>,
    state: Option<&Path>,
    require_web: bool,
) -> Result<()> {
    let previous = state.map(read_state).transpose()?.flatten();
    let mut pinned_key = log_key.map(<[u8]>::to_vec);
    let mut since = None;
    if let Some(previous) = &previous {
        let key = hex::decode(&previous.log_key).context("the state file's log key")?;
        if pinned_key.as_ref().is_some_and(|k| *k != key) {
            bail!("--log-key is not the log key the state file recorded for this server");
        }
        pinned_key = Some(key);
        let root = hex::decode(&previous.root)
            .ok()
            .and_then(|r| <[u8; 32]>::try_from(r.as_slice()).ok())
            .context("the state file's root is not 32 bytes of hex")?;
        since = Some(sotto_client::AuditedEpoch {
            epoch: previous.epoch,
            root,
        });
    }
    let report = sotto_client::audit_directory(server, trust, pinned_key.as_deref(), since).await?;
    out.line(
        &format!(
            "key directory of {server} verified: epochs {} to {} append-only, root {}",
            report.audited_from,
            report.epochs,
            hex::encode(report.root)
        ),
        &serde_json::json!({
            "audited_from": report.audited_from,
            "directory_epochs": report.epochs,
            "directory_root": hex::encode(report.root),
        }),
    );
    if let Some(path) = state {
        let log_key = match pinned_key {
            Some(key) => key,
            None => report.log_key.clone(),
        };
        let text = serde_json::to_string(&AuditState {
            log_key: hex::encode(log_key),
            epoch: report.epochs,
            root: hex::encode(report.root),
        })?;
        std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    audit_web(out, server, trust, &report, require_web).await
}

/// After the directory audit: the web app `server` serves, file by file,
/// against the release its directory publishes (one line per file). Fails
/// on any file served otherwise than logged, and on a release that does
/// not verify; a server that publishes none fails only with `require_web`.
async fn audit_web(
    out: &Printer,
    server: &str,
    trust: &Trust,
    report: &sotto_client::DirectoryAuditReport,
    require_web: bool,
) -> Result<()> {
    use sotto_client::{Served, WebAudit};
    let audit = sotto_client::audit_web_release(server, trust, &report.log_key, report.reached())
        .await
        .with_context(|| format!("the web app of {server} cannot be checked"))?;
    let (epoch, version, files) = match &audit {
        WebAudit::NotPublished => {
            out.line(
                &format!("{server} publishes no web release (it serves no logged web app)"),
                &serde_json::json!({ "web_release": null }),
            );
            if require_web {
                bail!("{server} publishes no web release, and --require-web asks for one");
            }
            return Ok(());
        }
        WebAudit::Checked {
            epoch,
            version,
            files,
        } => (epoch, version, files),
    };
    for file in files {
        let logged = hex::encode(file.logged);
        let (text, served) = match &file.served {
            Served::Bytes(hash) if file.ok() => {
                (format!("ok {} {logged}", file.path), hex::encode(hash))
            }
            Served::Bytes(hash) => (
                format!(
                    "MISMATCH {} served {} / logged {logged}",
                    file.path,
                    hex::encode(hash)
                ),
                hex::encode(hash),
            ),
            Served::Missing(status) => (
                format!("MISSING {} (HTTP {status}) / logged {logged}", file.path),
                String::new(),
            ),
        };
        out.line(
            &text,
            &serde_json::json!({
                "path": file.path, "ok": file.ok(), "logged": logged, "served": served,
            }),
        );
    }
    let bad: Vec<&str> = files
        .iter()
        .filter(|f| !f.ok())
        .map(|f| f.path.as_str())
        .collect();
    if !bad.is_empty() {
        bail!(
            "{server} serves a web app other than the one it logged ({}): do not use its web \
             client, and tell its users",
            bad.join(", ")
        );
    }
    out.line(
        &format!(
            "web app of {server} verified: {} files as logged (release version {version}, \
             directory epoch {epoch})",
            files.len().saturating_sub(1)
        ),
        &serde_json::json!({ "web_release_version": version, "web_release_epoch": epoch }),
    );
    Ok(())
}
