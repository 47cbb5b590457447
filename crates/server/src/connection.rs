//! One client connection: the challenge, authentication, requests, and the
//! push of the device's mailbox with a bounded window of unacknowledged
//! deliveries.
//!
//! [`Session`] holds the protocol state and never touches the socket: it
//! takes decoded bytes and returns frames. [`serve`] owns the WebSocket,
//! the timers and the shutdown signal.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use ed25519_dalek::{Signature, VerifyingKey};
use prost::Message as _;
use rand::RngCore;
use sotto_proto::v1::{self, ErrorCode, client_frame::Body, response, server_frame};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};

use crate::config::Limits;
use crate::mailbox_hub::{MailboxEvent, MailboxHub, Subscription};
use crate::store::{
    CommitError, CommitSubmission, DeviceId, EnqueueError, Enqueued, Envelope, GroupId,
    GroupMessage, MessageId, NewAccount, RegisterError, SignedDevice, Store, StoreError,
    UnixSeconds, day_of,
};

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
        format!("unknown device {device}: every recipient must be a registered device"),
    )
}

fn unknown_group(group: &GroupId) -> v1::Error {
    error(ErrorCode::UnknownGroup, format!("unknown group {group}"))
}

/// The protocol state of one connection.
#[derive(Debug)]
pub(crate) struct Session<S> {
    ctx: Arc<Context<S>>,
    nonce: [u8; sotto_proto::NONCE_LEN],
    device: Option<DeviceId>,
    subscription: Option<Subscription>,
    /// Highest seq pushed on this connection.
    cursor: u64,
    /// Pushed and not yet acknowledged.
    in_flight: BTreeSet<u64>,
    /// The mailbox may hold entries not yet pushed.
    need_fetch: bool,
    /// Request ids of `Sync`s waiting for the mailbox to drain.
    pending_syncs: Vec<u64>,
}

