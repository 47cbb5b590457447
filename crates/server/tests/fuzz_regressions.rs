//! Replays the fuzzers' regression inputs (`fuzz/regressions/<target>/`)
//! without libFuzzer, so `cargo test --workspace` keeps fixed crashes
//! fixed. Each replay feeds the bytes to the same code as the fuzz target
//! of that name (`fuzz/src/lib.rs`): the wire decoders and the key-log
//! checks directly, and `server_session` through a real in-process server
//! over a WebSocket (the fuzz target drives the same `Session` without a
//! socket). Nothing may panic, in this thread or in the server's.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use sotto_proto::v1;
use sotto_transparency::LogKey;
use tokio_tungstenite::tungstenite::Message;

fn regressions(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/regressions")
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<(PathBuf, Vec<u8>)> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    files.sort();
    files
}

fn log_key() -> LogKey {
    LogKey::from_secret(&[9; 32]).unwrap()
}

/// As `fuzz/src/lib.rs::resign`.
fn resign(head: &v1::SignedTreeHead) -> v1::SignedTreeHead {
    let mut root = [0u8; 32];
    for (r, h) in root.iter_mut().zip(&head.root_hash) {
        *r = *h;
    }
    log_key().sign_head(head.tree_size, root, head.timestamp_ms)
}

#[test]
fn decoder_regressions_do_not_panic() {
    for (_, data) in regressions("client_frame") {
        let _ = sotto_proto::decode_client_frame(&data).map(|f| f.encode_to_vec());
    }
    for (_, data) in regressions("server_frame") {
        let _ = sotto_proto::decode_server_frame(&data).map(|f| f.encode_to_vec());
    }
    for (_, data) in regressions("log_entry") {
        if let Ok(entry) = v1::LogEntry::decode(data.as_slice())
            && let Ok(event) = sotto_transparency::open_entry(&entry)
        {
            let _ = sotto_transparency::AccountState::replay(
                &event.username,
                std::slice::from_ref(&entry),
            );
        }
    }
    let public = log_key().public();
    for (_, data) in regressions("account_log") {
        let Some((&mode, rest)) = data.split_first() else {
            continue;
        };
        let Ok(mut log) = v1::AccountLog::decode(rest) else {
            continue;
        };
        if mode & 1 == 1
            && let Some(head) = log.head.as_mut()
        {
            *head = resign(head);
        }
        let username = log
            .entries
            .first()
            .and_then(|p| p.entry.as_ref())
            .and_then(|e| v1::AccountEvent::decode(e.event.as_slice()).ok())
            .map(|e| e.username)
            .unwrap_or_else(|| "alice".into());
        let _ = sotto_transparency::verify_account_log(&public, &username, &log);
    }
    for (_, data) in regressions("audit") {
        let Some((&mode, rest)) = data.split_first() else {
            continue;
        };
        let Ok(log) = v1::AccountLog::decode(rest) else {
            continue;
        };
        let Some(mut head) = log.head else {
            continue;
        };
        if mode & 1 == 1 {
            head = resign(&head);
        }
        let entries = log.entries.into_iter().filter_map(|p| p.entry);
        let _ = sotto_transparency::audit(&public, entries, &head);
    }
}

/// As `fuzz/src/lib.rs::FRAME_SEPARATOR`.
const FRAME_SEPARATOR: &[u8] = b"\xff\x00SOTTO\x00\xff";

fn split_frames(data: &[u8]) -> Vec<&[u8]> {
    let mut frames = Vec::new();
    let mut rest = data;
    while let Some(at) = rest
        .windows(FRAME_SEPARATOR.len())
        .position(|w| w == FRAME_SEPARATOR)
    {
        frames.push(&rest[..at]);
        rest = &rest[at + FRAME_SEPARATOR.len()..];
    }
    frames.push(rest);
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_session_regressions_do_not_panic() {
    let files = regressions("server_session");
    if files.is_empty() {
        return;
    }
    // A panic in a connection task does not fail this test by itself:
    // count every panic in the process instead.
    let panics = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&panics);
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        counter.fetch_add(1, Ordering::SeqCst);
        previous(info);
    }));

    let server = sotto_testkit::TestServer::start().await;
    let url = format!("ws://{}/ws", server.addr());
    for (n, (path, data)) in files.iter().enumerate() {
        let Some((&mode, rest)) = data.split_first() else {
            continue;
        };
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
        let nonce = match next_frame(&mut ws).await.and_then(|f| f.body) {
            Some(v1::server_frame::Body::Challenge(c)) => c.nonce,
            other => panic!("expected a challenge, got {other:?}"),
        };
        if mode & 1 == 1 {
            // Logged in, as the fuzz target's odd inputs are.
            let account = sotto_testkit::wire::Account::new(&format!("fuzz{n}"));
            let register = v1::ClientFrame {
                request_id: 1,
                body: Some(account.register(&nonce)),
            };
            ws.send(Message::binary(register.encode_to_vec()))
                .await
                .unwrap();
            let response = next_frame(&mut ws).await;
            assert!(
                matches!(
                    response.and_then(|f| f.body),
                    Some(v1::server_frame::Body::Response(v1::Response {
                        result: Some(v1::response::Result::Done(_)),
                        ..
                    }))
                ),
                "cannot register for {}",
                path.display()
            );
        }
        // Frames the server refuses may close the connection: later sends
        // then fail, which is fine.
        for frame in split_frames(rest).into_iter().take(32) {
            if ws.send(Message::binary(frame.to_vec())).await.is_err() {
                break;
            }
        }
        // The session handles frames in order: once a request sent after
        // them is answered (or the connection is closed), they were all
        // handled.
        let probe = v1::ClientFrame {
            request_id: u64::MAX,
            body: Some(v1::client_frame::Body::GetLogHead(v1::GetLogHead {})),
        };
        if ws
            .send(Message::binary(probe.encode_to_vec()))
            .await
            .is_ok()
        {
            let _ = tokio::time::timeout(sotto_testkit::wire::WAIT, async {
                while let Some(frame) = next_frame(&mut ws).await {
                    if matches!(&frame.body, Some(v1::server_frame::Body::Response(r)) if r.request_id == u64::MAX)
                    {
                        break;
                    }
                }
            })
            .await;
        }
        assert_eq!(
            panics.load(Ordering::SeqCst),
            0,
            "{} made the server panic",
            path.display()
        );
    }
    // The server still serves.
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr()))
        .await
        .unwrap();
    let challenge = ws.next().await.unwrap().unwrap();
    assert!(matches!(challenge, Message::Binary(_)));
    let _ = ws.close(None).await;
    server.stop().await;
}

/// The next server frame; `None` once the connection is closed or broken.
async fn next_frame(
    ws: &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
) -> Option<v1::ServerFrame> {
    loop {
        match tokio::time::timeout(sotto_testkit::wire::WAIT, ws.next()).await {
            Ok(Some(Ok(Message::Binary(bytes)))) => {
                return sotto_proto::decode_server_frame(&bytes).ok();
            }
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            _ => return None,
        }
    }
}
