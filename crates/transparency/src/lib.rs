//! Sotto's transparency log: every account's identity key and devices, in a
//! public, append-only Merkle log that anyone can check.
//!
//! The log is an RFC 6962 Merkle tree (SHA-256, built with `ct-merkle`)
//! whose leaves are encoded [`LogEntry`] messages. Each entry is an
//! [`AccountEvent`] (identity registered, device added, device removed)
//! signed by the account's identity key, so the server cannot invent one.
//! The server signs [`SignedTreeHead`]s with its [`LogKey`] and proves
//! inclusion of entries and consistency between heads; clients check those
//! proofs ([`verify_account_log`], [`verify_consistency`]) and replay an
//! account's entries ([`AccountState`]) to learn which devices it really has.
//! [`audit`] checks a whole log.
//!
//! No I/O: the server stores the leaves and feeds them to [`MerkleLog`];
//! clients pass in what the server sent.
//!
//! ```
//! use ed25519_dalek::{Signer, SigningKey};
//! use prost::Message;
//! use sotto_transparency::{
//!     AccountEvent, LogEntry, LogKey, MerkleLog, account_event, leaf_bytes, verify_head,
//!     verify_inclusion,
//! };
//!
//! // An account signs its first event with its identity key.
//! let identity = SigningKey::from_bytes(&[7; 32]);
//! let event = AccountEvent {
//!     username: "alice".into(),
//!     identity_key: identity.verifying_key().to_bytes().to_vec(),
//!     account_seq: 0,
//!     change: Some(account_event::Change::IdentityRegistered(Default::default())),
//! }
//! .encode_to_vec();
//! let signature = identity.sign(&sotto_proto::log_event_transcript(&event));
//! let entry = LogEntry { event, signature: signature.to_bytes().to_vec() };
//!
//! // The server appends it and signs a head.
//! let key = LogKey::generate();
//! let mut log = MerkleLog::new();
//! log.push(&leaf_bytes(&entry));
//! let head = key.sign_head(log.len(), log.root(), 1_700_000_000_000);
//! let path = log.inclusion_path(0, log.len()).unwrap();
//!
//! // A client checks the head and the entry's inclusion.
//! verify_head(&key.public(), &head).unwrap();
//! verify_inclusion(&head, 0, &leaf_bytes(&entry), &path).unwrap();
//! ```

#![forbid(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{InclusionProof, RootHash};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use prost::Message;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

pub use sotto_proto::v1::{
    AccountEvent, AccountLog, ConsistencyProof, LogEntry, ProvenEntry, SignedTreeHead,
    account_event,
};

/// A SHA-256 Merkle tree hash.
pub type Hash = [u8; 32];

/// Largest tree size accepted from anyone: far beyond any real log, and
/// small enough that the tree arithmetic in `ct-merkle` cannot overflow.
pub const MAX_TREE_SIZE: u64 = 1 << 62;

/// Length of one node hash in a proof path.
const HASH_LEN: usize = 32;

type Tree = MemoryBackedTree<Sha256, Arc<[u8]>>;

/// Why log data was refused. All but [`LogError::OutOfRange`] mean that
/// whoever produced the data (the server, or the account that signed an
/// entry) misbehaved or the data was damaged on the way.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LogError {
    /// Bytes that do not decode, or a field of the wrong length.
    #[error("malformed log data: {0}")]
    Malformed(&'static str),
    /// A signature (of an identity key or of the log key) does not verify.
    #[error("signature does not verify: {0}")]
    BadSignature(&'static str),
    /// An inclusion or consistency proof does not verify.
    #[error("the log's proof does not verify: {0}")]
    BadProof(String),
    /// The entries of an account break the replay rules (wrong order,
    /// another identity key, a device added twice, ...).
    #[error("the account's log history is inconsistent: {0}")]
    Replay(String),
    /// The caller asked for something outside the tree (a proof for an
    /// index or size the log does not have). The caller's mistake.
    #[error("out of range: {0}")]
    OutOfRange(String),
}

/// The encoded leaf of an entry: what the tree hashes. Use this rather than
/// encoding by hand so that server and clients agree byte for byte.
pub fn leaf_bytes(entry: &LogEntry) -> Vec<u8> {
    entry.encode_to_vec()
}

/// The RFC 6962 hash of the empty tree: SHA-256 of no bytes.
pub fn empty_root() -> Hash {
    Sha256::digest(b"").into()
}

fn to_hash(bytes: &[u8], what: &'static str) -> Result<Hash, LogError> {
    Hash::try_from(bytes).map_err(|_| LogError::Malformed(what))
}

fn verifying_key(bytes: &[u8], what: &'static str) -> Result<VerifyingKey, LogError> {
    let bytes = <[u8; 32]>::try_from(bytes).map_err(|_| LogError::Malformed(what))?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| LogError::Malformed(what))
}