impl<S: Store> Session<S> {
    pub fn new(ctx: Arc<Context<S>>) -> Self {
        let mut nonce = [0; sotto_proto::NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        Self {
            ctx,
            nonce,
            device: None,
            subscription: None,
            cursor: 0,
            in_flight: BTreeSet::new(),
            need_fetch: false,
            pending_syncs: Vec::new(),
        }
    }

    pub fn challenge(&self) -> v1::ServerFrame {
        v1::ServerFrame {
            body: Some(server_frame::Body::Challenge(v1::Challenge {
                protocol_version: sotto_proto::PROTOCOL_VERSION,
                nonce: self.nonce.to_vec(),
            })),
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.device.is_some()
    }

    /// Waits for the next hub signal; never resolves before login.
    pub async fn next_event(&mut self) -> Option<MailboxEvent> {
        match &mut self.subscription {
            Some(sub) => sub.events.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Reacts to a hub signal, returning a frame to push if any.
    pub fn on_event(&mut self, event: MailboxEvent) -> Option<v1::ServerFrame> {
        match event {
            MailboxEvent::Wake => {
                self.need_fetch = true;
                None
            }
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
            (Some(_), Body::ClaimKeyPackages(claim)) => self.claim_key_packages(claim).await,
            (Some(_), Body::SendMessage(send)) => self.send_message(send).await,
            (Some(_), Body::SubmitCommit(commit)) => self.submit_commit(commit).await,
            (Some(device), Body::Ack(ack)) => {
                self.ctx
                    .store
                    .ack(device, ack.seqs.clone())
                    .await
                    .map_err(|e| internal(&e))?;
                for seq in ack.seqs {
                    self.in_flight.remove(&seq);
                }
                self.need_fetch = true;
                Ok(None)
            }
            (Some(_), Body::Sync(_)) => {
                self.pending_syncs.push(request_id);
                self.need_fetch = true;
                Ok(None)
            }
        }
    }

    fn authenticate(&mut self, device: DeviceId) {
        self.device = Some(device);
        self.subscription = Some(self.ctx.hub.subscribe(device));
        self.need_fetch = true;
    }

    async fn register(&mut self, register: v1::Register) -> RequestResult {
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
        let certificate =
            v1::DeviceCertificate::decode(device.certificate.as_slice()).map_err(|_| {
                error(
                    ErrorCode::InvalidRequest,
                    "the device certificate is not a valid DeviceCertificate",
                )
            })?;
        if certificate.username != register.username {
            return Err(error(
                ErrorCode::InvalidRequest,
                format!(
                    "the device certificate is for {:?}, not {:?}",
                    shown(&certificate.username),
                    register.username
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
            &identity_key,
            &sotto_proto::device_transcript(&device.certificate),
            &device.identity_signature,
        ) {
            return Err(error(
                ErrorCode::AuthenticationFailed,
                "the identity key's signature over the device certificate does not verify",
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
        };
        match self.ctx.store.register(account).await {
            Ok(()) => {}
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
        self.authenticate(device_id);
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
        self.ctx
            .store
            .touch_device(device_id, day_of(now_seconds()))
            .await
            .map_err(|e| internal(&e))?;
        let status = self
            .ctx
            .store
            .key_package_status(device_id)
            .await
            .map_err(|e| internal(&e))?;
        self.authenticate(device_id);
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
        let bundle = self
            .ctx
            .store
            .claim_key_packages(&claim.username)
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
                    MailboxEvent::KeyPackagesLow {
                        remaining: claimed.remaining,
                    },
                );
            }
        }
        Ok(Some(response::Result::KeyPackages(v1::KeyPackageBundle {
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

    async fn send_message(&mut self, send: v1::SendMessage) -> RequestResult {
        let envelope = envelope(
            &send.message_id,
            &send.recipients,
            send.payload,
            1,
            "message",
        )?;
        let group_id = group_id(&send.group_id)?;
        let recipients = envelope.recipients.clone();
        let message = GroupMessage {
            group_id,
            envelope,
            now: now_seconds(),
        };
        match self.ctx.store.enqueue(message).await {
            Ok(Enqueued::Queued | Enqueued::Duplicate) => {
                self.ctx.hub.notify(&recipients, MailboxEvent::Wake);
                done()
            }
            Err(EnqueueError::UnknownGroup(group)) => Err(unknown_group(&group)),
            Err(EnqueueError::UnknownDevice(device)) => Err(unknown_device(device)),
            Err(EnqueueError::Store(e)) => Err(internal(&e)),
        }
    }

    async fn submit_commit(&mut self, commit: v1::SubmitCommit) -> RequestResult {
        let group_id = group_id(&commit.group_id)?;
        let commit_envelope = envelope(
            &commit.message_id,
            &commit.recipients,
            commit.commit,
            0,
            "commit",
        )?;
        let welcome = if commit.welcome.is_empty() {
            None
        } else {
            Some(envelope(
                &commit.welcome_message_id,
                &commit.welcome_recipients,
                commit.welcome,
                1,
                "welcome",
            )?)
        };
        let mut woken: Vec<DeviceId> = commit_envelope.recipients.clone();
        woken.extend(welcome.iter().flat_map(|w| w.recipients.iter().copied()));
        let submission = CommitSubmission {
            group_id,
            epoch: commit.epoch,
            commit: commit_envelope,
            welcome,
            now: now_seconds(),
        };
        match self.ctx.store.submit_commit(submission).await {
            Ok(_) => {
                self.ctx.hub.notify(&woken, MailboxEvent::Wake);
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
            Err(CommitError::UnknownDevice(device)) => Err(unknown_device(device)),
            Err(CommitError::Store(e)) => Err(internal(&e)),
        }
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
                frames.push(v1::ServerFrame {
                    body: Some(server_frame::Body::Delivery(v1::Delivery {
                        seq: entry.seq,
                        message_id: entry.message_id.as_bytes().to_vec(),
                        payload: entry.payload,
                    })),
                });
            }
        }
        if !self.need_fetch && self.in_flight.is_empty() {
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
) {
    let limits = ctx.limits.clone();
    let mut session = Session::new(ctx);
    if send_frame(&mut socket, &session.challenge()).await.is_err() {
        return;
    }
    let handshake_deadline = Instant::now() + limits.handshake_timeout;
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
        let deadline = if session.is_authenticated() {
            idle_deadline
        } else {
            idle_deadline.min(handshake_deadline)
        };
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
            event = session.next_event() => {
                if let Some(frame) = event.and_then(|e| session.on_event(e))
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
