//! Checking what a `sotto-server` subcommand (legal, account, admin…)
//! printed and how it exited.

#![allow(dead_code)] // each test file uses a part

use std::process::Output;

/// Output bytes as text, for messages.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The command exited 0; otherwise fails showing both streams.
#[track_caller]
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
}

/// The command exited 1 and its stderr names `needle`.
#[track_caller]
pub fn assert_failure_naming(output: &Output, needle: &str) {
    assert_eq!(output.status.code(), Some(1), "{}", text(&output.stderr));
    let stderr = text(&output.stderr);
    assert!(stderr.contains(needle), "stderr lacks {needle:?}: {stderr}");
}
