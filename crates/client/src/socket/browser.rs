use crate::ClientError;
use crate::endpoint::{ServerUrl, Trust};
use futures_util::{SinkExt as _, StreamExt as _};
use gloo_net::websocket::{Message, WebSocketError, futures::WebSocket};

pub(crate) struct Socket(WebSocket);

impl Socket {
    /// Connects to the server's WebSocket. The browser does TLS with its own
    /// roots, so `trust` only keeps plain `ws://` to loopback (unless allowed).
    pub(crate) async fn open(server: &ServerUrl, trust: &Trust) -> Result<Self, ClientError> {
        server.check(trust)?;
        let url = server.websocket();
        WebSocket::open(&url)
            .map(Self)
            .map_err(|e| ClientError::Network(format!("cannot connect to {url}: {e}")))
    }

    pub(crate) async fn send(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.0
            .send(Message::Bytes(bytes))
            .await
            .map_err(|e| ClientError::Network(format!("send failed: {e}")))
    }

    /// Browsers cannot send WebSocket pings: an empty `Ack` stands in. Any
    /// frame resets the server's idle timer, and an `Ack` of nothing gets no
    /// answer and writes nothing (the server's test
    /// `an_empty_ack_keeps_an_idle_connection_open` pins both).
    pub(crate) async fn ping(&mut self) -> Result<(), ClientError> {
        use prost::Message as _;
        use sotto_proto::v1::{Ack, ClientFrame, client_frame};
        let keep_alive = ClientFrame {
            request_id: 0,
            body: Some(client_frame::Body::Ack(Ack { seqs: Vec::new() })),
        };
        self.send(keep_alive.encode_to_vec()).await
    }

    /// The next binary frame; the server closing is an error. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            match self.0.next().await {
                None => return Err(ClientError::Network("server closed the connection".into())),
                Some(Ok(Message::Bytes(bytes))) if bytes.len() > sotto_proto::MAX_FRAME_BYTES => {
                    return Err(ClientError::Protocol(format!(
                        "the server sent a frame over the size limit: {} bytes",
                        bytes.len()
                    )));
                }
                Some(Ok(Message::Bytes(bytes))) => return Ok(bytes),
                Some(Ok(Message::Text(_))) => {}
                Some(Err(WebSocketError::ConnectionClose(close))) => {
                    return Err(ClientError::Network(format!(
                        "server closed the connection {}",
                        close.reason
                    )));
                }
                Some(Err(e)) => {
                    return Err(ClientError::Network(format!("connection failed: {e}")));
                }
            }
        }
    }

    pub(crate) async fn close(self) {
        let _ = self.0.close(None, None);
    }
}