fn verify_signature(
    key: &VerifyingKey,
    message: &[u8],
    signature: &[u8],
    what: &'static str,
) -> Result<(), LogError> {
    let signature = Signature::from_slice(signature).map_err(|_| LogError::BadSignature(what))?;
    key.verify_strict(message, &signature)
        .map_err(|_| LogError::BadSignature(what))
}

// ---------------------------------------------------------------- log key

/// The server's log signing key (Ed25519). It signs tree heads; clients
/// learn its public half from the server's `Challenge`. `Debug` redacts the
/// secret, and the secret is zeroized on drop.
pub struct LogKey {
    key: SigningKey,
}

impl fmt::Debug for LogKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogKey")
            .field("public", &hex::encode(self.public()))
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl LogKey {
    /// A new random key, from the operating system's RNG.
    pub fn generate() -> Self {
        Self {
            key: SigningKey::generate(&mut rand::rngs::OsRng),
        }
    }

    /// Loads a key from its 32-byte secret (as returned by [`Self::secret`]).
    pub fn from_secret(secret: &[u8]) -> Result<Self, LogError> {
        let bytes = Zeroizing::new(
            <[u8; 32]>::try_from(secret)
                .map_err(|_| LogError::Malformed("a log key secret is 32 bytes"))?,
        );
        Ok(Self {
            key: SigningKey::from_bytes(&bytes),
        })
    }

    /// The 32-byte secret, for storing the key.
    pub fn secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    /// The public key that verifies heads.
    pub fn public(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Signs a statement that the tree of `tree_size` leaves has root `root`.
    pub fn sign_head(&self, tree_size: u64, root: Hash, timestamp_ms: u64) -> SignedTreeHead {
        let transcript = sotto_proto::tree_head_transcript(tree_size, &root, timestamp_ms);
        SignedTreeHead {
            tree_size,
            root_hash: root.to_vec(),
            timestamp_ms,
            signature: self.key.sign(&transcript).to_bytes().to_vec(),
        }
    }
}

/// Checks that `head` is signed by `log_key` (the server's public log key)
/// and well formed.
pub fn verify_head(log_key: &[u8], head: &SignedTreeHead) -> Result<(), LogError> {
    let key = verifying_key(log_key, "the log key must be a 32-byte Ed25519 public key")?;
    to_hash(&head.root_hash, "a tree head's root hash must be 32 bytes")?;
    if head.tree_size > MAX_TREE_SIZE {
        return Err(LogError::Malformed(
            "a tree head's size is impossibly large",
        ));
    }
    let transcript =
        sotto_proto::tree_head_transcript(head.tree_size, &head.root_hash, head.timestamp_ms);
    verify_signature(
        &key,
        &transcript,
        &head.signature,
        "the tree head is not signed by the server's log key",
    )
}

// ---------------------------------------------------------------- tree

/// The whole tree, in memory, for the server. Rebuilt from the stored
/// leaves at startup; proofs can be made against any earlier size.
#[derive(Clone, Default)]
pub struct MerkleLog {
    tree: Tree,
}

impl fmt::Debug for MerkleLog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MerkleLog")
            .field("len", &self.len())
            .field("root", &hex::encode(self.root()))
            .finish()
    }
}

