//! The browser client's files (issue #17), built by `scripts/build-web.sh`
//! into `web/dist` and compiled into the binary: `cargo build` needs no Node
//! and no wasm toolchain, and the server serves exactly the bytes of its
//! commit, which anyone can rebuild and compare (and, with the web-release
//! log entry, check against the transparency log).
//!
//! Every answer carries a Content-Security-Policy that allows scripts only
//! from this origin (plus compiling WebAssembly), no inline script or style,
//! no framing, and connections back to this origin only: a page whose files
//! are pinned by Subresource Integrity cannot be made to load anything else.

use std::sync::Arc;

use axum::Router;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest as _, Sha256};

/// One file of the web bundle, as served.
#[derive(Debug)]
pub(crate) struct WebFile {
    /// The URL path it is served at (`/` serves `index.html` too).
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// The bundle: `web/dist` of this commit.
pub(crate) const FILES: &[WebFile] = &[
    WebFile {
        path: "/index.html",
        content_type: "text/html; charset=utf-8",
        bytes: include_bytes!("../../../web/dist/index.html"),
    },
    WebFile {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../web/dist/app.js"),
    },
    WebFile {
        path: "/worker.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../web/dist/worker.js"),
    },
    WebFile {
        // Web Push only (sw.js): served from the root, so its scope is the page.
        path: "/sw.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../web/dist/sw.js"),
    },
    WebFile {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../../../web/dist/style.css"),
    },
    WebFile {
        path: "/sotto_web.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../../../web/dist/sotto_web.js"),
    },
    WebFile {
        path: "/sotto_web_bg.wasm",
        // `WebAssembly.instantiateStreaming` insists on this type.
        content_type: "application/wasm",
        bytes: include_bytes!("../../../web/dist/sotto_web_bg.wasm"),
    },
];

/// What the page may load: its own scripts and styles (pinned by
/// Subresource Integrity in index.html), WebAssembly compiled from them,
/// and connections to this server; nothing inline, nothing remote.
pub(crate) const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; \
    script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; connect-src 'self'; \
    img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Routes `/` and every file of [`FILES`].
pub(crate) fn router<S>() -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let mut router = Router::new();
    for file in FILES {
        let served = Arc::new(Served::new(file));
        let handler = {
            let served = Arc::clone(&served);
            move |headers: HeaderMap| async move { served.answer(&headers) }
        };
        if file.path == "/index.html" {
            router = router.route("/", get(handler.clone()));
        }
        router = router.route(file.path, get(handler));
    }
    router
}

/// A file with its entity tag: `Cache-Control: no-cache` makes the browser
/// ask every time, and the tag lets it ask cheaply (304, no body).
struct Served {
    file: &'static WebFile,
    etag: HeaderValue,
}

impl Served {
    fn new(file: &'static WebFile) -> Self {
        let digest = hex::encode(Sha256::digest(file.bytes));
        let etag = HeaderValue::from_str(&format!("\"{digest}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("\"\""));
        Self { file, etag }
    }

    fn answer(&self, request: &HeaderMap) -> Response {
        let unchanged = request
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| tag.trim().trim_start_matches("W/") == self.etag);
        let headers = [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(self.file.content_type),
            ),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CONTENT_SECURITY_POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            // Revalidate every time: a page that pins its files must not
            // mix an old index.html with new scripts.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::HeaderName::from_static("cross-origin-opener-policy"),
                HeaderValue::from_static("same-origin"),
            ),
            (header::ETAG, self.etag.clone()),
        ];
        if unchanged {
            (StatusCode::NOT_MODIFIED, headers).into_response()
        } else {
            (headers, self.file.bytes).into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    #[test]
    fn the_bundle_is_complete_and_pins_its_files() {
        let index = FILES.iter().find(|f| f.path == "/index.html").unwrap();
        let index = std::str::from_utf8(index.bytes).unwrap();
        for file in FILES.iter().filter(|f| f.path != "/index.html") {
            assert!(!file.bytes.is_empty(), "{} is empty", file.path);
        }
        // Filled in by scripts/build-web.sh, never a template.
        assert!(!index.contains("_SRI@"), "{index}");
        // app.js and style.css; the worker pins the wasm.
        assert_eq!(index.matches("integrity=\"sha384-").count(), 2);
        let worker = FILES.iter().find(|f| f.path == "/worker.js").unwrap();
        let worker = std::str::from_utf8(worker.bytes).unwrap();
        assert!(
            worker.contains("const WASM_INTEGRITY = 'sha384-"),
            "{worker}"
        );
        assert!(!index.contains("style="), "no inline styles");
        // The only <script> is the module loaded from app.js.
        assert_eq!(index.matches("<script").count(), 1);
        assert!(index.contains("<script type=\"module\" src=\"app.js\""));
    }

    #[test]
    fn the_policy_is_one_header_line() {
        assert!(HeaderValue::from_str(CONTENT_SECURITY_POLICY).is_ok());
        assert!(!CONTENT_SECURITY_POLICY.contains("  "));
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe-inline"));
    }
}
