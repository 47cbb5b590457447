//! One WebSocket connection to a Sotto server: request/response by request
//! id, with pushed deliveries buffered until the caller asks for them.

use crate::ClientError;
use crate::endpoint::{ServerUrl, Trust};
use crate::socket::Socket;
use sotto_proto::Message as _;
use sotto_proto::v1::{
    Ack, ClientFrame, Delivery, LinkCompleted, LinkRequest, ServerFrame, client_frame, response,
    server_frame,
};
use std::collections::VecDeque;
use std::time::Duration;

/// How long to wait for any single response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Something the server pushed.
#[derive(Debug)]
pub enum Push {
    Delivery(Delivery),
    KeyPackagesLow,
    /// A new device asks to join a link this device opened.
    LinkRequest(LinkRequest),
    /// The existing device answered the link this device joined.
    LinkCompleted(LinkCompleted),
}

impl Push {
    fn from_frame(body: server_frame::Body) -> Option<Self> {
        match body {
            server_frame::Body::Delivery(d) => Some(Self::Delivery(d)),
            server_frame::Body::KeyPackagesLow(_) => Some(Self::KeyPackagesLow),
            server_frame::Body::LinkRequest(r) => Some(Self::LinkRequest(r)),
            server_frame::Body::LinkCompleted(c) => Some(Self::LinkCompleted(c)),
            server_frame::Body::Challenge(_) | server_frame::Body::Response(_) => None,
        }
    }
}

pub struct Transport {
    ws: Socket,
    next_request_id: u64,
    /// Pushes, and responses to requests nobody is waiting for yet.
    buffered: VecDeque<Next>,
    /// The login challenge of this connection.
    pub nonce: Vec<u8>,
    /// The server's transparency-log key, as announced in the challenge.
    pub log_key: Vec<u8>,
    /// The server's franking key, if the challenge carried one the log key
    /// vouches for (`sotto_core::franking`). Trusted as far as `log_key`,
    /// which the login checks against the pinned one.
    pub franking_key: Option<ed25519_dalek::VerifyingKey>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("buffered", &self.buffered.len())
            .finish_non_exhaustive()
    }
}

/// `http[s]://host:port` (or `ws[s]://…`) → the server's WebSocket endpoint.
pub fn websocket_url(server_url: &str) -> Result<String, ClientError> {
    Ok(ServerUrl::parse(server_url)?.websocket())
}

impl Transport {
    /// Connects (over TLS for `https://`, see [`crate::endpoint`]) and
    /// reads the server's challenge.
    pub async fn connect(server_url: &str, trust: &Trust) -> Result<Self, ClientError> {
        let server = ServerUrl::parse(server_url)?;
        let ws = crate::clock::timeout(REQUEST_TIMEOUT, Socket::open(&server, trust))
            .await
            .map_err(|_| {
                ClientError::Network(format!("connecting to {} timed out", server.websocket()))
            })??;
        let mut transport = Self {
            ws,
            next_request_id: 1,
            buffered: VecDeque::new(),
            nonce: Vec::new(),
            log_key: Vec::new(),
            franking_key: None,
        };
        match transport.read_frame().await?.body {
            Some(server_frame::Body::Challenge(challenge)) => {
                if challenge.protocol_version != sotto_proto::PROTOCOL_VERSION {
                    return Err(ClientError::Protocol(format!(
                        "server speaks protocol version {}, this client {}",
                        challenge.protocol_version,
                        sotto_proto::PROTOCOL_VERSION
                    )));
                }
                transport.nonce = challenge.nonce;
                transport.franking_key = challenge.franking_key.as_ref().and_then(|key| {
                    let log_key = <[u8; 32]>::try_from(challenge.log_key.as_slice()).ok()?;
                    let log_key = ed25519_dalek::VerifyingKey::from_bytes(&log_key).ok()?;
                    sotto_core::franking::verify_franking_key(&log_key, key)
                });
                transport.log_key = challenge.log_key;
                Ok(transport)
            }
            _ => Err(ClientError::Protocol(
                "server did not start with a challenge".into(),
            )),
        }
    }

    async fn send_frame(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        self.ws.send(frame.encode_to_vec()).await
    }

