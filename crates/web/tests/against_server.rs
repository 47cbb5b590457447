//! The check the browser runs, run natively against a real `sotto-server`:
//! the same Rust, the same frames, over a real WebSocket. (The browser runs
//! it in Chromium in the Playwright suite.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use futures_util::{SinkExt as _, StreamExt as _};
use sotto_testkit::TestServer;
use sotto_web::check::ServerCheck;
use tokio_tungstenite::tungstenite::Message;

/// Connects as the page does and runs the check to the end.
async fn check(server: &TestServer) -> ServerCheck {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", server.addr()))
        .await
        .unwrap();
    let mut check = ServerCheck::new();
    while !check.verified() {
        let message = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next())
            .await
            .expect("the server answers")
            .expect("the socket stays open")
            .unwrap();
        let Message::Binary(bytes) = message else {
            continue;
        };
        for reply in check.receive(&bytes).unwrap() {
            ws.send(Message::Binary(reply.into())).await.unwrap();
        }
    }
    check
}

#[tokio::test]
async fn a_fresh_server_passes_the_check() {
    let server = TestServer::start().await;
    let check = check(&server).await;
    // The server's own web release is the first leaf.
    assert_eq!(check.head().unwrap().tree_size, 1);
    assert_eq!(check.log_key().unwrap().len(), 32);
}

#[tokio::test]
async fn the_check_sees_the_log_grow() {
    let server = TestServer::start().await;
    let _alice = server.registered("alice").await;
    let check = check(&server).await;
    // The web release, then alice's IdentityRegistered and DeviceAdded.
    assert_eq!(check.head().unwrap().tree_size, 3);
}
