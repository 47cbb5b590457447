//! The blob store's HTTP in a browser: `fetch`, to the page's own server
//! (the browser does TLS, as for the WebSocket). `fetch` cannot report
//! how much of a body has left, so the sent-bytes count moves per request,
//! and an answer's body is read whole (an upload's answers are empty, a
//! download is one attachment, bounded by the size its message declared).

use super::{Answer, REQUEST_TIMEOUT};
use crate::ClientError;
use crate::endpoint::{ServerUrl, Trust};
use bytes::Bytes;
use gloo_net::http::RequestBuilder;
use http::Method;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// An answer's body: a download's, read whole on first use; any other
/// answer's, read at once (a body left unread is reported by the browser
/// as an aborted request).
pub(super) enum AnswerBody {
    Unread(gloo_net::http::Response),
    Read(Option<Bytes>),
}

impl AnswerBody {
    pub(super) async fn chunk(&mut self) -> Result<Option<Bytes>, ClientError> {
        match std::mem::replace(self, AnswerBody::Read(None)) {
            AnswerBody::Unread(response) => Ok(Some(read(&response).await?)),
            AnswerBody::Read(bytes) => Ok(bytes),
        }
    }
}

async fn read(response: &gloo_net::http::Response) -> Result<Bytes, ClientError> {
    let bytes = response
        .binary()
        .await
        .map_err(|e| ClientError::Network(format!("the answer broke off: {e}")))?;
    Ok(Bytes::from(bytes))
}

/// Requests to one server through the browser's `fetch`.
pub(super) struct Http<'a> {
    server: ServerUrl,
    _trust: &'a Trust,
}

impl<'a> Http<'a> {
    pub(super) fn new(server_url: &str, trust: &'a Trust) -> Result<Self, ClientError> {
        Ok(Self {
            server: ServerUrl::parse(server_url)?,
            _trust: trust,
        })
    }

    /// Sends one request (adding the body's length to `sent`, when given).
    pub(super) async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
        sent: Option<&Arc<AtomicU64>>,
    ) -> Result<Answer, ClientError> {
        let scheme = if self.server.tls { "https" } else { "http" };
        let url = format!(
            "{scheme}://{}{}",
            self.server.authority,
            self.server.path(path)
        );
        let mut request = RequestBuilder::new(&url)
            .method(method.clone())
            .header("tus-resumable", "1.0.0");
        // The browser sets Content-Length itself (scripts may not).
        for (name, value) in headers.iter().filter(|(n, _)| *n != "content-length") {
            request = request.header(name, value);
        }
        let request = if body.is_empty() {
            request.build()
        } else {
            request.body(js_sys::Uint8Array::from(body.as_ref()))
        }
        .map_err(|e| ClientError::Internal(format!("bad request: {e}")))?;
        if let Some(sent) = sent {
            sent.fetch_add(body.len() as u64, Ordering::Relaxed);
        }
        let response = crate::clock::timeout(REQUEST_TIMEOUT, request.send())
            .await
            .map_err(|_| ClientError::Network("the server did not answer in time".into()))?
            .map_err(|e| ClientError::Network(format!("{method} {path} failed: {e}")))?;
        let header = |name: &str| response.headers().get(name);
        let (status, location) = (response.status(), header("location"));
        let upload_offset = header("upload-offset").and_then(|v| v.parse().ok());
        let content_length = header("content-length").and_then(|v| v.parse().ok());
        let body = if method == Method::GET {
            AnswerBody::Unread(response)
        } else {
            AnswerBody::Read(Some(read(&response).await?))
        };
        Ok(Answer {
            status,
            location,
            upload_offset,
            content_length,
            body,
        })
    }
}
