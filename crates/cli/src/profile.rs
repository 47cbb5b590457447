//! Opening the profile: where it is, its passphrase when it is locked
//! (`lock`, `unlock`, `change-passphrase`), and the account warnings every
//! command prints until they are acknowledged.

use crate::args::Command;
use anyhow::{Context as _, Result, bail};
use sotto_client::{Client, Passphrase};
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// The key-log head age `--max-head-age` set for this run, if any.
static MAX_HEAD_AGE: OnceLock<Duration> = OnceLock::new();

/// Applies `--max-head-age` to every profile this run opens.
pub(crate) fn set_max_head_age(age: Duration) {
    // Set once, from the command line, before any profile is opened.
    let _ = MAX_HEAD_AGE.set(age);
}

/// Opens the profile (asking for its passphrase if it is locked), first
/// printing (on stderr) every warning about the account that the user has
/// not acknowledged: a device that none of the account's devices added is
/// shown by every command until then.
pub(crate) fn open(profile: &std::path::Path) -> Result<Client> {
    let mut client = open_profile(profile)?;
    if let Some(age) = MAX_HEAD_AGE.get() {
        client.set_max_head_age(*age);
    }
    let alerts = client.account_warnings(false)?;
    for alert in &alerts {
        eprintln!("{}", alert.text);
    }
    if !alerts.is_empty() {
        eprintln!("(`sotto warnings --ack` stops showing these warnings)");
    }
    Ok(client)
}

pub(crate) fn default_profile() -> Result<PathBuf> {
    Ok(dirs::data_dir()
        .context("cannot find a data directory; pass --profile DIR")?
        .join("sotto"))
}

/// Opens the profile, asking for its passphrase if it is locked.
pub(crate) fn open_profile(profile: &std::path::Path) -> Result<Client> {
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
pub(crate) fn lock_command(profile: &std::path::Path, command: &Command) -> Result<&'static str> {
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
pub(crate) fn ask_passphrase(prompt: &str) -> Result<Passphrase> {
    if let Ok(text) = std::env::var("SOTTO_PASSPHRASE") {
        return Ok(Passphrase::new(text)?);
    }
    let mut text = prompt_passphrase(prompt, "SOTTO_PASSPHRASE")?;
    Ok(Passphrase::new(std::mem::take(&mut *text))?)
}

/// A new passphrase from the variable `var`, or asked twice.
pub(crate) fn new_passphrase(var: &str) -> Result<Passphrase> {
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
pub(crate) fn prompt_passphrase(prompt: &str, var: &str) -> Result<zeroize::Zeroizing<String>> {
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
