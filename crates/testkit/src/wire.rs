//! The raw wire protocol for tests that play a client byte by byte: a
//! WebSocket [`Client`] that speaks the protobuf frames, an [`Account`] with
//! raw Ed25519 keys, and helpers for the frames tests send most.
//!
//! `Account` is deliberately not `sotto_core`'s: protocol tests must be able
//! to build what an honest client never would (an invalid username, a
//! certificate for someone else, a log entry out of sequence), so it holds
//! raw keys and builds every frame by hand.
//!
//! ```no_run
//! # async fn demo() {
//! use sotto_testkit::wire::*;
//! let server = sotto_testkit::TestServer::start().await;
//! let (mut alice, account) = server.registered("alice").await;
//! let group = create_group(&mut alice).await;
//! # }
//! ```

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use ed25519_dalek::{Signer, SigningKey};
use futures_util::{SinkExt, StreamExt};
use prost::Message as _;
use rand::RngCore;
use sotto_proto::mls_framing::{self, ContentType};
use sotto_proto::v1::{self, ErrorCode, client_frame::Body, response, server_frame};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

pub fn random_id() -> Vec<u8> {
    let mut id = vec![0; sotto_proto::ID_LEN];
    rand::rngs::OsRng.fill_bytes(&mut id);
    id
}

