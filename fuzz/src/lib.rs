//! The body of every fuzz target, one `pub fn` per target, so that the
//! targets (`fuzz_targets/*.rs`) are one line each and the regression
//! inputs under `regressions/<target>/` can be replayed by plain tests
//! (`cargo test` here) without libFuzzer.
//!
//! Nothing an attacker can send may panic: each function feeds the bytes to
//! the code that receives them and ignores the result. Setup that is not
//! attacker input (keys, a server over a temporary database, an MLS group)
//! is built once per process and may fail loudly.

#![forbid(unsafe_code)]
// Setup of the harness (not the code under test) may fail loudly.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{LazyLock, Mutex};

use arbitrary::{Arbitrary, Unstructured};
use ed25519_dalek::{Signer as _, SigningKey};
use prost::Message as _;
use sotto_core::group::{self, KeyCheck, KeyDirectory};
use sotto_core::identity::{Account, MemberId, Username};
use sotto_core::link::{LinkCode, LinkDirection};
use sotto_core::openmls_rust_crypto::OpenMlsRustCrypto;
use sotto_core::openmls_traits::OpenMlsProvider as _;
use sotto_proto::v1::{self, client_frame};
use sotto_transparency::{AccountState, LogKey};

/// Every target, by name, for the replay tests and the smoke script.
pub const TARGETS: &[(&str, fn(&[u8]))] = &[
    ("client_frame", client_frame),
    ("server_frame", server_frame),
    ("app_content", app_content),
    ("log_entry", log_entry),
    ("log_replay", log_replay),
    ("account_log", account_log),
    ("audit", audit),
    ("link", link),
    ("canary", canary),
    ("mls_process", mls_process),
    ("server_session", server_session),
];

/// `sotto_proto::decode_client_frame`: what the server decodes first.
pub fn client_frame(data: &[u8]) {
    if let Ok(frame) = sotto_proto::decode_client_frame(data) {
        // Re-encoding what was decoded must not panic either.
        let _ = frame.encode_to_vec();
    }
}

/// `sotto_proto::mls_framing`: the MLS header the server reads from every
/// payload it queues. What parses as a `PrivateMessage` must give back its
/// ciphertext, and re-framing that must parse the same.
pub fn mls_framing(data: &[u8]) {
    use sotto_proto::mls_framing::{Framing, opaque_private_message, private_ciphertext};
    if let Ok(Framing::Group {
        group_id,
        epoch,
        content_type,
        encrypted: true,
    }) = Framing::parse(data)
    {
        let ciphertext = private_ciphertext(data).unwrap_or_default();
        let again = opaque_private_message(&group_id, epoch, content_type, ciphertext);
        assert!(matches!(
            Framing::parse(&again),
            Ok(Framing::Group { epoch: e, .. }) if e == epoch
        ));
    }
}

/// `sotto_proto::decode_server_frame`: what a client decodes first.
pub fn server_frame(data: &[u8]) {
    if let Ok(frame) = sotto_proto::decode_server_frame(data) {
        let _ = frame.encode_to_vec();
    }
    // A delivery's payload may be the server's missed-messages notice.
    let _ = sotto_proto::missed_notice::parse(data);
}

/// `sotto_core::content::decode`: the plaintext inside an MLS application
/// message, from any group member.
pub fn app_content(data: &[u8]) {
    if let Ok(content) = sotto_core::content::decode(data) {
        let _ = sotto_core::content::encode(&content);
    }
}

/// MIMI chat content (`sotto_core::mimi::decode`) from a group member:
/// whatever decodes must encode back to the same bytes (it was
/// deterministic), and its meaning and URIs must be readable.
pub fn mimi_content(data: &[u8]) {
    use sotto_core::mimi;
    if let Ok(content) = mimi::decode(data) {
        assert_eq!(mimi::encode(&content).as_deref(), Ok(data));
        let _ = mimi::ChatAction::of(&content);
        let _ = mimi::SottoUris::check(&content.extensions, "alice", b"group");
    }
}

