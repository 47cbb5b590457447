//! Web Push (`crates/server/src/push.rs`) against a fake push service: a
//! small HTTP server on loopback that records every request, playing the
//! browser vendor's push service. The server is told to allow exactly that
//! loopback origin (`ServerConfig::push`), as an operator would allow
//! `fcm.googleapis.com`.
//!
//! Checked, on SQLite and on a PostgreSQL + NATS cluster: an offline
//! device with an endpoint gets one empty push for a burst of messages,
//! signed with the key `GetPushKey` serves, for the fake's origin; an
//! online device (on any node) and a device without an endpoint get none;
//! a 410 answer clears the endpoint; endpoints of other hosts are refused
//! and not stored; a request only ever sets the caller's own device's
//! endpoint; removing a device clears its endpoint.

// Test code: failing loudly is the point (clippy.toml only covers #[test] fns).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier as _;
use sotto_proto::v1::{self, ErrorCode, client_frame::Body, response};
use sotto_testkit::deployment::Deployment;
use sotto_testkit::wire::*;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

/// One request the fake push service received.
#[derive(Debug, Clone)]
struct Pushed {
    method: String,
    path: String,
    /// Header names lowercased.
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

/// A push service on loopback that records requests and answers each with
/// the status it is set to (201 by default).
#[derive(Debug, Clone)]
struct FakePushService {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Pushed>>>,
    status: Arc<AtomicU16>,
}

impl FakePushService {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let fake = Self {
            addr: listener.local_addr().unwrap(),
            received: Arc::default(),
            status: Arc::new(AtomicU16::new(201)),
        };
        let served = fake.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let served = served.clone();
                tokio::spawn(async move {
                    let Some(pushed) = read_request(&mut stream).await else {
                        return;
                    };
                    served.received.lock().unwrap().push(pushed);
                    let status = served.status.load(Ordering::SeqCst);
                    let answer = format!(
                        "HTTP/1.1 {status} Whatever\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        fake
    }

    /// The origin the server is told to allow.
    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// An endpoint at this service, as a browser would be given.
    fn endpoint(&self, token: &str) -> String {
        format!("{}/push/{token}", self.origin())
    }

    /// Requests received for `token`'s endpoint.
    fn pushes_for(&self, token: &str) -> Vec<Pushed> {
        let path = format!("/push/{token}");
        self.received
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.path == path)
            .cloned()
            .collect()
    }

    /// Waits (up to 10 s) until `token` got `n` pushes, then a while longer,
    /// and returns all it got.
    async fn wait_for(&self, token: &str, n: usize) -> Vec<Pushed> {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.pushes_for(token).len() < n && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(QUIET).await;
        self.pushes_for(token)
    }
}

/// How long the tests wait to be sure nothing (more) comes.
const QUIET: Duration = Duration::from_millis(1500);

/// Reads one HTTP/1.1 request (head and `Content-Length` body).
async fn read_request(stream: &mut tokio::net::TcpStream) -> Option<Pushed> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next()?.split(' ');
    let method = request_line.next()?.to_owned();
    let path = request_line.next()?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers
        .get("content-length")
        .and_then(|l| l.parse().ok())
        .unwrap_or(0);
    let mut body = buf[head_end + 4..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some(Pushed {
        method,
        path,
        headers,
        body,
    })
}

/// Logs `account` in on `client`.
async fn logged_in(client: &mut Client, account: &Account) {
    let response = client.login(account).await;
    assert!(
        matches!(response.result, Some(response::Result::LoggedIn(_))),
        "{response:?}"
    );
}

fn set_endpoint(endpoint: &str) -> Body {
    Body::SetPushEndpoint(v1::SetPushEndpoint {
        endpoint: endpoint.to_owned(),
    })
}

/// Asks for the server's VAPID public key.
async fn push_key(client: &mut Client) -> Vec<u8> {
    match client
        .request(Body::GetPushKey(v1::GetPushKey {}))
        .await
        .result
    {
        Some(response::Result::PushKey(key)) => key.public_key,
        other => panic!("expected the push key, got {other:?}"),
    }
}

/// Registers `name` on node `node`, logged in on the returned connection.
async fn registered(deployment: &Deployment, node: usize, name: &str) -> (Client, Account) {
    let account = Account::new(name);
    let mut client = Client::connect(deployment.node(node).addr()).await;
    assert_done(&client.register(&account).await);
    (client, account)
}

/// Lets the server see a closed connection (and, on a cluster, NATS the
/// unsubscription) before messages are sent.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(700)).await;
}

/// Sends `n` messages to `device` in a new group from `sender`.
async fn send_burst(sender: &mut Client, device: &[u8], n: usize) {
    let group = create_group(sender).await;
    for i in 0..n {
        assert_done(
            &sender
                .request(send_message(
                    &random_id(),
                    &group,
                    &[device],
                    &[i as u8; 40],
                ))
                .await,
        );
    }
}

/// The stored endpoint of `device`, on SQLite (`None` on a cluster: the
/// store conformance suite checks PostgreSQL's).
fn stored_endpoint(deployment: &Deployment, device: &[u8]) -> Option<Option<String>> {
    let server = deployment.single()?;
    Some(
        server
            .db()
            .query_row(
                "SELECT push_endpoint FROM devices WHERE device_id = ?1",
                [device],
                |r| r.get(0),
            )
            .unwrap(),
    )
}

/// Checks a push: an empty POST with a TTL, high urgency and a VAPID
/// `Authorization` whose ES256 token verifies against `key`, for
/// `audience`, not expired, valid at most a day.
fn assert_vapid_push(pushed: &Pushed, key: &[u8], audience: &str) {
    assert_eq!(pushed.method, "POST");
    assert!(pushed.body.is_empty(), "a push carries nothing");
    assert_eq!(
        pushed.headers.get("content-length").map(String::as_str),
        Some("0")
    );
    assert_eq!(
        pushed.headers.get("urgency").map(String::as_str),
        Some("high")
    );
    let ttl: u64 = pushed.headers["ttl"].parse().unwrap();
    assert!(ttl > 0);
    let authorization = &pushed.headers["authorization"];
    let (token, k) = authorization
        .strip_prefix("vapid t=")
        .expect("a vapid Authorization")
        .split_once(", k=")
        .expect("t= and k=");
    assert_eq!(
        URL_SAFE_NO_PAD.decode(k).unwrap(),
        key,
        "k is the served key"
    );
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let (header, claims) = signed.split_once('.').unwrap();
    let header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    let claims: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims).unwrap()).unwrap();
    assert_eq!(claims["aud"], audience);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp > now && exp <= now + 24 * 3600, "exp {exp}, now {now}");
    assert!(claims["sub"].as_str().is_some_and(|s| !s.is_empty()));
    let verifying = p256::ecdsa::VerifyingKey::from_sec1_bytes(key).unwrap();
    let signature =
        p256::ecdsa::Signature::from_slice(&URL_SAFE_NO_PAD.decode(signature).unwrap()).unwrap();
    verifying
        .verify(signed.as_bytes(), &signature)
        .expect("the token is signed with the served key");
}

