//! Against DNS rebinding: a request must name this server in its `Host`
//! header — an IP address, `localhost`, a `--server-name`, or (with TLS) a
//! name on the server's certificate. Anything else is refused with 421
//! before any handler runs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use sotto_testkit::TestServer;
use sotto_testkit::tls::{TestCa, get_status};

const MISDIRECTED: u16 = 421;

#[tokio::test]
async fn a_rebinding_page_cannot_reach_a_plain_server() {
    let server = TestServer::start_with(|c| c.server_names = vec!["chat.example.org".into()]).await;
    let addr = server.addr();
    for host in [
        addr.to_string(),
        "localhost:8420".into(),
        "chat.example.org".into(),
    ] {
        assert_eq!(
            get_status(addr, None, &host, "/health").await,
            200,
            "{host}"
        );
    }
    for host in [
        "evil.example",
        "evil.example:8420",
        "chat.example.org.evil.example",
    ] {
        assert_eq!(
            get_status(addr, None, host, "/health").await,
            MISDIRECTED,
            "{host}"
        );
        // The WebSocket endpoint is behind the same check.
        assert_eq!(
            get_status(addr, None, host, "/ws").await,
            MISDIRECTED,
            "{host}"
        );
    }
}

#[tokio::test]
async fn a_tls_server_answers_to_the_names_on_its_certificate() {
    let ca = TestCa::new("Sotto test CA");
    let server =
        TestServer::start_tls_with(ca.issue_for("chat", &["chat.example.org"]), |_| {}).await;
    let addr = server.addr();
    assert_eq!(
        get_status(addr, Some(&ca), "chat.example.org:443", "/health").await,
        200
    );
    assert_eq!(
        get_status(addr, Some(&ca), &addr.to_string(), "/health").await,
        200
    );
    assert_eq!(
        get_status(addr, Some(&ca), "evil.example", "/health").await,
        MISDIRECTED
    );
}