impl MerkleLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one leaf (an encoded [`LogEntry`], see [`leaf_bytes`]).
    pub fn push(&mut self, leaf: &[u8]) {
        self.tree.push(Arc::from(leaf));
    }

    /// Number of leaves.
    pub fn len(&self) -> u64 {
        self.tree.len()
    }

    /// Whether the log has no leaves.
    pub fn is_empty(&self) -> bool {
        self.tree.is_empty()
    }

    /// The leaf at `index`, if there is one.
    pub fn get(&self, index: u64) -> Option<&[u8]> {
        let index = usize::try_from(index).ok()?;
        self.tree.get(index).map(|leaf| &**leaf)
    }

    /// The root of the whole tree ([`empty_root`] when empty).
    pub fn root(&self) -> Hash {
        (*self.tree.root().as_bytes()).into()
    }

    /// The root of the tree made of the first `tree_size` leaves.
    pub fn root_at(&self, tree_size: u64) -> Result<Hash, LogError> {
        self.with_prefix(tree_size, |tree| (*tree.root().as_bytes()).into())
    }

    /// Runs `f` on the tree of the first `size` leaves. The current tree is
    /// used as is; an older size is rebuilt from its leaves (linear in
    /// `size`: `ct-merkle` keeps only the newest tree's nodes).
    fn with_prefix<R>(&self, size: u64, f: impl FnOnce(&Tree) -> R) -> Result<R, LogError> {
        if size > self.len() {
            return Err(LogError::OutOfRange(format!(
                "the log has {} entries, not {size}",
                self.len()
            )));
        }
        if size == self.len() {
            return Ok(f(&self.tree));
        }
        let mut prefix = Tree::new();
        for leaf in self
            .tree
            .items()
            .iter()
            .take(usize::try_from(size).unwrap_or(usize::MAX))
        {
            prefix.push(Arc::clone(leaf));
        }
        Ok(f(&prefix))
    }

    /// The RFC 6962 audit path of leaf `index` in the tree of the first
    /// `tree_size` leaves (`index < tree_size <= len`), leaf to root.
    pub fn inclusion_path(&self, index: u64, tree_size: u64) -> Result<Vec<Vec<u8>>, LogError> {
        if index >= tree_size {
            return Err(LogError::OutOfRange(format!(
                "entry {index} is not in a tree of {tree_size} entries"
            )));
        }
        let position = usize::try_from(index)
            .map_err(|_| LogError::OutOfRange(format!("entry {index} is too large an index")))?;
        let proof = self.with_prefix(tree_size, |tree| tree.prove_inclusion(position))?;
        Ok(split_path(proof.as_bytes()))
    }

    /// The RFC 6962 proof that the tree of `old_size` leaves is a prefix of
    /// the tree of `new_size` leaves (`old_size <= new_size <= len`). Empty
    /// when `old_size` is 0 or equals `new_size`.
    pub fn consistency_path(&self, old_size: u64, new_size: u64) -> Result<Vec<Vec<u8>>, LogError> {
        if old_size > new_size {
            return Err(LogError::OutOfRange(format!(
                "the old size {old_size} is larger than the new size {new_size}"
            )));
        }
        if new_size > self.len() {
            return Err(LogError::OutOfRange(format!(
                "the log has {} entries, not {new_size}",
                self.len()
            )));
        }
        if old_size == 0 || old_size == new_size {
            return Ok(Vec::new());
        }
        let additions = usize::try_from(new_size - old_size)
            .map_err(|_| LogError::OutOfRange("too many entries between the sizes".into()))?;
        let proof = self.with_prefix(new_size, |tree| tree.prove_consistency(additions))?;
        Ok(split_path(proof.as_bytes()))
    }
}

fn split_path(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes.chunks(HASH_LEN).map(<[u8]>::to_vec).collect()
}

fn join_path(path: &[Vec<u8>]) -> Result<Vec<u8>, LogError> {
    let mut out = Vec::with_capacity(path.len().saturating_mul(HASH_LEN));
    for node in path {
        if node.len() != HASH_LEN {
            return Err(LogError::Malformed("every proof node must be 32 bytes"));
        }
        out.extend_from_slice(node);
    }
    Ok(out)
}

fn root_of(head: &SignedTreeHead) -> Result<RootHash<Sha256>, LogError> {
    let root = to_hash(&head.root_hash, "a tree head's root hash must be 32 bytes")?;
    if head.tree_size > MAX_TREE_SIZE {
        return Err(LogError::Malformed(
            "a tree head's size is impossibly large",
        ));
    }
    Ok(RootHash::new(root.into(), head.tree_size))
}

