//! The WebSocket under [`crate::transport::Transport`], one per platform:
//! tokio-tungstenite over TCP (and rustls) on an operating system, the
//! browser's own WebSocket in WebAssembly (where the browser does TLS).
//! Both carry binary frames only; both refuse a frame over
//! [`sotto_proto::MAX_FRAME_BYTES`].

#[cfg(target_arch = "wasm32")]
mod browser;
#[cfg(not(target_arch = "wasm32"))]
mod native;

#[cfg(target_arch = "wasm32")]
pub(crate) use browser::Socket;
#[cfg(not(target_arch = "wasm32"))]
pub(crate) use native::Socket;
