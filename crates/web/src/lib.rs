//! Sotto in the browser (issue #17): the Rust that the web page runs, built
//! to WebAssembly by `scripts/build-web.sh` and served by `sotto-server`.
//!
//! The page (`web/src/app.js`) owns the WebSocket; this crate owns the
//! protocol. Today it checks a server before the page trusts it: the log
//! key from the challenge, the log's signed tree head and the key
//! directory's signed epoch ([`check::ServerCheck`]). An account in the
//! page runs the CLI's own client library, `sotto-client`, compiled to
//! WebAssembly with SQLite, through a [`messenger::Messenger`].
//!
//! The logic is plain Rust with native tests; [`bindings`] is the thin
//! `wasm-bindgen` layer JavaScript sees.
//!
//! ```
//! use sotto_web::check::ServerCheck;
//!
//! let mut check = ServerCheck::new();
//! // Whatever the server sends goes in; what comes out goes back.
//! assert!(check.receive(b"\xff\xff").is_err());
//! assert!(!check.verified());
//! ```

pub mod bindings;
pub mod check;
pub mod messenger;
