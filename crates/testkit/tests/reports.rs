//! Abuse reports end to end (issue #18): real `sotto-server` and `sotto`
//! binaries. A recipient reports a message with `sotto report`; the
//! operator's `sotto-server moderation show` verifies it and names the real
//! sender account and device; forged reports (changed text, sender, time)
//! sent by a malicious client fail with their own reasons; `moderation
//! resolve --action disable-account` disables the sender, who can no longer
//! log in or send, and the signed transparency report counts the action.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use prost::Message as _;
use sotto_core::content::{AppContent, Body, Text};
use sotto_core::franking::{self, AbuseReport};
use sotto_proto::v1::{self, ErrorCode, client_frame, response};
use sotto_testkit::{ServerProcess, binary, wire};
use std::path::Path;
use std::process::{Command, Output};
use tempfile::TempDir;

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn sotto(profile: &Path, args: &[&str]) -> Output {
    Command::new(binary("sotto"))
        .arg("--profile")
        .arg(profile)
        .args(args)
        .env_remove("SOTTO_PROFILE")
        .output()
        .unwrap()
}

#[track_caller]
fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "failed:\nstdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn server_cmd(data: &Path, args: &[&str]) -> Output {
    Command::new(binary("sotto-server"))
        .args(args)
        .arg("--data")
        .arg(data)
        .env_remove("SOTTO_DATA")
        .output()
        .unwrap()
}

