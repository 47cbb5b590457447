//! TLS end to end: the server terminates TLS itself (`--tls-cert`,
//! `--tls-key`), clients speak `https://` and trust a self-signed server's
//! CA given with `--ca-file`; a wrong CA and plain HTTP to another machine
//! are refused with clear messages; a certificate replaced on disk reaches
//! new connections while old ones stay up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

use sotto_client::transport::Transport;
use sotto_client::{Client, ClientError, Trust};
use sotto_proto::v1::{GetLogHead, client_frame, response};
use sotto_testkit::tls::{TestCa, presented_certificate};
use sotto_testkit::{TestServer, texts, within};
use std::time::Duration;
use tempfile::TempDir;

async fn register(server: &TestServer, name: &str, trust: &Trust) -> (Client, TempDir) {
    let dir = TempDir::new().unwrap();
    let client = Client::register_with_invite(dir.path(), name, &server.url(), None, trust)
        .await
        .unwrap();
    (client, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_chat_over_tls_with_their_own_ca() {
    within(async {
        let ca = TestCa::new("Sotto test CA");
        let server = TestServer::start_tls(&ca).await;
        assert!(server.url().starts_with("https://"), "{}", server.url());
        let trust = Trust::web_roots().with_ca_pem(ca.pem()).unwrap();
        let (mut alice, _a) = register(&server, "alice", &trust).await;
        let (bob, bob_dir) = register(&server, "bob", &trust).await;
        drop(bob);

        alice.send_direct("bob", "over TLS").await.unwrap();
        // The profile remembers the CA: a reopened client still connects.
        let mut bob = Client::open(bob_dir.path()).unwrap();
        assert_eq!(texts(&bob.sync().await.unwrap()), vec!["over TLS"]);
        bob.send_direct("alice", "and back").await.unwrap();
        assert_eq!(texts(&alice.sync().await.unwrap()), vec!["and back"]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_from_an_unknown_ca_is_refused_clearly() {
    within(async {
        let server = TestServer::start_tls(&TestCa::new("the server's CA")).await;
        let stranger = Trust::web_roots()
            .with_ca_pem(TestCa::new("some other CA").pem())
            .unwrap();
        for trust in [Trust::web_roots(), stranger] {
            let dir = TempDir::new().unwrap();
            let err =
                Client::register_with_invite(dir.path(), "alice", &server.url(), None, &trust)
                    .await
                    .expect_err("an untrusted certificate must be refused");
            let ClientError::Certificate(message) = &err else {
                panic!("expected a certificate error, got {err:?}");
            };
            assert!(message.contains("not trusted"), "{message}");
            assert!(message.contains("--ca-file"), "{message}");
            assert!(!err.is_transient(), "retrying will not fix a certificate");
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_is_refused_beyond_loopback() {
    within(async {
        let dir = TempDir::new().unwrap();
        // 192.0.2.0/24 is reserved for documentation: nothing answers there,
        // so a refusal that came from trying to connect would time out.
        let err = Client::register(dir.path(), "alice", "http://192.0.2.7:8420")
            .await
            .expect_err("plain HTTP to another machine must be refused");
        assert!(
            matches!(&err, ClientError::Usage(m) if m.contains("--insecure-transport")),
            "{err:?}"
        );
        // A plain server on loopback is still fine, as in the README.
        let server = TestServer::start().await;
        let dir = TempDir::new().unwrap();
        Client::register(dir.path(), "alice", &server.url())
            .await
            .unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_certificate_reaches_new_connections_and_old_ones_stay_up() {
    within(async {
        let ca = TestCa::new("Sotto test CA");
        let server = TestServer::start_tls(&ca).await;
        let trust = Trust::web_roots().with_ca_pem(ca.pem()).unwrap();
        let before = presented_certificate(server.addr(), &ca).await.unwrap();
        let mut old = Transport::connect(&server.url(), &trust).await.unwrap();

        // A broken file (half written, say) is not loaded: the server keeps
        // presenting the old certificate.
        std::fs::write(server.tls_dir().join("key.pem"), "not a key").unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(
            presented_certificate(server.addr(), &ca).await.unwrap(),
            before
        );

        let renewed = ca.issue("renewed");
        renewed.write(&server.tls_dir());
        let mut presented = before.clone();
        for _ in 0..100 {
            presented = presented_certificate(server.addr(), &ca).await.unwrap();
            if presented != before {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            presented,
            renewed.der(),
            "new connections get the new certificate"
        );

        // The connection opened before the change still works.
        let answer = old
            .request(client_frame::Body::GetLogHead(GetLogHead {}))
            .await
            .unwrap();
        assert!(matches!(answer, response::Result::LogHead(_)), "{answer:?}");
        // And clients connect with the new one.
        let (mut alice, _a) = register(&server, "alice", &trust).await;
        alice.sync().await.unwrap();
    })
    .await;
}
