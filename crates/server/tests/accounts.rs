//! `sotto-server account disable|enable`, through the real binary against
//! a running server: a disabled account's devices are refused at login with
//! `ACCOUNT_DISABLED`, its name stays taken, enabling (or the end of a
//! suspension) restores login, and every action is counted in the signed
//! transparency report without the name. Also what disabling does not stop
//! (docs/SERVER_DATA.md, "Disabled accounts"): sealed sends with a group's
//! capability.

// Test code: failing loudly is the point (clippy.toml only covers #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{assert_failure_naming, assert_success, text};
use std::path::Path;
use std::process::Output;

use serde_json::Value;
use sotto_proto::v1::{self, ErrorCode, response};
use sotto_testkit::TestServer;
use sotto_testkit::wire::*;
use tokio::process::Command;

async fn server_cmd(data: &Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sotto-server"));
    command.args(args).arg("--data").arg(data);
    tokio::time::timeout(WAIT, command.env_remove("SOTTO_DATA").output())
        .await
        .unwrap()
        .unwrap()
}

/// Logs `account` in on a new connection; the response.
async fn login(server: &TestServer, account: &Account) -> v1::Response {
    server.connect().await.login(account).await
}

#[track_caller]
fn assert_logged_in(response: &v1::Response) {
    assert!(
        matches!(response.result, Some(response::Result::LoggedIn(_))),
        "expected LoggedIn, got {response:?}"
    );
}

/// The published report (`legal report --json`): its text and `(kind,
/// accounts)` of each entry.
async fn published_report(data: &Path) -> (String, Vec<(String, u64)>) {
    let out = server_cmd(data, &["legal", "report", "--json"]).await;
    assert_success(&out);
    let json = text(&out.stdout);
    let value: Value = serde_json::from_str(&json).unwrap();
    let report = sotto_server::legal::verify_report(&value, None).unwrap();
    let entries = report
        .entries
        .iter()
        .map(|e| (e.kind.clone(), e.accounts))
        .collect();
    (json, entries)
}

#[tokio::test]
async fn a_disabled_account_cannot_log_in_until_enabled() {
    let server = TestServer::start().await;
    let data = server.data_dir().to_path_buf();
    let (_alice_conn, alice) = server.registered("alice").await;
    let (_bob_conn, bob) = server.registered("bob").await;

    let out = server_cmd(&data, &["account", "disable", "alice"]).await;
    assert_success(&out);
    assert!(text(&out.stdout).contains("disabled alice until enabled"));

    let refused = assert_error(&login(&server, &alice).await, ErrorCode::AccountDisabled);
    assert_eq!(
        refused.message, "this account is disabled by the server operator",
        "the message the CLI prints"
    );
    // Only alice: bob logs in.
    assert_logged_in(&login(&server, &bob).await);
    // Her name stays taken: nobody registers it anew.
    let mut fresh = server.connect().await;
    assert_error(
        &fresh.register(&Account::new("alice")).await,
        ErrorCode::UsernameTaken,
    );

    // Counted in the signed report, without the name.
    let (json, entries) = published_report(&data).await;
    assert_eq!(entries, [("disable".to_owned(), 1)]);
    assert!(
        !json.contains("alice"),
        "the report names the account: {json}"
    );

    let out = server_cmd(&data, &["account", "enable", "alice"]).await;
    assert_success(&out);
    assert_logged_in(&login(&server, &alice).await);
    let (_, entries) = published_report(&data).await;
    assert_eq!(
        entries,
        [("disable".to_owned(), 1), ("enable".to_owned(), 1)]
    );

    // Refusals record nothing: enabling an enabled account, an unknown one.
    let out = server_cmd(&data, &["account", "enable", "alice"]).await;
    assert_failure_naming(&out, "is not disabled");
    let out = server_cmd(&data, &["account", "disable", "nobody"]).await;
    assert_failure_naming(&out, "no account named \"nobody\"");
    let out = server_cmd(&data, &["account", "disable", "bob", "--until", "0d"]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let (_, entries) = published_report(&data).await;
    assert_eq!(entries.len(), 2, "a refused action was recorded");
}

#[tokio::test]
async fn a_suspension_ends_by_itself() {
    let server = TestServer::start().await;
    let data = server.data_dir().to_path_buf();
    let (_conn, alice) = server.registered("alice").await;

    let out = server_cmd(
        &data,
        &[
            "account",
            "disable",
            "alice",
            "--until",
            "2d",
            "--request-id",
            "abuse-7",
        ],
    )
    .await;
    assert_success(&out);
    let refused = assert_error(&login(&server, &alice).await, ErrorCode::AccountDisabled);
    assert!(
        refused.message.contains("for 2 more day(s)"),
        "{}",
        refused.message
    );

    // Two days later (moved back rather than waited for): the suspension
    // ended on its own, and nothing more is recorded.
    let db = rusqlite::Connection::open(data.join("sotto.db")).unwrap();
    db.execute(
        "UPDATE accounts SET disabled_until_day = disabled_until_day - 2",
        [],
    )
    .unwrap();
    drop(db);
    assert_logged_in(&login(&server, &alice).await);
    let (json, entries) = published_report(&data).await;
    assert_eq!(entries, [("disable".to_owned(), 1)]);
    assert!(json.contains("abuse-7"));
}

/// What disabling does not stop, as documented: the server cannot tell who
/// makes a sealed send, so a disabled member still posts into the groups it
/// is in with their send capability, until a member removes it (the commit
/// changes the capability). It receives nothing: that needs a login.
#[tokio::test]
async fn a_disabled_member_still_holds_its_groups_capabilities() {
    let server = TestServer::start().await;
    let data = server.data_dir().to_path_buf();
    let (mut alice_conn, alice) = server.registered("alice").await;
    let (_bob_conn, bob) = server.registered("bob").await;
    let group = create_group(&mut alice_conn).await;
    drop(alice_conn);

    assert_success(&server_cmd(&data, &["account", "disable", "alice"]).await);
    assert_error(&login(&server, &alice).await, ErrorCode::AccountDisabled);

    let mut anonymous = server.connect().await;
    assert_done(
        &anonymous
            .request(send_message(
                &random_id(),
                &group,
                &[bob.device_id.as_slice()],
                b"still here",
            ))
            .await,
    );
}