/// `LogEntry` → `AccountEvent` via `open_entry`, then a one-entry replay,
/// as clients do with entries the server hands out.
pub fn log_entry(data: &[u8]) {
    let Ok(entry) = v1::LogEntry::decode(data) else {
        return;
    };
    if let Ok(event) = sotto_transparency::open_entry(&entry) {
        let _ = AccountState::replay(&event.username, std::slice::from_ref(&entry));
    }
    let _ = v1::AccountEvent::decode(data);
}

/// The replay rules behind the signatures: arbitrary `AccountEvent`s,
/// re-signed by one fixed identity key (so they pass `open_entry`), replayed
/// as one account. The fuzzer cannot forge signatures; this reaches the
/// rules anyway.
pub fn log_replay(data: &[u8]) {
    static IDENTITY: LazyLock<SigningKey> = LazyLock::new(|| SigningKey::from_bytes(&[7; 32]));
    let mut u = Unstructured::new(data);
    let Ok(events) = Vec::<FuzzEvent>::arbitrary(&mut u) else {
        return;
    };
    let identity_public = IDENTITY.verifying_key().to_bytes();
    let mut username = None;
    let entries: Vec<v1::LogEntry> = events
        .into_iter()
        .take(64)
        .map(|e| {
            let mut event = e.event;
            if e.keep_identity_key {
                event.identity_key = identity_public.to_vec();
            }
            username.get_or_insert_with(|| event.username.clone());
            let bytes = event.encode_to_vec();
            let signature = IDENTITY
                .sign(&sotto_proto::log_event_transcript(&bytes))
                .to_bytes()
                .to_vec();
            v1::LogEntry {
                event: bytes,
                signature,
                ..v1::LogEntry::default()
            }
        })
        .collect();
    let username = username.unwrap_or_default();
    if let Ok(mut state) = AccountState::replay(&username, &entries) {
        for entry in &entries {
            let _ = state.apply(entry);
        }
    }
}

/// One event for [`log_replay`].
#[derive(Debug)]
struct FuzzEvent {
    event: v1::AccountEvent,
    keep_identity_key: bool,
}

impl<'a> Arbitrary<'a> for FuzzEvent {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let username: String = if u.arbitrary()? {
            "alice".into()
        } else {
            u.arbitrary()?
        };
        let account_seq = if u.arbitrary()? {
            u64::from(u.int_in_range(0u8..=4)?)
        } else {
            u.arbitrary()?
        };
        let device = |u: &mut Unstructured<'a>| -> arbitrary::Result<Vec<u8>> {
            if u.arbitrary()? {
                Ok(vec![u.int_in_range(0u8..=3)?; 16])
            } else {
                u.arbitrary()
            }
        };
        let change = match u.int_in_range(0u8..=3)? {
            0 => Some(v1::account_event::Change::IdentityRegistered(
                v1::IdentityRegistered {},
            )),
            1 => Some(v1::account_event::Change::DeviceAdded(v1::DeviceAdded {
                device_id: device(u)?,
                device_key: if u.arbitrary()? {
                    SigningKey::from_bytes(&[u.int_in_range(1u8..=3)?; 32])
                        .verifying_key()
                        .to_bytes()
                        .to_vec()
                } else {
                    u.arbitrary()?
                },
            })),
            2 => Some(v1::account_event::Change::DeviceRemoved(
                v1::DeviceRemoved {
                    device_id: device(u)?,
                },
            )),
            _ => None,
        };
        Ok(Self {
            event: v1::AccountEvent {
                username,
                identity_key: u.arbitrary()?,
                account_seq,
                change,
            },
            keep_identity_key: u.ratio(7, 8)?,
        })
    }
}

/// The fixed log key the log targets re-sign heads with.
static LOG_KEY: LazyLock<LogKey> = LazyLock::new(|| LogKey::from_secret(&[9; 32]).unwrap());