/// Checks that `leaf` is entry `index` of the tree described by `head`.
/// Does not check the head's signature (see [`verify_head`]).
pub fn verify_inclusion(
    head: &SignedTreeHead,
    index: u64,
    leaf: &[u8],
    path: &[Vec<u8>],
) -> Result<(), LogError> {
    let root = root_of(head)?;
    if index >= head.tree_size {
        return Err(LogError::BadProof(format!(
            "entry {index} cannot be in a tree of {} entries",
            head.tree_size
        )));
    }
    let proof = InclusionProof::<Sha256>::try_from_bytes(join_path(path)?)
        .map_err(|e| LogError::BadProof(format!("inclusion proof for entry {index}: {e}")))?;
    root.verify_inclusion(&leaf, index, &proof).map_err(|e| {
        LogError::BadProof(format!(
            "entry {index} is not in the tree of {} entries: {e}",
            head.tree_size
        ))
    })
}

/// Checks that the tree of `old` is a prefix of the tree of `new`. Heads of
/// the same size must have the same root; an `old` of size 0 is a prefix of
/// everything. Does not check signatures (see [`verify_head`]).
pub fn verify_consistency(
    old: &SignedTreeHead,
    new: &SignedTreeHead,
    path: &[Vec<u8>],
) -> Result<(), LogError> {
    let old_root = root_of(old)?;
    let new_root = root_of(new)?;
    if old.tree_size > new.tree_size {
        return Err(LogError::BadProof(format!(
            "the log shrank from {} to {} entries",
            old.tree_size, new.tree_size
        )));
    }
    if old.tree_size == 0 {
        return Ok(());
    }
    if old.tree_size == new.tree_size {
        return if old_root == new_root {
            Ok(())
        } else {
            Err(LogError::BadProof(format!(
                "two heads of {} entries have different roots: the log was rewritten",
                old.tree_size
            )))
        };
    }
    let proof = ct_merkle::ConsistencyProof::<Sha256>::try_from_bytes(join_path(path)?)
        .map_err(|e| LogError::BadProof(format!("consistency proof: {e}")))?;
    new_root.verify_consistency(&old_root, &proof).map_err(|e| {
        LogError::BadProof(format!(
            "the tree of {} entries is not a prefix of the tree of {} entries: {e}",
            old.tree_size, new.tree_size
        ))
    })
}

// ---------------------------------------------------------------- entries and replay

/// Decodes one entry and checks its signature by the identity key it names
/// (no replay rules): returns the event.
pub fn open_entry(entry: &LogEntry) -> Result<AccountEvent, LogError> {
    let event = AccountEvent::decode(entry.event.as_slice())
        .map_err(|_| LogError::Malformed("a log entry's event is not an AccountEvent"))?;
    if !sotto_proto::is_valid_username(&event.username) {
        return Err(LogError::Malformed("a log event names an invalid username"));
    }
    let key = verifying_key(
        &event.identity_key,
        "a log event's identity key must be a 32-byte Ed25519 public key",
    )?;
    verify_signature(
        &key,
        &sotto_proto::log_event_transcript(&entry.event),
        &entry.signature,
        "a log entry is not signed by the identity key it names",
    )?;
    if event.change.is_none() {
        return Err(LogError::Malformed("a log event has no change"));
    }
    Ok(event)
}

/// Device id length in log events.
const DEVICE_ID_LEN: usize = sotto_proto::ID_LEN;

fn device_id(bytes: &[u8]) -> Result<[u8; DEVICE_ID_LEN], LogError> {
    <[u8; DEVICE_ID_LEN]>::try_from(bytes)
        .map_err(|_| LogError::Malformed("a device id in the log must be 16 bytes"))
}

/// What the log says about one account, after replaying its entries in
/// order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountState {
    /// The account's username.
    pub username: String,
    /// The identity key that signed every entry.
    pub identity_key: [u8; 32],
    /// Device id → device key, for devices added and not removed.
    pub devices: BTreeMap<[u8; 16], [u8; 32]>,
    /// The `account_seq` the next entry must carry.
    pub next_seq: u64,
}

