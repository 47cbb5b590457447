//! Groups with admins through the real binaries: the real `sotto-server`
//! and real `sotto` processes, as people would use them. (The hostile
//! variants, a modified client doing what only an admin may, are in
//! `crates/testkit/tests/hostile_members.rs`.)

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

mod common;

use common::{fails, json_lines, ok};
use sotto_testkit::ServerProcess;
use tempfile::TempDir;

fn texts(stdout: &str) -> Vec<String> {
    json_lines(stdout)
        .into_iter()
        .filter(|m| m["type"] == "text")
        .map(|m| m["text"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn an_admin_removes_a_member_deletes_a_message_and_runs_an_announcement_channel() {
    let data = TempDir::new().unwrap();
    let server = ServerProcess::spawn(data.path());
    let dirs: Vec<TempDir> = (0..3).map(|_| TempDir::new().unwrap()).collect();
    let (ann, bob, cyd) = (dirs[0].path(), dirs[1].path(), dirs[2].path());
    for (dir, name) in [(ann, "ann"), (bob, "bob"), (cyd, "cyd")] {
        ok(dir, &["register", name, "--server", server.url()]);
    }
    ok(
        ann,
        &[
            "group",
            "create",
            "news",
            "--members",
            "bob,cyd",
            "--admins",
        ],
    );
    ok(bob, &["sync"]);
    ok(cyd, &["sync"]);

    // The roster shows who is an admin.
    let members = ok(bob, &["group", "members", "news"]);
    assert!(
        members
            .lines()
            .any(|l| l.starts_with("ann ") && l.ends_with(" admin")),
        "{members}"
    );
    assert!(
        members
            .lines()
            .any(|l| l.starts_with("bob ") && !l.ends_with(" admin")),
        "{members}"
    );
    let groups = json_lines(&ok(cyd, &["group", "list", "--json"]));
    assert_eq!(groups[0]["admins"], serde_json::json!(["ann"]));
    assert_eq!(groups[0]["read_only"], false);

    // A non-admin cannot remove anyone.
    let err = fails(bob, &["group", "remove", "news", "cyd"]);
    assert!(err.contains("only an admin"), "{err}");

    // The admin deletes Bob's message for everyone.
    ok(bob, &["send", "--group", "news", "spam spam"]);
    let synced = json_lines(&ok(ann, &["sync", "--json"]));
    let spam = synced.iter().find(|m| m["text"] == "spam spam").unwrap();
    let id = spam["id"].as_str().unwrap().to_owned();
    let err = fails(cyd, &["delete", &id]);
    assert!(err.contains("only bob"), "{err}");
    ok(ann, &["delete", &id]);
    ok(cyd, &["sync"]);
    let history = json_lines(&ok(cyd, &["history", "--group", "news", "--json"]));
    let line = history.iter().find(|m| m["id"] == id.as_str()).unwrap();
    assert_eq!(line["deleted"], true, "{line}");
    assert_ne!(line["text"], "spam spam");

    // The admin removes Bob.
    ok(ann, &["group", "remove", "news", "bob"]);
    ok(cyd, &["sync"]);
    let groups = json_lines(&ok(cyd, &["group", "list", "--json"]));
    assert_eq!(groups[0]["members"], serde_json::json!(["ann", "cyd"]));

    // Read-only: only admins post.
    ok(ann, &["group", "set", "news", "--read-only", "on"]);
    ok(cyd, &["sync"]);
    let listed = ok(cyd, &["group", "list"]);
    assert!(listed.contains("[read-only]"), "{listed}");
    let err = fails(cyd, &["send", "--group", "news", "hello?"]);
    assert!(err.contains("read-only"), "{err}");
    let err = fails(cyd, &["group", "set", "news", "--read-only", "off"]);
    assert!(err.contains("only an admin"), "{err}");
    ok(ann, &["send", "--group", "news", "release 1.0 is out"]);
    assert_eq!(texts(&ok(cyd, &["sync", "--json"])), ["release 1.0 is out"]);

    // Cyd becomes an admin and may post again.
    ok(ann, &["group", "admin", "news", "add", "cyd"]);
    ok(cyd, &["sync"]);
    ok(cyd, &["send", "--group", "news", "thanks"]);
    assert_eq!(texts(&ok(ann, &["sync", "--json"])), ["thanks"]);
}

/// `sotto-server …` on the data directory; (success, stdout, stderr).
fn operator(data: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(sotto_testkit::binary("sotto-server"))
        .args(args)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn an_invite_link_admits_a_new_member_until_the_operator_closes_it() {
    let data = TempDir::new().unwrap();
    let server = ServerProcess::spawn(data.path());
    let dirs: Vec<TempDir> = (0..4).map(|_| TempDir::new().unwrap()).collect();
    let (ann, bob, cyd, dan) = (
        dirs[0].path(),
        dirs[1].path(),
        dirs[2].path(),
        dirs[3].path(),
    );
    for (dir, name) in [(ann, "ann"), (bob, "bob"), (cyd, "cyd"), (dan, "dan")] {
        ok(dir, &["register", name, "--server", server.url()]);
    }
    ok(
        ann,
        &["group", "create", "club", "--members", "bob", "--admins"],
    );
    ok(bob, &["sync"]);
    ok(ann, &["send", "--group", "club", "before cyd"]);
    ok(bob, &["sync"]);
    let err = fails(bob, &["group", "invite", "club"]);
    assert!(err.contains("only an admin"), "{err}");
    let link = ok(ann, &["group", "invite", "club"]).trim().to_owned();
    assert!(link.starts_with("sotto+invite://"), "{link}");

    let joined = ok(cyd, &["group", "join", &link]);
    assert!(joined.contains("joined club"), "{joined}");
    let synced = ok(bob, &["sync"]);
    assert!(synced.contains("cyd joined by invite link"), "{synced}");
    ok(ann, &["send", "--group", "club", "welcome cyd"]);
    assert_eq!(texts(&ok(cyd, &["sync", "--json"])), ["welcome cyd"]);
    let history = ok(cyd, &["history", "--group", "club"]);
    assert!(!history.contains("before cyd"), "{history}");

    // The operator closes the group's links: Dan is refused.
    let group_id: Vec<u8> = sotto_testkit::wire::open_db(data.path())
        .query_row("SELECT group_id FROM invite_links", [], |r| r.get(0))
        .unwrap();
    let (closed, stdout, stderr) = operator(
        data.path(),
        &["invite-link", "close", &hex::encode(&group_id)],
    );
    assert!(closed, "{stderr}");
    assert!(stdout.contains("closed 1 invite link"), "{stdout}");
    let err = fails(dan, &["group", "join", &link]);
    assert!(err.contains("closed by the server's operator"), "{err}");
    let (again, _, stderr) = operator(
        data.path(),
        &["invite-link", "close", &hex::encode(&group_id)],
    );
    assert!(!again, "closing twice records nothing");
    assert!(stderr.contains("no open invite link"), "{stderr}");
    let (verified, report, stderr) = operator(data.path(), &["legal", "report"]);
    assert!(verified, "{stderr}");
    assert!(report.contains("invite-link-close"), "{report}");
}