/// Re-signs a head with [`LOG_KEY`] so that the checks after the head's
/// signature are reached.
fn resign(head: &v1::SignedTreeHead) -> v1::SignedTreeHead {
    let mut root = [0u8; 32];
    for (r, h) in root.iter_mut().zip(&head.root_hash) {
        *r = *h;
    }
    LOG_KEY.sign_head(head.tree_size, root, head.timestamp_ms)
}

/// `verify_account_log` on arbitrary bytes decoded as an `AccountLog`: with
/// the head as sent (first byte even) or re-signed by the pinned key (odd),
/// so inclusion proofs and the replay are reached.
pub fn account_log(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(mut log) = v1::AccountLog::decode(rest) else {
        return;
    };
    if mode & 1 == 1
        && let Some(head) = log.head.as_mut()
    {
        *head = resign(head);
    }
    let username = log
        .entries
        .first()
        .and_then(|p| p.entry.as_ref())
        .and_then(|e| v1::AccountEvent::decode(e.event.as_slice()).ok())
        .map(|e| e.username)
        .unwrap_or_else(|| "alice".into());
    let _ = sotto_transparency::verify_account_log(&LOG_KEY.public(), &username, &log);
    if let Some(head) = &log.head {
        let _ = sotto_transparency::verify_head(&LOG_KEY.public(), head);
    }
}

/// `sotto_transparency::audit` (what `sotto audit URL` runs over what a
/// server sends): entries plus a head, re-signed as in [`account_log`].
pub fn audit(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(log) = v1::AccountLog::decode(rest) else {
        return;
    };
    let Some(mut head) = log.head else {
        return;
    };
    if mode & 1 == 1 {
        head = resign(&head);
    }
    let entries = log.entries.into_iter().filter_map(|p| p.entry);
    let _ = sotto_transparency::audit(&LOG_KEY.public(), entries, &head);
}

/// Link codes (typed or scanned by the user) and link envelopes (relayed
/// by the server): `LinkCode::parse`, then `open` under a fixed code, and
/// the protobuf a client decodes from an opened envelope.
pub fn link(data: &[u8]) {
    static CODE: LazyLock<LinkCode> = LazyLock::new(|| {
        LinkCode::parse("000102030405060708090a0b0c0d0e0f@http://127.0.0.1:8420").unwrap()
    });
    if let Ok(text) = std::str::from_utf8(data)
        && let Ok(code) = LinkCode::parse(text)
    {
        let _ = code.link_id();
        let _ = code.reveal();
    }
    let _ = CODE.open(LinkDirection::JoinRequest, data);
    let _ = CODE.fingerprint(data, data);
    // A well-sealed envelope around arbitrary content: what a client
    // decodes after `open`.
    if let Ok(sealed) = CODE.seal(LinkDirection::AccountBundle, data)
        && let Ok(opened) = CODE.open(LinkDirection::AccountBundle, &sealed)
    {
        let _ = v1::LinkJoinRequest::decode(opened.as_slice());
        let _ = v1::LinkBundle::decode(opened.as_slice());
    }
}

/// `sotto_client::canary::verify`: the JSON a server publishes at
/// `GET /canary`.
pub fn canary(data: &[u8]) {
    use sotto_client::canary::{CanaryPin, verify};
    let _ = verify(data, CanaryPin::LogKey(&[7; 32]));
    let _ = verify(data, CanaryPin::LegalKey(&[7; 32]));
}

/// Answers every key lookup with one verdict.
#[derive(Debug)]
struct Directory(bool);

impl KeyDirectory for Directory {
    fn check(&self, _member: &MemberId, _signature_key: &[u8]) -> KeyCheck {
        if self.0 {
            KeyCheck::Listed
        } else {
            KeyCheck::Unknown
        }
    }
}

