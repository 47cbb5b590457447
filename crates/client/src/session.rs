//! What the client's modules borrow of it: the anonymous connection, and a
//! [`Session`] for an operation on the logged-in connection. Borrowing the
//! pieces apart lets each piece's own type (the profile, the key log, the
//! outbox, the KeyPackage pool) do its part while the others are in use.

use crate::ClientError;
use crate::endpoint::Trust;
use crate::key_packages::KeyPackagePool;
use crate::keys::KeyLog;
use crate::outbox::Outbox;
use crate::profile::Profile;
use crate::transport::Transport;
use sotto_core::identity::Account;
use sotto_proto::v1::{Login, client_frame, response};
use std::time::Duration;

/// Ping interval while listening, well inside the server's idle timeout.
pub(crate) const LISTEN_PING: Duration = Duration::from_secs(30);

/// The request that logs `account`'s device in on a connection whose
/// challenge was `nonce`.
pub(crate) fn login_request(account: &Account, nonce: &[u8]) -> client_frame::Body {
    client_frame::Body::Login(Login {
        username: account.username.to_string(),
        device_id: account.device_id.as_bytes().to_vec(),
        challenge_signature: account
            .device
            .sign_login(nonce, &account.username, account.device_id),
    })
}

/// The anonymous connection, borrowed apart from the rest of the client so
/// the key log, the outbox and KeyPackage claims can ask the server while
/// they hold their own state.
pub(crate) struct Anonymous<'a> {
    server_url: &'a str,
    trust: &'a Trust,
    connection: &'a mut Option<Transport>,
}

impl<'a> Anonymous<'a> {
    pub(crate) fn new(
        server_url: &'a str,
        trust: &'a Trust,
        connection: &'a mut Option<Transport>,
    ) -> Self {
        Self {
            server_url,
            trust,
            connection,
        }
    }

    /// Sends a request on the anonymous connection, connecting it if needed;
    /// a request whose connection failed is tried once more on a new one
    /// (everything sent here is safe to repeat).
    pub(crate) async fn request(
        &mut self,
        body: client_frame::Body,
    ) -> Result<response::Result, ClientError> {
        for attempt in 0..2 {
            let t = match self.connection.as_mut() {
                Some(t) => t,
                None => self
                    .connection
                    .insert(Transport::connect(self.server_url, self.trust).await?),
            };
            match t.request(body.clone()).await {
                Err(ClientError::Network(e)) if attempt == 0 => {
                    tracing::debug!("anonymous connection failed, reconnecting: {e}");
                    *self.connection = None;
                }
                Err(e @ ClientError::Network(_)) => {
                    *self.connection = None;
                    return Err(e);
                }
                other => return other,
            }
        }
        Err(ClientError::Network(
            "the server keeps closing the connection".into(),
        ))
    }
}

/// An operation on a logged-in connection, with the pieces of the client it
/// works with borrowed apart: the operations (in `conversations`,
/// `membership`, `receive`, `devices`) orchestrate, and each piece's own
/// type does its part.
pub(crate) struct Session<'a> {
    /// Borrowed mutably only so that futures holding it are `Send` (a
    /// SQLite connection is not `Sync`); the same goes for every async
    /// function that takes `&mut Profile`.
    pub profile: &'a mut Profile,
    pub key_log: &'a mut KeyLog,
    pub outbox: &'a mut Outbox,
    pub key_packages: &'a mut KeyPackagePool,
    pub anonymous: Anonymous<'a>,
    /// The logged-in connection.
    pub connection: &'a mut Transport,
}
