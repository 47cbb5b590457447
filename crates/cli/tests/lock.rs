//! `sotto lock`, as a person (or a script, through SOTTO_PASSPHRASE) uses
//! it with the real binaries.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use sotto_testkit::ServerProcess;
use std::path::Path;
use std::process::{Command, Output};
use tempfile::TempDir;

fn sotto(profile: &Path, passphrase: Option<&str>, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sotto"));
    command
        .arg("--profile")
        .arg(profile)
        .args(args)
        .env_remove("SOTTO_PROFILE")
        .env_remove("SOTTO_PASSPHRASE")
        .env_remove("SOTTO_NEW_PASSPHRASE")
        .stdin(std::process::Stdio::null());
    if let Some(p) = passphrase {
        command.env("SOTTO_PASSPHRASE", p);
    }
    command.output().expect("run sotto")
}

fn ok(profile: &Path, passphrase: Option<&str>, args: &[&str]) -> String {
    let out = sotto(profile, passphrase, args);
    assert!(
        out.status.success(),
        "sotto {args:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(profile: &Path, passphrase: Option<&str>, args: &[&str]) -> String {
    let out = sotto(profile, passphrase, args);
    assert!(!out.status.success(), "sotto {args:?} should have failed");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn lock_then_every_command_needs_the_passphrase() {
    let data = TempDir::new().unwrap();
    let server = ServerProcess::spawn(data.path());
    let (alice, bob) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    ok(
        alice.path(),
        None,
        &["register", "alice", "--server", server.url()],
    );
    ok(
        bob.path(),
        None,
        &["register", "bob", "--server", server.url()],
    );
    ok(alice.path(), None, &["send", "bob", "before the lock"]);

    assert!(ok(alice.path(), Some("s3cret pass"), &["lock"]).contains("locked"));
    let again = fails(alice.path(), Some("s3cret pass"), &["lock"]);
    assert!(again.contains("already locked"), "{again}");

    // No terminal and no SOTTO_PASSPHRASE: a clear refusal.
    let none = fails(alice.path(), None, &["whoami"]);
    assert!(none.contains("SOTTO_PASSPHRASE"), "{none}");
    let wrong = fails(alice.path(), Some("not it"), &["send", "bob", "never sent"]);
    assert!(wrong.contains("wrong passphrase"), "{wrong}");

    ok(
        alice.path(),
        Some("s3cret pass"),
        &["send", "bob", "while locked"],
    );
    let got = ok(bob.path(), None, &["sync", "--json"]);
    assert!(
        got.contains("before the lock") && got.contains("while locked"),
        "{got}"
    );
    assert!(!got.contains("never sent"), "{got}");

    let out = sotto(alice.path(), Some("s3cret pass"), &["change-passphrase"]);
    assert!(!out.status.success(), "no new passphrase given");
    let mut change = Command::new(env!("CARGO_BIN_EXE_sotto"));
    let changed = change
        .arg("--profile")
        .arg(alice.path())
        .arg("change-passphrase")
        .env("SOTTO_PASSPHRASE", "s3cret pass")
        .env("SOTTO_NEW_PASSPHRASE", "other pass")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(changed.status.success(), "{changed:?}");
    fails(alice.path(), Some("s3cret pass"), &["whoami"]);
    assert!(ok(alice.path(), Some("other pass"), &["whoami"]).contains("alice"));

    ok(alice.path(), Some("other pass"), &["unlock"]);
    assert!(ok(alice.path(), None, &["history", "bob"]).contains("while locked"));
}

/// `sotto lock` killed at any moment leaves a profile that opens, plain or
/// locked, with its account and history: the locked copy is written beside
/// the profile and renamed over it.
#[test]
fn a_lock_killed_at_any_moment_loses_nothing() {
    let data = TempDir::new().unwrap();
    let server = ServerProcess::spawn(data.path());
    let (alice, bob) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    ok(
        alice.path(),
        None,
        &["register", "alice", "--server", server.url()],
    );
    ok(
        bob.path(),
        None,
        &["register", "bob", "--server", server.url()],
    );
    ok(
        alice.path(),
        None,
        &["send", "bob", "kept through every crash"],
    );
    // How long a whole `lock` takes here, to spread the kills over it.
    let started = std::time::Instant::now();
    ok(alice.path(), Some("crash pass"), &["lock"]);
    let whole = started.elapsed();
    ok(alice.path(), Some("crash pass"), &["unlock"]);
    let (mut plain, mut locked) = (0, 0);
    // Kills from the start to well past the measured time (a loaded machine
    // varies), until a few came too late to stop it.
    for step in 0..40u32 {
        if locked >= 3 {
            break;
        }
        let delay = whole * step / 10;
        let mut child = Command::new(env!("CARGO_BIN_EXE_sotto"))
            .arg("--profile")
            .arg(alice.path())
            .arg("lock")
            .env("SOTTO_PASSPHRASE", "crash pass")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        child.wait().unwrap();
        // Whatever state it stopped in, the profile opens and holds it all.
        let out = sotto(alice.path(), None, &["history", "bob"]);
        if out.status.success() {
            plain += 1;
            assert!(String::from_utf8_lossy(&out.stdout).contains("kept through every crash"));
        } else {
            locked += 1;
            let history = ok(alice.path(), Some("crash pass"), &["history", "bob"]);
            assert!(history.contains("kept through every crash"), "{history}");
            ok(alice.path(), Some("crash pass"), &["unlock"]);
        }
    }
    // Both outcomes happened: the kills spanned the whole rewrite.
    assert!(plain > 0 && locked > 0, "plain {plain}, locked {locked}");
    ok(alice.path(), None, &["send", "bob", "and still chatting"]);
    assert!(ok(bob.path(), None, &["sync"]).contains("and still chatting"));
}
