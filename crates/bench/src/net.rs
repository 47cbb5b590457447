//! Loopback sockets and the Sotto wire protocol, spoken with raw frames as a
//! real client would (Ed25519 keys from `sotto_core::identity`).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use futures_util::{SinkExt as _, StreamExt as _};
use prost::Message as _;
use rand::RngCore as _;
use sotto_core::identity::{Account, Username};
use sotto_proto::mls_framing::{ContentType, opaque_private_message, private_ciphertext};
use sotto_proto::v1::{self, client_frame::Body, response, server_frame};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::tls::TlsClient;

/// How long any single protocol step may take before it counts as failed.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(15);

/// A client WebSocket, plain or over TLS (plain costs one `match` per
/// read or write).
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// How a client reaches the server: plain TCP, or TLS trusting the run's CA.
#[derive(Debug, Clone, Default)]
pub enum Transport {
    #[default]
    Plain,
    Tls(TlsClient),
}

/// Hands out source addresses 127.0.0.2, 127.0.0.3, … round-robin, so that
/// many connections do not run out of ephemeral ports on one address.
#[derive(Debug)]
pub struct SourceAddrs {
    next: AtomicUsize,
    count: usize,
    first: u32,
    registrations: AtomicUsize,
    registration_block: u32,
}

impl SourceAddrs {
    /// `count` addresses starting at 127.0.0.`first`… (all inside 127/8).
    pub fn new(first_host: u32, count: usize) -> Self {
        Self {
            next: AtomicUsize::new(0),
            count: count.max(1),
            first: u32::from(Ipv4Addr::new(127, 0, 0, 0)).saturating_add(first_host.max(2)),
            registrations: AtomicUsize::new(0),
            // Rotate between runs so TIME_WAIT never matters.
            registration_block: (first_host % 64) << 16,
        }
    }

    /// A source address for a registration: the server allows about ten
    /// registrations per client address, so each address in 127.64.0.0/10
    /// is used for at most eight (a fresh block per bench process).
    pub fn pick_for_registration(&self) -> Ipv4Addr {
        let n = self.registrations.fetch_add(1, Ordering::Relaxed) / 8;
        let raw = u32::from(Ipv4Addr::new(127, 64, 0, 0))
            .saturating_add(self.registration_block)
            .saturating_add(u32::try_from(n).unwrap_or(0) % (1 << 20));
        Ipv4Addr::from(raw.min(u32::from(Ipv4Addr::new(127, 255, 255, 254))))
    }

    pub fn pick(&self) -> Ipv4Addr {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.count;
        let raw = self
            .first
            .saturating_add(u32::try_from(i).unwrap_or(0))
            .min(u32::from(Ipv4Addr::new(127, 255, 255, 254)));
        Ipv4Addr::from(raw)
    }
}

/// TCP connect from a chosen loopback source address.
pub async fn tcp_connect(server: SocketAddr, src: Ipv4Addr) -> anyhow::Result<TcpStream> {
    if !server.ip().is_loopback() || !src.is_loopback() {
        bail!("the bench only talks to 127.0.0.0/8 (asked for {server} from {src})");
    }
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(src.into(), 0))?;
    let stream = tokio::time::timeout(STEP_TIMEOUT, socket.connect(server))
        .await
        .context("TCP connect timed out")??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// WebSocket buffers for the generator and the echo baseline: the same
/// small read buffer as sotto-server. tungstenite zero-fills its whole read
/// buffer chunk on every read; with the 128 KiB default that memset was a
/// third of the generator's CPU.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4 * 1024)
}

/// A WebSocket to `ws://server/path` from `src`.
pub async fn ws_connect(server: SocketAddr, src: Ipv4Addr, path: &str) -> anyhow::Result<Ws> {
    ws_connect_over(&Transport::Plain, server, src, path).await
}

