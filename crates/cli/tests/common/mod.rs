//! Running the real `sotto` binary from the CLI's end-to-end tests, as a
//! person would: one profile directory per person.

#![allow(dead_code, clippy::expect_used)] // each test file uses a part

use std::path::Path;
use std::process::{Command, Output};

/// Runs `sotto --profile PROFILE ARGS…` (ignoring `$SOTTO_PROFILE`).
pub fn sotto(profile: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sotto"))
        .arg("--profile")
        .arg(profile)
        .args(args)
        .env_remove("SOTTO_PROFILE")
        .output()
        .expect("run sotto")
}

/// Runs `sotto`, failing the test on a non-zero exit; (stdout, stderr).
pub fn ok_both(profile: &Path, args: &[&str]) -> (String, String) {
    let out = sotto(profile, args);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "sotto {args:?} failed:\nstdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

/// Runs `sotto`, failing the test on a non-zero exit; its stdout.
pub fn ok(profile: &Path, args: &[&str]) -> String {
    ok_both(profile, args).0
}

/// Runs `sotto`, expecting it to fail; its stderr.
pub fn fails(profile: &Path, args: &[&str]) -> String {
    let out = sotto(profile, args);
    assert!(!out.status.success(), "sotto {args:?} should have failed");
    String::from_utf8(out.stderr).expect("utf-8 output")
}

/// The JSON objects of `--json` output, one per line.
pub fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}
