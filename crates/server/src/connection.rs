//! One client connection: the challenge, authentication, requests, and the
//! push of the device's mailbox with a bounded window of unacknowledged
//! deliveries.
//!
//! [`Session`] holds the protocol state and never touches the socket: it
//! takes decoded bytes and returns frames. [`serve`] owns the WebSocket,
//! the timers and the shutdown signal.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message as _;
use rand::RngCore;
use sotto_proto::mls_framing::{ContentType, Framing};
use sotto_proto::v1::{self, ErrorCode, client_frame::Body, response, server_frame};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use sotto_transparency::{AccountState, LogError, leaf_bytes, open_entry};
use tokio::sync::mpsc;

use crate::config::{Limits, RegistrationPolicy};
use crate::epoch_grace::EpochGrace;
use crate::link_rendezvous::{
    ConnectionId, LINK_QUEUE, LinkError, LinkId, LinkRendezvous, MAX_SEALED_BYTES,
};
use crate::mailbox_hub::{MailboxEvent, MailboxHub, Subscription};
use crate::rate_limit::{RateLimiter, TokenBucket};
use crate::store::invite_hash;
use crate::store::{
    AddDeviceError, CommitError, CommitSubmission, DeviceId, DeviceRemoval, EnqueueError, Enqueued,
    Envelope, GroupId, GroupMessage, MessageId, NewAccount, NewDevice, NewEntry, RegisterError,
    RemoveDeviceError, SignedDevice, Store, StoreError, UnixSeconds, day_of,
};
use crate::transparency_log::{TransparencyLog, decode_records};

/// Largest KeyPackage accepted in an upload.
pub const MAX_KEY_PACKAGE_BYTES: usize = 64 * 1024;
/// A device whose one-time pool drops below this after a claim is told to
/// upload more.
pub const KEY_PACKAGES_LOW_WATERMARK: u32 = 10;

/// What every connection shares.
#[derive(Debug)]
pub(crate) struct Context<S> {
    pub store: Arc<S>,
    pub hub: MailboxHub,
    pub limits: Limits,
    pub log: TransparencyLog,
    pub links: LinkRendezvous,
    /// Sends per group capability (keyed by its hash).
    pub capability_limits: RateLimiter<[u8; 32]>,
    /// KeyPackage claims per target account.
    pub claim_target_limits: RateLimiter<String>,
    /// Sends and claims per client address (in memory only).
    pub address_limits: RateLimiter<IpAddr>,
    /// Registrations per client address (in memory only).
    pub address_limits_for_registration: RateLimiter<IpAddr>,
    /// Device-link joins per client address (in memory only).
    pub link_attempt_limits: RateLimiter<IpAddr>,
    /// Who may create accounts.
    pub registration: RegistrationPolicy,
    /// Groups whose previous epoch's capability is still accepted.
    pub epoch_grace: EpochGrace,
}

