//! The Sotto client driver: the sans-I/O [`sotto_core`] plus a WebSocket
//! transport and a local SQLite profile. The `sotto` CLI is a thin layer over
//! [`Client`]; tests drive it directly.
//!
//! Every incoming message is processed in one SQLite transaction together
//! with the MLS state change it causes and its de-duplication record, and is
//! acknowledged to the server only after that transaction committed. Every
//! outgoing frame is written to an outbox in the same transaction as the MLS
//! state change that produced it, and resent after a crash with the same
//! message id, which the server de-duplicates.

mod attachments;
pub mod auditor;
pub mod canary;
mod chat;
mod client;
pub mod clock;
mod conversations;
mod devices;
mod directory_audit;
pub mod endpoint;
mod inbound;
mod invite_links;
mod key_packages;
mod keys;
mod membership;
mod outbox;
mod own_account;
mod profile;
pub mod provider;
mod receipts;
mod receive;
mod session;
mod socket;
pub mod store;
pub mod transport;
#[cfg(not(target_arch = "wasm32"))]
mod web_audit;

pub use attachments::{Progress, SentFile};
pub use client::Client;
pub use devices::{DeviceInfo, LinkRequestInfo, Removal};
pub use directory_audit::{AppendOnlyFailure, AuditedEpoch, DirectoryAuditReport, audit_directory};
pub use endpoint::Trust;
pub use keys::{DEFAULT_MAX_HEAD_AGE, rotation_notice};
pub use outbox::CommitOutcome;
pub use profile::MemberInfo;
pub use receive::MAX_DELIVERY_ATTEMPTS;
pub use sotto_core::franking::ReportReason;
pub use sotto_core::group::AdminPolicy;
pub use sotto_core::link::LinkCode;
pub use sotto_core::safety::SafetyNumber;
pub use store::lock::{LockError, Passphrase};
pub use store::{
    AccountAlert, AttachmentInfo, ChatState, ConversationKind, ConversationSummary, EntryKind,
    HistoryEntry, Quoted, ReceiptState, Version,
};
#[cfg(not(target_arch = "wasm32"))]
pub use web_audit::{Served, WebAudit, WebFileCheck, audit_web_release};

use sotto_core::{content::ContentError, group::GroupError, identity::IdentityError};

/// What went wrong in a client operation, by whose fault.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server refused the request; its message says why.
    #[error("the server refused: {0}")]
    Server(sotto_proto::v1::Error),
    /// The connection failed; try again later.
    #[error("network error: {0}")]
    Network(String),
    /// The server sent something it should not have.
    #[error("the server broke the protocol: {0}")]
    Protocol(String),
    /// The request cannot be done as asked.
    #[error("{0}")]
    Usage(String),
    #[error("local database error: {0}")]
    Store(#[from] rusqlite::Error),
    /// A locked profile without its passphrase, or with a wrong one.
    #[error(transparent)]
    Lock(#[from] store::lock::LockError),
    #[error(transparent)]
    Group(#[from] GroupError),
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Content(#[from] ContentError),
    /// Other members kept committing first.
    #[error(
        "gave up after {0} attempts because other members kept changing the group at the same time; try again"
    )]
    Conflict(usize),
    /// The transparency log, or a key checked against it, does not add up:
    /// the server may be lying. Nothing was sent.
    #[error("WARNING: {0}")]
    KeyLog(String),
    /// A conversation's members are not what it claims: a direct
    /// conversation that holds a third account, or a third account calling
    /// one direct. Nothing is sent to it.
    #[error("WARNING: {0}")]
    Roster(String),
    /// The server's TLS certificate is not trusted, or TLS failed in a way
    /// that retrying will not fix.
    #[error("{0}")]
    Certificate(String),
    /// A bug in this client, caught before it could do harm.
    #[error("internal error: {0}")]
    Internal(String),
    /// A contact's identity key is not the one seen before.
    #[error(
        "WARNING: the identity key of {0} has changed since you first talked. Someone may be impersonating them; nothing was sent"
    )]
    IdentityChanged(String),
}

impl ClientError {
    /// A failure that says nothing about the message or the peer: the
    /// connection, local storage, or a server that is busy or rate-limiting.
    /// What failed this way is tried again later, never judged.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Network(_) | Self::Store(_) => true,
            Self::Server(e) => [
                sotto_proto::v1::ErrorCode::RateLimited as i32,
                sotto_proto::v1::ErrorCode::Internal as i32,
            ]
            .contains(&e.code),
            _ => false,
        }
    }

    /// The server's error code, if the server refused.
    pub fn server_code(&self) -> Option<sotto_proto::v1::ErrorCode> {
        match self {
            Self::Server(e) => sotto_proto::v1::ErrorCode::try_from(e.code).ok(),
            _ => None,
        }
    }
}
