//! Against DNS rebinding: every request must name this server in its
//! `Host` header.
//!
//! A web page on `evil.example` can re-point its own name at `127.0.0.1`
//! (or at a server on the visitor's network) and then talk to that server
//! from the visitor's browser — with `Host: evil.example`. Refusing hosts the
//! server does not answer to closes that door. Accepted: an IP address (a
//! rebinding page cannot make the browser send one), `localhost`, a name
//! given with `--server-name`, and, with TLS, any name the current
//! certificate is valid for.

use crate::tls::Tls;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::net::IpAddr;
use std::sync::Arc;

/// The names this server answers to.
#[derive(Debug, Clone)]
pub(crate) struct HostCheck {
    /// `--server-name`, lowercased.
    names: Vec<String>,
    tls: Option<Tls>,
}

impl HostCheck {
    pub(crate) fn new(names: &[String], tls: Option<Tls>) -> Self {
        Self {
            names: names
                .iter()
                .map(|n| n.trim().to_ascii_lowercase())
                .collect(),
            tls,
        }
    }

    /// Whether a `Host` header value (`name`, `name:port`, `[v6]:port`)
    /// names this server.
    pub(crate) fn allows(&self, host: &str) -> bool {
        let host = host.trim();
        let name = match host.strip_prefix('[') {
            // `[v6]` or `[v6]:port`: an address.
            Some(v6) => {
                return v6
                    .split_once(']')
                    .is_some_and(|(ip, _)| ip.parse::<IpAddr>().is_ok());
            }
            None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
        };
        if name.parse::<IpAddr>().is_ok() || name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        self.names.contains(&name) || self.tls.as_ref().is_some_and(|tls| tls.serves(&name))
    }

    /// The answer to a request that does not name this server, if it
    /// does not.
    fn refusal(&self, headers: &HeaderMap) -> Option<Response> {
        let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
            return Some((StatusCode::BAD_REQUEST, "a Host header is required").into_response());
        };
        if self.allows(host) {
            return None;
        }
        tracing::debug!(host, "refused a request for another host name");
        Some(
            (
                StatusCode::MISDIRECTED_REQUEST,
                "this server does not answer to that host name; its operator can add it with --server-name",
            )
                .into_response(),
        )
    }
}

/// The middleware: refuses (421) a request for a host this server does not
/// answer to, before any handler runs.
pub(crate) async fn refuse_other_hosts(
    State(check): State<Arc<HostCheck>>,
    request: Request,
    next: Next,
) -> Response {
    match check.refusal(request.headers()) {
        None => next.run(request).await,
        Some(refusal) => refusal,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_localhost_and_configured_names_pass() {
        let check = HostCheck::new(&["Chat.Example.org".into()], None);
        for ok in [
            "127.0.0.1:8420",
            "10.1.2.3",
            "[::1]:8420",
            "localhost:8420",
            "chat.example.org",
            "CHAT.example.org:443",
            "chat.example.org.",
        ] {
            assert!(check.allows(ok), "{ok} should pass");
        }
        for refused in [
            "evil.example",
            "evil.example:8420",
            "chat.example.org.evil.example",
            "[nonsense]",
            "",
        ] {
            assert!(!check.allows(refused), "{refused} should be refused");
        }
    }
}