/// A WebSocket to `server/path` from `src`: `ws://`, or `wss://` after a
/// full TLS handshake.
pub async fn ws_connect_over(
    transport: &Transport,
    server: SocketAddr,
    src: Ipv4Addr,
    path: &str,
) -> anyhow::Result<Ws> {
    let tcp = tcp_connect(server, src).await?;
    let (stream, scheme) = match transport {
        Transport::Plain => (MaybeTlsStream::Plain(tcp), "ws"),
        Transport::Tls(tls) => {
            let stream = tokio::time::timeout(STEP_TIMEOUT, tls.handshake(tcp, server.ip()))
                .await
                .context("TLS handshake timed out")?
                .context("TLS handshake failed")?;
            (MaybeTlsStream::Rustls(stream), "wss")
        }
    };
    let (ws, _) = tokio::time::timeout(
        STEP_TIMEOUT,
        tokio_tungstenite::client_async_with_config(
            format!("{scheme}://{server}{path}"),
            stream,
            Some(ws_config()),
        ),
    )
    .await
    .context("WebSocket handshake timed out")??;
    Ok(ws)
}

pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}

/// A new account with one device; `name` must be a valid username.
pub fn account(name: &str) -> anyhow::Result<Account> {
    Ok(Account::generate(
        Username::parse(name).map_err(|e| anyhow!("username {name}: {e:?}"))?,
    ))
}

pub fn encode(request_id: u64, body: Body) -> Message {
    Message::Binary(
        v1::ClientFrame {
            request_id,
            body: Some(body),
        }
        .encode_to_vec()
        .into(),
    )
}

/// The next protobuf frame (pings and pongs skipped).
pub async fn read_frame(ws: &mut Ws) -> anyhow::Result<v1::ServerFrame> {
    for _ in 0..1_000 {
        let message = tokio::time::timeout(STEP_TIMEOUT, ws.next())
            .await
            .context("timed out waiting for a frame")?
            .context("connection closed")??;
        match message {
            Message::Binary(bytes) => return Ok(sotto_proto::decode_server_frame(&bytes)?),
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(c) => bail!("server closed the connection: {c:?}"),
            other => bail!("unexpected message {other:?}"),
        }
    }
    bail!("too many control frames")
}

/// Sends a request and waits for its response; other frames that arrive in
/// between (deliveries) are returned too, to be handled by the caller.
pub async fn request(
    ws: &mut Ws,
    request_id: u64,
    body: Body,
) -> anyhow::Result<(v1::Response, Vec<v1::ServerFrame>)> {
    ws.send(encode(request_id, body)).await?;
    let mut other = Vec::new();
    for _ in 0..100_000 {
        let frame = read_frame(ws).await?;
        match frame.body {
            Some(server_frame::Body::Response(r)) if r.request_id == request_id => {
                return Ok((r, other));
            }
            _ => other.push(frame),
        }
    }
    bail!("no response to request {request_id}")
}

pub fn check_done(r: &v1::Response, what: &str) -> anyhow::Result<()> {
    match &r.result {
        Some(response::Result::Done(_) | response::Result::LoggedIn(_)) => Ok(()),
        Some(response::Result::Error(e)) => bail!("{what} failed: {:?} {}", e.code(), e.message),
        other => bail!("{what}: unexpected response {other:?}"),
    }
}

/// Connects over plain WebSocket, answers the challenge with Register (new
/// account) or Login, and returns the authenticated socket plus any frames
/// already pushed.
pub async fn connect_authenticated(
    server: SocketAddr,
    src: Ipv4Addr,
    account: &Account,
    register: bool,
) -> anyhow::Result<(Ws, Vec<v1::ServerFrame>)> {
    connect_authenticated_over(&Transport::Plain, server, src, account, register).await
}

