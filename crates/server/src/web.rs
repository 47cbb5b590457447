//! STAND-IN for the web bundle (issue #17, item 4's branch): two small fake
//! files so the web-release log and `sotto audit` can be built and tested
//! before the real bundle lands. The bundle branch's `web.rs` replaces this
//! file whole at merge.

use axum::Router;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// One file of the web app, embedded in the binary.
pub(crate) struct WebFile {
    pub path: &'static str,
    pub content_type: &'static str,
    pub bytes: &'static [u8],
}

/// The files served at `/<path>` (and `index.html` at `/`).
pub(crate) const FILES: &[WebFile] = &[
    WebFile {
        path: "index.html",
        content_type: "text/html; charset=utf-8",
        bytes: b"<!doctype html><title>Sotto</title><script src=\"app.js\"></script>\n",
    },
    WebFile {
        path: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: b"console.log('sotto web stand-in v1');\n",
    },
];

/// `GET /` and `GET /<path>` for [`FILES`].
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { serve("index.html") }))
        .route(
            "/{path}",
            get(|Path(path): Path<String>| async move { serve(&path) }),
        )
}

fn serve(path: &str) -> Response {
    match FILES.iter().find(|f| f.path == path) {
        Some(file) => ([(header::CONTENT_TYPE, file.content_type)], file.bytes).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}