/// Starts the deployment allowing only `fake`'s origin.
async fn start(
    backend: sotto_testkit::deployment::Backend,
    test: &str,
    fake: &FakePushService,
) -> Option<Deployment> {
    let origin = fake.origin();
    Deployment::start_with(backend, test, move |config| {
        config.push.services = vec![origin.clone()];
    })
    .await
}

/// Writes `NAME::sqlite` and `NAME::cluster`, each with its own fake push
/// service.
macro_rules! push_test {
    ($($(#[doc = $doc:expr])* async fn $name:ident($deployment:ident, $fake:ident) $body:block)*) => {$(
        $(#[doc = $doc])*
        mod $name {
            use super::*;

            async fn run($deployment: Deployment, $fake: FakePushService) $body

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let fake = FakePushService::start().await;
                let deployment = start(sotto_testkit::deployment::Backend::Sqlite, module_path!(), &fake)
                    .await
                    .expect("SQLite always starts");
                sotto_testkit::within(run(deployment, fake)).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn cluster() {
                let fake = FakePushService::start().await;
                if let Some(deployment) =
                    start(sotto_testkit::deployment::Backend::Cluster, module_path!(), &fake).await
                {
                    sotto_testkit::within(run(deployment, fake)).await;
                }
            }
        }
    )*};
}

push_test! {
    /// An offline device with an endpoint: one push for a burst, empty,
    /// signed with the served key for the fake's origin. An online device
    /// (on another node, on a cluster) and a device without an endpoint:
    /// none.
    async fn offline_devices_get_one_empty_signed_push(deployment, fake) {
        let (mut bob, bob_account) = registered(&deployment, 0, "bob").await;
        let key = push_key(&mut bob).await;
        assert_eq!(key.len(), 65);
        assert_eq!(stored_endpoint(&deployment, &bob_account.device_id).flatten(), None, "off by default");
        assert_done(&bob.request(set_endpoint(&fake.endpoint("bob"))).await);
        assert_eq!(
            stored_endpoint(&deployment, &bob_account.device_id).map(Option::unwrap),
            deployment.single().map(|_| fake.endpoint("bob"))
        );
        // Carol stays online, on node 1; Dave goes offline without an
        // endpoint.
        let (mut carol, carol_account) = registered(&deployment, 1 % deployment.node_count(), "carol").await;
        assert_done(&carol.request(set_endpoint(&fake.endpoint("carol"))).await);
        let (dave, dave_account) = registered(&deployment, 0, "dave").await;
        drop(bob);
        drop(dave);
        settle().await;

        let mut sender = Client::connect(deployment.node(2 % deployment.node_count()).addr()).await;
        send_burst(&mut sender, &bob_account.device_id, 5).await;
        send_burst(&mut sender, &carol_account.device_id, 2).await;
        send_burst(&mut sender, &dave_account.device_id, 2).await;

        let pushes = fake.wait_for("bob", 1).await;
        assert_eq!(pushes.len(), 1, "one push for the burst: {pushes:?}");
        assert_vapid_push(&pushes[0], &key, &fake.origin());
        carol.next_delivery().await;
        assert!(fake.pushes_for("carol").is_empty(), "carol is online");
        assert!(fake.pushes_for("dave").is_empty(), "dave has no endpoint");
        assert_eq!(fake.received.lock().unwrap().len(), 1);

        // Once Bob connects, the next push need not wait out the window
        // (on a cluster, the window is per node: this sender is on Bob's).
        let mut bob = Client::connect(deployment.node(0).addr()).await;
        logged_in(&mut bob, &bob_account).await;
        settle().await;
        drop(bob);
        settle().await;
        let mut sender = Client::connect(deployment.node(0).addr()).await;
        send_burst(&mut sender, &bob_account.device_id, 1).await;
        assert_eq!(fake.wait_for("bob", 2).await.len(), 2);
        deployment.stop().await;
    }

    /// A 410 (the browser unsubscribed) clears the endpoint: after the
    /// device comes and goes again, a new message pushes nothing. An empty
    /// endpoint turns pushes off.
    async fn gone_clears_the_endpoint(deployment, fake) {
        fake.status.store(410, Ordering::SeqCst);
        let (mut erin, erin_account) = registered(&deployment, 0, "erin").await;
        assert_done(&erin.request(set_endpoint(&fake.endpoint("erin"))).await);
        let (mut frank, frank_account) = registered(&deployment, 0, "frank").await;
        assert_done(&frank.request(set_endpoint(&fake.endpoint("frank"))).await);
        assert_done(&frank.request(set_endpoint("")).await);
        drop(erin);
        drop(frank);
        settle().await;
        let mut sender = Client::connect(deployment.node(1 % deployment.node_count()).addr()).await;
        send_burst(&mut sender, &erin_account.device_id, 1).await;
        assert_eq!(fake.wait_for("erin", 1).await.len(), 1);
        if deployment.single().is_some() {
            assert_eq!(stored_endpoint(&deployment, &erin_account.device_id), Some(None));
        }
        fake.status.store(201, Ordering::SeqCst);
        // Erin comes and goes (which ends the coalescing window on her
        // node); a sender there would push if the endpoint were still set.
        let mut sender = Client::connect(deployment.node(0).addr()).await;
        let mut erin = Client::connect(deployment.node(0).addr()).await;
        logged_in(&mut erin, &erin_account).await;
        settle().await;
        drop(erin);
        settle().await;
        send_burst(&mut sender, &erin_account.device_id, 1).await;
        send_burst(&mut sender, &frank_account.device_id, 1).await;
        tokio::time::sleep(QUIET).await;
        assert_eq!(fake.pushes_for("erin").len(), 1, "no push after the 410");
        assert!(fake.pushes_for("frank").is_empty(), "frank turned pushes off");
        deployment.stop().await;
    }

    /// Endpoints of other hosts, schemes and ports are refused with
    /// PUSH_ENDPOINT_REFUSED and not stored; so is one before login. A
    /// request sets only the caller's own device's endpoint, and removing
    /// a device clears its endpoint.
    async fn endpoints_are_checked_and_per_device(deployment, fake) {
        let mut anonymous = Client::connect(deployment.node(0).addr()).await;
        assert_error(
            &anonymous.request(set_endpoint(&fake.endpoint("x"))).await,
            ErrorCode::NotAuthenticated,
        );
        assert_error(
            &anonymous.request(Body::GetPushKey(v1::GetPushKey {})).await,
            ErrorCode::NotAuthenticated,
        );
        let (mut phone, account) = registered(&deployment, 0, "grace").await;
        let other_port = format!("http://127.0.0.1:{}/push/x", fake.addr.port().wrapping_add(1));
        let too_long = format!("{}/{}", fake.endpoint("x"), "a".repeat(1024));
        for refused in [
            "https://evil.example/",
            "http://10.0.0.1/",
            "file:///etc/passwd",
            "https://fcm.googleapis.com/fcm/send/x",
            other_port.as_str(),
            too_long.as_str(),
            "not a url",
        ] {
            let error = assert_error(&phone.request(set_endpoint(refused)).await, ErrorCode::PushEndpointRefused);
            assert!(!error.message.is_empty());
            assert_eq!(stored_endpoint(&deployment, &account.device_id).flatten(), None, "{refused}");
        }
        // A second device of the account.
        let laptop = account.another_device();
        assert_done(&phone.request(account.add_device(&laptop, 2)).await);
        let mut laptop_client = Client::connect(deployment.node(0).addr()).await;
        logged_in(&mut laptop_client, &laptop).await;
        assert_done(&laptop_client.request(set_endpoint(&fake.endpoint("laptop"))).await);
        if deployment.single().is_some() {
            assert_eq!(stored_endpoint(&deployment, &account.device_id), Some(None));
            assert_eq!(
                stored_endpoint(&deployment, &laptop.device_id),
                Some(Some(fake.endpoint("laptop")))
            );
        }
        // Removing the laptop clears its endpoint; nothing is pushed to it.
        drop(laptop_client);
        assert_done(&phone.request(account.remove_device(&laptop.device_id, 3)).await);
        if deployment.single().is_some() {
            assert_eq!(stored_endpoint(&deployment, &laptop.device_id), Some(None));
        }
        tokio::time::sleep(QUIET).await;
        assert!(fake.received.lock().unwrap().is_empty());
        deployment.stop().await;
    }
}
