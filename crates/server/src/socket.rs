//! The WebSocket loop of one connection: the challenge, then frames in and
//! out, timeouts, hub signals and shutdown. All protocol state is in
//! [`Session`]; this file owns only the socket and the timers.

use crate::config::Limits;
use crate::session::wire_error::error;
use crate::session::{Context, Session, Signal};
use crate::store::Store;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt as _;
use sotto_proto::v1::{self, ErrorCode, response, server_frame};
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

/// Close code 1001: the server is going away.
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code 1008: the client broke a rule (here: a timeout).
const CLOSE_POLICY: u16 = 1008;
/// Close code 1011: the server hit an error it cannot recover from.
const CLOSE_INTERNAL: u16 = 1011;

fn close(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

async fn send_frame(
    socket: &mut WebSocket,
    frame: &impl prost::Message,
) -> Result<(), axum::Error> {
    send_encoded(socket, frame.encode_to_vec()).await
}

/// Sends a frame the session already encoded.
async fn send_encoded(socket: &mut WebSocket, frame: Vec<u8>) -> Result<(), axum::Error> {
    socket.send(Message::Binary(frame.into())).await
}

/// Sends frames the session already encoded, flushed once at the end: a
/// page of a drained mailbox goes out in as few writes as the socket's
/// buffer allows, not one write per delivery. (The WebSocket layer still
/// flushes on its own whenever its write buffer fills, so this holds no
/// more than that buffer.)
async fn send_all_encoded(socket: &mut WebSocket, frames: Vec<Vec<u8>>) -> Result<(), axum::Error> {
    if frames.is_empty() {
        return Ok(());
    }
    for frame in frames {
        socket.feed(Message::Binary(frame.into())).await?;
    }
    socket.flush().await
}

/// Serves one WebSocket until the client leaves, a timeout fires, or the
/// server shuts down.
///
/// Acknowledgements the client sent are committed even if the connection
/// ends before they are ([`Session::close`]).
pub(crate) async fn serve<S: Store>(
    socket: WebSocket,
    ctx: Arc<Context<S>>,
    shutdown: watch::Receiver<bool>,
    address: IpAddr,
) {
    let limits = ctx.limits.clone();
    let mut session = Session::new(ctx, address);
    converse(socket, &mut session, shutdown, &limits).await;
    session.close();
}

/// The connection's frames in and out, until it ends.
async fn converse<S: Store>(
    mut socket: WebSocket,
    session: &mut Session<S>,
    mut shutdown: watch::Receiver<bool>,
    limits: &Limits,
) {
    if send_frame(&mut socket, &session.challenge()).await.is_err() {
        return;
    }
    let mut idle_deadline = Instant::now() + limits.idle_timeout;
    loop {
        if *shutdown.borrow() {
            let _ = socket
                .send(close(CLOSE_GOING_AWAY, "server shutting down"))
                .await;
            break;
        }
        match session.pump().await {
            Ok(frames) => {
                if send_all_encoded(&mut socket, frames).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot read mailbox");
                let _ = socket.send(close(CLOSE_INTERNAL, "storage error")).await;
                break;
            }
        }
        let deadline = session.deadline(idle_deadline);
        tokio::select! {
            _ = shutdown.changed() => {
                let _ = socket.send(close(CLOSE_GOING_AWAY, "server shutting down")).await;
                break;
            }
            () = sleep_until(deadline) => {
                let reason = if session.is_authenticated() { "idle timeout" } else { "not authenticated in time" };
                tracing::debug!(reason, "closing connection");
                let _ = socket.send(close(CLOSE_POLICY, reason)).await;
                break;
            }
            signal = session.next_signal() => {
                let event = match signal {
                    Signal::Link(body) => {
                        session.on_link_frame(&body);
                        if send_frame(&mut socket, &v1::ServerFrame { body: Some(body) }).await.is_err() {
                            break;
                        }
                        continue;
                    }
                    Signal::Missed => {
                        session.on_missed();
                        continue;
                    }
                    Signal::AckWritten(result) => {
                        if let Err(e) = session.ack_written(result) {
                            tracing::error!(error = %e, "cannot commit acknowledgements");
                            let _ = socket.send(close(CLOSE_INTERNAL, "storage error")).await;
                            break;
                        }
                        continue;
                    }
                    Signal::Hub(event) => event,
                };
                let Some(event) = event else {
                    // The hub dropped this device: it was removed.
                    let _ = socket.send(close(CLOSE_POLICY, "this device was removed from its account")).await;
                    break;
                };
                if let Some(frame) = session.on_event(event)
                    && send_encoded(&mut socket, frame).await.is_err()
                {
                    break;
                }
            }
            message = socket.recv() => {
                let Some(Ok(message)) = message else { break };
                idle_deadline = Instant::now() + limits.idle_timeout;
                let response = match message {
                    Message::Binary(bytes) => session.handle_bytes(&bytes).await,
                    Message::Text(_) => Some(v1::Response {
                        request_id: 0,
                        result: Some(response::Result::Error(error(
                            ErrorCode::MalformedFrame,
                            "text frames are not part of the protocol; send binary protobuf frames",
                        ))),
                    }),
                    // Pongs are sent automatically; both count as activity.
                    Message::Ping(_) | Message::Pong(_) => None,
                    Message::Close(_) => break,
                };
                if let Some(response) = response {
                    let frame = v1::ServerFrame { body: Some(server_frame::Body::Response(response)) };
                    if send_frame(&mut socket, &frame).await.is_err() {
                        break;
                    }
                }
            }
        }
    }
}
