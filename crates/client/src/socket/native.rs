use crate::ClientError;
use crate::endpoint::{ServerUrl, Trust};
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{Message, protocol::WebSocketConfig};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub(crate) struct Socket(WebSocketStream<MaybeTlsStream<TcpStream>>);

impl Socket {
    /// Connects (over TLS for `https://`, see [`crate::endpoint`]).
    pub(crate) async fn open(server: &ServerUrl, trust: &Trust) -> Result<Self, ClientError> {
        let url = server.websocket();
        let config = WebSocketConfig::default()
            .max_message_size(Some(sotto_proto::MAX_FRAME_BYTES))
            .max_frame_size(Some(sotto_proto::MAX_FRAME_BYTES));
        let stream = server.open(trust).await?;
        let (ws, _) = tokio_tungstenite::client_async_with_config(&url, stream, Some(config))
            .await
            .map_err(|e| ClientError::Network(format!("cannot connect to {url}: {e}")))?;
        Ok(Self(ws))
    }

    pub(crate) async fn send(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.0
            .send(Message::Binary(bytes.into()))
            .await
            .map_err(|e| ClientError::Network(format!("send failed: {e}")))
    }

    /// A WebSocket ping, so that an idle connection is not closed.
    pub(crate) async fn ping(&mut self) -> Result<(), ClientError> {
        self.0
            .send(Message::Ping(Vec::new().into()))
            .await
            .map_err(|e| ClientError::Network(format!("send failed: {e}")))
    }

    /// The next binary frame; the server closing is an error. Cancel-safe.
    pub(crate) async fn recv(&mut self) -> Result<Vec<u8>, ClientError> {
        loop {
            let message = self
                .0
                .next()
                .await
                .ok_or_else(|| ClientError::Network("server closed the connection".into()))?
                .map_err(|e| match e {
                    // Not a network fault: the server sent more than any
                    // answer may hold. Asking again would get the same.
                    tokio_tungstenite::tungstenite::Error::Capacity(e) => ClientError::Protocol(
                        format!("the server sent a frame over the size limit: {e}"),
                    ),
                    e => ClientError::Network(format!("connection failed: {e}")),
                })?;
            match message {
                Message::Binary(bytes) => return Ok(bytes.into()),
                Message::Close(frame) => {
                    let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
                    return Err(ClientError::Network(format!(
                        "server closed the connection {reason}"
                    )));
                }
                _ => {}
            }
        }
    }

    pub(crate) async fn close(mut self) {
        let _ = self.0.close(None).await;
    }
}