fn json_lines(stdout: &str) -> Vec<serde_json::Value> {
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The stored report `id`, as the server queued it.
fn stored_report(data: &Path, id: i64) -> AbuseReport {
    let db = rusqlite::Connection::open(data.join("sotto.db")).unwrap();
    let bytes: Vec<u8> = db
        .query_row(
            "SELECT report FROM moderation_reports WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    AbuseReport::decode(bytes.as_slice()).unwrap()
}

/// Sends `report` as a logged-in malicious client; the response.
async fn send_report(client: &mut wire::Client, report: AbuseReport) -> v1::Response {
    client
        .request(client_frame::Body::ReportMessage(v1::ReportMessage {
            report: Some(report),
        }))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_report_verifies_forgeries_fail_and_the_sender_is_disabled() {
    let data = TempDir::new().unwrap();
    let server = ServerProcess::spawn(data.path());
    let url = server.url().to_owned();
    let (alice, bob) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    ok(sotto(
        alice.path(),
        &["register", "alice", "--server", &url],
    ));
    ok(sotto(bob.path(), &["register", "bob", "--server", &url]));

    ok(sotto(
        alice.path(),
        &["send", "bob", "an unrelated private word"],
    ));
    ok(sotto(alice.path(), &["send", "bob", "buy cheap pills now"]));
    let synced = json_lines(&ok(sotto(bob.path(), &["sync", "--json"])));
    let spam = synced
        .iter()
        .find(|m| m["text"] == "buy cheap pills now")
        .expect("bob got the message");
    let id = spam["id"].as_str().unwrap().to_owned();
    let members = json_lines(&ok(sotto(bob.path(), &["members", "alice", "--json"])));
    let alice_device = members.iter().find(|m| m["username"] == "alice").unwrap()["device_id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Oversized: refused before anything is sent.
    let out = sotto(
        bob.path(),
        &[
            "report",
            &id,
            "--reason",
            "spam",
            "--note",
            &"x".repeat(2000),
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("too large"),
        "{}",
        text(&out.stderr)
    );
    // Alice cannot report her own message: she holds no evidence for it.
    let out = sotto(alice.path(), &["report", &id, "--reason", "spam"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("cannot be reported"));

    ok(sotto(
        bob.path(),
        &[
            "report",
            &id,
            "--reason",
            "spam",
            "--note",
            "third time today",
        ],
    ));

    let listed = text(&server_cmd(data.path(), &["moderation", "list"]).stdout);
    assert!(listed.contains("1  received"), "{listed}");
    assert!(listed.contains("open, verified"), "{listed}");
    let shown = ok(server_cmd(data.path(), &["moderation", "show", "1"]));
    assert!(
        shown.contains(&format!("sender: alice (device {alice_device})")),
        "{shown}"
    );
    assert!(shown.contains("reason: spam"), "{shown}");
    assert!(shown.contains("note: third time today"), "{shown}");
    assert!(shown.contains("content: buy cheap pills now"), "{shown}");
    assert!(shown.contains("reported by: bob"), "{shown}");
    assert!(shown.contains("group: "), "{shown}");
    assert!(shown.contains("accepted at: "), "{shown}");
    // Only the reported message left Bob's device.
    assert!(!shown.contains("unrelated"), "{shown}");
    let stored = std::fs::read(data.path().join("sotto.db")).unwrap();
    assert!(
        !stored.windows(9).any(|w| w == b"unrelated"),
        "the server holds another message of the conversation"
    );

    // A malicious client (any account) sends forgeries of the genuine report.
    let genuine = stored_report(data.path(), 1);
    let mut mallory =
        wire::Client::connect(server.url().trim_start_matches("http://").parse().unwrap()).await;
    let account = wire::Account::new("mallory");
    mallory.register(&account).await;
    let forged_text = {
        let (group_id, _) = franking::split_franked(&genuine.content).unwrap();
        let content = AppContent {
            id: vec![1; 16],
            sent_at_ms: 1,
            body: Some(Body::Text(Text {
                text: "I will hurt you".into(),
            })),
            log_head: None,
            padding: Vec::new(),
            franking: None,
        };
        AbuseReport {
            content: franking::franked_content(group_id, &content).to_vec(),
            ..genuine.clone()
        }
    };
    let forged_time = AbuseReport {
        accepted_at_ms: genuine.accepted_at_ms - 3_600_000,
        ..genuine.clone()
    };
    let forged_sender = AbuseReport {
        sender_username: "bob".into(),
        sender_device_id: stored_bob_device(&bob),
        ..genuine.clone()
    };
    for forged in [forged_text, forged_time, forged_sender] {
        let answer = send_report(&mut mallory, forged).await;
        assert!(
            matches!(answer.result, Some(response::Result::Done(_))),
            "{answer:?}"
        );
    }
    let oversized = AbuseReport {
        note: "x".repeat(franking::MAX_NOTE_BYTES + 1),
        ..genuine.clone()
    };
    let answer = send_report(&mut mallory, oversized).await;
    match answer.result {
        Some(response::Result::Error(e)) => {
            assert_eq!(e.code, ErrorCode::TooLarge as i32);
            assert!(e.message.contains("note"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    for (id, reason) in [
        ("2", "the content and salt do not give the franked tag"),
        ("3", "the frank is not this server's"),
        ("4", "the named sender device did not sign this message"),
    ] {
        let shown = ok(server_cmd(data.path(), &["moderation", "show", id]));
        assert!(
            shown.contains(&format!("verification failed: {reason}")),
            "report {id}: {shown}"
        );
        assert!(!shown.contains("\nsender: "), "{shown}");
    }
    // No account is disabled on a forged report's word.
    let out = server_cmd(
        data.path(),
        &["moderation", "resolve", "4", "--action", "disable-account"],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("does not verify"),
        "{}",
        text(&out.stderr)
    );

    // The genuine one: Alice's account is disabled.
    let resolved = ok(server_cmd(
        data.path(),
        &["moderation", "resolve", "1", "--action", "disable-account"],
    ));
    assert!(resolved.contains("moderation-disable"), "{resolved}");
    let out = sotto(alice.path(), &["send", "bob", "still here?"]);
    assert!(!out.status.success(), "a disabled account sent");
    assert!(
        text(&out.stderr).contains("disabled"),
        "{}",
        text(&out.stderr)
    );
    // Resolved: its content and reporter are gone; the action is counted.
    let shown = ok(server_cmd(data.path(), &["moderation", "show", "1"]));
    assert!(shown.contains("resolved"), "{shown}");
    assert!(
        !shown.contains("pills") && !shown.contains("bob"),
        "{shown}"
    );
    let published = ok(server_cmd(data.path(), &["legal", "report", "--json"]));
    assert!(published.contains("\"moderation-disable\""), "{published}");
    assert!(!published.contains("alice"), "{published}");
}

/// Bob's device id, from his own profile (`whoami --json`).
fn stored_bob_device(bob: &TempDir) -> Vec<u8> {
    let whoami = json_lines(&ok(sotto(bob.path(), &["whoami", "--json"])));
    let hex = whoami[0]["device_id"].as_str().unwrap();
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}