impl AccountState {
    /// Replays the entries of one account: each signature must verify with
    /// the event's identity key over `log_event_transcript(event)`; the
    /// first must be `IdentityRegistered` with `account_seq` 0; later ones
    /// must carry the same identity key and `account_seq` = previous + 1.
    /// Adding an existing device id, removing an unknown one, a second
    /// `IdentityRegistered`, or another username are errors.
    pub fn replay(username: &str, entries: &[LogEntry]) -> Result<Self, LogError> {
        let Some((first, rest)) = entries.split_first() else {
            return Err(LogError::Replay(format!(
                "the log has no entries for {username}"
            )));
        };
        let mut state = Self::start(username, open_entry(first)?)?;
        for entry in rest {
            state.apply(entry)?;
        }
        Ok(state)
    }

    /// The state after an account's first event (already opened).
    fn start(username: &str, event: AccountEvent) -> Result<Self, LogError> {
        if event.username != username {
            return Err(LogError::Replay(format!(
                "an entry for {:?} was given as {username:?}'s",
                event.username
            )));
        }
        if event.account_seq != 0 {
            return Err(LogError::Replay(format!(
                "{username}'s first entry has account_seq {}, not 0: earlier entries are missing",
                event.account_seq
            )));
        }
        if !matches!(
            event.change,
            Some(account_event::Change::IdentityRegistered(_))
        ) {
            return Err(LogError::Replay(format!(
                "{username}'s first entry does not register the identity key"
            )));
        }
        Ok(Self {
            username: username.to_owned(),
            identity_key: <[u8; 32]>::try_from(event.identity_key.as_slice())
                .map_err(|_| LogError::Malformed("identity keys are 32 bytes"))?,
            devices: BTreeMap::new(),
            next_seq: 1,
        })
    }

    /// Applies the account's next entry. On error the state is unchanged.
    pub fn apply(&mut self, entry: &LogEntry) -> Result<(), LogError> {
        self.apply_event(open_entry(entry)?)
    }

    /// Applies an already opened (signature-checked) event.
    fn apply_event(&mut self, event: AccountEvent) -> Result<(), LogError> {
        let name = self.username.clone();
        if event.username != name {
            return Err(LogError::Replay(format!(
                "an entry for {:?} was given as {name:?}'s",
                event.username
            )));
        }
        if event.identity_key != self.identity_key {
            return Err(LogError::Replay(format!(
                "an entry of {name} is signed by another identity key than the registered one"
            )));
        }
        if event.account_seq != self.next_seq {
            return Err(LogError::Replay(format!(
                "{name}'s entry has account_seq {}, expected {}: entries are missing, repeated or out of order",
                event.account_seq, self.next_seq
            )));
        }
        let next_seq = self
            .next_seq
            .checked_add(1)
            .ok_or(LogError::Malformed("account_seq overflows"))?;
        match event.change {
            Some(account_event::Change::IdentityRegistered(_)) => {
                return Err(LogError::Replay(format!(
                    "{name}'s identity key is registered a second time"
                )));
            }
            Some(account_event::Change::DeviceAdded(added)) => {
                let id = device_id(&added.device_id)?;
                let key = verifying_key(
                    &added.device_key,
                    "a device key must be a 32-byte Ed25519 public key",
                )?
                .to_bytes();
                if self.devices.contains_key(&id) {
                    return Err(LogError::Replay(format!(
                        "device {} of {name} is added twice",
                        hex::encode(id)
                    )));
                }
                self.devices.insert(id, key);
            }
            Some(account_event::Change::DeviceRemoved(removed)) => {
                let id = device_id(&removed.device_id)?;
                if self.devices.remove(&id).is_none() {
                    return Err(LogError::Replay(format!(
                        "device {} of {name} is removed but was never added (or already removed)",
                        hex::encode(id)
                    )));
                }
            }
            None => return Err(LogError::Malformed("a log event has no change")),
        }
        self.next_seq = next_seq;
        Ok(())
    }
}

