//! The court-order side, through the real `sotto-server` binary: the signed
//! export holds exactly the inventoried fields, every export lands in the
//! signed, hash-chained transparency report, edits are caught, the warrant
//! canary is served, and no IP address is logged by default.

// Test code: failing loudly is the point (clippy.toml only covers #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod inventory_doc;

mod common;

use common::{assert_failure_naming, assert_success, text};
use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Output, Stdio};

use serde_json::Value;
use sotto_server::legal::{self, Canary, SignedDocument};
use sotto_testkit::TestServer;
use sotto_testkit::wire::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::Command;

fn today() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        / 86_400
}

#[track_caller]
fn assert_today(day: u64, what: &str) {
    let now = today();
    assert!(
        day == now || day + 1 == now,
        "{what} is {day}, not today's day number {now}"
    );
}

async fn legal_cmd(data: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sotto-server"));
    command.arg("legal").args(args);
    if args.first() != Some(&"verify-report") {
        command.arg("--data").arg(data);
    }
    tokio::time::timeout(WAIT, command.env_remove("SOTTO_DATA").output())
        .await
        .unwrap()
        .unwrap()
}

fn http_body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, body)| body)
}

/// Queues one message of `payload` for `device_id`, through the protocol,
/// in a new group; returns the size of what is stored (the framed payload).
async fn queue_for(client: &mut Client, device_id: &[u8], payload: &[u8]) -> usize {
    let group = create_group(client).await;
    let stored = framed(
        &group,
        1,
        sotto_proto::mls_framing::ContentType::Application,
        payload,
    )
    .len();
    assert_done(
        &client
            .request(send_message(&random_id(), &group, &[device_id], payload))
            .await,
    );
    stored
}