/// Seconds since the Unix epoch, from the system clock.
pub(crate) fn now_seconds() -> UnixSeconds {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

type RequestResult = Result<Option<response::Result>, v1::Error>;

fn error(code: ErrorCode, message: impl Into<String>) -> v1::Error {
    v1::Error::new(code, message)
}

fn internal(e: &StoreError) -> v1::Error {
    if matches!(e, StoreError::Full) {
        tracing::error!("storage is full: refusing writes until space is freed");
        return error(
            ErrorCode::Internal,
            "the server's storage is full, so nothing was stored; try again later",
        );
    }
    tracing::error!(error = %e, "storage failed while handling a request");
    error(
        ErrorCode::Internal,
        "the server could not complete this request; try again later",
    )
}

fn done() -> RequestResult {
    Ok(Some(response::Result::Done(v1::Done {})))
}

/// Shortens client-supplied text before echoing it in an error.
fn shown(text: &str) -> String {
    text.chars().take(40).collect()
}

fn verifying_key(bytes: &[u8]) -> Option<VerifyingKey> {
    <[u8; 32]>::try_from(bytes)
        .ok()
        .and_then(|b| VerifyingKey::from_bytes(&b).ok())
}

fn verifies(key: &VerifyingKey, message: &[u8], signature: &[u8]) -> bool {
    Signature::from_slice(signature).is_ok_and(|sig| key.verify_strict(message, &sig).is_ok())
}

/// Parses one payload with its recipients; `min_recipients` is 1 for
/// application messages and Welcomes, 0 for commits.
fn envelope(
    message_id: &[u8],
    recipients: &[Vec<u8>],
    payload: Vec<u8>,
    min_recipients: usize,
    what: &str,
) -> Result<Envelope, v1::Error> {
    let message_id = MessageId::from_slice(message_id).ok_or_else(|| {
        error(
            ErrorCode::InvalidRequest,
            format!(
                "{what} id must be {} bytes, got {}",
                sotto_proto::ID_LEN,
                message_id.len()
            ),
        )
    })?;
    if payload.is_empty() {
        return Err(error(
            ErrorCode::InvalidRequest,
            format!("{what} payload is empty"),
        ));
    }
    if payload.len() > sotto_proto::MAX_PAYLOAD_BYTES {
        return Err(error(
            ErrorCode::TooLarge,
            format!(
                "{what} payload is {} bytes; the limit is {} bytes",
                payload.len(),
                sotto_proto::MAX_PAYLOAD_BYTES
            ),
        ));
    }
    if recipients.len() < min_recipients || recipients.len() > sotto_proto::MAX_RECIPIENTS {
        return Err(error(
            ErrorCode::InvalidRequest,
            format!(
                "{what} names {} recipients; it must name {min_recipients} to {}",
                recipients.len(),
                sotto_proto::MAX_RECIPIENTS
            ),
        ));
    }
    let recipients = recipients
        .iter()
        .map(|r| {
            DeviceId::from_slice(r).ok_or_else(|| {
                error(
                    ErrorCode::InvalidRequest,
                    format!(
                        "recipient device ids must be {} bytes, got {}",
                        sotto_proto::ID_LEN,
                        r.len()
                    ),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Envelope {
        message_id,
        recipients,
        payload,
    })
}

fn group_id(bytes: &[u8]) -> Result<GroupId, v1::Error> {
    GroupId::from_slice(bytes).ok_or_else(|| {
        error(
            ErrorCode::InvalidRequest,
            format!(
                "group id must be 1 to {} bytes, got {}",
                GroupId::MAX_LEN,
                bytes.len()
            ),
        )
    })
}

fn unknown_device(device: DeviceId) -> v1::Error {
    error(
        ErrorCode::UnknownDevice,
        format!(
            "unknown device {device}: every recipient must be a registered device that was not removed"
        ),
    )
}

/// A client-supplied log entry was refused.
fn bad_log_entry(what: &str, e: &LogError) -> v1::Error {
    let code = match e {
        LogError::BadSignature(_) => ErrorCode::AuthenticationFailed,
        _ => ErrorCode::InvalidRequest,
    };
    error(code, format!("{what}: {e}"))
}

/// Parses a device certificate for `username` and checks the identity
/// key's signature over it.
fn certified_device(
    device: &v1::SignedDevice,
    username: &str,
    identity_key: &VerifyingKey,
) -> Result<(DeviceId, VerifyingKey), v1::Error> {
    let certificate =
        v1::DeviceCertificate::decode(device.certificate.as_slice()).map_err(|_| {
            error(
                ErrorCode::InvalidRequest,
                "the device certificate is not a valid DeviceCertificate",
            )
        })?;
    if certificate.username != username {
        return Err(error(
            ErrorCode::InvalidRequest,
            format!(
                "the device certificate is for {:?}, not {:?}",
                shown(&certificate.username),
                username
            ),
        ));
    }
    let device_id = DeviceId::from_slice(&certificate.device_id).ok_or_else(|| {
        error(
            ErrorCode::InvalidRequest,
            format!("device_id must be {} bytes", sotto_proto::ID_LEN),
        )
    })?;
    let device_key = verifying_key(&certificate.device_key).ok_or_else(|| {
        error(
            ErrorCode::InvalidRequest,
            "device_key must be a 32-byte Ed25519 public key",
        )
    })?;
    if !verifies(
        identity_key,
        &sotto_proto::device_transcript(&device.certificate),
        &device.identity_signature,
    ) {
        return Err(error(
            ErrorCode::AuthenticationFailed,
            "the identity key's signature over the device certificate does not verify",
        ));
    }
    Ok((device_id, device_key))
}

fn link_id(bytes: &[u8]) -> Result<LinkId, v1::Error> {
    LinkId::try_from(bytes).map_err(|_| {
        error(
            ErrorCode::InvalidRequest,
            format!(
                "a link id is {} bytes, got {}",
                sotto_proto::LINK_ID_LEN,
                bytes.len()
            ),
        )
    })
}

fn sealed(blob: &[u8], what: &str) -> Result<(), v1::Error> {
    if blob.is_empty() {
        return Err(error(
            ErrorCode::InvalidRequest,
            format!("the {what} is empty"),
        ));
    }
    if blob.len() > MAX_SEALED_BYTES {
        return Err(error(
            ErrorCode::TooLarge,
            format!(
                "the {what} is {} bytes; the limit is {MAX_SEALED_BYTES} bytes",
                blob.len()
            ),
        ));
    }
    Ok(())
}

fn link_error(e: LinkError) -> v1::Error {
    let code = match e {
        LinkError::Unknown => ErrorCode::UnknownLink,
        LinkError::InUse | LinkError::NotJoined | LinkError::TooMany => ErrorCode::InvalidRequest,
    };
    error(code, e.to_string())
}

fn stale_sequence(expected: u64) -> v1::Error {
    error(
        ErrorCode::InvalidRequest,
        format!(
            "another change to this account was logged first; fetch the account log and sign \
             the entry again with account_seq {expected}"
        ),
    )
}

fn mailbox_full(device: DeviceId) -> v1::Error {
    error(
        ErrorCode::MailboxFull,
        format!(
            "the mailbox of device {device} is full; it must fetch its messages before it can get more"
        ),
    )
}

fn not_authorized() -> v1::Error {
    error(
        ErrorCode::NotAuthorized,
        "the send capability is not this group's; process pending messages (a commit may have changed it) and retry",
    )
}

fn rate_limited(what: &str, wait: Duration) -> v1::Error {
    let retry_after_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1);
    v1::Error {
        retry_after_ms,
        ..error(
            ErrorCode::RateLimited,
            format!("too many {what}; retry in {retry_after_ms} ms"),
        )
    }
}

/// SHA-256 of a presented send capability (which must be 32 bytes).
fn capability_hash(token: &[u8]) -> Option<[u8; 32]> {
    use sha2::Digest as _;
    (token.len() == 32).then(|| sha2::Sha256::digest(token).into())
}

fn mismatched_framing(message: String) -> v1::Error {
    error(ErrorCode::MismatchedFraming, message)
}

/// Reads the clear-text MLS framing of a payload sent to `group` and checks
/// that it is a message of that group with one of the `allowed` content
/// types; returns the epoch it is framed in. Clients authenticate the rest.
fn group_framing(
    payload: &[u8],
    group: &GroupId,
    allowed: &[ContentType],
    what: &str,
) -> Result<u64, v1::Error> {
    match Framing::parse(payload) {
        Ok(Framing::Group {
            group_id,
            epoch,
            content_type,
            ..
        }) => {
            if group_id.as_slice() != group.as_bytes() {
                return Err(mismatched_framing(format!(
                    "the {what}'s MLS group is not the group the request names"
                )));
            }
            if !allowed.contains(&content_type) {
                return Err(mismatched_framing(format!(
                    "a {what} cannot carry MLS content of type {content_type:?}"
                )));
            }
            Ok(epoch)
        }
        Ok(other) => Err(mismatched_framing(format!(
            "a {what} must be an MLS group message, not {other:?}"
        ))),
        Err(e) => Err(error(ErrorCode::InvalidRequest, format!("{what}: {e}"))),
    }
}

fn unknown_group(group: &GroupId) -> v1::Error {
    error(ErrorCode::UnknownGroup, format!("unknown group {group}"))
}

/// Something for a connection that did not come from its client.
#[derive(Debug)]
pub(crate) enum Signal {
    /// From the mailbox hub; `None` when the hub dropped the device.
    Hub(Option<MailboxEvent>),
    /// The hub dropped events for this connection.
    Missed,
    /// A link frame to push.
    Link(server_frame::Body),
}

/// The protocol state of one connection.
#[derive(Debug)]
pub(crate) struct Session<S> {
    ctx: Arc<Context<S>>,
    nonce: [u8; sotto_proto::NONCE_LEN],
    device: Option<DeviceId>,
    /// The account of `device`.
    username: Option<String>,
    /// This connection, for the link rendezvous.
    connection_id: ConnectionId,
    /// Link frames for this connection (from the rendezvous). Made on first
    /// use: few connections ever link a device, and a tokio channel
    /// allocates its first block (~4.6 KiB here) up front.
    link: Option<(
        mpsc::Sender<server_frame::Body>,
        mpsc::Receiver<server_frame::Body>,
    )>,
    /// When an unauthenticated connection is closed: the handshake
    /// timeout, pushed back while it waits on a joined link.
    handshake_deadline: Instant,
    /// The connection only reads the public log or sends anonymously (sealed
    /// sender): no handshake deadline.
    log_reader: bool,
    /// The client's address, for per-address rate limits; never stored or
    /// logged.
    address: IpAddr,
    /// Sends on this connection.
    send_bucket: TokenBucket,
    /// KeyPackage claims on this connection.
    claim_bucket: TokenBucket,
    /// Key-log requests on this connection.
    log_bucket: TokenBucket,
    subscription: Option<Subscription>,
    /// Highest seq pushed on this connection.
    cursor: u64,
    /// Pushed and not yet acknowledged.
    in_flight: BTreeSet<u64>,
    /// The mailbox may hold entries not yet pushed.
    need_fetch: bool,
    /// Request ids of `Sync`s waiting for the mailbox to drain.
    pending_syncs: Vec<u64>,
    /// The acknowledgement being committed, if any.
    ack_write: Option<tokio::task::JoinHandle<Result<u64, StoreError>>>,
}

impl<S: Store> Session<S> {
    pub fn new(ctx: Arc<Context<S>>, address: IpAddr) -> Self {
        let mut nonce = [0; sotto_proto::NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let connection_id = ctx.links.connection_id();
        let handshake_deadline = Instant::now() + ctx.limits.handshake_timeout;
        let send_bucket = TokenBucket::full(ctx.limits.sends_per_connection, Instant::now());
        let claim_bucket = TokenBucket::full(ctx.limits.claims_per_connection, Instant::now());
        let log_bucket = TokenBucket::full(ctx.limits.log_requests_per_connection, Instant::now());
        Self {
            ctx,
            nonce,
            device: None,
            username: None,
            connection_id,
            link: None,
            handshake_deadline,
            log_reader: false,
            address,
            send_bucket,
            claim_bucket,
            log_bucket,
            subscription: None,
            cursor: 0,
            in_flight: BTreeSet::new(),
            need_fetch: false,
            pending_syncs: Vec::new(),
            ack_write: None,
        }
    }

    pub fn challenge(&self) -> v1::ServerFrame {
        v1::ServerFrame {
            body: Some(server_frame::Body::Challenge(v1::Challenge {
                protocol_version: sotto_proto::PROTOCOL_VERSION,
                nonce: self.nonce.to_vec(),
                log_key: self.ctx.log.public_key().to_vec(),
            })),
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.device.is_some()
    }

    /// When the connection is closed for inactivity, given when the idle
    /// timeout would close it.
    pub fn deadline(&self, idle: Instant) -> Instant {
        if self.device.is_some() || self.log_reader {
            idle
        } else {
            idle.min(self.handshake_deadline)
        }
    }

    /// Waits for the next hub signal (`None`: the hub dropped this device,
    /// which was removed) or link frame; hub signals only after login.
    pub async fn next_signal(&mut self) -> Signal {
        let Self {
            subscription, link, ..
        } = self;
        // The session keeps a sender, so `recv` never ends while it lives.
        let link_frame = async {
            match link {
                Some((_, rx)) => match rx.recv().await {
                    Some(frame) => frame,
                    None => std::future::pending().await,
                },
                None => std::future::pending().await,
            }
        };
        let Some(sub) = subscription else {
            return Signal::Link(link_frame.await);
        };
        tokio::select! {
            event = sub.events.recv() => Signal::Hub(event),
            () = sub.missed.wait() => Signal::Missed,
            frame = link_frame => Signal::Link(frame),
        }
    }

    /// Notes a link frame about to be pushed.
    pub fn on_link_frame(&mut self, frame: &server_frame::Body) {
        if let server_frame::Body::LinkCompleted(_) = frame {
            // The new device now has what it needs to log in.
            self.handshake_deadline = Instant::now() + self.ctx.limits.handshake_timeout;
        }
    }

    /// Notes that the hub dropped events: fetch from the store.
    pub fn on_missed(&mut self) {
        if self.subscription.as_ref().is_some_and(|s| s.missed.take()) {
            self.need_fetch = true;
        }
    }

    /// Reacts to a hub signal, returning a frame to push if any.
    pub fn on_event(&mut self, event: MailboxEvent) -> Option<v1::ServerFrame> {
        match event {
            MailboxEvent::Entry(entry) => self.push_new(&entry),
            MailboxEvent::KeyPackagesLow { remaining } => Some(v1::ServerFrame {
                body: Some(server_frame::Body::KeyPackagesLow(v1::KeyPackagesLow {
                    remaining,
                })),
            }),
        }
    }

    /// Handles one binary message; returns the response to send, if any.
    pub async fn handle_bytes(&mut self, bytes: &[u8]) -> Option<v1::Response> {
        let frame = match sotto_proto::decode_client_frame(bytes) {
            Ok(frame) => frame,
            Err(e) => {
                return Some(v1::Response {
                    request_id: 0,
                    result: Some(response::Result::Error(error(
                        ErrorCode::MalformedFrame,
                        e.to_string(),
                    ))),
                });
            }
        };
        let request_id = frame.request_id;
        let result = match frame.body {
            None => Err(error(
                ErrorCode::MalformedFrame,
                "frame has no body; is the client speaking protocol v1?",
            )),
            Some(body) => self.handle(request_id, body).await,
        };
        let result = match result {
            Ok(None) => return None,
            Ok(Some(result)) => result,
            Err(e) => response::Result::Error(e),
        };
        Some(v1::Response {
            request_id,
            result: Some(result),
        })
    }

    async fn handle(&mut self, request_id: u64, body: Body) -> RequestResult {
        match (self.device, body) {
            // Anyone may read the log, authenticated or not.
            (device, Body::GetLogHead(_)) => {
                self.charge_log_request()?;
                self.log_reader |= device.is_none();
                let head = self
                    .ctx
                    .log
                    .head(&*self.ctx.store)
                    .await
                    .map_err(|e| internal(&e))?;
                Ok(Some(response::Result::LogHead(head)))
            }
            (device, Body::GetAccountLog(request)) => {
                self.charge_log_request()?;
                self.log_reader |= device.is_none();
                self.get_account_log(&request.username).await
            }
            (device, Body::GetConsistency(request)) => {
                self.charge_log_request()?;
                self.log_reader |= device.is_none();
                match self
                    .ctx
                    .log
                    .consistency(&*self.ctx.store, request.old_size, request.new_size)
                    .await
                    .map_err(|e| internal(&e))?
                {
                    Ok(proof) => Ok(Some(response::Result::Consistency(proof))),
                    Err(message) => Err(error(ErrorCode::InvalidRequest, message)),
                }
            }
            (device, Body::GetLogEntries(request)) => {
                self.charge_log_request()?;
                self.log_reader |= device.is_none();
                let entries = self
                    .ctx
                    .log
                    .entries(&*self.ctx.store, request.start, request.count)
                    .await
                    .map_err(|e| internal(&e))?;
                Ok(Some(response::Result::LogEntries(entries)))
            }
            (_, Body::JoinLink(join)) => {
                self.ctx
                    .link_attempt_limits
                    .take(self.address)
                    .map_err(|wait| rate_limited("device-link attempts from your address", wait))?;
                self.join_link(join)
            }
            // Sealed sender: claims and sends need no login, and say nothing
            // about who makes them; capabilities and rate limits govern them.
            (device, Body::ClaimKeyPackages(claim)) => {
                self.log_reader |= device.is_none();
                self.claim_key_packages(claim).await
            }
            (device, Body::SendMessage(send)) => {
                self.log_reader |= device.is_none();
                self.send_message(send).await
            }
            (device, Body::SubmitCommit(commit)) => {
                self.log_reader |= device.is_none();
                self.submit_commit(commit).await
            }
            (None, Body::Register(register)) => self.register(register).await,
            (None, Body::Login(login)) => self.login(login).await,
            (Some(_), Body::Register(_) | Body::Login(_)) => Err(error(
                ErrorCode::AlreadyAuthenticated,
                "this connection is already authenticated",
            )),
            (None, _) => Err(error(
                ErrorCode::NotAuthenticated,
                "register or log in first",
            )),
            (Some(device), Body::UploadKeyPackages(upload)) => {
                self.upload_key_packages(device, upload).await
            }
            (Some(device), Body::Ack(ack)) => {
                // One acknowledgement commits while the connection goes on
                // pushing; a second waits for it (backpressure).
                self.finish_ack_write().await.map_err(|e| internal(&e))?;
                // Room in the window: `pump` fetches if entries wait in the
                // store (`need_fetch`); new ones come from the hub. An
                // acknowledged seq is at or below the cursor, so no fetch
                // can return it again while its delete commits.
                for seq in &ack.seqs {
                    self.in_flight.remove(seq);
                }
                let store = Arc::clone(&self.ctx.store);
                self.ack_write = Some(tokio::spawn(
                    async move { store.ack(device, ack.seqs).await },
                ));
                Ok(None)
            }
            (Some(_), Body::Sync(_)) => {
                self.pending_syncs.push(request_id);
                self.need_fetch = true;
                Ok(None)
            }
            (Some(_), Body::AddDevice(add)) => self.add_device(add).await,
            (Some(_), Body::RemoveDevice(remove)) => self.remove_device(remove).await,
            (Some(_), Body::OpenLink(open)) => {
                let id = link_id(&open.link_id)?;
                let sender = self.link_sender();
                self.ctx
                    .links
                    .open(id, self.connection_id, sender, Instant::now())
                    .map_err(link_error)?;
                done()
            }
            (Some(_), Body::CompleteLink(complete)) => {
                let id = link_id(&complete.link_id)?;
                sealed(&complete.sealed_bundle, "sealed bundle")?;
                self.ctx
                    .links
                    .complete(
                        &id,
                        self.connection_id,
                        complete.sealed_bundle,
                        Instant::now(),
                    )
                    .map_err(link_error)?;
                done()
            }
        }
    }

    /// Where the rendezvous sends this connection's link frames.
    fn link_sender(&mut self) -> mpsc::Sender<server_frame::Body> {
        let (tx, _) = self.link.get_or_insert_with(|| mpsc::channel(LINK_QUEUE));
        tx.clone()
    }

    fn join_link(&mut self, join: v1::JoinLink) -> RequestResult {
        let id = link_id(&join.link_id)?;
        sealed(&join.sealed_request, "sealed request")?;
        let sender = self.link_sender();
        let expires = self
            .ctx
            .links
            .join(
                &id,
                self.connection_id,
                sender,
                join.sealed_request,
                Instant::now(),
            )
            .map_err(link_error)?;
        // Wait for the answer as long as the link lives.
        self.handshake_deadline = self.handshake_deadline.max(expires);
        done()
    }

    async fn get_account_log(&mut self, username: &str) -> RequestResult {
        let log = if sotto_proto::is_valid_username(username) {
            self.ctx
                .log
                .account_log(&*self.ctx.store, username)
                .await
                .map_err(|e| internal(&e))?
        } else {
            None
        };
        let log = log.ok_or_else(|| {
            error(
                ErrorCode::UnknownUser,
                format!("the log has no account named {}", shown(username)),
            )
        })?;
        Ok(Some(response::Result::AccountLog(log)))
    }

    /// What the log says about the caller's account.
    async fn own_account(&self) -> Result<(String, AccountState), v1::Error> {
        let username = self
            .username
            .clone()
            .ok_or_else(|| error(ErrorCode::NotAuthenticated, "register or log in first"))?;
        let records = self
            .ctx
            .store
            .account_log(&username)
            .await
            .map_err(|e| internal(&e))?;
        if records.is_empty() {
            return Err(error(
                ErrorCode::InvalidRequest,
                "this account has no transparency-log history (it was created before the log \
                 existed), so its devices cannot change; register a new account",
            ));
        }
        let entries = decode_records(&records).map_err(|e| internal(&e))?;
        let state = AccountState::replay(&username, &entries).map_err(|e| {
            tracing::error!(error = %e, "an account's stored log entries do not replay");
            error(
                ErrorCode::Internal,
                "the server's log for this account is inconsistent; tell the server's operator",
            )
        })?;
        Ok((username, state))
    }

    async fn add_device(&mut self, add: v1::AddDevice) -> RequestResult {
        let entry = add
            .entry
            .ok_or_else(|| error(ErrorCode::InvalidRequest, "the log entry is missing"))?;
        let device = add
            .device
            .ok_or_else(|| error(ErrorCode::InvalidRequest, "the device is missing"))?;
        let (username, mut state) = self.own_account().await?;
        let identity_key = VerifyingKey::from_bytes(&state.identity_key).map_err(|_| {
            error(
                ErrorCode::Internal,
                "the account's identity key is unusable",
            )
        })?;
        let (device_id, device_key) = certified_device(&device, &username, &identity_key)?;
        let event = open_entry(&entry).map_err(|e| bad_log_entry("the log entry", &e))?;
        let Some(sotto_transparency::account_event::Change::DeviceAdded(added)) = &event.change
        else {
            return Err(error(
                ErrorCode::InvalidRequest,
                "AddDevice needs a DeviceAdded log entry",
            ));
        };
        if added.device_id != device_id.as_bytes() || added.device_key != device_key.as_bytes() {
            return Err(error(
                ErrorCode::InvalidRequest,
                "the DeviceAdded entry must name the certified device (its id and key)",
            ));
        }
        state
            .apply(&entry)
            .map_err(|e| bad_log_entry("the DeviceAdded entry", &e))?;
        let new = NewDevice {
            username,
            device_id,
            device_key: device_key.to_bytes(),
            device: SignedDevice {
                certificate: device.certificate,
                identity_signature: device.identity_signature,
            },
            today: day_of(now_seconds()),
            log_entry: leaf_bytes(&entry),
            account_seq: event.account_seq,
        };
        match self.ctx.store.add_device(new).await {
            Ok(()) => {
                tracing::info!("device added");
                done()
            }
            Err(AddDeviceError::DeviceIdTaken(id)) => Err(error(
                ErrorCode::InvalidRequest,
                format!("device id {id} is already registered; generate a new random device id"),
            )),
            Err(AddDeviceError::StaleSequence { expected }) => Err(stale_sequence(expected)),
            Err(AddDeviceError::UnknownUser) => Err(error(
                ErrorCode::UnknownUser,
                "this account no longer exists",
            )),
            Err(AddDeviceError::Store(e)) => Err(internal(&e)),
        }
    }

    async fn remove_device(&mut self, remove: v1::RemoveDevice) -> RequestResult {
        let entry = remove
            .entry
            .ok_or_else(|| error(ErrorCode::InvalidRequest, "the log entry is missing"))?;
        let (username, mut state) = self.own_account().await?;
        let event = open_entry(&entry).map_err(|e| bad_log_entry("the log entry", &e))?;
        let Some(sotto_transparency::account_event::Change::DeviceRemoved(removed)) = &event.change
        else {
            return Err(error(
                ErrorCode::InvalidRequest,
                "RemoveDevice needs a DeviceRemoved log entry",
            ));
        };
        let device_id = DeviceId::from_slice(&removed.device_id).ok_or_else(|| {
            error(
                ErrorCode::InvalidRequest,
                format!("device_id must be {} bytes", sotto_proto::ID_LEN),
            )
        })?;
        if !state.devices.contains_key(device_id.as_bytes()) {
            return Err(error(
                ErrorCode::UnknownDevice,
                format!("{device_id} is not an active device of this account"),
            ));
        }
        state
            .apply(&entry)
            .map_err(|e| bad_log_entry("the DeviceRemoved entry", &e))?;
        let removal = DeviceRemoval {
            username,
            device_id,
            today: day_of(now_seconds()),
            log_entry: leaf_bytes(&entry),
            account_seq: event.account_seq,
        };
        match self.ctx.store.remove_device(removal).await {
            Ok(()) => {
                tracing::info!("device removed");
                // Its connections (this one too, if it removed itself) close
                // once this answer is sent.
                self.ctx.hub.disconnect(&device_id);
                done()
            }
            Err(RemoveDeviceError::UnknownDevice) => Err(error(
                ErrorCode::UnknownDevice,
                format!("{device_id} is not an active device of this account"),
            )),
            Err(RemoveDeviceError::StaleSequence { expected }) => Err(stale_sequence(expected)),
            Err(RemoveDeviceError::Store(e)) => Err(internal(&e)),
        }
    }

    fn authenticate(&mut self, device: DeviceId, username: String) {
        self.username = Some(username);
        self.device = Some(device);
        self.subscription = Some(self.ctx.hub.subscribe(device));
        self.need_fetch = true;
    }

    async fn register(&mut self, register: v1::Register) -> RequestResult {
        let invite = match self.ctx.registration {
            RegistrationPolicy::Open => None,
            RegistrationPolicy::Closed => {
                return Err(error(
                    ErrorCode::RegistrationClosed,
                    "this server does not accept new accounts",
                ));
            }
            RegistrationPolicy::Invite if register.invite_code.trim().is_empty() => {
                return Err(error(
                    ErrorCode::RegistrationClosed,
                    "this server needs an invite code to register; ask its operator for one",
                ));
            }
            RegistrationPolicy::Invite => Some(invite_hash(&register.invite_code)),
        };
        self.ctx
            .address_limits_for_registration
            .take(self.address)
            .map_err(|wait| rate_limited("registrations from your address", wait))?;
        if !sotto_proto::is_valid_username(&register.username) {
            return Err(error(
                ErrorCode::InvalidUsername,
                "a username is 3 to 32 characters of a-z, 0-9, '_', '.' and '-', starting with a letter or digit",
            ));
        }
        let identity_key = verifying_key(&register.identity_key).ok_or_else(|| {
            error(
                ErrorCode::InvalidRequest,
                "identity_key must be a 32-byte Ed25519 public key",
            )
        })?;
        let device = register
            .device
            .ok_or_else(|| error(ErrorCode::InvalidRequest, "the device is missing"))?;
        let (device_id, device_key) = certified_device(&device, &register.username, &identity_key)?;
        if register.log_entries.len() != 2 {
            return Err(error(
                ErrorCode::InvalidRequest,
                format!(
                    "Register carries {} log entries; it must carry the account's first two: \
                     IdentityRegistered (account_seq 0), then DeviceAdded for the device (account_seq 1)",
                    register.log_entries.len()
                ),
            ));
        }
        let state = AccountState::replay(&register.username, &register.log_entries)
            .map_err(|e| bad_log_entry("the registration's log entries are invalid", &e))?;
        if state.identity_key != identity_key.to_bytes() {
            return Err(error(
                ErrorCode::InvalidRequest,
                "the log entries name another identity key than identity_key",
            ));
        }
        let logged_device = state.devices.iter().next();
        if state.devices.len() != 1
            || logged_device != Some((device_id.as_bytes(), &device_key.to_bytes()))
        {
            return Err(error(
                ErrorCode::InvalidRequest,
                "the DeviceAdded entry must name the registered device (its id and key)",
            ));
        }
        let transcript =
            sotto_proto::auth_transcript(&self.nonce, &register.username, device_id.as_bytes());
        if !verifies(&device_key, &transcript, &register.challenge_signature) {
            return Err(error(
                ErrorCode::AuthenticationFailed,
                "the challenge signature does not verify; sign this connection's challenge nonce with the device key",
            ));
        }
        let account = NewAccount {
            username: register.username.clone(),
            identity_key: identity_key.to_bytes(),
            device_id,
            device_key: device_key.to_bytes(),
            device: SignedDevice {
                certificate: device.certificate,
                identity_signature: device.identity_signature,
            },
            today: day_of(now_seconds()),
            log_entries: register.log_entries.iter().map(leaf_bytes).collect(),
            invite,
        };
        match self.ctx.store.register(account).await {
            Ok(()) => {}
            Err(RegisterError::BadInvite) => {
                return Err(error(
                    ErrorCode::RegistrationClosed,
                    "this invite code is unknown or was already used",
                ));
            }
            Err(RegisterError::UsernameTaken) => {
                return Err(error(
                    ErrorCode::UsernameTaken,
                    format!(
                        "the username {} is taken; choose another",
                        register.username
                    ),
                ));
            }
            Err(RegisterError::DeviceIdTaken(id)) => {
                return Err(error(
                    ErrorCode::InvalidRequest,
                    format!(
                        "device id {id} is already registered; generate a new random device id"
                    ),
                ));
            }
            Err(RegisterError::Store(e)) => return Err(internal(&e)),
        }
        tracing::info!("account registered");
        self.authenticate(device_id, register.username);
        done()
    }

    async fn login(&mut self, login: v1::Login) -> RequestResult {
        let failed = || {
            error(
                ErrorCode::AuthenticationFailed,
                "login failed: unknown device or bad signature",
            )
        };
        let device_id = DeviceId::from_slice(&login.device_id).ok_or_else(failed)?;
        let record = self
            .ctx
            .store
            .device(&login.username, device_id)
            .await
            .map_err(|e| internal(&e))?
            .ok_or_else(failed)?;
        let key = VerifyingKey::from_bytes(&record.device_key).map_err(|_| failed())?;
        let transcript =
            sotto_proto::auth_transcript(&self.nonce, &login.username, device_id.as_bytes());
        if !verifies(&key, &transcript, &login.challenge_signature) {
            return Err(failed());
        }
        if record.removed {
            return Err(error(
                ErrorCode::DeviceRemoved,
                "this device was removed from its account",
            ));
        }
        // Only the day is kept, so a second login the same day writes
        // nothing (and waits for no fsync).
        let today = day_of(now_seconds());
        if record.last_seen_day < today {
            self.ctx
                .store
                .touch_device(device_id, today)
                .await
                .map_err(|e| internal(&e))?;
        }
        let status = self
            .ctx
            .store
            .key_package_status(device_id)
            .await
            .map_err(|e| internal(&e))?;
        self.authenticate(device_id, record.username);
        Ok(Some(response::Result::LoggedIn(v1::LoggedIn {
            key_packages_remaining: status.remaining,
            has_last_resort: status.has_last_resort,
        })))
    }

    async fn upload_key_packages(
        &mut self,
        device: DeviceId,
        upload: v1::UploadKeyPackages,
    ) -> RequestResult {
        if upload.key_packages.len() > sotto_proto::MAX_KEY_PACKAGES_PER_UPLOAD {
            return Err(error(
                ErrorCode::TooLarge,
                format!(
                    "{} KeyPackages in one upload; the limit is {}",
                    upload.key_packages.len(),
                    sotto_proto::MAX_KEY_PACKAGES_PER_UPLOAD
                ),
            ));
        }
        for kp in upload
            .key_packages
            .iter()
            .chain(std::iter::once(&upload.last_resort))
        {
            if kp.len() > MAX_KEY_PACKAGE_BYTES {
                return Err(error(
                    ErrorCode::TooLarge,
                    format!(
                        "a KeyPackage is {} bytes; the limit is {MAX_KEY_PACKAGE_BYTES} bytes",
                        kp.len()
                    ),
                ));
            }
        }
        if upload.key_packages.iter().any(Vec::is_empty) {
            return Err(error(
                ErrorCode::InvalidRequest,
                "an uploaded KeyPackage is empty",
            ));
        }
        let last_resort = (!upload.last_resort.is_empty()).then_some(upload.last_resort);
        self.ctx
            .store
            .upload_key_packages(device, upload.key_packages, last_resort)
            .await
            .map_err(|e| internal(&e))?;
        done()
    }

    async fn claim_key_packages(&mut self, claim: v1::ClaimKeyPackages) -> RequestResult {
        let unknown = || {
            error(
                ErrorCode::UnknownUser,
                format!("no account named {}", shown(&claim.username)),
            )
        };
        if !sotto_proto::is_valid_username(&claim.username) {
            return Err(unknown());
        }
        self.claim_bucket
            .take(self.ctx.limits.claims_per_connection, Instant::now())
            .map_err(|wait| rate_limited("KeyPackage claims on this connection", wait))?;
        self.ctx
            .address_limits
            .take(self.address)
            .map_err(|wait| rate_limited("sends and claims from your address", wait))?;
        self.ctx
            .claim_target_limits
            .take(claim.username.clone())
            .map_err(|wait| rate_limited("KeyPackage claims for this account", wait))?;
        if claim.device_ids.len() > sotto_proto::MAX_RECIPIENTS {
            return Err(error(
                ErrorCode::TooLarge,
                format!(
                    "{} device ids in one claim; the limit is {}",
                    claim.device_ids.len(),
                    sotto_proto::MAX_RECIPIENTS
                ),
            ));
        }
        let only = claim
            .device_ids
            .iter()
            .map(|id| {
                DeviceId::from_slice(id).ok_or_else(|| {
                    error(
                        ErrorCode::InvalidRequest,
                        format!(
                            "device ids are {} bytes, got {}",
                            sotto_proto::ID_LEN,
                            id.len()
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let bundle = self
            .ctx
            .store
            .claim_key_packages(&claim.username, only)
            .await
            .map_err(|e| internal(&e))?
            .ok_or_else(unknown)?;
        if bundle.devices.is_empty() {
            return Err(error(
                ErrorCode::NoKeyPackage,
                format!(
                    "{} has no KeyPackages left; they must come online to upload more",
                    claim.username
                ),
            ));
        }
        for claimed in &bundle.devices {
            if claimed.remaining < KEY_PACKAGES_LOW_WATERMARK {
                self.ctx.hub.notify(
                    [&claimed.device_id],
                    &MailboxEvent::KeyPackagesLow {
                        remaining: claimed.remaining,
                    },
                );
            }
        }
        let account_log = self
            .ctx
            .log
            .account_log(&*self.ctx.store, &claim.username)
            .await
            .map_err(|e| internal(&e))?;
        Ok(Some(response::Result::KeyPackages(v1::KeyPackageBundle {
            account_log,
            identity_key: bundle.identity_key.to_vec(),
            devices: bundle
                .devices
                .into_iter()
                .map(|c| v1::ClaimedKeyPackage {
                    device: Some(v1::SignedDevice {
                        certificate: c.device.certificate,
                        identity_signature: c.device.identity_signature,
                    }),
                    key_package: c.key_package,
                })
                .collect(),
        })))
    }

    /// Charges one key-log request to this connection's bucket.
    fn charge_log_request(&mut self) -> Result<(), v1::Error> {
        self.log_bucket
            .take(self.ctx.limits.log_requests_per_connection, Instant::now())
            .map_err(|wait| rate_limited("key-log requests on this connection", wait))
    }

    /// Charges one send to this connection's bucket and the capability's.
    fn charge_send(&mut self, token_hash: Option<[u8; 32]>) -> Result<(), v1::Error> {
        self.send_bucket
            .take(self.ctx.limits.sends_per_connection, Instant::now())
            .map_err(|wait| rate_limited("sends on this connection", wait))?;
        self.ctx
            .address_limits
            .take(self.address)
            .map_err(|wait| rate_limited("sends and claims from your address", wait))?;
        if let Some(hash) = token_hash {
            self.ctx
                .capability_limits
                .take(hash)
                .map_err(|wait| rate_limited("sends to this group", wait))?;
        }
        Ok(())
    }

    async fn send_message(&mut self, send: v1::SendMessage) -> RequestResult {
        let token_hash = capability_hash(&send.send_token).ok_or_else(|| {
            error(
                ErrorCode::NotAuthorized,
                "a send needs the group's 32-byte send capability",
            )
        })?;
        self.charge_send(Some(token_hash))?;
        let envelope = envelope(
            &send.message_id,
            &send.recipients,
            send.payload,
            1,
            "message",
        )?;
        let group_id = group_id(&send.group_id)?;
        // A leave is a proposal; every other proposal and commit goes
        // through the sequencer.
        let epoch = group_framing(
            &envelope.payload,
            &group_id,
            &[ContentType::Application, ContentType::Proposal],
            "message",
        )?;
        let message = GroupMessage {
            previous_epoch_open: self.ctx.epoch_grace.is_open(&group_id, Instant::now()),
            group_id,
            token_hash,
            epoch,
            envelope,
            now: now_seconds(),
        };
        match self.ctx.store.enqueue(message).await {
            // The store hands new entries to the hub once committed.
            Ok(Enqueued::Queued | Enqueued::Duplicate) => done(),
            Err(EnqueueError::UnknownGroup(group)) => Err(unknown_group(&group)),
            Err(EnqueueError::NotAuthorized) => Err(not_authorized()),
            Err(EnqueueError::WrongEpoch { framed, capability }) => {
                Err(mismatched_framing(format!(
                    "the message is framed for epoch {framed} but its capability is for epoch {capability}"
                )))
            }
            Err(EnqueueError::MailboxFull(device)) => Err(mailbox_full(device)),
            Err(EnqueueError::UnknownDevice(device)) => Err(unknown_device(device)),
            Err(EnqueueError::Store(e)) => Err(internal(&e)),
        }
    }

    async fn submit_commit(&mut self, commit: v1::SubmitCommit) -> RequestResult {
        let token_hash = if commit.send_token.is_empty() {
            None
        } else {
            Some(capability_hash(&commit.send_token).ok_or_else(not_authorized)?)
        };
        let next_token_hash: [u8; 32] =
            commit.next_token_hash.as_slice().try_into().map_err(|_| {
                error(
                    ErrorCode::InvalidRequest,
                    "a commit must carry the 32-byte hash of the next epoch's send capability",
                )
            })?;
        self.charge_send(token_hash)?;
        let group_id = group_id(&commit.group_id)?;
        let commit_envelope = envelope(
            &commit.message_id,
            &commit.recipients,
            commit.commit,
            0,
            "commit",
        )?;
        let framed_epoch = group_framing(
            &commit_envelope.payload,
            &group_id,
            &[ContentType::Commit],
            "commit",
        )?;
        if framed_epoch != commit.epoch {
            return Err(mismatched_framing(format!(
                "the commit is framed for epoch {framed_epoch} but submitted for epoch {}",
                commit.epoch
            )));
        }
        // At epoch 0 the creator is the only member: nobody else can be
        // sent the commit (otherwise anyone could deliver anything to
        // anyone by "creating" a group).
        if commit.epoch == 0 && !commit_envelope.recipients.is_empty() {
            return Err(error(
                ErrorCode::InvalidRequest,
                "the commit that creates a group has no recipients; new members get the Welcome",
            ));
        }
        let welcome = if commit.welcome.is_empty() {
            None
        } else {
            let welcome = envelope(
                &commit.welcome_message_id,
                &commit.welcome_recipients,
                commit.welcome,
                1,
                "welcome",
            )?;
            if Framing::parse(&welcome.payload) != Ok(Framing::Welcome) {
                return Err(mismatched_framing(
                    "the welcome is not an MLS Welcome".to_owned(),
                ));
            }
            Some(welcome)
        };
        let submission = CommitSubmission {
            group_id,
            epoch: commit.epoch,
            token_hash,
            next_token_hash,
            commit: commit_envelope,
            welcome,
            now: now_seconds(),
        };
        let group_id = submission.group_id.clone();
        match self.ctx.store.submit_commit(submission).await {
            Ok(accepted) => {
                if accepted.outcome == Enqueued::Queued {
                    self.ctx
                        .epoch_grace
                        .commit_accepted(&group_id, Instant::now());
                }
                done()
            }
            Err(CommitError::StaleEpoch { submitted, current }) => Err(v1::Error {
                current_epoch: current,
                ..error(
                    ErrorCode::StaleEpoch,
                    format!(
                        "commit for epoch {submitted} rejected: group is at epoch {current}; \
                         process pending messages and retry"
                    ),
                )
            }),
            Err(CommitError::UnknownGroup(group)) => Err(unknown_group(&group)),
            Err(CommitError::NotAuthorized) => Err(not_authorized()),
            Err(CommitError::MailboxFull(device)) => Err(mailbox_full(device)),
            Err(CommitError::UnknownDevice(device)) => Err(unknown_device(device)),
            Err(CommitError::Store(e)) => Err(internal(&e)),
        }
    }

    /// Pushes an entry straight from the hub when nothing older is waiting
    /// in the store. Entries reach a connection in `seq` order, so one at or
    /// below the cursor was already pushed by a fetch; anything else not
    /// pushed now is left to the next fetch.
    fn push_new(&mut self, entry: &NewEntry) -> Option<v1::ServerFrame> {
        // Dropped events must be noticed before a later entry moves the
        // cursor past them.
        self.on_missed();
        if entry.seq <= self.cursor {
            return None;
        }
        if self.need_fetch || self.in_flight.len() >= self.ctx.limits.max_in_flight {
            self.need_fetch = true;
            return None;
        }
        self.cursor = entry.seq;
        self.in_flight.insert(entry.seq);
        Some(delivery(
            entry.seq,
            entry.message_id,
            entry.payload.to_vec(),
        ))
    }

    /// Waits for the acknowledgement being committed, if any.
    async fn finish_ack_write(&mut self) -> Result<(), StoreError> {
        let Some(write) = self.ack_write.take() else {
            return Ok(());
        };
        write
            .await
            .map_err(|e| StoreError::Backend(format!("acknowledgement task failed: {e}")))?
            .map(|_deleted| ())
    }

    /// Pushes more of the mailbox if the window has room, and answers
    /// `Sync`s once everything is pushed and acknowledged.
    pub async fn pump(&mut self) -> Result<Vec<v1::ServerFrame>, StoreError> {
        let mut frames = Vec::new();
        let Some(device) = self.device else {
            return Ok(frames);
        };
        let room = self
            .ctx
            .limits
            .max_in_flight
            .saturating_sub(self.in_flight.len());
        if self.need_fetch && room > 0 {
            let entries = self
                .ctx
                .store
                .fetch_mailbox(device, self.cursor, room)
                .await?;
            if entries.len() < room {
                self.need_fetch = false;
            }
            for entry in entries {
                self.cursor = self.cursor.max(entry.seq);
                self.in_flight.insert(entry.seq);
                frames.push(delivery(entry.seq, entry.message_id, entry.payload));
            }
        }
        if !self.need_fetch && self.in_flight.is_empty() && !self.pending_syncs.is_empty() {
            // `SyncDone` promises the acknowledged entries are gone.
            self.finish_ack_write().await?;
            for request_id in self.pending_syncs.drain(..) {
                frames.push(v1::ServerFrame {
                    body: Some(server_frame::Body::Response(v1::Response {
                        request_id,
                        result: Some(response::Result::SyncDone(v1::SyncDone {})),
                    })),
                });
            }
        }
        Ok(frames)
    }
}

fn delivery(seq: u64, message_id: MessageId, payload: Vec<u8>) -> v1::ServerFrame {
    v1::ServerFrame {
        body: Some(server_frame::Body::Delivery(v1::Delivery {
            seq,
            message_id: message_id.as_bytes().to_vec(),
            payload,
        })),
    }
}

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
    socket
        .send(Message::Binary(frame.encode_to_vec().into()))
        .await
}

impl<S> Drop for Session<S> {
    fn drop(&mut self) {
        self.ctx.links.forget_connection(self.connection_id);
    }
}

/// Close code 1001: the server is going away.
const CLOSE_GOING_AWAY: u16 = 1001;
/// Close code 1008: the client broke a rule (here: a timeout).
const CLOSE_POLICY: u16 = 1008;
/// Close code 1011: the server hit an error it cannot recover from.
const CLOSE_INTERNAL: u16 = 1011;

/// Serves one WebSocket until the client leaves, a timeout fires, or the
/// server shuts down.
pub(crate) async fn serve<S: Store>(
    mut socket: WebSocket,
    ctx: Arc<Context<S>>,
    mut shutdown: watch::Receiver<bool>,
    address: IpAddr,
) {
    let limits = ctx.limits.clone();
    let mut session = Session::new(ctx, address);
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
                for frame in &frames {
                    if send_frame(&mut socket, frame).await.is_err() {
                        return;
                    }
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
                    Signal::Hub(event) => event,
                };
                let Some(event) = event else {
                    // The hub dropped this device: it was removed.
                    let _ = socket.send(close(CLOSE_POLICY, "this device was removed from its account")).await;
                    break;
                };
                if let Some(frame) = session.on_event(event)
                    && send_frame(&mut socket, &frame).await.is_err()
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

/// Deletes expired mailbox entries now and then every `interval`, until
/// `stop` fires.
pub(crate) async fn sweep_expired<S: Store>(
    store: Arc<S>,
    retention: Duration,
    interval: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = ticker.tick() => {
                let cutoff = now_seconds().saturating_sub(retention.as_secs());
                match store.expire(cutoff).await {
                    Ok(0) => {}
                    Ok(deleted) => tracing::info!(deleted, "expired mailbox entries"),
                    Err(e) => tracing::error!(error = %e, "expiry sweep failed"),
                }
            }
        }
    }
}