pub fn open_db(dir: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(
        dir.join("sotto.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap()
}

/// An account with one device and its keys.
impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

pub struct Account {
    pub username: String,
    pub identity: SigningKey,
    pub device: SigningKey,
    pub device_id: Vec<u8>,
    pub certificate: Vec<u8>,
}

impl Account {
    pub fn new(username: &str) -> Self {
        let identity = SigningKey::generate(&mut rand::rngs::OsRng);
        let device = SigningKey::generate(&mut rand::rngs::OsRng);
        let device_id = random_id();
        let certificate = v1::DeviceCertificate {
            username: username.to_owned(),
            device_id: device_id.clone(),
            device_key: device.verifying_key().to_bytes().to_vec(),
        }
        .encode_to_vec();
        Self {
            username: username.to_owned(),
            identity,
            device,
            device_id,
            certificate,
        }
    }

    pub fn signed_device(&self) -> v1::SignedDevice {
        v1::SignedDevice {
            certificate: self.certificate.clone(),
            identity_signature: self
                .identity
                .sign(&sotto_proto::device_transcript(&self.certificate))
                .to_bytes()
                .to_vec(),
        }
    }

    pub fn sign_challenge(&self, nonce: &[u8]) -> Vec<u8> {
        self.device
            .sign(&sotto_proto::auth_transcript(
                nonce,
                &self.username,
                &self.device_id,
            ))
            .to_bytes()
            .to_vec()
    }

    pub fn register(&self, nonce: &[u8]) -> Body {
        Body::Register(v1::Register {
            username: self.username.clone(),
            identity_key: self.identity.verifying_key().to_bytes().to_vec(),
            device: Some(self.signed_device()),
            challenge_signature: self.sign_challenge(nonce),
            log_entries: self.registration_entries(),
            invite_code: String::new(),
        })
    }

    /// A log entry for this account, signed by its identity key.
    pub fn log_entry(&self, seq: u64, change: v1::account_event::Change) -> v1::LogEntry {
        let event = v1::AccountEvent {
            username: self.username.clone(),
            identity_key: self.identity.verifying_key().to_bytes().to_vec(),
            account_seq: seq,
            change: Some(change),
        }
        .encode_to_vec();
        let signature = self
            .identity
            .sign(&sotto_proto::log_event_transcript(&event))
            .to_bytes()
            .to_vec();
        v1::LogEntry {
            event,
            signature,
            ..v1::LogEntry::default()
        }
    }

    /// The `DeviceAdded` change for this device.
    pub fn device_added(&self) -> v1::account_event::Change {
        v1::account_event::Change::DeviceAdded(v1::DeviceAdded {
            device_id: self.device_id.clone(),
            device_key: self.device.verifying_key().to_bytes().to_vec(),
        })
    }

    /// IdentityRegistered (seq 0) and DeviceAdded for this device (seq 1).
    pub fn registration_entries(&self) -> Vec<v1::LogEntry> {
        vec![
            self.log_entry(
                0,
                v1::account_event::Change::IdentityRegistered(v1::IdentityRegistered {}),
            ),
            self.log_entry(1, self.device_added()),
        ]
    }

    /// Another device of the same account (same identity key).
    pub fn another_device(&self) -> Account {
        let device = SigningKey::generate(&mut rand::rngs::OsRng);
        let device_id = random_id();
        let certificate = v1::DeviceCertificate {
            username: self.username.clone(),
            device_id: device_id.clone(),
            device_key: device.verifying_key().to_bytes().to_vec(),
        }
        .encode_to_vec();
        Account {
            username: self.username.clone(),
            identity: self.identity.clone(),
            device,
            device_id,
            certificate,
        }
    }

    /// `AddDevice` for `new` (a device of this account), at `seq`.
    pub fn add_device(&self, new: &Account, seq: u64) -> Body {
        Body::AddDevice(v1::AddDevice {
            entry: Some(self.log_entry(seq, new.device_added())),
            device: Some(new.signed_device()),
        })
    }

    /// `RemoveDevice` for `device_id`, at `seq`.
    pub fn remove_device(&self, device_id: &[u8], seq: u64) -> Body {
        Body::RemoveDevice(v1::RemoveDevice {
            entry: Some(self.log_entry(
                seq,
                v1::account_event::Change::DeviceRemoved(v1::DeviceRemoved {
                    device_id: device_id.to_vec(),
                }),
            )),
            ..v1::RemoveDevice::default()
        })
    }

    /// `RemoveDevice` for `device_id` at `seq`, with the rotation of the
    /// identity key to `new_identity` at `seq + 1` and new certificates for
    /// `remaining` (devices of this account).
    pub fn remove_and_rotate(
        &self,
        device_id: &[u8],
        seq: u64,
        new_identity: &SigningKey,
        remaining: &[&Account],
    ) -> Body {
        let new_key = new_identity.verifying_key().to_bytes();
        let proof = new_identity.sign(&sotto_proto::identity_rotation_transcript(
            &self.username,
            &self.identity.verifying_key().to_bytes(),
            &new_key,
            seq + 1,
        ));
        let rotation = self.log_entry(
            seq + 1,
            v1::account_event::Change::IdentityRotated(v1::IdentityRotated {
                new_identity_key: new_key.to_vec(),
                new_key_signature: proof.to_bytes().to_vec(),
            }),
        );
        let Body::RemoveDevice(mut remove) = self.remove_device(device_id, seq) else {
            unreachable!("remove_device builds a RemoveDevice");
        };
        remove.rotation = Some(rotation);
        remove.devices = remaining
            .iter()
            .map(|d| d.with_identity(new_identity).signed_device())
            .collect();
        Body::RemoveDevice(remove)
    }

    /// This device with another identity key (after a rotation).
    pub fn with_identity(&self, identity: &SigningKey) -> Account {
        Account {
            username: self.username.clone(),
            identity: identity.clone(),
            device: self.device.clone(),
            device_id: self.device_id.clone(),
            certificate: self.certificate.clone(),
        }
    }

    pub fn login(&self, nonce: &[u8]) -> Body {
        Body::Login(v1::Login {
            username: self.username.clone(),
            device_id: self.device_id.clone(),
            challenge_signature: self.sign_challenge(nonce),
        })
    }
}

/// A raw protocol client.
impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub nonce: Vec<u8>,
    /// The server's log key, from the challenge.
    pub log_key: Vec<u8>,
    next_request_id: u64,
    /// Frames received while waiting for something else.
    buffered: VecDeque<v1::ServerFrame>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Self {
        let (ws, _) = tokio::time::timeout(
            WAIT,
            tokio_tungstenite::connect_async(format!("ws://{addr}/ws")),
        )
        .await
        .expect("connect timed out")
        .unwrap();
        let mut client = Self {
            ws,
            nonce: Vec::new(),
            log_key: Vec::new(),
            next_request_id: 1,
            buffered: VecDeque::new(),
        };
        match client.next_frame().await.body {
            Some(server_frame::Body::Challenge(c)) => {
                assert_eq!(c.protocol_version, sotto_proto::PROTOCOL_VERSION);
                assert_eq!(c.nonce.len(), sotto_proto::NONCE_LEN);
                assert_eq!(c.log_key.len(), 32);
                client.nonce = c.nonce;
                client.log_key = c.log_key;
            }
            other => panic!("expected a challenge, got {other:?}"),
        }
        client
    }

    pub async fn register(&mut self, account: &Account) -> v1::Response {
        let body = account.register(&self.nonce);
        self.request(body).await
    }

    pub async fn login(&mut self, account: &Account) -> v1::Response {
        let body = account.login(&self.nonce);
        self.request(body).await
    }

    pub async fn send_raw(&mut self, bytes: Vec<u8>) {
        self.ws.send(Message::binary(bytes)).await.unwrap();
    }

    pub async fn send_frame(&mut self, frame: &v1::ClientFrame) {
        self.send_raw(frame.encode_to_vec()).await;
    }

    /// Sends a request and waits for its response, buffering other frames.
    pub async fn request(&mut self, body: Body) -> v1::Response {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.send_frame(&v1::ClientFrame {
            request_id,
            body: Some(body),
        })
        .await;
        self.response_to(request_id).await
    }

    /// Waits for the response to `request_id`, buffering other frames.
    pub async fn response_to(&mut self, request_id: u64) -> v1::Response {
        if let Some(pos) = self
            .buffered
            .iter()
            .position(|f| is_response_to(f, request_id))
        {
            return into_response(self.buffered.remove(pos).unwrap());
        }
        loop {
            let frame = self.read_frame().await;
            if is_response_to(&frame, request_id) {
                return into_response(frame);
            }
            self.buffered.push_back(frame);
        }
    }

    async fn read_frame(&mut self) -> v1::ServerFrame {
        loop {
            let message = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("timed out waiting for a frame")
                .expect("connection closed")
                .unwrap();
            match message {
                Message::Binary(bytes) => return sotto_proto::decode_server_frame(&bytes).unwrap(),
                Message::Ping(_) | Message::Pong(_) => {}
                other => panic!("unexpected message {other:?}"),
            }
        }
    }

    /// The next frame, buffered or new.
    pub async fn next_frame(&mut self) -> v1::ServerFrame {
        match self.buffered.pop_front() {
            Some(frame) => frame,
            None => self.read_frame().await,
        }
    }

    /// The next Delivery, buffering anything else.
    pub async fn next_delivery(&mut self) -> v1::Delivery {
        let buffered = self
            .buffered
            .iter()
            .position(|f| matches!(f.body, Some(server_frame::Body::Delivery(_))));
        if let Some(pos) = buffered
            && let Some(server_frame::Body::Delivery(d)) = self.buffered.remove(pos).unwrap().body
        {
            return d;
        }
        loop {
            let frame = self.read_frame().await;
            if let Some(server_frame::Body::Delivery(d)) = frame.body {
                return d;
            }
            self.buffered.push_back(frame);
        }
    }

    /// Asserts that no frame arrives within `wait`.
    pub async fn assert_quiet(&mut self, wait: Duration) {
        assert!(
            self.buffered.is_empty(),
            "unexpected buffered frames: {:?}",
            self.buffered
        );
        if let Ok(message) = tokio::time::timeout(wait, self.ws.next()).await {
            panic!("expected no frame, got {message:?}");
        }
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap();
    }

    /// Sends a WebSocket ping (activity, but no request) every `every`
    /// until the server closes the connection; whether it did within
    /// `wait`.
    pub async fn pings_until_closed(&mut self, every: Duration, wait: Duration) -> bool {
        tokio::time::timeout(wait, async {
            loop {
                if self
                    .ws
                    .send(Message::Ping(Vec::new().into()))
                    .await
                    .is_err()
                {
                    return;
                }
                // A pong, or nothing yet: still open.
                if let Ok(None | Some(Err(_) | Ok(Message::Close(_)))) =
                    tokio::time::timeout(every, self.ws.next()).await
                {
                    return;
                }
            }
        })
        .await
        .is_ok()
    }

    /// Asserts that the server closes the connection within `wait`.
    pub async fn assert_closed_within(&mut self, wait: Duration) {
        let closed = tokio::time::timeout(wait, async {
            loop {
                match self.ws.next().await {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                    Some(Ok(_)) => {}
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "connection was not closed");
    }

    /// Acknowledges deliveries (no response expected).
    pub async fn ack(&mut self, seqs: &[u64]) {
        self.send_frame(&v1::ClientFrame {
            request_id: 0,
            body: Some(Body::Ack(v1::Ack {
                seqs: seqs.to_vec(),
            })),
        })
        .await;
    }

    /// Sends `Sync`, acknowledges every delivery that arrives, and returns
    /// them once the server answers `SyncDone`.
    pub async fn sync(&mut self) -> Vec<v1::Delivery> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.send_frame(&v1::ClientFrame {
            request_id,
            body: Some(Body::Sync(v1::Sync {})),
        })
        .await;
        let mut delivered = Vec::new();
        let mut frames: VecDeque<v1::ServerFrame> = std::mem::take(&mut self.buffered);
        loop {
            let frame = match frames.pop_front() {
                Some(frame) => frame,
                None => self.read_frame().await,
            };
            match frame.body {
                Some(server_frame::Body::Delivery(d)) => {
                    self.ack(&[d.seq]).await;
                    delivered.push(d);
                }
                Some(server_frame::Body::Response(ref r)) if r.request_id == request_id => {
                    assert!(
                        matches!(r.result, Some(response::Result::SyncDone(_))),
                        "{r:?}"
                    );
                    self.buffered.extend(frames);
                    return delivered;
                }
                _ => self.buffered.push_back(frame),
            }
        }
    }
}

fn is_response_to(frame: &v1::ServerFrame, request_id: u64) -> bool {
    matches!(&frame.body, Some(server_frame::Body::Response(r)) if r.request_id == request_id)
}

fn into_response(frame: v1::ServerFrame) -> v1::Response {
    match frame.body {
        Some(server_frame::Body::Response(r)) => r,
        other => panic!("not a response: {other:?}"),
    }
}

#[track_caller]
pub fn assert_done(response: &v1::Response) {
    assert!(
        matches!(response.result, Some(response::Result::Done(_))),
        "expected Done, got {response:?}"
    );
}

/// Asserts that `response` is an error with `code` and returns it.
#[track_caller]
pub fn assert_error(response: &v1::Response, code: ErrorCode) -> v1::Error {
    match &response.result {
        Some(response::Result::Error(e)) => {
            assert_eq!(e.code, code as i32, "expected {code:?}, got {e}");
            e.clone()
        }
        other => panic!("expected {code:?}, got {other:?}"),
    }
}

/// The send capability these tests use for `group_id` at `epoch` (real
/// clients derive it from the MLS exporter; the server only sees hashes).
pub fn capability(group_id: &[u8], epoch: u64) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::new()
        .chain_update(b"test capability")
        .chain_update(group_id)
        .chain_update(epoch.to_be_bytes())
        .finalize()
        .to_vec()
}

pub fn capability_hash(group_id: &[u8], epoch: u64) -> Vec<u8> {
    use sha2::Digest as _;
    sha2::Sha256::digest(capability(group_id, epoch)).to_vec()
}

/// A message to a group at epoch 1 (a group just created).
pub fn send_message(
    message_id: &[u8],
    group_id: &[u8],
    recipients: &[&[u8]],
    payload: &[u8],
) -> Body {
    send_message_at(1, message_id, group_id, recipients, payload)
}

/// A message carrying the capability of `epoch`, its payload framed as an
/// MLS application message of that group and epoch.
pub fn send_message_at(
    epoch: u64,
    message_id: &[u8],
    group_id: &[u8],
    recipients: &[&[u8]],
    payload: &[u8],
) -> Body {
    Body::SendMessage(v1::SendMessage {
        message_id: message_id.to_vec(),
        group_id: group_id.to_vec(),
        recipients: recipients.iter().map(|r| r.to_vec()).collect(),
        payload: framed(group_id, epoch, ContentType::Application, payload),
        send_token: capability(group_id, epoch),
        more_recipients: false,
        expires_at: 0,
        ephemeral: false,
    })
}

/// `body` framed as an MLS `PrivateMessage` of `group_id` at `epoch`: all the
/// server sees of a real one.
pub fn framed(group_id: &[u8], epoch: u64, content_type: ContentType, body: &[u8]) -> Vec<u8> {
    mls_framing::opaque_private_message(group_id, epoch, content_type, body)
}

/// What a test put inside [`framed`] (or a Welcome made by [`welcome`]).
pub fn unframed(payload: &[u8]) -> Vec<u8> {
    mls_framing::private_ciphertext(payload)
        .expect("a framed payload")
        .to_vec()
}

/// `body` behind an MLS Welcome header.
pub fn welcome(body: &[u8]) -> Vec<u8> {
    mls_framing::opaque_welcome(body)
}

pub fn commit(
    message_id: &[u8],
    group_id: &[u8],
    epoch: u64,
    recipients: &[&[u8]],
    payload: &[u8],
) -> v1::SubmitCommit {
    v1::SubmitCommit {
        message_id: message_id.to_vec(),
        group_id: group_id.to_vec(),
        epoch,
        recipients: recipients.iter().map(|r| r.to_vec()).collect(),
        commit: framed(group_id, epoch, ContentType::Commit, payload),
        send_token: if epoch == 0 {
            Vec::new()
        } else {
            capability(group_id, epoch)
        },
        next_token_hash: capability_hash(group_id, epoch + 1),
        ..Default::default()
    }
}

/// Creates a group (an epoch-0 commit with no recipients); returns its id.
pub async fn create_group(client: &mut Client) -> Vec<u8> {
    let group_id = random_id();
    assert_done(
        &client
            .request(Body::SubmitCommit(commit(
                &random_id(),
                &group_id,
                0,
                &[],
                b"create",
            )))
            .await,
    );
    group_id
}

/// A minimal HTTP/1.1 GET; returns the whole response as text.
pub async fn http_get(addr: SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}
