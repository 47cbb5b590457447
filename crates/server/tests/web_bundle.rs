//! The browser client's files (issue #17): served at `/` by the server
//! itself, byte for byte what `web/dist` holds, under a strict
//! Content-Security-Policy; and the page's WebSocket, which comes from the
//! server's own origin, is let in without `--allowed-origin`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::path::Path;

use sotto_testkit::TestServer;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data: blob:; base-uri 'none'; form-action 'none'; \
    frame-ancestors 'none'";

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
    }
}

/// A plain HTTP/1.1 GET over a real socket.
async fn get(addr: SocketAddr, path: &str) -> Answer {
    get_with(addr, path, "").await
}

/// A GET with extra header lines (each ending in CRLF).
async fn get_with(addr: SocketAddr, path: &str, headers: &str) -> Answer {
    let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Connection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tcp.read_to_end(&mut response).await.unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8(response[..split].to_vec()).unwrap();
    let body = response[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body,
    }
}

fn dist(file: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../web/dist")
            .join(file),
    )
    .unwrap()
}

#[tokio::test]
async fn the_server_serves_the_committed_bundle_with_a_strict_policy() {
    let server = TestServer::start().await;
    for (path, file, content_type) in [
        ("/", "index.html", "text/html; charset=utf-8"),
        ("/index.html", "index.html", "text/html; charset=utf-8"),
        ("/app.js", "app.js", "text/javascript; charset=utf-8"),
        ("/worker.js", "worker.js", "text/javascript; charset=utf-8"),
        ("/sw.js", "sw.js", "text/javascript; charset=utf-8"),
        (
            "/sotto_web.js",
            "sotto_web.js",
            "text/javascript; charset=utf-8",
        ),
        ("/style.css", "style.css", "text/css; charset=utf-8"),
        (
            "/sotto_web_bg.wasm",
            "sotto_web_bg.wasm",
            "application/wasm",
        ),
    ] {
        let answer = get(server.addr(), path).await;
        assert_eq!(answer.status, 200, "{path}");
        assert_eq!(answer.header("content-type"), content_type, "{path}");
        assert_eq!(answer.header("content-security-policy"), CSP, "{path}");
        assert_eq!(answer.header("x-content-type-options"), "nosniff");
        assert_eq!(answer.header("referrer-policy"), "no-referrer");
        assert_eq!(answer.header("cache-control"), "no-cache");
        assert_eq!(answer.header("cross-origin-opener-policy"), "same-origin");
        assert!(
            answer.body == dist(file),
            "{path} differs from web/dist/{file}"
        );
    }
    assert_eq!(&dist("sotto_web_bg.wasm")[..4], b"\0asm");
    // Revalidation is cheap: the same tag, no body.
    let first = get(server.addr(), "/sotto_web_bg.wasm").await;
    let etag = first.header("etag").to_owned();
    assert!(etag.starts_with('"') && etag.len() == 66, "{etag}");
    let again = get_with(
        server.addr(),
        "/sotto_web_bg.wasm",
        &format!("If-None-Match: {etag}\r\n"),
    )
    .await;
    assert_eq!(again.status, 304);
    assert!(again.body.is_empty());
    assert_eq!(again.header("content-security-policy"), CSP);
    let other = get_with(server.addr(), "/", &format!("If-None-Match: {etag}\r\n")).await;
    assert_eq!(other.status, 200, "another file's tag does not match");
    // Nothing else is served from the bundle's directory.
    assert_eq!(get(server.addr(), "/Cargo.toml").await.status, 404);
    assert_eq!(get(server.addr(), "/../web/src/app.js").await.status, 404);
}

/// The page connects from the origin it was served from: no
/// `--allowed-origin` needed for that, and still none for another origin.
#[tokio::test]
async fn the_pages_own_origin_may_open_the_websocket_and_others_may_not() {
    let server = TestServer::start().await;
    let with_origin = |origin: &str| {
        let mut request = format!("ws://{}/ws", server.addr())
            .into_client_request()
            .unwrap();
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
        request
    };
    tokio_tungstenite::connect_async(with_origin(&format!("http://{}", server.addr())))
        .await
        .expect("the server's own origin");
    for other in [
        "https://evil.example".to_owned(),
        format!("http://{}.evil.example", server.addr().ip()),
        format!("http://{}:1", server.addr().ip()),
        "null".to_owned(),
    ] {
        let err = tokio_tungstenite::connect_async(with_origin(&other))
            .await
            .expect_err(&other);
        assert!(err.to_string().contains("403"), "{other}: {err}");
    }
}