    /// The next `ServerFrame`.
    async fn read_frame(&mut self) -> Result<ServerFrame, ClientError> {
        let bytes = self.ws.recv().await?;
        sotto_proto::decode_server_frame(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Sends a request and waits for its response, buffering pushes that
    /// arrive meanwhile. A server error becomes `ClientError::Server`.
    pub async fn request(
        &mut self,
        body: client_frame::Body,
    ) -> Result<response::Result, ClientError> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.send_frame(&ClientFrame {
            request_id,
            body: Some(body),
        })
        .await?;
        crate::clock::timeout(REQUEST_TIMEOUT, async {
            loop {
                match self.read_frame().await?.body {
                    Some(server_frame::Body::Response(r)) if r.request_id == request_id => {
                        return match r.result {
                            Some(response::Result::Error(e)) => Err(ClientError::Server(e)),
                            Some(ok) => Ok(ok),
                            None => Err(ClientError::Protocol("empty response".into())),
                        };
                    }
                    // Another request's answer, or a push: kept for `next`.
                    Some(body) => self.buffer(body)?,
                    None => return Err(ClientError::Protocol("empty frame from server".into())),
                }
            }
        })
        .await
        .map_err(|_| ClientError::Network("the server did not answer in time".into()))?
    }

    fn buffer(&mut self, body: server_frame::Body) -> Result<(), ClientError> {
        let next = match body {
            server_frame::Body::Response(r) => Next::Response(
                r.request_id,
                r.result
                    .ok_or_else(|| ClientError::Protocol("empty response".into()))?,
            ),
            other => Next::Push(
                Push::from_frame(other)
                    .ok_or_else(|| ClientError::Protocol("unexpected frame from server".into()))?,
            ),
        };
        self.buffered.push_back(next);
        Ok(())
    }

    /// Sends a request without waiting; its response arrives through
    /// [`Transport::next`] as `Next::Response`.
    pub async fn start_request(&mut self, body: client_frame::Body) -> Result<u64, ClientError> {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.send_frame(&ClientFrame {
            request_id,
            body: Some(body),
        })
        .await?;
        Ok(request_id)
    }

    /// The next pushed item or response. Pushes buffered earlier come first.
    /// With `idle_ping`, sends a WebSocket ping whenever nothing arrives for
    /// that long, so the server does not close an idle connection.
    pub async fn next(&mut self, idle_ping: Option<Duration>) -> Result<Next, ClientError> {
        loop {
            if let Some(next) = self.buffered.pop_front() {
                return match next {
                    Next::Response(_, response::Result::Error(e)) => Err(ClientError::Server(e)),
                    other => Ok(other),
                };
            }
            let frame = match idle_ping {
                Some(every) => match crate::clock::timeout(every, self.read_frame()).await {
                    Ok(frame) => frame?,
                    Err(_) => {
                        self.ws.ping().await?;
                        continue;
                    }
                },
                None => crate::clock::timeout(REQUEST_TIMEOUT, self.read_frame())
                    .await
                    .map_err(|_| {
                        ClientError::Network("the server did not answer in time".into())
                    })??,
            };
            let body = frame
                .body
                .ok_or_else(|| ClientError::Protocol("empty frame from server".into()))?;
            self.buffer(body)?;
        }
    }

    /// Moves the deliveries that have already arrived and come next (no
    /// other push or response before them) into `batch`, up to `max` in
    /// all. Never waits; reading stops at anything unexpected, which the
    /// next [`Transport::next`] reports.
    pub fn take_ready_deliveries(&mut self, batch: &mut Vec<Delivery>, max: usize) {
        self.read_arrived(max);
        while batch.len() < max
            && matches!(self.buffered.front(), Some(Next::Push(Push::Delivery(_))))
        {
            if let Some(Next::Push(Push::Delivery(d))) = self.buffered.pop_front() {
                batch.push(d);
            }
        }
    }

    pub async fn ack(&mut self, seq: u64) -> Result<(), ClientError> {
        self.send_frame(&ClientFrame {
            request_id: 0,
            body: Some(client_frame::Body::Ack(Ack { seqs: vec![seq] })),
        })
        .await
    }

    /// Whether the server has closed this connection already (its close
    /// frame, such as "going away" when it shuts down, or the end of the
    /// stream has arrived). Reads only what has arrived, buffering pushes;
    /// never waits. A connection found closed must not be used: the caller
    /// opens a new one instead of failing its next request.
    pub fn closed_by_server(&mut self) -> bool {
        self.read_arrived(usize::MAX)
    }

    /// Buffers the frames that have already arrived, until `max` are
    /// buffered; never waits. Returns whether the connection turned out
    /// closed or broken (or sent something unreadable).
    fn read_arrived(&mut self, max: usize) -> bool {
        use futures_util::FutureExt as _;
        while self.buffered.len() < max {
            match self.ws.recv().now_or_never() {
                None => return false,
                Some(Err(_)) => return true,
                Some(Ok(bytes)) => {
                    let Ok(frame) = sotto_proto::decode_server_frame(&bytes) else {
                        return true;
                    };
                    if let Some(body) = frame.body
                        && self.buffer(body).is_err()
                    {
                        return true;
                    }
                }
            }
        }
        false
    }

    pub async fn close(self) {
        self.ws.close().await;
    }
}

/// What [`Transport::next`] returned.
#[derive(Debug)]
pub enum Next {
    Push(Push),
    Response(u64, response::Result),
}
