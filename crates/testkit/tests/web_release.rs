//! Verifiable web bundles (issue #17 item 4): the server logs the hashes
//! of the web app it serves, the key directory publishes them, and
//! `sotto audit URL` fetches what the server serves and checks it against
//! them. Seen from the attacker's side: a proxy (or a server) that changes
//! one file, serves another page at `/`, or presents another release than
//! the one published is caught and named.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)] // tests fail loudly

use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;

use sotto_client::{ClientError, Served, Trust, WebAudit, audit_directory, audit_web_release};
use sotto_proto::v1::{ServerFrame, client_frame, response, server_frame};
use sotto_testkit::{ConnView, HostileProxy, ServerProcess, TestServer, binary, within};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

fn sotto_audit(profile: &Path, args: &[&str]) -> Output {
    std::process::Command::new(binary("sotto"))
        .arg("--profile")
        .arg(profile)
        .arg("audit")
        .args(args)
        .output()
        .unwrap()
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The number of web-release leaves in a stopped (or running) server's log.
fn web_release_leaves(data: &Path) -> i64 {
    let db = rusqlite::Connection::open(data.join("sotto.db")).unwrap();
    db.query_row(
        "SELECT count(*) FROM log_entries WHERE username = ''",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[test]
fn sotto_audit_checks_every_served_file_and_a_restart_logs_nothing_new() {
    let data = tempfile::TempDir::new().unwrap();
    let profile = tempfile::TempDir::new().unwrap();
    let mut server = ServerProcess::spawn(data.path());
    let out = sotto_audit(profile.path(), &[server.url()]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    for path in ["index.html", "app.js", "/"] {
        assert!(
            shown.lines().any(|l| l.starts_with(&format!("ok {path} "))
                && l.split(' ').nth(2).is_some_and(|h| h.len() == 64)),
            "no ok line for {path}:\n{shown}"
        );
    }
    assert!(shown.contains("web app of"), "{shown}");
    assert!(!shown.contains("MISMATCH"), "{shown}");

    // JSON: one object per file, all ok, and the summary.
    let out = sotto_audit(profile.path(), &[server.url(), "--json", "--require-web"]);
    assert!(out.status.success(), "{}", text(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let files: Vec<_> = lines.iter().filter(|l| l.get("path").is_some()).collect();
    assert!(files.len() >= 3, "{lines:?}");
    assert!(files.iter().all(|f| f["ok"] == true), "{lines:?}");
    assert_eq!(lines.last().unwrap()["web_release_version"], 1, "{lines:?}");

    // A restart with the same bundle appends no second leaf.
    server.terminate();
    assert_eq!(web_release_leaves(data.path()), 1);
    let server = ServerProcess::spawn(data.path());
    let out = sotto_audit(profile.path(), &[server.url(), "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    drop(server);
    assert_eq!(web_release_leaves(data.path()), 1);
}

/// What the hostile HTTP proxy does to the files it passes on.
#[derive(Clone, Copy)]
enum Mischief {
    /// Flip the last byte of this path's body.
    Alter(&'static str),
    /// Answer 404 for this path.
    Hide(&'static str),
}

/// A proxy in front of the server that passes the WebSocket (the key
/// directory and its proofs) untouched and tampers with one web file: the
/// network attacker, or the operator serving one user a doctored app.
async fn hostile_http_proxy(upstream: SocketAddr, mischief: Mischief) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(relay(client, upstream, mischief));
        }
    });
    url
}

async fn relay(mut client: TcpStream, upstream: SocketAddr, mischief: Mischief) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if client.read(&mut byte).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(byte[0]);
    }
    let line = String::from_utf8_lossy(&head)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    let path = line.split(' ').nth(1).unwrap_or_default().to_owned();
    let mut server = TcpStream::connect(upstream).await.unwrap();
    if path == "/ws" {
        server.write_all(&head).await.unwrap();
        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        return;
    }
    let served = path.trim_start_matches('/');
    if let Mischief::Hide(hidden) = mischief
        && served == hidden
    {
        let _ = client
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        return;
    }
    // One response per connection, then the server closes.
    let mut request = head[..head.len() - 2].to_vec();
    request.extend_from_slice(b"connection: close\r\n\r\n");
    server.write_all(&request).await.unwrap();
    let mut response = Vec::new();
    server.read_to_end(&mut response).await.unwrap();
    if let Mischief::Alter(altered) = mischief
        && served == altered
        && let Some(last) = response.last_mut()
    {
        *last ^= 0x01;
    }
    let _ = client.write_all(&response).await;
}

#[tokio::test]
async fn a_tampered_file_or_root_page_fails_the_audit_naming_it() {
    let data = tempfile::TempDir::new().unwrap();
    let profile = tempfile::TempDir::new().unwrap();
    let server = ServerProcess::spawn(data.path());
    let upstream: SocketAddr = server.url().trim_start_matches("http://").parse().unwrap();
    for (mischief, named) in [
        (Mischief::Alter("app.js"), "MISMATCH app.js served "),
        (Mischief::Alter(""), "MISMATCH / served "),
        (
            Mischief::Hide("index.html"),
            "MISSING index.html (HTTP 404)",
        ),
    ] {
        let url = hostile_http_proxy(upstream, mischief).await;
        let profile = profile.path().to_owned();
        let out = tokio::task::spawn_blocking(move || sotto_audit(&profile, &[&url]))
            .await
            .unwrap();
        let shown = text(&out);
        assert!(!out.status.success(), "the audit passed:\n{shown}");
        assert!(shown.contains(named), "{named:?} not in:\n{shown}");
        assert!(
            shown.contains("serves a web app other than the one it logged"),
            "{shown}"
        );
        // The files it did not touch still pass.
        assert!(shown.contains("ok "), "{shown}");
    }
}

/// A server presenting another release than the one its directory
/// publishes, or one not signed by its log key, is refused before any file
/// is fetched.
#[tokio::test]
async fn a_release_other_than_the_published_one_is_refused() {
    within(async {
        let server = TestServer::start().await;
        let trust = Trust::web_roots();
        let report = audit_directory(&server.url(), &trust, None, None)
            .await
            .unwrap();
        // The honest server passes.
        let honest = audit_web_release(&server.url(), &trust, &report.log_key, report.reached())
            .await
            .unwrap();
        match &honest {
            WebAudit::Checked { files, version, .. } => {
                assert_eq!(*version, 1);
                assert!(files.iter().all(|f| f.ok()), "{files:?}");
                assert!(files.iter().all(|f| matches!(f.served, Served::Bytes(_))));
            }
            WebAudit::NotPublished => panic!("no web release published"),
        }

        type Doctor = fn(&mut sotto_proto::v1::WebReleaseProof);
        let doctors: [(Doctor, &str); 4] = [
            // Another hash for a file (the page an attacker would serve).
            (
                |p| p.release.as_mut().unwrap().files[0].sha256[0] ^= 1,
                "not signed by the server's log key",
            ),
            // A file added to the release.
            (
                |p| {
                    p.release
                        .as_mut()
                        .unwrap()
                        .files
                        .push(sotto_proto::v1::WebFile {
                            path: "zz-extra.js".into(),
                            sha256: vec![7; 32],
                        });
                },
                "not signed by the server's log key",
            ),
            // The right release with a broken signature.
            (
                |p| p.signature[0] ^= 1,
                "not signed by the server's log key",
            ),
            // A doctored directory proof.
            (
                |p| {
                    let middle = p.proof.len() / 2;
                    p.proof[middle] ^= 1;
                },
                "key directory",
            ),
        ];
        for (doctor, expected) in doctors {
            let proxy = HostileProxy::start(
                &server.url(),
                move |view: &ConnView, mut frame: ServerFrame| {
                    if let Some(client_frame::Body::GetWebRelease(_)) = &view.request
                        && let Some(server_frame::Body::Response(r)) = &mut frame.body
                        && let Some(response::Result::WebRelease(proof)) = &mut r.result
                    {
                        doctor(proof);
                    }
                    Some(frame)
                },
            )
            .await;
            match audit_web_release(&proxy.url(), &trust, &report.log_key, report.reached()).await {
                Err(ClientError::KeyLog(message)) => {
                    assert!(message.contains("does not verify"), "{message}");
                    assert!(message.contains(expected), "{expected:?} not in {message}");
                }
                other => panic!("a doctored release was accepted: {other:?}"),
            }
        }

        // No directory proof at all.
        let proxy =
            HostileProxy::start(&server.url(), |view: &ConnView, mut frame: ServerFrame| {
                if let Some(client_frame::Body::GetWebRelease(_)) = &view.request
                    && let Some(server_frame::Body::Response(r)) = &mut frame.body
                    && let Some(response::Result::WebRelease(proof)) = &mut r.result
                {
                    proof.proof.clear();
                }
                Some(frame)
            })
            .await;
        assert!(
            audit_web_release(&proxy.url(), &trust, &report.log_key, report.reached())
                .await
                .is_err()
        );

        // Another log key than the audited one: refused at connection.
        assert!(
            audit_web_release(&server.url(), &trust, &[5; 32], report.reached())
                .await
                .is_err()
        );
    })
    .await;
}
