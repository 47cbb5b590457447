//! The protocol state of one client connection, like mini-redis's commands:
//! this file holds the state ([`Session`]) and the dispatch of each request
//! to the module of its family; the socket loop is in `crate::socket`.
//!
//! [`Session`] never touches the socket: it takes decoded bytes and returns
//! frames.
//!
//! - `auth`: `Register`, `Login`
//! - `devices`: `AddDevice`, `RemoveDevice`
//! - `key_packages`: `UploadKeyPackages`, `ClaimKeyPackages`
//! - `log`: key-log heads, account logs, proofs, entries
//! - `link`: the device-linking rendezvous
//! - `messages`: `SendMessage`, `SubmitCommit`
//! - `delivery`: pushing the mailbox, acknowledgements, `Sync`
//! - `parse` and `wire_error`: request fields in, refusals out

mod auth;
mod countersign;
mod delivery;
mod devices;
mod directory;
mod invite_links;
mod key_packages;
mod link;
mod log;
mod messages;
mod parse;
mod push;
mod report;
pub(crate) mod wire_error;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use prost::Message as _;
use rand::RngCore;
use sotto_proto::v1::{self, ErrorCode, client_frame::Body, response, server_frame};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{Limits, RegistrationPolicy, ServerConfig};
use crate::epoch_grace::EpochGrace;
use crate::key_directory::ServerDirectory;
use crate::link_rendezvous::{ConnectionId, LinkRendezvous};
use crate::mailbox_hub::{MailboxEvent, MailboxHub, Subscription};
use crate::metrics::Metrics;
use crate::rate_limit::{ConnectionBuckets, RateLimits};
use crate::store::{DeviceId, Store, UnixSeconds};
use crate::transparency_log::TransparencyLog;
use delivery::{AckWriteResult, AckWriter, DeliveryWindow};
use wire_error::error;

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
    /// The key directory, following the log.
    pub directory: Arc<ServerDirectory>,
    pub links: Arc<LinkRendezvous>,
    /// Every shared rate limit, and the rates of each connection's own.
    pub rate_limits: RateLimits,
    /// Who may create accounts.
    pub registration: RegistrationPolicy,
    /// Groups whose previous epoch's capability is still accepted.
    pub epoch_grace: Arc<EpochGrace>,
    /// Counters for `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Auditors whose countersignatures this server stores (the operator's
    /// invitation: `--auditor`).
    pub auditors: Vec<[u8; 32]>,
    /// Web Push: the VAPID key and the allowed push services.
    pub push: Arc<crate::push::WebPush>,
}

impl<S: Store> Context<S> {
    /// Everything connections share, for a server configured by `config`.
    pub fn new(
        store: Arc<S>,
        log: TransparencyLog,
        directory: Arc<ServerDirectory>,
        push: Arc<crate::push::WebPush>,
        config: &ServerConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            directory,
            hub: MailboxHub::fed_by(&*store),
            store,
            limits: config.limits.clone(),
            log,
            links: Arc::default(),
            rate_limits: RateLimits::new(&config.limits, Arc::clone(&metrics)),
            registration: config.registration,
            epoch_grace: Arc::new(EpochGrace::new(config.previous_epoch_grace)),
            metrics,
            auditors: config.auditors.clone(),
            push,
        }
    }
}

