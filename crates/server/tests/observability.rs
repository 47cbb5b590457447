//! `/healthz`, `/readyz` and `/metrics`: the counters move with traffic,
//! and no metric names an account, device, group or address.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use sotto_proto::v1::response::Result;
use sotto_proto::v1::{ErrorCode, client_frame::Body};
use sotto_server::config::Rate;
use sotto_testkit::wire::{Account, assert_error};
use sotto_testkit::{TestServer, free_loopback_addr, register, within};
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A plain HTTP/1.1 GET: the status and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8(response).unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample `name` (with its labels, as printed).
fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            (key == name).then(|| value.parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no sample {name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_move_with_traffic_and_name_no_one() {
    within(async {
        let metrics_addr: SocketAddr = free_loopback_addr().parse().unwrap();
        let server = TestServer::start_with(|c| {
            c.metrics_listen = Some(metrics_addr);
            c.limits.registrations_per_address = Rate {
                per_second: 0.01,
                burst: 3.0,
            };
        })
        .await;
        assert_eq!(get(server.addr(), "/healthz").await.0, 200);
        assert_eq!(get(server.addr(), "/readyz").await.0, 200);
        // Metrics are only on their own listener.
        assert_eq!(get(server.addr(), "/metrics").await.0, 404);

        let (status, before) = get(metrics_addr, "/metrics").await;
        assert_eq!(status, 200);
        assert_eq!(sample(&before, "sotto_accounts"), 0.0);
        // Epoch 1: the web release the server logged at start.
        assert_eq!(sample(&before, "sotto_directory_epoch"), 1.0);

        let (mut alice, _a) = register(&server.url(), "alice").await;
        let (mut bob, _b) = register(&server.url(), "bob").await;
        alice.send_direct("bob", "hello").await.unwrap();
        bob.sync().await.unwrap();
        // A refusal and a rate-limit hit.
        let mut stranger = server.connect().await;
        assert_error(
            &stranger.request(Body::Ack(Default::default())).await,
            ErrorCode::NotAuthenticated,
        );
        let mut limited = false;
        for n in 0..5 {
            let reply = stranger
                .register(&Account::new(&format!("carol{n}")))
                .await;
            if matches!(&reply.result, Some(Result::Error(e)) if e.code == ErrorCode::RateLimited as i32)
            {
                limited = true;
                break;
            }
            stranger = server.connect().await;
        }
        assert!(limited, "the registration limit was never hit");

        let (status, text) = get(metrics_addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(sample(&text, "sotto_accounts") >= 2.0);
        assert!(sample(&text, "sotto_devices") >= 2.0);
        assert!(sample(&text, "sotto_messages_accepted_total") >= 1.0);
        assert!(sample(&text, "sotto_commits_accepted_total") >= 1.0);
        assert!(sample(&text, "sotto_deliveries_total") >= 1.0);
        assert!(sample(&text, "sotto_log_entries") >= 4.0);
        assert!(sample(&text, "sotto_directory_epoch") >= 2.0);
        assert!(sample(&text, "sotto_write_batch_size_count") >= 1.0);
        assert!(sample(&text, "sotto_write_commit_seconds_count") >= 1.0);
        assert!(sample(&text, "sotto_connections{kind=\"logged_in\"}") >= 1.0);
        assert_eq!(
            sample(&text, "sotto_requests_refused_total{reason=\"NOT_AUTHENTICATED\"}"),
            1.0
        );
        assert!(
            sample(
                &text,
                "sotto_rate_limit_hits_total{limit=\"registrations from your address\"}"
            ) >= 1.0
        );

        // No label or value holds an identifier: only these label names
        // exist, and nobody's name, device, group or address appears.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            if let Some((_, labels)) = line.split_once('{') {
                let labels = labels.split_once('}').unwrap().0;
                for pair in labels.split("\",") {
                    let name = pair.split_once('=').unwrap().0;
                    assert!(
                        ["kind", "reason", "limit", "outcome", "le"].contains(&name),
                        "unexpected label {name} in {line}"
                    );
                }
            }
        }
        let mut identifiers = vec![
            "alice".to_owned(),
            "bob".to_owned(),
            "carol".to_owned(),
            "127.0.0.1".to_owned(),
        ];
        for client in [&alice, &bob] {
            identifiers.push(client.device_id().to_string());
            identifiers.push(client.identity_key().to_string());
        }
        let groups: Vec<Vec<u8>> = {
            let db = server.db();
            let mut rows = db.prepare("SELECT group_id FROM mls_groups").unwrap();
            rows.query_map([], |r| r.get(0))
                .unwrap()
                .map(|g| g.unwrap())
                .collect()
        };
        assert!(!groups.is_empty());
        for group in groups {
            identifiers.push(hex::encode(group));
        }
        for id in identifiers {
            assert!(!text.contains(&id), "the metrics hold {id}");
        }
    })
    .await;
}
