//! `sotto audit --sign/--follow` and `sotto auditor-key`: the auditor's key
//! file and the follow loop around [`sotto_client::auditor::Follower`].

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
                    "key log of {server} verified and countersigned by {public}: {} entries \
                     ({} new), {} accounts, {} active devices, root {}",
                    step.head.tree_size,
                    step.new_entries,
                    step.report.accounts,
                    step.report.devices,
                    hex::encode(&step.head.root_hash)
                ),
                &serde_json::json!({
                    "tree_size": step.head.tree_size, "new_entries": step.new_entries,
                    "accounts": step.report.accounts, "devices": step.report.devices,
                    "root": hex::encode(&step.head.root_hash),
                    "countersigned_at_ms": step.countersignature.signed_at_ms,
                }),
            ),
            Err(FollowError::Fork(fork)) => {
                out.line(
                    &fork.to_string(),
                    &serde_json::json!({
                        "fork": true,
                        "audited": { "tree_size": fork.audited.tree_size,
                            "root": hex::encode(&fork.audited.root_hash),
                            "timestamp_ms": fork.audited.timestamp_ms,
                            "signature": hex::encode(&fork.audited.signature) },
                        "presented": { "tree_size": fork.presented.tree_size,
                            "root": hex::encode(&fork.presented.root_hash),
                            "timestamp_ms": fork.presented.timestamp_ms,
                            "signature": hex::encode(&fork.presented.signature) },
                        "reason": fork.reason,
                    }),
                );
                bail!("{server} forked its key log; stopped");
            }
            Err(FollowError::Client(e)) if e.is_transient() && follower.head().is_some() => {
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