/// [`connect_authenticated`] over `transport`.
pub async fn connect_authenticated_over(
    transport: &Transport,
    server: SocketAddr,
    src: Ipv4Addr,
    account: &Account,
    register: bool,
) -> anyhow::Result<(Ws, Vec<v1::ServerFrame>)> {
    let mut ws = ws_connect_over(transport, server, src, "/ws").await?;
    let nonce = match read_frame(&mut ws).await?.body {
        Some(server_frame::Body::Challenge(c)) => c.nonce,
        other => bail!("expected a challenge, got {other:?}"),
    };
    let signature = account
        .device
        .sign_login(&nonce, &account.username, account.device_id);
    let body = if register {
        Body::Register(v1::Register {
            username: account.username.as_str().to_owned(),
            identity_key: account.identity_public().to_vec(),
            device: Some(account.signed_device()),
            challenge_signature: signature,
            log_entries: account.registration_log_entries(),
            ..v1::Register::default()
        })
    } else {
        Body::Login(v1::Login {
            username: account.username.as_str().to_owned(),
            device_id: account.device_id.as_bytes().to_vec(),
            challenge_signature: signature,
            ..v1::Login::default()
        })
    };
    let (response, other) = request(&mut ws, 1, body).await?;
    check_done(&response, if register { "register" } else { "login" })?;
    Ok((ws, other))
}

/// A group the bench created: its id and its send capability (in a real
/// client, an MLS exporter secret; here 32 random bytes, which the server
/// cannot tell apart).
#[derive(Debug, Clone)]
pub struct BenchGroup {
    pub id: Vec<u8>,
    pub capability: Vec<u8>,
}

/// Creates a group: an epoch-0 commit framed as MLS around random bytes
/// (the server reads only the clear-text framing, and cannot tell the rest
/// from noise).
pub async fn create_group(
    ws: &mut Ws,
    request_id: u64,
) -> anyhow::Result<(BenchGroup, Vec<v1::ServerFrame>)> {
    use sha2::Digest as _;
    let group_id = random_bytes(32);
    let capability = random_bytes(32);
    let next_token_hash = sha2::Sha256::digest(&capability).to_vec();
    let (response, other) = request(
        ws,
        request_id,
        Body::SubmitCommit(v1::SubmitCommit {
            message_id: random_bytes(sotto_proto::ID_LEN),
            group_id: group_id.clone(),
            epoch: 0,
            commit: opaque_private_message(&group_id, 0, ContentType::Commit, &random_bytes(200)),
            next_token_hash,
            ..v1::SubmitCommit::default()
        }),
    )
    .await?;
    check_done(&response, "create group")?;
    Ok((
        BenchGroup {
            id: group_id,
            capability,
        },
        other,
    ))
}

/// Bench payload layout: magic, message index, scheduled send time (ns since
/// the bench's time base), then random filler up to the envelope size.
pub const MAGIC: &[u8; 8] = b"SOTTOBN1";

pub fn bench_payload(index: u64, scheduled_ns: u64, size: usize, filler: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(size.max(24));
    p.extend_from_slice(MAGIC);
    p.extend_from_slice(&index.to_le_bytes());
    p.extend_from_slice(&scheduled_ns.to_le_bytes());
    let rest = size.saturating_sub(p.len());
    p.extend(filler.iter().cycle().take(rest));
    p
}

/// A bench payload framed as an MLS application message of `group_id` at
/// epoch 1 (a group the bench created), `size` bytes in all.
pub fn group_payload(
    group_id: &[u8],
    index: u64,
    scheduled_ns: u64,
    size: usize,
    filler: &[u8],
) -> Vec<u8> {
    // Framing overhead, with the two-byte length most payloads need.
    let overhead = opaque_private_message(group_id, 1, ContentType::Application, &[]).len() + 1;
    let inner = bench_payload(index, scheduled_ns, size.saturating_sub(overhead), filler);
    opaque_private_message(group_id, 1, ContentType::Application, &inner)
}

/// (index, scheduled ns) of a [`group_payload`]; `None` for anything else.
pub fn parse_group_payload(p: &[u8]) -> Option<(u64, u64)> {
    private_ciphertext(p).and_then(parse_payload)
}

/// (index, scheduled ns) of a bench payload; `None` for anything else.
pub fn parse_payload(p: &[u8]) -> Option<(u64, u64)> {
    if p.get(..8)? != MAGIC {
        return None;
    }
    let index = u64::from_le_bytes(p.get(8..16)?.try_into().ok()?);
    let sched = u64::from_le_bytes(p.get(16..24)?.try_into().ok()?);
    Some((index, sched))
}