#[tokio::test]
async fn export_report_tampering_and_canary() {
    let server = TestServer::start().await;
    let data = server.data_dir().to_path_buf();
    let (mut client, alice) = server.registered("alice").await;
    let payload = vec![42u8; 1234];
    let stored = queue_for(&mut client, &alice.device_id, &payload).await;
    // Web Push on (an allowed endpoint; nothing is queued for alice while
    // she is offline, so nothing is pushed).
    let endpoint = "https://fcm.googleapis.com/fcm/send/legal-export-test";
    assert_done(
        &client
            .request(sotto_proto::v1::client_frame::Body::SetPushEndpoint(
                sotto_proto::v1::SetPushEndpoint {
                    endpoint: endpoint.into(),
                },
            ))
            .await,
    );

    // Day granularity in what the protocol stored.
    {
        let db = server.db();
        let created: u64 = db
            .query_row(
                "SELECT created_day FROM accounts WHERE username = 'alice'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_today(created, "accounts.created_day");
        let (d_created, d_seen): (u64, u64) = db
            .query_row("SELECT created_day, last_seen_day FROM devices", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .unwrap();
        assert_today(d_created, "devices.created_day");
        assert_today(d_seen, "devices.last_seen_day");
        let queued: u64 = db
            .query_row("SELECT enqueued_day FROM mailbox", [], |r| r.get(0))
            .unwrap();
        assert_today(queued, "mailbox.enqueued_day");
    }

    // No canary yet.
    assert!(
        http_get(server.addr(), "/canary")
            .await
            .starts_with("HTTP/1.1 404")
    );

    // Export alice to a file.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("alice.json");
    let exported = legal_cmd(
        &data,
        &[
            "export",
            "alice",
            "--request-id",
            "REQ-1",
            "--out",
            out.to_str().unwrap(),
        ],
    )
    .await;
    assert_success(&exported);
    assert!(text(&exported.stderr).contains("transparency report entry 1"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&out).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "export is readable by others: {mode:o}");
    }
    let value: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(
        value.as_object().unwrap().keys().collect::<BTreeSet<_>>(),
        ["document", "key", "signature"]
            .iter()
            .map(|s| s.to_string())
            .collect::<BTreeSet<_>>()
            .iter()
            .collect()
    );
    let signed = SignedDocument::verify(&value, None).unwrap();
    let document = &signed.document;
    assert_eq!(document["format"], legal::EXPORT_FORMAT);
    assert_eq!(document["request_id"], "REQ-1");
    assert_today(document["day"].as_u64().unwrap(), "export day");
    let accounts = document["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1);
    let account = &accounts[0];
    // Exactly the fields the inventory promises.
    let mut fields = BTreeSet::new();
    legal::leaf_paths("account", account, &mut fields);
    assert_eq!(
        fields,
        inventory_doc::export_paths(),
        "export fields differ from docs/SERVER_DATA.md"
    );
    assert_eq!(account["username"], "alice");
    assert_eq!(
        account["identity_key"],
        hex::encode(alice.identity.verifying_key().to_bytes())
    );
    assert_eq!(account["log_entries"], 2);
    let device = &account["devices"][0];
    assert_eq!(device["device_id"], hex::encode(&alice.device_id));
    assert_eq!(
        device["device_key"],
        hex::encode(alice.device.verifying_key().to_bytes())
    );
    assert_eq!(device["removed_day"], Value::Null);
    assert_eq!(device["queued_messages"], 1);
    assert_eq!(device["queued_bytes"], stored);
    assert_eq!(device["key_packages"], 0);
    assert_eq!(device["push_endpoint"], endpoint);

    // A signature over anything else fails.
    let mut forged = value.clone();
    forged["document"]["accounts"][0]["created_day"] = Value::from(1);
    assert!(SignedDocument::verify(&forged, None).is_err());

    // Unknown account: exit 1, nothing recorded.
    let unknown = legal_cmd(&data, &["export", "nobody", "--request-id", "REQ-X"]).await;
    assert_failure_naming(&unknown, "no account named \"nobody\"");
    assert!(unknown.stdout.is_empty());

    // A second export, to stdout.
    let second = legal_cmd(&data, &["export", "alice", "--request-id", "REQ-2"]).await;
    assert_success(&second);
    let second: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(
        SignedDocument::verify(&second, Some(&signed.key))
            .unwrap()
            .key,
        signed.key
    );

    // The report: two entries, chained and signed.
    let human = legal_cmd(&data, &["report"]).await;
    assert_success(&human);
    let human = text(&human.stdout);
    assert!(human.contains("2 request(s)"), "{human}");
    assert!(
        human.contains("REQ-1") && human.contains("REQ-2") && !human.contains("REQ-X"),
        "{human}"
    );
    assert!(human.contains(&hex::encode(signed.key)), "{human}");

    let json = legal_cmd(&data, &["report", "--json"]).await;
    assert_success(&json);
    let report_value: Value = serde_json::from_slice(&json.stdout).unwrap();
    let report = legal::verify_report(&report_value, Some(&signed.key)).unwrap();
    assert_eq!(report.entries.len(), 2);
    assert_eq!(report.entries[0].request_id, "REQ-1");
    assert_eq!(report.entries[0].kind, "export");
    assert_eq!(report.entries[0].accounts, 1);
    assert_eq!(report.entries[1].prev_hash, report.entries[0].hash);
    assert_today(report.entries[1].day, "report entry day");

    let report_file = dir.path().join("report.json");
    let original = text(&json.stdout);
    std::fs::write(&report_file, &original).unwrap();
    let ok = legal_cmd(&data, &["verify-report", report_file.to_str().unwrap()]).await;
    assert_success(&ok);
    assert!(text(&ok.stdout).contains("report verified: 2 request(s)"));
    let wrong_key = legal_cmd(
        &data,
        &[
            "verify-report",
            report_file.to_str().unwrap(),
            "--key",
            &hex::encode([1u8; 32]),
        ],
    )
    .await;
    assert_failure_naming(&wrong_key, "not the expected");

    // Flipping one byte in an entry names that entry.
    let flip = |from: &str, to: &str| {
        assert_eq!(from.len(), to.len());
        assert_eq!(original.matches(from).count(), 1, "{from}");
        original.replacen(from, to, 1)
    };
    for (edited, entry) in [
        (flip("\"REQ-2\"", "\"REQ-3\""), "entry 2"),
        (flip("\"REQ-1\"", "\"REQ-0\""), "entry 1"),
        (
            {
                // Entry 1's own hash (it also appears as entry 2's prev_hash).
                let hash = report_value["document"]["entries"][0]["hash"]
                    .as_str()
                    .unwrap();
                let field = format!("\"hash\": \"{hash}\"");
                let mut changed = field.clone();
                let last = if hash.ends_with('0') { "1\"" } else { "0\"" };
                changed.replace_range(field.len() - 2.., last);
                flip(&field, &changed)
            },
            "entry 1",
        ),
    ] {
        std::fs::write(&report_file, &edited).unwrap();
        let bad = legal_cmd(&data, &["verify-report", report_file.to_str().unwrap()]).await;
        assert_failure_naming(&bad, entry);
    }
    // An edit outside the entries is caught by the report's signature.
    let mut edited = report_value.clone();
    let day = edited["document"]["day"].as_u64().unwrap();
    edited["document"]["day"] = Value::from(day + 1);
    let err = legal::verify_report(&edited, None).unwrap_err().to_string();
    assert!(err.contains("report's signature"), "{err}");

    // The canary.
    let statement = "No secret orders received as of today. \u{e9}\"quoted\"";
    let published = legal_cmd(&data, &["canary", "--statement", statement]).await;
    assert_success(&published);
    let served = http_get(server.addr(), "/canary").await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    let canary_json: Value = serde_json::from_str(http_body(&served)).unwrap();
    assert_eq!(
        canary_json
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect::<BTreeSet<_>>(),
        [
            "day",
            "key",
            "key_certificate",
            "log_key",
            "signature",
            "statement"
        ]
        .map(String::from)
        .into()
    );
    let canary = Canary::verify(&canary_json).unwrap();
    // The log key clients pinned vouches for the canary's key.
    let log_key = hex::decode(canary_json["log_key"].as_str().unwrap()).unwrap();
    let certificate = hex::decode(canary_json["key_certificate"].as_str().unwrap()).unwrap();
    sotto_transparency::verify_legal_key(&log_key, &canary.key, &certificate).unwrap();
    assert_eq!(canary.statement, statement);
    assert_eq!(canary.key, signed.key);
    assert_today(canary.day, "canary day");
    // The signature is over exactly the documented bytes.
    let bytes = format!(
        "{{\"day\":{},\"statement\":{}}}",
        canary.day,
        serde_json::to_string(statement).unwrap()
    );
    let key = ed25519_dalek::VerifyingKey::from_bytes(&canary.key).unwrap();
    key.verify_strict(
        bytes.as_bytes(),
        &ed25519_dalek::Signature::from_bytes(&canary.signature),
    )
    .unwrap();
    let mut tampered = canary_json.clone();
    tampered["statement"] = Value::from("We have received an order.");
    assert!(Canary::verify(&tampered).is_err());

    // Editing a stored report row makes `legal report` fail, naming it.
    {
        let db = rusqlite::Connection::open(data.join("sotto.db")).unwrap();
        db.execute("UPDATE legal_requests SET accounts = 2 WHERE seq = 2", [])
            .unwrap();
    }
    let broken = legal_cmd(&data, &["report"]).await;
    assert_failure_naming(&broken, "entry 2");
    let broken = legal_cmd(&data, &["report", "--json"]).await;
    assert_failure_naming(&broken, "entry 2");
    server.stop().await;
}

#[tokio::test]
async fn legal_commands_need_an_existing_database() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing-here");
    let output = legal_cmd(&missing, &["export", "alice", "--request-id", "R"]).await;
    assert_failure_naming(&output, "no server database");
    assert!(
        !missing.exists(),
        "a legal command created a data directory"
    );
}

/// Runs the binary, registers a client, stops it, and returns (stdout,
/// stderr).
async fn run_and_register(extra: &[&str]) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sotto-server"))
        .args(["--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(extra)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    tokio::time::timeout(WAIT, stdout.read_line(&mut first))
        .await
        .unwrap()
        .unwrap();
    let addr: SocketAddr = first
        .trim()
        .strip_prefix("sotto-server listening on http://")
        .expect(&first)
        .parse()
        .unwrap();
    let mut client = Client::connect(addr).await;
    assert_done(&client.register(&Account::new("alice")).await);
    drop(client);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap()
            .success()
    );
    let mut rest = String::new();
    let mut stderr = String::new();
    let mut err_pipe = child.stderr.take().unwrap();
    tokio::time::timeout(WAIT, async {
        stdout.read_to_string(&mut rest).await.unwrap();
        err_pipe.read_to_string(&mut stderr).await.unwrap();
    })
    .await
    .unwrap();
    tokio::time::timeout(WAIT, child.wait())
        .await
        .unwrap()
        .unwrap();
    (first + &rest, stderr)
}

#[tokio::test]
async fn no_ip_address_is_logged_by_default() {
    let (stdout, stderr) = run_and_register(&[]).await;
    assert!(
        stderr.contains("account registered"),
        "log not captured: {stderr}"
    );
    assert!(
        !stderr.contains("127.0.0.1"),
        "an address was logged:\n{stderr}"
    );
    for line in stdout.lines().filter(|l| l.contains("127.0.0.1")) {
        assert!(
            line.starts_with("sotto-server listening on ")
                || line.starts_with("connect with: ")
                || line.starts_with("in a browser: "),
            "unexpected address on stdout: {line}"
        );
    }
}

#[tokio::test]
async fn log_connections_logs_the_peer_address() {
    let (_, stderr) = run_and_register(&["--log-connections"]).await;
    let opened: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("connection opened"))
        .collect();
    assert_eq!(opened.len(), 1, "{stderr}");
    assert!(opened[0].contains("127.0.0.1:"), "{stderr}");
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("connection closed") && l.contains("127.0.0.1:")),
        "{stderr}"
    );
}