/// A two-member group as seen by its second member, and real messages
/// for it.
struct MlsFixture {
    /// Bob's provider storage just after joining.
    snapshot: std::collections::HashMap<Vec<u8>, Vec<u8>>,
    /// Real messages to mutate: a Welcome, an application message, a
    /// proposal and commits.
    messages: Vec<Vec<u8>>,
}

static MLS: LazyLock<MlsFixture> = LazyLock::new(|| {
    let alice = Account::generate(Username::parse("alice").unwrap());
    let bob = Account::generate(Username::parse("bob").unwrap());
    let carol = Account::generate(Username::parse("carol").unwrap());
    let (pa, pb, pc) = (
        OpenMlsRustCrypto::default(),
        OpenMlsRustCrypto::default(),
        OpenMlsRustCrypto::default(),
    );
    let claim = |provider: &OpenMlsRustCrypto, account: &Account| {
        let claimed = v1::ClaimedKeyPackage {
            device: Some(account.signed_device()),
            key_package: group::new_key_package(provider, account, false).unwrap(),
        };
        group::check_key_package(
            provider,
            &account.username,
            &account.identity_public(),
            &claimed,
        )
        .unwrap()
    };
    let mut g = group::create_group(&pa, &alice).unwrap();
    let add = group::add_members(&pa, &mut g, &alice.device, &[claim(&pb, &bob)]).unwrap();
    group::merge_pending(&pa, &mut g).unwrap();
    let welcome = add.welcome.unwrap();
    group::process(&pb, &welcome, &Directory(true)).unwrap();
    let snapshot = pb.storage().values.read().unwrap().clone();

    let mut messages = vec![welcome];
    messages.push(group::encrypt(&pa, &mut g, &alice.device, b"hello bob").unwrap());
    let content = sotto_core::content::encode(&v1::AppContent::default());
    messages.push(group::encrypt(&pa, &mut g, &alice.device, &content).unwrap());
    let update = group::update_keys(&pa, &mut g, &alice.device).unwrap();
    messages.push(update.commit);
    group::clear_pending(&pa, &mut g).unwrap();
    let add_carol = group::add_members(&pa, &mut g, &alice.device, &[claim(&pc, &carol)]).unwrap();
    messages.push(add_carol.commit);
    messages.extend(add_carol.welcome);
    group::clear_pending(&pa, &mut g).unwrap();
    messages.push(group::leave(&pa, &mut g, &alice.device).unwrap());
    MlsFixture { snapshot, messages }
});

/// Serialises the MLS target: the fixture's provider is rebuilt per input.
static MLS_LOCK: Mutex<()> = Mutex::new(());

/// `sotto_core::group::process` (then `content::decode` on a decrypted
/// application message), with an in-memory provider holding a group
/// joined as its second member, restored before every input. The first
/// byte chooses: raw bytes, or one of the fixture's real messages patched
/// by the rest of the input; and a directory listing everybody or nobody.
pub fn mls_process(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fixture = &*MLS;
    let _guard = MLS_LOCK.lock();
    let payload = if mode & 1 == 0 {
        rest.to_vec()
    } else {
        patched(fixture, usize::from(mode >> 2), rest)
    };
    let provider = OpenMlsRustCrypto::default();
    if let Ok(mut values) = provider.storage().values.write() {
        values.clone_from(&fixture.snapshot);
    }
    let directory = Directory(mode & 2 == 2);
    let _ = group::group_id_of(&payload);
    if let Ok(group::Inbound::Application { plaintext, .. }) =
        group::process(&provider, &payload, &directory)
    {
        let _ = sotto_core::content::decode(&plaintext);
    }
}

