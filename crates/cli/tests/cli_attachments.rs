//! `sotto send … --file` and `sotto save` through the real binaries: the
//! JSON lines carry the attachment, the saved file is the sent one, and
//! no progress bar is drawn when stderr is not a terminal.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

mod common;

use common::{json_lines as json, ok_both as ok, sotto};
use sotto_testkit::ServerProcess;
use tempfile::TempDir;

#[test]
fn a_file_is_sent_listed_and_saved_on_the_command_line() {
    let data = TempDir::new().unwrap();
    let server = ServerProcess::spawn(data.path());
    let (alice, bob, files) = (
        TempDir::new().unwrap(),
        TempDir::new().unwrap(),
        TempDir::new().unwrap(),
    );
    ok(
        alice.path(),
        &["register", "alice", "--server", server.url()],
    );
    ok(bob.path(), &["register", "bob", "--server", server.url()]);
    let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let file = files.path().join("notes.txt");
    std::fs::write(&file, &bytes).unwrap();

    let (stdout, stderr) = ok(
        alice.path(),
        &[
            "--json",
            "send",
            "bob",
            "--file",
            file.to_str().unwrap(),
            "my",
            "notes",
        ],
    );
    assert!(
        !stderr.contains("uploading"),
        "no bar without a terminal: {stderr}"
    );
    let sent = &json(&stdout)[0];
    assert_eq!(sent["text"], "my notes");
    assert_eq!(sent["attachment"]["name"], "notes.txt");
    assert_eq!(sent["attachment"]["content_type"], "text/plain");
    let size = sent["attachment"]["size"].as_u64().unwrap();
    assert!(size > 200_000);

    let (stdout, _) = ok(bob.path(), &["--json", "sync"]);
    let received = json(&stdout)
        .into_iter()
        .find(|l| l["attachment"]["name"] == "notes.txt")
        .expect("bob got the file's message");
    assert_eq!(received["attachment"]["size"], size);
    let id = received["id"].as_str().unwrap();
    let (text, _) = ok(bob.path(), &["history", "alice"]);
    assert!(
        text.contains(&format!(
            "[file: notes.txt (text/plain, {size} bytes); sotto save {id} PATH]"
        )),
        "{text}"
    );

    let out = files.path().join("saved.txt");
    let (stdout, stderr) = ok(bob.path(), &["save", id, out.to_str().unwrap()]);
    assert!(
        stdout.contains("saved") && stdout.contains("200000 bytes"),
        "{stdout}"
    );
    assert!(!stderr.contains("downloading"), "{stderr}");
    assert_eq!(std::fs::read(&out).unwrap(), bytes);

    // A message without a file, and a file without a conversation.
    let (stdout, _) = ok(bob.path(), &["--json", "send", "alice", "thanks"]);
    let plain = json(&stdout)[0]["id"].as_str().unwrap().to_owned();
    assert!(json(&stdout)[0]["attachment"].is_null());
    let failed = sotto(bob.path(), &["save", &plain, out.to_str().unwrap()]);
    assert!(!failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stderr).contains("has no attachment"));
    let failed = sotto(bob.path(), &["send", "--file", "/nonexistent/file"]);
    assert!(!failed.status.success());
}
