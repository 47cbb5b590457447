//! A hostile server for tests: a WebSocket proxy in front of the real server
//! that can rewrite or drop whatever the server sends to one client. It plays
//! the operator who tries to add a ghost, swap a key, show people different
//! logs, or withhold a roster change, so tests can check that clients notice.

use futures_util::{SinkExt as _, StreamExt as _};
use sotto_proto::Message as _;
use sotto_proto::v1::{Ack, ClientFrame, ServerFrame, client_frame, server_frame};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// What the proxy knows when a frame goes from server to client.
#[derive(Debug, Clone, Default)]
pub struct ConnView {
    /// Which connection through the proxy (numbered from 0 as they open).
    pub connection: u64,
    /// The account this connection registered or logged in as, if any.
    pub username: Option<String>,
    /// For a response: the request it answers.
    pub request: Option<client_frame::Body>,
}

/// The operator's mischief: given each frame the server sends to a client,
/// return the frame to pass on (changed or not), or `None` to drop it. A
/// dropped delivery is acknowledged to the server, so it is gone for good
/// (or delayed: see [`Tamper::delays_dropped_deliveries`]); dropping any
/// other frame cuts the connection.
pub trait Tamper: Send + Sync + 'static {
    fn server_frame(&self, conn: &ConnView, frame: ServerFrame) -> Option<ServerFrame>;

    /// What happens to a delivery `server_frame` dropped: by default (0)
    /// it is withheld for good (the proxy acknowledges it to the server);
    /// with `n > 0` it is only delayed, passed on right after the next `n`
    /// deliveries (a server that reorders).
    fn delays_dropped_deliveries(&self) -> usize {
        0
    }
}

/// A tamper that delays the deliveries its closure picks until `after`
/// more deliveries have passed, instead of withholding them.
#[derive(Debug)]
pub struct Reorder<F> {
    pub after: usize,
    pub pick: F,
}

impl<F> Tamper for Reorder<F>
where
    F: Fn(&ConnView, &ServerFrame) -> bool + Send + Sync + 'static,
{
    fn server_frame(&self, conn: &ConnView, frame: ServerFrame) -> Option<ServerFrame> {
        (!(self.pick)(conn, &frame)).then_some(frame)
    }

    fn delays_dropped_deliveries(&self) -> usize {
        self.after
    }
}

impl<F> Tamper for F
where
    F: Fn(&ConnView, ServerFrame) -> Option<ServerFrame> + Send + Sync + 'static,
{
    fn server_frame(&self, conn: &ConnView, frame: ServerFrame) -> Option<ServerFrame> {
        self(conn, frame)
    }
}

/// A running hostile proxy.
#[derive(Debug)]
pub struct HostileProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl HostileProxy {
    /// Listens on an ephemeral loopback port and relays to `upstream` (an
    /// `http://` server URL), passing every server frame through `tamper`.
    pub async fn start(upstream: &str, tamper: impl Tamper) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let upstream = sotto_client::transport::websocket_url(upstream).expect("upstream url");
        let tamper: Arc<dyn Tamper> = Arc::new(tamper);
        let task = tokio::spawn(async move {
            let mut opened = 0..;
            while let Ok((stream, _)) = listener.accept().await {
                let connection = opened.next().unwrap_or_default();
                tokio::spawn(relay(
                    stream,
                    upstream.clone(),
                    Arc::clone(&tamper),
                    connection,
                ));
            }
        });
        Self { addr, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for HostileProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(stream: TcpStream, upstream: String, tamper: Arc<dyn Tamper>, connection: u64) {
    let Ok(client) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let Ok((server, _)) = tokio_tungstenite::connect_async(&upstream).await else {
        return;
    };
    let (mut to_client, mut from_client) = client.split();
    let (mut to_server, mut from_server) = server.split();
    let mut view = ConnView {
        connection,
        ..ConnView::default()
    };
    // A delivery held back by a reordering tamper, and how many more
    // deliveries pass before it.
    let mut delayed: Option<(WsMessage, usize)> = None;
    let mut requests: HashMap<u64, client_frame::Body> = HashMap::new();
    loop {
        tokio::select! {
            message = from_client.next() => {
                let Some(Ok(message)) = message else { break };
                if let WsMessage::Binary(bytes) = &message
                    && let Ok(ClientFrame { request_id, body: Some(body) }) = ClientFrame::decode(bytes.as_ref())
                {
                    match &body {
                        client_frame::Body::Register(r) => view.username = Some(r.username.clone()),
                        client_frame::Body::Login(l) => view.username = Some(l.username.clone()),
                        _ => {}
                    }
                    requests.insert(request_id, body);
                }
                if to_server.send(message).await.is_err() { break }
            }
            message = from_server.next() => {
                let Some(Ok(message)) = message else { break };
                let WsMessage::Binary(bytes) = &message else {
                    if to_client.send(message).await.is_err() { break }
                    continue;
                };
                let Ok(frame) = ServerFrame::decode(bytes.as_ref()) else { break };
                let mut conn = view.clone();
                if let Some(server_frame::Body::Response(r)) = &frame.body {
                    conn.request = requests.remove(&r.request_id);
                }
                let delivery_seq = match &frame.body {
                    Some(server_frame::Body::Delivery(d)) => Some(d.seq),
                    _ => None,
                };
                match tamper.server_frame(&conn, frame) {
                    Some(frame) => {
                        if to_client.send(WsMessage::Binary(frame.encode_to_vec().into())).await.is_err() { break }
                        if delivery_seq.is_some()
                            && let Some((late, left)) = delayed.take()
                        {
                            if left > 1 {
                                delayed = Some((late, left - 1));
                            } else if to_client.send(late).await.is_err() {
                                break;
                            }
                        }
                    }
                    // Dropping anything but a delivery cuts the connection,
                    // as a network fault would (the client sees it at once
                    // instead of waiting for an answer).
                    None if delivery_seq.is_none() => break,
                    None if delivery_seq.is_some() && tamper.delays_dropped_deliveries() > 0 => {
                        delayed = Some((message, tamper.delays_dropped_deliveries()));
                    }
                    None => {
                        if let Some(seq) = delivery_seq {
                            let ack = ClientFrame { request_id: 0, body: Some(client_frame::Body::Ack(Ack { seqs: vec![seq] })) };
                            if to_server.send(WsMessage::Binary(ack.encode_to_vec().into())).await.is_err() { break }
                        }
                    }
                }
            }
        }
    }
}
