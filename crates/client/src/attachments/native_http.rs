//! The blob store's HTTP natively: hyper's HTTP/1.1 client on the same
//! byte stream the WebSocket uses ([`ServerUrl::open`]: the profile's TLS
//! roots, its CA file, its loopback-only rule for plain HTTP). hyper is
//! already in the build for the canary; reqwest would bring a second
//! connection stack and its own TLS configuration for no gain.

use super::{Answer, REQUEST_TIMEOUT};
use crate::ClientError;
use crate::endpoint::{ServerUrl, Trust};
use bytes::Bytes;
use futures_util::StreamExt as _;
use http::Method;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

type Body = BoxBody<Bytes, std::convert::Infallible>;

/// Slices handed to the connection at a time (what the sent-bytes count
/// is measured in).
const PIECE_BYTES: usize = 64 * 1024;

/// A request body that counts, into `sent`, the bytes hyper takes from it
/// (so the count is what left for the connection, not what was meant to).
fn counted(chunk: Bytes, sent: Arc<AtomicU64>) -> Body {
    let pieces: Vec<Bytes> = (0..chunk.len())
        .step_by(PIECE_BYTES)
        .map(|start| chunk.slice(start..chunk.len().min(start + PIECE_BYTES)))
        .collect();
    let stream = futures_util::stream::iter(pieces).map(move |piece| {
        sent.fetch_add(piece.len() as u64, Ordering::Relaxed);
        Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(piece))
    });
    BoxBody::new(StreamBody::new(stream))
}

/// An answer's body, read as it arrives.
pub(super) struct AnswerBody(hyper::body::Incoming);

impl AnswerBody {
    pub(super) async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        while let Some(frame) = self.0.frame().await {
            let frame =
                frame.map_err(|e| ClientError::Network(format!("the answer broke off: {e}")))?;
            if let Ok(data) = frame.into_data() {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }
}

/// HTTP/1.1 requests to one server, on one connection opened on demand.
pub(super) struct Http<'a> {
    server: ServerUrl,
    trust: &'a Trust,
    sender: Option<SendRequest<Body>>,
}

impl<'a> Http<'a> {
    pub(super) fn new(server_url: &str, trust: &'a Trust) -> Result<Self, ClientError> {
        Ok(Self {
            server: ServerUrl::parse(server_url)?,
            trust,
            sender: None,
        })
    }

    /// Sends one request (counting the body's bytes into `sent`, when
    /// given); a broken connection is dropped (the next request opens a
    /// new one) and reported as a network error.
    pub(super) async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
        sent: Option<&Arc<AtomicU64>>,
    ) -> Result<Answer, ClientError> {
        let body = match sent {
            Some(sent) => counted(body, Arc::clone(sent)),
            None => BoxBody::new(Full::new(body)),
        };
        let result =
            crate::clock::timeout(REQUEST_TIMEOUT, self.try_send(method, path, headers, body))
                .await
                .unwrap_or_else(|_| {
                    Err(ClientError::Network(
                        "the server did not answer in time".into(),
                    ))
                });
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn try_send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Body,
    ) -> Result<Answer, ClientError> {
        let mut sender = match self.sender.take() {
            Some(s) if !s.is_closed() => s,
            _ => {
                let stream = self.server.open(self.trust).await?;
                let (sender, connection) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .map_err(|e| ClientError::Network(format!("HTTP handshake failed: {e}")))?;
                tokio::spawn(connection);
                sender
            }
        };
        sender
            .ready()
            .await
            .map_err(|e| ClientError::Network(format!("HTTP connection failed: {e}")))?;
        let mut request = Request::builder()
            .method(method.clone())
            .uri(self.server.path(path))
            .header(hyper::header::HOST, &self.server.authority)
            .header("tus-resumable", "1.0.0");
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        let request = request
            .body(body)
            .map_err(|e| ClientError::Internal(format!("bad request: {e}")))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| ClientError::Network(format!("{method} {path} failed: {e}")))?;
        self.sender = Some(sender);
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Ok(Answer {
            status: response.status().as_u16(),
            location: header("location"),
            upload_offset: header("upload-offset").and_then(|v| v.parse().ok()),
            content_length: header("content-length").and_then(|v| v.parse().ok()),
            body: AnswerBody(response.into_body()),
        })
    }
}
