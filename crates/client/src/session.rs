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
use sotto_core::identity::{Account, Username};
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
///
/// It never sends a request that names its owner (this account's own log,
/// its own devices' KeyPackages): that would tell the server whose the
/// connection — and so every send on it — is. Such requests go on the
/// logged-in connection ([`look_up`]); [`Anonymous::request`] refuses them.
pub(crate) struct Anonymous<'a> {
    server_url: &'a str,
    trust: &'a Trust,
    connection: &'a mut Option<AnonymousConnection>,
    /// This account, which the connection must never name.
    owner: Username,
}

impl<'a> Anonymous<'a> {
    pub(crate) fn new(
        server_url: &'a str,
        trust: &'a Trust,
        connection: &'a mut Option<AnonymousConnection>,
        owner: Username,
    ) -> Self {
        Self {
            server_url,
            trust,
            connection,
            owner,
        }
    }

    /// Whether `body` names this account.
    fn names_owner(&self, body: &client_frame::Body) -> bool {
        let named = match body {
            client_frame::Body::GetAccountLog(r) => r.username.as_str(),
            client_frame::Body::ClaimKeyPackages(r) => r.username.as_str(),
            client_frame::Body::LookupAccount(r) => r.username.as_str(),
            _ => return false,
        };
        named == self.owner.as_str()
    }

    /// Sends a request on the anonymous connection, connecting it if needed;
    /// a request whose connection failed is tried once more on a new one
    /// (everything sent here is safe to repeat).
    pub(crate) async fn request(
        &mut self,
        body: client_frame::Body,
    ) -> Result<response::Result, ClientError> {
        if self.names_owner(&body) {
            return Err(ClientError::Internal(
                "a request naming this account was about to go on the anonymous connection".into(),
            ));
        }
        for attempt in 0..2 {
            let t = match self.connection.as_mut() {
                Some(c) => &mut c.transport,
                None => {
                    let transport = Transport::connect(self.server_url, self.trust).await?;
                    &mut self
                        .connection
                        .insert(AnonymousConnection {
                            transport,
                            sent_for: None,
                        })
                        .transport
                }
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

/// The anonymous connection itself, and the one group it has carried sends
/// for. A connection that carried sends for two groups would tell the
/// server that one device (so one account) is in both, and intersecting
/// the groups' members would narrow down who it is; so a send for another
/// group goes on a new connection. Look-ups ride on whichever is open.
/// Cost, measured on loopback with TLS: see the note in docs/SERVER_DATA.md.
#[derive(Debug)]
pub(crate) struct AnonymousConnection {
    transport: Transport,
    sent_for: Option<Vec<u8>>,
}

impl AnonymousConnection {
    pub(crate) fn into_transport(self) -> Transport {
        self.transport
    }
}

impl Anonymous<'_> {
    /// Sends a message or commit of `group_id`: on the open anonymous
    /// connection if it has carried sends for this group only, otherwise on
    /// a new one.
    pub(crate) async fn send(
        &mut self,
        group_id: &[u8],
        body: client_frame::Body,
    ) -> Result<response::Result, ClientError> {
        if self
            .connection
            .as_ref()
            .is_some_and(|c| c.sent_for.as_deref().is_some_and(|g| g != group_id))
            && let Some(previous) = self.connection.take()
        {
            previous.transport.close().await;
        }
        let verdict = self.request(body).await;
        if let Some(c) = self.connection.as_mut() {
            c.sent_for = Some(group_id.to_vec());
        }
        verdict
    }
}

/// Sends a look-up (an account's log, a KeyPackage claim): on the anonymous
/// connection when it names another account, on `logged_in` when it names
/// this one (the server knows who is logged in there anyway).
pub(crate) async fn look_up(
    anonymous: &mut Anonymous<'_>,
    logged_in: &mut Transport,
    body: client_frame::Body,
) -> Result<response::Result, ClientError> {
    if anonymous.names_owner(&body) {
        logged_in.request(body).await
    } else {
        anonymous.request(body).await
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
