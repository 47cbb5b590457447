//! The user-facing contract: the real `sotto-server` binary and real `sotto`
//! processes, as a person would use them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

mod common;

use common::{fails, json_lines, ok, sotto};
use sotto_testkit::{ServerProcess, free_loopback_addr};
use std::process::Command;
use tempfile::TempDir;

fn texts(stdout: &str) -> Vec<String> {
    json_lines(stdout)
        .into_iter()
        .filter(|m| m["type"] == "text")
        .map(|m| {
            format!(
                "{}: {}",
                m["sender"].as_str().unwrap(),
                m["text"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn two_profiles_chat_through_the_real_binaries() {
    let data = TempDir::new().unwrap();
    let server = ServerProcess::spawn(data.path());
    let (alice, bob) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    ok(
        alice.path(),
        &["register", "alice", "--server", server.url()],
    );
    ok(bob.path(), &["register", "bob", "--server", server.url()]);

    let whoami = json_lines(&ok(alice.path(), &["whoami", "--json"]));
    assert_eq!(whoami[0]["username"], "alice");
    assert_eq!(whoami[0]["server"], server.url());

    ok(alice.path(), &["send", "bob", "hello", "bob"]);
    let synced = json_lines(&ok(bob.path(), &["sync", "--json"]));
    let message = synced
        .iter()
        .find(|m| m["type"] == "text")
        .expect("a text message");
    assert_eq!(message["conversation"], "alice");
    assert_eq!(message["sender"], "alice");
    assert_eq!(message["text"], "hello bob");
    // A MIMI message id (draft-ietf-mimi-content-08): SHA-256, 32 bytes.
    assert_eq!(message["id"].as_str().unwrap().len(), 64);
    assert!(message["id"].as_str().unwrap().starts_with("01"));
    assert!(message["sent_at"].as_u64().unwrap() > 1_700_000_000_000);

    ok(bob.path(), &["send", "alice", "hi alice"]);
    let human = ok(alice.path(), &["sync"]);
    assert!(human.contains("[bob] bob: hi alice"), "{human}");

    let history = texts(&ok(alice.path(), &["history", "bob", "--json"]));
    assert_eq!(history, ["alice: hello bob", "bob: hi alice"]);
    assert_eq!(
        texts(&ok(bob.path(), &["history", "alice", "--json"])),
        history
    );

    // Who can read the chat: one device each, nobody else.
    let members = json_lines(&ok(alice.path(), &["members", "bob", "--json"]));
    let mut names: Vec<&str> = members
        .iter()
        .map(|m| m["username"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["alice", "bob"]);
    assert!(
        members
            .iter()
            .all(|m| m["device_id"].as_str().unwrap().len() == 32)
    );
}

/// The last JSON line about message `id` in some output.
fn about(stdout: &str, id: &str) -> serde_json::Value {
    json_lines(stdout)
        .into_iter()
        .rev()
        .find(|m| m["id"] == id)
        .unwrap_or_else(|| panic!("no line about {id} in {stdout}"))
}

#[test]
fn replies_reactions_edits_and_deletes_in_json() {
    let data = TempDir::new().unwrap();
    let server = ServerProcess::spawn(data.path());
    let profiles: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    for (profile, name) in profiles.iter().zip(["ann", "bob", "cyd"]) {
        ok(
            profile.path(),
            &["register", name, "--server", server.url()],
        );
    }
    let [ann, bob, cyd] = [profiles[0].path(), profiles[1].path(), profiles[2].path()];

    // Two users.
    let sent = json_lines(&ok(ann, &["send", "bob", "coffee?", "--json"]));
    let id = sent[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(sent[0]["reply_to"], serde_json::Value::Null);
    assert_eq!(sent[0]["edited"], false);
    assert_eq!(sent[0]["deleted"], false);
    assert_eq!(sent[0]["reactions"], serde_json::json!({}));
    ok(bob, &["sync"]);
    let reply = json_lines(&ok(
        bob,
        &["send", "ann", "yes please", "--reply-to", &id, "--json"],
    ));
    let reply_id = reply[0]["id"].as_str().unwrap().to_owned();
    ok(bob, &["react", &id, "☕"]);
    let synced = ok(ann, &["sync", "--json"]);
    let got = about(&synced, &reply_id);
    assert_eq!(got["reply_to"], id.as_str());
    assert_eq!(got["quoted"]["sender"], "ann");
    assert_eq!(got["quoted"]["text"], "coffee?");
    assert_eq!(
        about(&synced, &id)["reactions"],
        serde_json::json!({"☕": ["bob"]})
    );
    let human = ok(ann, &["history", "bob"]);
    assert!(
        human.contains("bob: (reply to ann: \"coffee?\") yes please"),
        "{human}"
    );
    assert!(human.contains("ann: coffee?  [☕ bob]"), "{human}");

    ok(ann, &["edit", &id, "coffee at 3?"]);
    let got = about(&ok(bob, &["sync", "--json"]), &id);
    assert_eq!(got["text"], "coffee at 3?");
    assert_eq!(got["edited"], true);
    let history = ok(bob, &["history", "ann", "--json"]);
    let line = about(&history, &id);
    let versions: Vec<&str> = line["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["text"].as_str().unwrap())
        .collect();
    assert_eq!(versions, ["coffee?", "coffee at 3?"]);
    assert!(fails(bob, &["edit", &id, "tea"]).contains("only ann"));
    ok(ann, &["delete", &id]);
    let got = about(&ok(bob, &["sync", "--json"]), &id);
    assert_eq!(got["deleted"], true);
    assert_eq!(got["text"], "");
    assert!(ok(bob, &["history", "ann"]).contains("ann: (deleted)"));

    // A group of three.
    ok(ann, &["group", "create", "trio", "--members", "bob,cyd"]);
    ok(bob, &["sync"]);
    ok(cyd, &["sync"]);
    let sent = json_lines(&ok(ann, &["send", "--group", "trio", "ship it?", "--json"]));
    let id = sent[0]["id"].as_str().unwrap().to_owned();
    ok(bob, &["sync"]);
    ok(cyd, &["sync"]);
    ok(bob, &["react", &id, "👍"]);
    ok(cyd, &["react", &id, "👍"]);
    let cyd_reply = json_lines(&ok(
        cyd,
        &[
            "send",
            "--group",
            "trio",
            "--reply-to",
            &id,
            "yes",
            "--json",
        ],
    ));
    assert_eq!(cyd_reply[0]["quoted"]["text"], "ship it?");
    let synced = ok(ann, &["sync", "--json"]);
    assert_eq!(
        about(&synced, &id)["reactions"],
        serde_json::json!({"👍": ["bob", "cyd"]})
    );
    ok(bob, &["react", &id, "👍"]);
    ok(ann, &["edit", &id, "ship it now?"]);
    for profile in [bob, cyd] {
        let got = about(&ok(profile, &["history", "--group", "trio", "--json"]), &id);
        assert_eq!(got["edited"], false, "not synced yet");
        let got = about(&ok(profile, &["sync", "--json"]), &id);
        assert_eq!(got["text"], "ship it now?");
        assert_eq!(got["edited"], true);
        assert_eq!(got["reactions"], serde_json::json!({"👍": ["cyd"]}));
    }
    ok(ann, &["delete", &id]);
    for profile in [bob, cyd] {
        let got = about(&ok(profile, &["sync", "--json"]), &id);
        assert_eq!(got["deleted"], true);
    }
    let reply = about(
        &ok(bob, &["history", "--group", "trio", "--json"]),
        cyd_reply[0]["id"].as_str().unwrap(),
    );
    assert_eq!(reply["quoted"]["deleted"], true);
}

#[test]
fn a_group_of_three_on_the_command_line() {
    let data = TempDir::new().unwrap();
    let server = ServerProcess::spawn(data.path());
    let profiles: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    for (profile, name) in profiles.iter().zip(["ann", "bob", "cyd"]) {
        ok(
            profile.path(),
            &["register", name, "--server", server.url()],
        );
    }
    let [ann, bob, cyd] = [profiles[0].path(), profiles[1].path(), profiles[2].path()];

    ok(ann, &["group", "create", "trio", "--members", "bob,cyd"]);
    ok(ann, &["send", "--group", "trio", "hello trio"]);
    for member in [bob, cyd] {
        assert_eq!(texts(&ok(member, &["sync", "--json"])), ["ann: hello trio"]);
    }
    ok(cyd, &["send", "--group", "trio", "hi from cyd"]);
    assert_eq!(texts(&ok(bob, &["sync", "--json"])), ["cyd: hi from cyd"]);

    let groups = json_lines(&ok(bob, &["group", "list", "--json"]));
    assert_eq!(groups[0]["name"], "trio");
    assert_eq!(
        groups[0]["members"],
        serde_json::json!(["ann", "bob", "cyd"])
    );
    let members = json_lines(&ok(ann, &["group", "members", "trio", "--json"]));
    assert_eq!(members.len(), 3);

    ok(ann, &["group", "remove", "trio", "cyd"]);
    ok(ann, &["send", "--group", "trio", "cyd is gone"]);
    assert_eq!(texts(&ok(bob, &["sync", "--json"])), ["ann: cyd is gone"]);
    let cyd_sync = ok(cyd, &["sync"]);
    assert!(cyd_sync.contains("ann removed you"), "{cyd_sync}");
    assert!(!cyd_sync.contains("cyd is gone"));
    assert_eq!(
        texts(&ok(bob, &["history", "--group", "trio", "--json"])).len(),
        3
    );
}

#[test]
fn sigkill_between_acknowledgement_and_sync_loses_nothing() {
    let data = TempDir::new().unwrap();
    let addr = free_loopback_addr();
    let mut server = ServerProcess::spawn_at(data.path(), &addr);
    let (alice, bob) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    ok(
        alice.path(),
        &["register", "alice", "--server", server.url()],
    );
    ok(bob.path(), &["register", "bob", "--server", server.url()]);

    let sent: Vec<String> = (1..=5).map(|i| format!("durable message {i}")).collect();
    for text in &sent {
        // `send` exits 0 only after the server acknowledged the message.
        ok(alice.path(), &["send", "bob", text]);
    }
    server.kill();
    let _server = ServerProcess::spawn_at(data.path(), &addr);

    let received = texts(&ok(bob.path(), &["sync", "--json"]));
    let expected: Vec<String> = sent.iter().map(|t| format!("alice: {t}")).collect();
    assert_eq!(received, expected);
    assert!(
        texts(&ok(bob.path(), &["sync", "--json"])).is_empty(),
        "delivered twice"
    );
}

#[test]
fn errors_are_readable_and_exit_non_zero() {
    let data = TempDir::new().unwrap();
    let server = ServerProcess::spawn(data.path());
    let alice = TempDir::new().unwrap();

    let err = fails(alice.path(), &["whoami"]);
    assert!(err.contains("no account in profile"), "{err}");
    let err = fails(
        alice.path(),
        &["register", "Not Valid", "--server", server.url()],
    );
    assert!(err.contains("invalid username"), "{err}");

    ok(
        alice.path(),
        &["register", "alice", "--server", server.url()],
    );
    let err = fails(alice.path(), &["send", "nobody", "hello"]);
    assert!(err.contains("no account named nobody"), "{err}");
    let err = fails(alice.path(), &["send", "--group", "nope", "hello"]);
    assert!(err.contains("no group named nope"), "{err}");
    let err = fails(alice.path(), &["history", "bob"]);
    assert!(err.contains("no conversation with bob"), "{err}");

    let stopped = TempDir::new().unwrap();
    let err = fails(
        stopped.path(),
        &["register", "carol", "--server", "http://127.0.0.1:9"],
    );
    assert!(err.contains("cannot connect"), "{err}");

    // Plain HTTP to another machine is refused before anything is sent.
    let err = fails(
        stopped.path(),
        &["register", "carol", "--server", "http://192.0.2.7:8420"],
    );
    assert!(err.contains("--insecure-transport"), "{err}");
}

#[test]
fn tls_through_the_real_binaries_with_a_self_signed_ca() {
    let data = TempDir::new().unwrap();
    let ca = sotto_testkit::tls::TestCa::new("Sotto test CA");
    let (cert, key) = ca.issue("sotto-server").write(data.path());
    let ca_file = ca.write(data.path());
    let ca_file = ca_file.to_str().unwrap();
    let server = ServerProcess::spawn_with_args(
        data.path(),
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    let url = server.url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let (alice, bob) = (TempDir::new().unwrap(), TempDir::new().unwrap());

    let err = fails(alice.path(), &["register", "alice", "--server", url]);
    assert!(
        err.contains("not trusted") && err.contains("--ca-file"),
        "{err}"
    );
    for (profile, name) in [(&alice, "alice"), (&bob, "bob")] {
        ok(
            profile.path(),
            &["register", name, "--server", url, "--ca-file", ca_file],
        );
    }
    // The profiles remember the CA.
    ok(alice.path(), &["send", "bob", "over TLS"]);
    assert_eq!(
        texts(&ok(bob.path(), &["sync", "--json"])),
        ["alice: over TLS"]
    );

    // `audit --log-key` pins the key from a second source: a wrong one
    // fails and names the key the server announced; that one passes.
    let wrong = "00".repeat(32);
    let err = fails(
        alice.path(),
        &["audit", url, "--ca-file", ca_file, "--log-key", &wrong],
    );
    let announced = err
        .split("announces the log key ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no announced key in: {err}"));
    assert_eq!(announced.len(), 64, "{err}");
    let audit = json_lines(&ok(
        alice.path(),
        &[
            "audit",
            url,
            "--ca-file",
            ca_file,
            "--log-key",
            announced,
            "--json",
        ],
    ));
    assert!(audit[0]["directory_epochs"].as_u64().unwrap() >= 1);
}

#[test]
fn link_a_device_compare_safety_numbers_audit_and_remove() {
    use std::io::{BufRead as _, BufReader};
    let data = TempDir::new().unwrap();
    let server = ServerProcess::spawn(data.path());
    let (alice, bob, bob2) = (
        TempDir::new().unwrap(),
        TempDir::new().unwrap(),
        TempDir::new().unwrap(),
    );
    ok(
        alice.path(),
        &["register", "alice", "--server", server.url()],
    );
    ok(bob.path(), &["register", "bob", "--server", server.url()]);
    ok(alice.path(), &["send", "bob", "before the new device"]);
    ok(bob.path(), &["sync"]);

    // `device link` prints the code, then waits for the new device.
    let mut link = Command::new(env!("CARGO_BIN_EXE_sotto"))
        .arg("--profile")
        .arg(bob.path())
        .args(["device", "link", "--yes", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(link.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    let code: serde_json::Value = serde_json::from_str(&first).unwrap();
    let code = code["code"].as_str().unwrap().to_owned();
    let joined = ok(bob2.path(), &["device", "join", &code]);
    assert!(joined.contains("linked to bob"), "{joined}");
    let status = link.wait().unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    assert!(status.success(), "device link failed: {rest}");
    assert!(rest.contains("linked"), "{rest}");

    let devices = json_lines(&ok(bob.path(), &["device", "list", "--json"]));
    assert_eq!(devices.len(), 2);
    let bob2_id = devices
        .iter()
        .find(|d| d["this_device"] == false)
        .map(|d| d["device_id"].as_str().unwrap().to_owned())
        .unwrap();

    ok(alice.path(), &["send", "bob", "to both devices"]);
    assert_eq!(
        texts(&ok(bob2.path(), &["sync", "--json"])),
        ["alice: to both devices"]
    );
    assert_eq!(
        texts(&ok(bob.path(), &["sync", "--json"])),
        ["alice: to both devices"]
    );

    // Safety numbers: the same on both sides; marking one verified sticks.
    let from_alice = json_lines(&ok(alice.path(), &["verify", "bob", "--json"]));
    let from_bob = json_lines(&ok(bob2.path(), &["verify", "alice", "--json"]));
    assert_eq!(from_alice[0]["safety_number"], from_bob[0]["safety_number"]);
    assert_eq!(from_alice[0]["verified"], false);
    ok(alice.path(), &["verify", "bob", "--mark"]);
    assert_eq!(
        json_lines(&ok(alice.path(), &["verify", "bob", "--json"]))[0]["verified"],
        true
    );
    let human = ok(alice.path(), &["verify", "bob"]);
    assert!(
        human.contains("█") || human.contains("▀"),
        "no QR code drawn:\n{human}"
    );

    // Anyone can audit every key-directory epoch of a live server; the
    // output names nobody. With --state, the next audit resumes where this
    // one stopped.
    let state = alice.path().join("audit-state.json");
    let state = state.to_str().unwrap();
    let audit = json_lines(&ok(
        alice.path(),
        &["audit", server.url(), "--json", "--state", state],
    ));
    // The directory's line, then the web app's files, all as logged.
    assert_eq!(audit[0]["audited_from"], 0);
    assert!(
        audit[1..].iter().all(|line| line["ok"] != false),
        "{audit:?}"
    );
    let reached = audit[0]["directory_epochs"].as_u64().unwrap();
    assert!(reached >= 1, "{audit:?}");
    let again = json_lines(&ok(
        alice.path(),
        &["audit", server.url(), "--json", "--state", state],
    ));
    assert_eq!(again[0]["audited_from"], reached);
    let human = ok(alice.path(), &["audit", server.url()]);
    assert!(human.contains("key directory of"), "{human}");
    for name in ["alice", "bob"] {
        assert!(!human.contains(name), "{name} in the audit output: {human}");
    }

    // A removed device is out: it cannot log in, and its account has one device again.
    // Its copy of the identity key is worth nothing: the key was rotated.
    let removed = ok(bob.path(), &["device", "remove", &bob2_id]);
    assert!(removed.contains("rotated your identity key"), "{removed}");
    let err = fails(bob2.path(), &["sync"]);
    assert!(err.contains("removed"), "{err}");
    assert_eq!(
        json_lines(&ok(bob.path(), &["device", "list", "--json"])).len(),
        1
    );
    ok(alice.path(), &["send", "bob", "after removal"]);
    assert_eq!(
        texts(&ok(bob.path(), &["sync", "--json"])),
        ["alice: after removal"]
    );
    // Alice was told, without a warning.
    let history = ok(alice.path(), &["history", "bob"]);
    assert!(
        history.contains("bob's key was rotated by bob"),
        "{history}"
    );
}

#[test]
fn the_warrant_canary_is_published_and_checked() {
    let data = TempDir::new().unwrap();
    let server = ServerProcess::spawn(data.path());
    let anyone = TempDir::new().unwrap();
    // Nothing vouches for a canary's key without a pin.
    let err = fails(anyone.path(), &["canary", server.url()]);
    assert!(err.contains("--log-key"), "{err}");
    // A profile registered on the server pins its log key.
    let alice = TempDir::new().unwrap();
    ok(
        alice.path(),
        &["register", "alice", "--server", server.url()],
    );
    let err = fails(alice.path(), &["canary", server.url()]);
    assert!(err.contains("publishes no warrant canary"), "{err}");

    let published = Command::new(sotto_testkit::binary("sotto-server"))
        .args([
            "legal",
            "canary",
            "--statement",
            "No orders received so far.",
            "--data",
        ])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        published.status.success(),
        "{}",
        String::from_utf8_lossy(&published.stderr)
    );
    let canary = json_lines(&ok(alice.path(), &["canary", server.url(), "--json"]));
    assert_eq!(canary[0]["statement"], "No orders received so far.");
    assert_eq!(canary[0]["age_days"], 0);
    assert_eq!(canary[0]["date"].as_str().unwrap().len(), 10);

    // Anyone with the log key from a second source (here alice's profile).
    let whoami = json_lines(&ok(alice.path(), &["whoami", "--json"]));
    let log_key = whoami[0]["log_key"].as_str().unwrap().to_owned();
    ok(
        anyone.path(),
        &["canary", server.url(), "--log-key", &log_key],
    );
    let err = fails(
        anyone.path(),
        &["canary", server.url(), "--log-key", &"11".repeat(32)],
    );
    assert!(err.contains("another log key"), "{err}");
}

#[test]
fn an_invite_only_server_takes_a_code_once() {
    let data = TempDir::new().unwrap();
    // Create the database (and an invite) before the server starts.
    let first = ServerProcess::spawn(data.path());
    drop(first);
    let invite = Command::new(sotto_testkit::binary("sotto-server"))
        .args(["invite", "create", "--count", "1", "--data"])
        .arg(data.path())
        .output()
        .unwrap();
    assert!(
        invite.status.success(),
        "{}",
        String::from_utf8_lossy(&invite.stderr)
    );
    let code = String::from_utf8(invite.stdout).unwrap().trim().to_owned();
    assert_eq!(code.len(), 32);

    let server = ServerProcess::spawn_with_args(data.path(), &["--registration", "invite"]);
    let (alice, bob) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    let err = fails(
        alice.path(),
        &["register", "alice", "--server", server.url()],
    );
    assert!(err.contains("needs an invite code"), "{err}");
    ok(
        alice.path(),
        &[
            "register",
            "alice",
            "--server",
            server.url(),
            "--invite",
            &code,
        ],
    );
    let err = fails(
        bob.path(),
        &[
            "register",
            "bob",
            "--server",
            server.url(),
            "--invite",
            &code,
        ],
    );
    assert!(err.contains("already used"), "{err}");
}

/// Issue 13, item 3, as the user sees it: a device that none of Alice's
/// devices added (the server added it with her stolen identity key) is
/// warned about by `sync`, marked by `device list`, and printed (on stderr)
/// by every command until `sotto warnings --ack`.
#[test]
fn an_unknown_device_is_shown_by_every_command_until_acknowledged() {
    let data = TempDir::new().unwrap();
    let server = ServerProcess::spawn(data.path());
    let alice = TempDir::new().unwrap();
    ok(
        alice.path(),
        &["register", "alice", "--server", server.url()],
    );
    ok(alice.path(), &["sync"]);
    let quiet = sotto(alice.path(), &["whoami"]);
    assert!(String::from_utf8_lossy(&quiet.stderr).is_empty());

    // The thief's copy of the identity key, and the server's hand.
    let identity_secret: Vec<u8> = sotto_testkit::wire::open_db(alice.path())
        .query_row("SELECT identity_secret FROM profile", [], |r| r.get(0))
        .unwrap();
    let ghost =
        sotto_testkit::server_log::add_device(data.path(), "alice", &identity_secret, |entry| {
            entry
        })
        .to_string();

    // `device list` checks the account too: it marks the device and warns.
    let listed = sotto(alice.path(), &["device", "list"]);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    let line = stdout.lines().find(|l| l.contains(&ghost)).unwrap();
    assert!(line.contains("UNKNOWN"), "{stdout}");
    let stderr = String::from_utf8_lossy(&listed.stderr);
    assert_eq!(stderr.matches("WARNING").count(), 1, "{stderr}");

    let synced = sotto(alice.path(), &["sync"]);
    assert!(synced.status.success());
    let stderr = String::from_utf8_lossy(&synced.stderr);
    assert!(
        stderr.contains("WARNING") && stderr.contains(&ghost),
        "{stderr}"
    );

    let listed = sotto(alice.path(), &["device", "list"]);
    let stdout = String::from_utf8_lossy(&listed.stdout);
    let line = stdout.lines().find(|l| l.contains(&ghost)).unwrap();
    assert!(line.contains("UNKNOWN"), "{stdout}");
    assert!(String::from_utf8_lossy(&listed.stderr).contains(&ghost));

    for command in [
        &["whoami"][..],
        &["group", "list"][..],
        &["history", "bob"][..],
    ] {
        let out = sotto(alice.path(), command);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("WARNING") && stderr.contains(&ghost),
            "{command:?}: {stderr}"
        );
    }
    let listed = ok(alice.path(), &["warnings"]);
    assert!(listed.contains(&ghost), "{listed}");

    assert!(ok(alice.path(), &["warnings", "--ack"]).contains("acknowledged 1"));
    let after = sotto(alice.path(), &["whoami"]);
    assert!(after.status.success());
    assert!(String::from_utf8_lossy(&after.stderr).is_empty());
    // Still listed, marked, in `warnings` and `device list`.
    assert!(ok(alice.path(), &["warnings"]).contains("(acknowledged)"));
    assert!(ok(alice.path(), &["device", "list"]).contains("UNKNOWN"));
}

#[test]
fn timers_receipts_and_typing_on_the_command_line() {
    let data = TempDir::new().unwrap();
    let server = ServerProcess::spawn(data.path());
    let (alice, bob) = (TempDir::new().unwrap(), TempDir::new().unwrap());
    ok(
        alice.path(),
        &["register", "alice", "--server", server.url()],
    );
    ok(bob.path(), &["register", "bob", "--server", server.url()]);
    ok(alice.path(), &["send", "bob", "hello"]);
    ok(bob.path(), &["sync"]);
    ok(bob.path(), &["send", "alice", "hi"]);
    ok(alice.path(), &["sync"]);

    assert!(fails(alice.path(), &["timer", "bob", "5x"]).contains("30s, 5m, 1h, 7d"));
    let set = json_lines(&ok(alice.path(), &["timer", "bob", "5s", "--json"]));
    assert_eq!(set[0]["text"], "alice set disappearing messages to 5s");
    let synced = ok(bob.path(), &["sync"]);
    assert!(
        synced.contains("* alice set disappearing messages to 5s"),
        "{synced}"
    );
    let sent = json_lines(&ok(alice.path(), &["send", "bob", "gone soon", "--json"]));
    assert!(sent[0]["expires_at"].as_u64().unwrap() > sent[0]["sent_at"].as_u64().unwrap());
    let human = ok(bob.path(), &["sync"]);
    assert!(human.contains("gone soon (disappearing)"), "{human}");
    ok(alice.path(), &["timer", "bob", "off"]);

    // Typing: bob is not connected between commands, so it is dropped.
    ok(alice.path(), &["typing", "bob"]);
    assert!(!ok(bob.path(), &["sync"]).contains("typing"));

    // Read receipts: bob reads; his next command after the random delay
    // (at most 10 s) sends them; alice sees ✓✓.
    let kept = json_lines(&ok(alice.path(), &["send", "bob", "kept", "--json"]));
    let id = kept[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(kept[0]["expires_at"], serde_json::Value::Null);
    ok(bob.path(), &["sync"]);
    ok(bob.path(), &["history", "alice"]);
    std::thread::sleep(std::time::Duration::from_secs(11));
    ok(bob.path(), &["sync"]);
    ok(alice.path(), &["sync"]);
    let line = about(&ok(alice.path(), &["history", "bob", "--json"]), &id);
    assert_eq!(line["receipts"], serde_json::json!({ "bob": "read" }));
    let history = ok(alice.path(), &["history", "bob"]);
    assert!(history.contains("alice: kept ✓✓"), "{history}");
    // The 5-second message is gone from both.
    assert!(!history.contains("gone soon"), "{history}");
    assert!(!ok(bob.path(), &["history", "alice"]).contains("gone soon"));

    assert_eq!(
        ok(bob.path(), &["config", "read-receipts", "off"]).trim(),
        "read-receipts off"
    );
    assert_eq!(
        json_lines(&ok(bob.path(), &["config", "read-receipts", "--json"]))[0]["read_receipts"],
        false
    );
}

#[test]
fn an_auditor_countersigns_and_a_user_requires_it() {
    let data = TempDir::new().unwrap();
    let (alice, bob, auditor) = (
        TempDir::new().unwrap(),
        TempDir::new().unwrap(),
        TempDir::new().unwrap(),
    );
    let keyfile = auditor.path().join("auditor.key");
    let keyfile = keyfile.to_str().unwrap();
    let made = &json_lines(&ok(auditor.path(), &["--json", "auditor-key", keyfile]))[0];
    assert_eq!(made["created"], true);
    let public = made["public_key"].as_str().unwrap().to_owned();
    assert_eq!(public.len(), 64);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(keyfile).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let again = &json_lines(&ok(auditor.path(), &["--json", "auditor-key", keyfile]))[0];
    assert_eq!(
        (&again["created"], again["public_key"].as_str()),
        (&serde_json::json!(false), Some(public.as_str()))
    );

    // The operator invites the auditor by its public key.
    let server = ServerProcess::spawn_with_args(data.path(), &["--auditor", &public]);
    ok(
        alice.path(),
        &["register", "alice", "--server", server.url()],
    );
    ok(bob.path(), &["register", "bob", "--server", server.url()]);

    // One round (no --follow): audit and countersign.
    let round = &json_lines(&ok(
        auditor.path(),
        &["--json", "audit", server.url(), "--sign", keyfile],
    ))[0];
    assert!(round["epoch"].as_u64().unwrap() >= 1, "{round}");
    for name in ["alice", "bob"] {
        assert!(!round.to_string().contains(name), "{round}");
    }

    // An auditor the operator did not invite cannot hand anything in.
    let stranger = auditor.path().join("stranger.key");
    let stranger = stranger.to_str().unwrap();
    ok(auditor.path(), &["auditor-key", stranger]);
    let err = fails(auditor.path(), &["audit", server.url(), "--sign", stranger]);
    assert!(err.contains("not invited"), "{err}");

    ok(alice.path(), &["trust-auditor", &public, "--max-lag", "1h"]);
    ok(alice.path(), &["verify", "bob"]);
    // An auditor that never countersigned: every head is refused.
    ok(alice.path(), &["trust-auditor", &"ab".repeat(32)]);
    let err = fails(alice.path(), &["verify", "bob"]);
    assert!(
        err.contains("WARNING") && err.contains("no fresh countersignature"),
        "{err}"
    );
    ok(
        alice.path(),
        &["trust-auditor", &"ab".repeat(32), "--remove"],
    );
    ok(alice.path(), &["verify", "bob"]);
}