/// One of the fixture's messages with byte patches applied: `rest` is a
/// list of (u16 offset, u8 value) triples; a trailing u16 truncates.
fn patched(fixture: &MlsFixture, choice: usize, rest: &[u8]) -> Vec<u8> {
    let count = fixture.messages.len().max(1);
    let mut message = fixture
        .messages
        .get(choice % count)
        .cloned()
        .unwrap_or_default();
    let mut chunks = rest.chunks_exact(3);
    for chunk in &mut chunks {
        if let [hi, lo, value] = *chunk {
            let len = message.len().max(1);
            let at = usize::from(u16::from_be_bytes([hi, lo])) % len;
            if let Some(byte) = message.get_mut(at) {
                *byte = value;
            }
        }
    }
    if let [hi, lo] = *chunks.remainder() {
        message.truncate(usize::from(u16::from_be_bytes([hi, lo])));
    }
    message
}

/// The server: a logged-in device's account, registered once.
struct ServerFixture {
    server: sotto_server::fuzzing::FuzzServer,
    account: Account,
    _dir: tempfile::TempDir,
}

static SERVER: LazyLock<Mutex<ServerFixture>> = LazyLock::new(|| {
    // tmpfs when there is one: the store fsyncs every commit.
    let shm = Path::new("/dev/shm");
    let dir = if shm.is_dir() {
        tempfile::tempdir_in(shm).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let server = sotto_server::fuzzing::FuzzServer::open(dir.path()).unwrap();
    let mut account = Account::generate(Username::parse("fuzzer").unwrap());
    // A fixed device id, so seed inputs (seeds/server_session.py) can name
    // it as a recipient.
    account.device_id = sotto_core::identity::DeviceId::from_slice(&[0x11; 16]).unwrap();
    let mut session = server.session();
    let register = v1::Register {
        username: account.username.to_string(),
        identity_key: account.identity_public().to_vec(),
        device: Some(account.signed_device()),
        challenge_signature: account.device.sign_login(
            &session.nonce(),
            &account.username,
            account.device_id,
        ),
        log_entries: account.registration_log_entries(),
        ..Default::default()
    };
    session.handle(&frame(client_frame::Body::Register(register)));
    assert!(
        session.is_authenticated(),
        "the fuzz account cannot register"
    );
    drop(session);
    Mutex::new(ServerFixture {
        server,
        account,
        _dir: dir,
    })
});

fn frame(body: client_frame::Body) -> Vec<u8> {
    v1::ClientFrame {
        request_id: 1,
        body: Some(body),
    }
    .encode_to_vec()
}

/// The server's path from WebSocket message to router: a fresh `Session`
/// (anonymous if the first byte is even, logged in as a registered device
/// if odd) handles each frame of the input; frames are separated by the
/// bytes `\xff\x00SOTTO\x00\xff` (so a single valid frame is a valid input).
pub fn server_session(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let fixture = SERVER.lock().unwrap_or_else(|e| e.into_inner());
    let mut session = fixture.server.session();
    if mode & 1 == 1 {
        let account = &fixture.account;
        let login = v1::Login {
            username: account.username.to_string(),
            device_id: account.device_id.as_bytes().to_vec(),
            challenge_signature: account.device.sign_login(
                &session.nonce(),
                &account.username,
                account.device_id,
            ),
        };
        session.handle(&frame(client_frame::Body::Login(login)));
    }
    for one in split_frames(rest).take(32) {
        let _ = session.handle(one);
    }
}

/// The separator between frames in a [`server_session`] input.
pub const FRAME_SEPARATOR: &[u8] = b"\xff\x00SOTTO\x00\xff";

fn split_frames(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let current = rest?;
        match current
            .windows(FRAME_SEPARATOR.len())
            .position(|w| w == FRAME_SEPARATOR)
        {
            Some(at) => {
                let (one, tail) = current.split_at(at);
                rest = tail.get(FRAME_SEPARATOR.len()..);
                Some(one)
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

/// Runs `target` on every file in `dir` (missing directory: nothing).
/// Returns how many files ran.
pub fn replay_dir(dir: &Path, target: fn(&[u8])) -> std::io::Result<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut n = 0;
    for entry in entries {
        let path = entry?.path();
        if path.is_file() {
            target(&std::fs::read(&path)?);
            n += 1;
        }
    }
    Ok(n)
}