/// Seconds since the Unix epoch, from the system clock.
pub(crate) fn now_seconds() -> UnixSeconds {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

type RequestResult = Result<Option<response::Result>, v1::Error>;

/// Something for a connection that did not come from its client.
#[derive(Debug)]
pub(crate) enum Signal {
    /// From the mailbox hub; `None` when the hub dropped the device.
    Hub(Option<MailboxEvent>),
    /// The hub dropped events for this connection.
    Missed,
    /// A link frame to push.
    Link(server_frame::Body),
    /// The acknowledgement write that others waited for finished: hand it
    /// to [`Session::ack_written`].
    AckWritten(AckWriteResult),
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
    /// When a connection that has not logged in is closed: the handshake
    /// timeout after it opened or after its last request that needs no
    /// login (key log, claims, sends), pushed back while it waits on a
    /// joined link. Every connection has one until it logs in, so one that
    /// read the log once cannot then hold its slot with pings alone.
    handshake_deadline: Instant,
    /// The client's address, for per-address rate limits; never stored or
    /// logged.
    address: IpAddr,
    /// This connection's own rate-limit buckets.
    buckets: ConnectionBuckets,
    subscription: Option<Subscription>,
    /// What of the device's mailbox this connection pushed and owes.
    window: DeliveryWindow,
    /// Acknowledgements being committed, and those waiting for that.
    acks: AckWriter,
}

impl<S: Store> Session<S> {
    pub fn new(ctx: Arc<Context<S>>, address: IpAddr) -> Self {
        let mut nonce = [0; sotto_proto::NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let connection_id = ctx.links.connection_id();
        let handshake_deadline = Instant::now() + ctx.limits.handshake_timeout;
        let buckets = ctx.rate_limits.connection(Instant::now());
        let window = DeliveryWindow::new(ctx.limits.max_in_flight);
        ctx.metrics.open.inc();
        Self {
            ctx,
            nonce,
            device: None,
            username: None,
            connection_id,
            link: None,
            handshake_deadline,
            address,
            buckets,
            subscription: None,
            window,
            acks: AckWriter::default(),
        }
    }

    pub fn challenge(&self) -> v1::ServerFrame {
        v1::ServerFrame {
            body: Some(server_frame::Body::Challenge(v1::Challenge {
                protocol_version: sotto_proto::PROTOCOL_VERSION,
                nonce: self.nonce.to_vec(),
                log_key: self.ctx.log.public_key().to_vec(),
                franking_key: Some(self.ctx.log.franking().vouched().clone()),
            })),
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.device.is_some()
    }

    /// When the connection is closed for inactivity, given when the idle
    /// timeout would close it.
    pub fn deadline(&self, idle: Instant) -> Instant {
        if self.device.is_some() {
            idle
        } else {
            idle.min(self.handshake_deadline)
        }
    }

    /// Waits for the next hub signal (`None`: the hub dropped this device,
    /// which was removed) or link frame; hub signals only after login.
    pub async fn next_signal(&mut self) -> Signal {
        let Self {
            subscription,
            link,
            acks,
            ..
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
            written = acks.written() => Signal::AckWritten(written),
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
            self.window.must_fetch();
        }
    }

    /// Reacts to a hub signal, returning an encoded frame to push if any.
    pub fn on_event(&mut self, event: MailboxEvent) -> Option<Vec<u8>> {
        match event {
            MailboxEvent::Entry(entry) => self.push_new(&entry),
            MailboxEvent::Ephemeral {
                message_id,
                payload,
            } => Some(self.push_ephemeral(message_id, &payload)),
            MailboxEvent::KeyPackagesLow { remaining } => Some(
                v1::ServerFrame {
                    body: Some(server_frame::Body::KeyPackagesLow(v1::KeyPackagesLow {
                        remaining,
                    })),
                }
                .encode_to_vec(),
            ),
        }
    }

    /// Handles one binary message; returns the response to send, if any.
    pub async fn handle_bytes(&mut self, bytes: &[u8]) -> Option<v1::Response> {
        let frame = match sotto_proto::decode_client_frame(bytes) {
            Ok(frame) => frame,
            Err(e) => {
                self.ctx.metrics.refused(ErrorCode::MalformedFrame as i32);
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
            Err(e) => {
                self.ctx.metrics.refused(e.code);
                response::Result::Error(e)
            }
        };
        Some(v1::Response {
            request_id,
            result: Some(result),
        })
    }

    /// Dispatches one request to the module of its family.
    async fn handle(&mut self, request_id: u64, body: Body) -> RequestResult {
        // The key log, claims and sends need no login (sealed sender: they
        // say nothing about who makes them; capabilities and rate limits
        // govern them). Each one renews the handshake deadline of a
        // connection that has not logged in: the anonymous connection lives
        // while it works (each request costs it rate-limit tokens; pings
        // cost nothing, so they do not count), and is closed once idle for
        // the handshake timeout (the client reconnects when it next needs
        // one, which also keeps anonymous connections short-lived).
        if self.device.is_none()
            && matches!(
                body,
                Body::GetLogHead(_)
                    | Body::GetAccountLog(_)
                    | Body::GetConsistency(_)
                    | Body::GetLogEntries(_)
                    | Body::SubmitCountersignature(_)
                    | Body::GetCountersignatures(_)
                    | Body::GetDirectoryEpoch(_)
                    | Body::LookupAccount(_)
                    | Body::GetDirectoryAudit(_)
                    | Body::GetWebRelease(_)
                    | Body::ClaimKeyPackages(_)
                    | Body::SendMessage(_)
                    | Body::SubmitCommit(_)
                    | Body::PublishGroupInfo(_)
                    | Body::FetchGroupInfo(_)
            )
        {
            self.handshake_deadline = self
                .handshake_deadline
                .max(Instant::now() + self.ctx.limits.handshake_timeout);
        }
        match (self.device, body) {
            (_, Body::GetLogHead(_)) => self.get_log_head().await,
            (_, Body::GetAccountLog(request)) => self.get_account_log(&request.username).await,
            (_, Body::GetConsistency(request)) => self.get_consistency(request).await,
            // The log's entries name every account: serving them would let
            // anyone list who uses this server. Audits check the key
            // directory instead, which names nobody (`sotto audit`).
            (_, Body::GetLogEntries(_)) => Err(error(
                ErrorCode::NotAuthorized,
                "the key log's entries are not served (they name accounts); audit the key \
                 directory instead: sotto audit URL",
            )),
            (_, Body::SubmitCountersignature(request)) => {
                self.submit_countersignature(request).await
            }
            (_, Body::GetCountersignatures(request)) => self.get_countersignatures(request).await,
            (_, Body::GetDirectoryEpoch(_)) => self.get_directory_epoch().await,
            (_, Body::LookupAccount(request)) => self.lookup_account(&request.username).await,
            (_, Body::GetDirectoryAudit(request)) => self.get_directory_audit(request).await,
            (_, Body::GetWebRelease(_)) => self.get_web_release().await,
            (_, Body::JoinLink(join)) => self.join_link(join).await,
            (_, Body::ClaimKeyPackages(claim)) => self.claim_key_packages(claim).await,
            (_, Body::SendMessage(send)) => self.send_message(send).await,
            (_, Body::SubmitCommit(commit)) => self.submit_commit(commit).await,
            (_, Body::PublishGroupInfo(publish)) => self.publish_group_info(publish).await,
            (_, Body::FetchGroupInfo(fetch)) => self.fetch_group_info(fetch).await,
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
            (Some(_), Body::Ack(ack)) => {
                self.acknowledge(ack.seqs).await?;
                Ok(None)
            }
            (Some(_), Body::Sync(_)) => {
                self.window.sync_requested(request_id);
                Ok(None)
            }
            (Some(_), Body::AddDevice(add)) => self.add_device(add).await,
            (Some(_), Body::RemoveDevice(remove)) => self.remove_device(remove).await,
            (Some(_), Body::OpenLink(open)) => self.open_link(open).await,
            (Some(_), Body::CompleteLink(complete)) => self.complete_link(complete),
            (Some(_), Body::ReportMessage(report)) => self.report_message(report).await,
            (Some(_), Body::GetPushKey(_)) => self.get_push_key(),
            (Some(device), Body::SetPushEndpoint(request)) => {
                self.set_push_endpoint(device, request).await
            }
        }
    }

    fn authenticate(&mut self, device: DeviceId, username: String) {
        if self.device.is_none() {
            self.ctx.metrics.logged_in.inc();
        }
        self.username = Some(username);
        self.device = Some(device);
        self.subscription = Some(self.ctx.hub.subscribe(device));
        self.window.must_fetch();
    }
}

impl<S> Drop for Session<S> {
    fn drop(&mut self) {
        self.ctx.metrics.open.dec();
        if self.device.is_some() {
            self.ctx.metrics.logged_in.dec();
        }
        self.ctx.links.forget_connection(self.connection_id);
    }
}