/// Verifies an [`AccountLog`] from the server: the head's signature by
/// `log_key`, every entry's inclusion proof against that head (in
/// increasing index order), then the replay rules. Returns the account's
/// state.
///
/// This proves the entries are in the log the server signed; it cannot
/// prove the server sent all of them. Compare heads with peers and check
/// consistency to catch a server that shows different logs to different
/// people.
pub fn verify_account_log(
    log_key: &[u8],
    username: &str,
    log: &AccountLog,
) -> Result<AccountState, LogError> {
    let head = log
        .head
        .as_ref()
        .ok_or(LogError::Malformed("the account log has no tree head"))?;
    verify_head(log_key, head)?;
    let mut previous: Option<u64> = None;
    let mut entries = Vec::with_capacity(log.entries.len());
    for proven in &log.entries {
        if previous.is_some_and(|p| p >= proven.index) {
            return Err(LogError::BadProof(format!(
                "the account's entries are not in log order (entry {} after entry {})",
                proven.index,
                previous.unwrap_or_default()
            )));
        }
        previous = Some(proven.index);
        let entry = proven
            .entry
            .as_ref()
            .ok_or(LogError::Malformed("a proven entry has no entry"))?;
        verify_inclusion(
            head,
            proven.index,
            &leaf_bytes(entry),
            &proven.inclusion_path,
        )?;
        entries.push(entry.clone());
    }
    AccountState::replay(username, &entries)
}

// ---------------------------------------------------------------- audit

/// What an [`audit`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditReport {
    /// Entries checked.
    pub entries: u64,
    /// Accounts in the log.
    pub accounts: u64,
    /// Devices currently active (added and not removed).
    pub devices: u64,
    /// The size of the head audited against.
    pub tree_size: u64,
    /// The root recomputed at that size.
    pub root: Hash,
}

/// Why an [`audit`] failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// One entry is malformed, badly signed, or breaks its account's rules.
    #[error("log entry {index}: {reason}")]
    BadEntry {
        /// The entry's index in the log.
        index: u64,
        /// What is wrong with it.
        reason: LogError,
    },
    /// The entries do not hash to the head's root.
    #[error(
        "the first {tree_size} log entries hash to {}, but the signed head says {}: the log was altered",
        hex::encode(computed),
        hex::encode(expected)
    )]
    RootMismatch {
        /// The head's size.
        tree_size: u64,
        /// The head's root.
        expected: Hash,
        /// The root of the entries.
        computed: Hash,
    },
    /// Fewer entries than the head counts.
    #[error("the signed head counts {tree_size} entries but only {entries} were found")]
    MissingEntries {
        /// The head's size.
        tree_size: u64,
        /// Entries found.
        entries: u64,
    },
    /// The head is malformed or not signed by the log key.
    #[error("bad tree head: {0}")]
    BadHead(LogError),
}

/// Audits a whole log, entries in index order: every entry's signature,
/// every account's replay rules, and that the first `head.tree_size`
/// entries hash to `head.root_hash` (the head being signed by `log_key`).
/// Entries after the head's size are checked by the rules too. On failure
/// the error names the first bad entry.
pub fn audit(
    log_key: &[u8],
    entries: impl IntoIterator<Item = LogEntry>,
    head: &SignedTreeHead,
) -> Result<AuditReport, AuditError> {
    verify_head(log_key, head).map_err(AuditError::BadHead)?;
    let expected = to_hash(&head.root_hash, "a tree head's root hash must be 32 bytes")
        .map_err(AuditError::BadHead)?;
    let mut tree = MerkleLog::new();
    let mut accounts: HashMap<String, AccountState> = HashMap::new();
    for entry in entries {
        let index = tree.len();
        let bad = |reason| AuditError::BadEntry { index, reason };
        let event = open_entry(&entry).map_err(bad)?;
        match accounts.get_mut(&event.username) {
            Some(state) => state.apply_event(event).map_err(bad)?,
            None => {
                let username = event.username.clone();
                let state = AccountState::start(&username, event).map_err(bad)?;
                accounts.insert(username, state);
            }
        }
        tree.push(&leaf_bytes(&entry));
    }
    if tree.len() < head.tree_size {
        return Err(AuditError::MissingEntries {
            tree_size: head.tree_size,
            entries: tree.len(),
        });
    }
    let computed = tree.root_at(head.tree_size).map_err(AuditError::BadHead)?;
    if computed != expected {
        return Err(AuditError::RootMismatch {
            tree_size: head.tree_size,
            expected,
            computed,
        });
    }
    let devices = accounts.values().map(|a| a.devices.len() as u64).sum();
    Ok(AuditReport {
        entries: tree.len(),
        accounts: accounts.len() as u64,
        devices,
        tree_size: head.tree_size,
        root: computed,
    })
}

#[cfg(test)]
mod tests;
