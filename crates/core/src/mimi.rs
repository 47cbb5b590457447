//! The IETF MIMI content format (draft-ietf-mimi-content-08): what a chat
//! message says, in CBOR another client can read. Texts, replies, reactions,
//! edits and deletes travel as [`MimiContent`]; Sotto's own control content
//! (conversation info, log heads) stays in its protobuf schema.
//!
//! Decoding is bounded and total: input over [`MAX_CONTENT_BYTES`], body parts
//! nested deeper than [`MAX_PART_DEPTH`], more than [`MAX_PARTS`] parts,
//! extension values deeper than [`MAX_EXTENSION_DEPTH`], indefinite lengths,
//! non-deterministic encodings (draft §6.1: shortest form, sorted map keys)
//! and trailing bytes are refused; nothing is allocated beyond what the input
//! holds. [`encode`] checks its output with [`decode`], so what Sotto sends is
//! what it accepts.
//!
//! The [message id](MessageId) is derived, never sent: `0x01 ||
//! SHA-256(len16(senderUri) || senderUri || len16(roomUri) || roomUri ||
//! content || salt)[0..31]` (draft §3.3). Sotto puts both URIs in every
//! message's extensions (keys 1 and 2), so every member derives the same id;
//! see [`SottoUris`] for what they are and how a receiver checks them.

use ciborium_ll::{Decoder, Encoder, Header};
use sha2::{Digest as _, Sha256};

/// Length of the per-message random salt.
pub const SALT_LEN: usize = 16;
/// Largest encoded content accepted (an MLS payload is at most 256 KiB).
pub const MAX_CONTENT_BYTES: usize = 192 * 1024;
/// Body parts nest at most this deep (draft §6.3); the body is level 1.
pub const MAX_PART_DEPTH: usize = 4;
/// At most this many body parts in one message (draft §9.1).
pub const MAX_PARTS: usize = 1024;
/// Longest topic id (draft §9.1).
pub const MAX_TOPIC_BYTES: usize = 4096;
/// Largest encoded value of one extension (draft §4.3).
pub const MAX_EXTENSION_VALUE_BYTES: usize = 4095;
/// Extensions nest maps, arrays and tags at most this deep, the extensions
/// map being level 1 (draft §6.3).
pub const MAX_EXTENSION_DEPTH: usize = 4;
/// At most this many extensions.
pub const MAX_EXTENSIONS: usize = 64;
/// Longest sender or room URI (its length is hashed as 16 bits).
pub const MAX_URI_BYTES: usize = 1024;
/// Longest content type, language tag, description or filename.
pub const MAX_LABEL_BYTES: usize = 1024;
/// Longest URL of an external part.
pub const MAX_URL_BYTES: usize = 8 * 1024;

const SENDER_URI_KEY: u64 = 1;
const ROOM_URI_KEY: u64 = 2;
/// Integer keys must fit a double without loss (draft §6.2).
const MAX_SAFE_INT: u64 = (1 << 53) - 1;
const NULL: u8 = 22;
const FALSE: u8 = 20;
const TRUE: u8 = 21;

/// The plain-text content type Sotto sends.
pub const TEXT_PLAIN: &str = "text/plain;charset=utf-8";
/// The Markdown variant every MIMI client must read (shown as plain text).
pub const TEXT_MARKDOWN: &str = "text/markdown;variant=GFM-MIMI";

/// Why MIMI content was refused. All of these are the sender's fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MimiError {
    #[error("MIMI content is not well-formed CBOR (at byte {0})")]
    Malformed(usize),
    #[error("MIMI content ends early")]
    Truncated,
    #[error("MIMI content is not in deterministic CBOR encoding (at byte {0})")]
    NotDeterministic(usize),
    #[error("MIMI content is over {MAX_CONTENT_BYTES} bytes")]
    TooLarge,
    #[error("MIMI content is nested too deeply")]
    TooDeep,
    #[error("MIMI content has bytes after its end")]
    TrailingBytes,
    #[error("MIMI content is invalid: {0}")]
    Invalid(&'static str),
}

/// A MIMI message id: the hash algorithm (0x01, SHA-256) then 31 bytes of
/// the hash. Parsing refuses another algorithm.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageId([u8; 32]);

impl MessageId {
    /// The hash algorithm octet of SHA-256 (IANA named information registry).
    pub const SHA256: u8 = 0x01;

    /// Derives the id of `content` (its exact encoding) sent by `sender_uri`
    /// to `room_uri` (draft-ietf-mimi-content-08 §3.3).
    pub fn derive(sender_uri: &str, room_uri: &str, content: &[u8], salt: &[u8; SALT_LEN]) -> Self {
        let mut h = Sha256::new();
        for uri in [sender_uri, room_uri] {
            let len = u16::try_from(uri.len()).unwrap_or(u16::MAX);
            h.update(len.to_be_bytes());
            h.update(uri.as_bytes());
        }
        h.update(content);
        h.update(salt);
        let digest = h.finalize();
        let mut id = [0u8; 32];
        id[0] = Self::SHA256;
        for (to, from) in id.iter_mut().skip(1).zip(digest.iter()) {
            *to = *from;
        }
        Self(id)
    }

    /// A 32-byte id whose first byte is 0x01.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let id: [u8; 32] = bytes.try_into().ok()?;
        (id[0] == Self::SHA256).then_some(Self(id))
    }

    /// An id written as 64 hex digits (as the CLI shows it).
    pub fn from_hex(text: &str) -> Option<Self> {
        Self::from_slice(&hex::decode(text.trim()).ok()?)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl std::fmt::Debug for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageId({})", self.to_hex())
    }
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// When a message should disappear (draft §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiration {
    /// `true`: `time` seconds after the reader read it; `false`: at `time`
    /// seconds after the Unix epoch.
    pub relative: bool,
    pub time: u32,
}

/// A body part's intended use (draft §4.4, registry §8.2.2). Unknown
/// values are kept and, as the draft says, treated as `RENDER`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Disposition(pub u8);

impl Disposition {
    pub const UNSPECIFIED: Self = Self(0);
    pub const RENDER: Self = Self(1);
    pub const REACTION: Self = Self(2);
    pub const PROFILE: Self = Self(3);
    pub const INLINE: Self = Self(4);
    pub const ICON: Self = Self(5);
    pub const ATTACHMENT: Self = Self(6);
    pub const SESSION: Self = Self(7);
    pub const PREVIEW: Self = Self(8);
}

/// How a MultiPart's parts relate (draft §4.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartSemantics {
    ChooseOne = 0,
    SingleUnit = 1,
    ProcessAll = 2,
}

/// One body part with its disposition and language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NestedPart {
    pub disposition: Disposition,
    /// Empty, or comma-separated language tags.
    pub language: String,
    pub part: Part,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// No content: a delete, or an unlike.
    Null,
    Single {
        content_type: String,
        content: Vec<u8>,
    },
    External(Box<ExternalPart>),
    /// At least two parts (decoding refuses fewer).
    Multi {
        semantics: PartSemantics,
        parts: Vec<NestedPart>,
    },
}

/// Content stored elsewhere, encrypted (draft §4.5): how to fetch, check
/// and decrypt it. Its `Debug` leaves out the key, nonce and URL (which
/// may carry a fetch secret).
#[derive(Clone, PartialEq, Eq)]
pub struct ExternalPart {
    pub content_type: String,
    pub url: String,
    /// Seconds since the Unix epoch after which the URL is invalid; 0: never.
    pub expires: u32,
    /// Size in octets of the content at `url`; 0: not given.
    pub size: u64,
    /// IANA AEAD algorithm (1: AES-128-GCM); 0: not encrypted.
    pub enc_alg: u16,
    pub key: Vec<u8>,
    pub nonce: Vec<u8>,
    pub aad: Vec<u8>,
    /// IANA named-information hash algorithm of `content_hash` (1: SHA-256).
    pub hash_alg: u8,
    /// Hash of the content at `url` (the ciphertext).
    pub content_hash: Vec<u8>,
    pub description: String,
    pub filename: String,
}

impl ExternalPart {
    /// AES-128-GCM, the AEAD every MIMI client implements.
    pub const AES_128_GCM: u16 = 1;
    /// SHA-256 in the named-information hash registry.
    pub const SHA256: u8 = 1;

    /// Whether Sotto can fetch and open it: AES-128-GCM with a 16-byte key
    /// and 12-byte nonce, no associated data, a SHA-256 content hash.
    pub fn is_sotto_attachment(&self) -> bool {
        self.enc_alg == Self::AES_128_GCM
            && self.key.len() == 16
            && self.nonce.len() == 12
            && self.aad.is_empty()
            && self.hash_alg == Self::SHA256
            && self.content_hash.len() == 32
            && !self.url.is_empty()
    }
}

impl std::fmt::Debug for ExternalPart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalPart")
            .field("content_type", &self.content_type)
            .field("size", &self.size)
            .field("enc_alg", &self.enc_alg)
            .field("content_hash", &hex::encode(&self.content_hash))
            .field("filename", &self.filename)
            .finish_non_exhaustive()
    }
}

/// An extension map key other than senderUri and roomUri.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExtensionKey {
    Int(i64),
    Text(String),
}

/// The extensions map (draft §4.3). Other extensions are kept as their
/// exact CBOR encoding, already checked for depth, size and determinism.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    pub sender_uri: Option<String>,
    pub room_uri: Option<String>,
    other: Vec<(ExtensionKey, Vec<u8>)>,
}

impl Extensions {
    /// Extensions naming the sender and the room.
    pub fn with_uris(sender_uri: &str, room_uri: &str) -> Self {
        Self {
            sender_uri: Some(sender_uri.to_owned()),
            room_uri: Some(room_uri.to_owned()),
            other: Vec::new(),
        }
    }

    /// Extensions Sotto does not interpret, with their encoded values.
    pub fn other(&self) -> &[(ExtensionKey, Vec<u8>)] {
        &self.other
    }
}

/// One MIMI content message (draft §4.1): `[salt, replaces, topicId,
/// expires, inReplyTo, extensions, body]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MimiContent {
    pub salt: [u8; SALT_LEN],
    /// The first version of the message this one edits, deletes or (for a
    /// reaction) replaces.
    pub replaces: Option<MessageId>,
    /// Empty: no topic.
    pub topic_id: Vec<u8>,
    pub expires: Option<Expiration>,
    pub in_reply_to: Option<MessageId>,
    pub extensions: Extensions,
    pub body: NestedPart,
}

impl MimiContent {
    /// A message with no relation to another, with a fresh `salt`.
    pub fn new(salt: [u8; SALT_LEN], extensions: Extensions, body: NestedPart) -> Self {
        Self {
            salt,
            replaces: None,
            topic_id: Vec::new(),
            expires: None,
            in_reply_to: None,
            extensions,
            body,
        }
    }
}

impl NestedPart {
    /// A plain UTF-8 text part with the given disposition.
    pub fn text(disposition: Disposition, text: &str) -> Self {
        Self {
            disposition,
            language: String::new(),
            part: Part::Single {
                content_type: TEXT_PLAIN.to_owned(),
                content: text.as_bytes().to_vec(),
            },
        }
    }

    /// An empty part (a delete, or with [`Disposition::REACTION`] an unlike).
    pub fn null(disposition: Disposition) -> Self {
        Self {
            disposition,
            language: String::new(),
            part: Part::Null,
        }
    }
}

// ------------------------------------------------------------------ encoding

/// Encodes content in deterministic CBOR, and checks that [`decode`]
/// accepts it (an over-long field, a MultiPart of fewer than two parts,
/// …, is refused here rather than sent).
pub fn encode(content: &MimiContent) -> Result<Vec<u8>, MimiError> {
    let mut w = Writer(Vec::new());
    w.head(Header::Array(Some(7)));
    w.bytes(&content.salt);
    w.id(content.replaces.as_ref());
    w.bytes(&content.topic_id);
    match content.expires {
        None => w.head(Header::Simple(NULL)),
        Some(e) => {
            w.head(Header::Array(Some(2)));
            w.head(Header::Simple(if e.relative { TRUE } else { FALSE }));
            w.head(Header::Positive(e.time.into()));
        }
    }
    w.id(content.in_reply_to.as_ref());
    w.extensions(&content.extensions);
    w.part(&content.body);
    let bytes = w.0;
    if decode(&bytes)? != *content {
        return Err(MimiError::Invalid("content that does not survive encoding"));
    }
    Ok(bytes)
}

struct Writer(Vec<u8>);

impl Writer {
    fn head(&mut self, header: Header) {
        // Writing to a Vec cannot fail.
        let _ = Encoder::from(&mut self.0).push(header);
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.head(Header::Bytes(Some(bytes.len())));
        self.0.extend_from_slice(bytes);
    }

    fn text(&mut self, text: &str) {
        self.head(Header::Text(Some(text.len())));
        self.0.extend_from_slice(text.as_bytes());
    }

    fn id(&mut self, id: Option<&MessageId>) {
        match id {
            None => self.head(Header::Simple(NULL)),
            Some(id) => self.bytes(id.as_bytes()),
        }
    }

    fn extensions(&mut self, ext: &Extensions) {
        // Deterministic order: by encoded key, bytewise (RFC 8949 §4.2.1).
        let mut entries: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut encoded = |key: Header, value: &dyn Fn(&mut Writer)| {
            let mut k = Writer(Vec::new());
            k.head(key);
            let mut v = Writer(Vec::new());
            value(&mut v);
            entries.push((k.0, v.0));
        };
        if let Some(uri) = &ext.sender_uri {
            encoded(Header::Positive(SENDER_URI_KEY), &|w| w.text(uri));
        }
        if let Some(uri) = &ext.room_uri {
            encoded(Header::Positive(ROOM_URI_KEY), &|w| w.text(uri));
        }
        for (key, value) in &ext.other {
            let mut k = Writer(Vec::new());
            match key {
                ExtensionKey::Int(i) if *i >= 0 => k.head(Header::Positive(i.unsigned_abs())),
                ExtensionKey::Int(i) => k.head(Header::Negative(i.unsigned_abs() - 1)),
                ExtensionKey::Text(t) => k.text(t),
            }
            entries.push((k.0, value.clone()));
        }
        entries.sort();
        self.head(Header::Map(Some(entries.len())));
        for (k, v) in entries {
            self.0.extend_from_slice(&k);
            self.0.extend_from_slice(&v);
        }
    }

    fn part(&mut self, part: &NestedPart) {
        let len = match &part.part {
            Part::Null => 3,
            Part::Single { .. } | Part::Multi { .. } => 5,
            Part::External(_) => 15,
        };
        self.head(Header::Array(Some(len)));
        self.head(Header::Positive(part.disposition.0.into()));
        self.text(&part.language);
        match &part.part {
            Part::Null => self.head(Header::Positive(0)),
            Part::Single {
                content_type,
                content,
            } => {
                self.head(Header::Positive(1));
                self.text(content_type);
                self.bytes(content);
            }
            Part::External(e) => {
                self.head(Header::Positive(2));
                self.text(&e.content_type);
                self.text(&e.url);
                self.head(Header::Positive(e.expires.into()));
                self.head(Header::Positive(e.size));
                self.head(Header::Positive(e.enc_alg.into()));
                self.bytes(&e.key);
                self.bytes(&e.nonce);
                self.bytes(&e.aad);
                self.head(Header::Positive(e.hash_alg.into()));
                self.bytes(&e.content_hash);
                self.text(&e.description);
                self.text(&e.filename);
            }
            Part::Multi { semantics, parts } => {
                self.head(Header::Positive(3));
                self.head(Header::Positive(*semantics as u64));
                self.head(Header::Array(Some(parts.len())));
                for p in parts {
                    self.part(p);
                }
            }
        }
    }
}

// ------------------------------------------------------------------ decoding

/// Decodes MIMI content, refusing anything outside the draft's data model
/// and Sotto's bounds (see the module documentation).
pub fn decode(bytes: &[u8]) -> Result<MimiContent, MimiError> {
    if bytes.len() > MAX_CONTENT_BYTES {
        return Err(MimiError::TooLarge);
    }
    let mut r = Reader::new(bytes);
    r.array(7)?;
    let salt: [u8; SALT_LEN] = r
        .bytes(SALT_LEN)?
        .try_into()
        .map_err(|_| MimiError::Invalid("a salt that is not 16 bytes"))?;
    let replaces = r.optional_id()?;
    let topic_id = r.bytes(MAX_TOPIC_BYTES)?;
    let expires = match r.header()? {
        Header::Simple(NULL) => None,
        Header::Array(Some(2)) => {
            let relative = match r.header()? {
                Header::Simple(FALSE) => false,
                Header::Simple(TRUE) => true,
                _ => {
                    return Err(MimiError::Invalid(
                        "an expiration that is not relative or absolute",
                    ));
                }
            };
            let time = u32::try_from(r.uint()?)
                .map_err(|_| MimiError::Invalid("an expiration time over 32 bits"))?;
            Some(Expiration { relative, time })
        }
        _ => {
            return Err(MimiError::Invalid(
                "an expiration that is not null or [bool, uint]",
            ));
        }
    };
    let in_reply_to = r.optional_id()?;
    let extensions = r.extensions()?;
    let mut parts = 0;
    let body = r.part(1, &mut parts)?;
    if r.remaining() != 0 {
        return Err(MimiError::TrailingBytes);
    }
    Ok(MimiContent {
        salt,
        replaces,
        topic_id,
        expires,
        in_reply_to,
        extensions,
        body,
    })
}

struct Reader<'a> {
    input: &'a [u8],
    dec: Decoder<&'a [u8]>,
}

impl<'a> Reader<'a> {
    fn new(input: &'a [u8]) -> Self {
        Self {
            input,
            dec: Decoder::from(input),
        }
    }

    fn offset(&mut self) -> usize {
        self.dec.offset()
    }

    fn remaining(&mut self) -> usize {
        self.input.len().saturating_sub(self.dec.offset())
    }

    /// The next header, refused unless in its shortest form and definite.
    fn header(&mut self) -> Result<Header, MimiError> {
        let start = self.offset();
        if self.remaining() == 0 {
            return Err(MimiError::Truncated);
        }
        let header = self.dec.pull().map_err(|e| match e {
            ciborium_ll::Error::Syntax(at) => MimiError::Malformed(at),
            ciborium_ll::Error::Io(_) => MimiError::Truncated,
        })?;
        let mut shortest = Writer(Vec::new());
        shortest.head(header);
        if self.offset().checked_sub(start) != Some(shortest.0.len()) {
            return Err(MimiError::NotDeterministic(start));
        }
        match header {
            Header::Bytes(None)
            | Header::Text(None)
            | Header::Array(None)
            | Header::Map(None)
            | Header::Break => Err(MimiError::NotDeterministic(start)),
            h => Ok(h),
        }
    }

    fn take(&mut self, len: usize) -> Result<Vec<u8>, MimiError> {
        if len > self.remaining() {
            return Err(MimiError::Truncated);
        }
        let mut buf = vec![0; len];
        ciborium_io::Read::read_exact(&mut self.dec, &mut buf).map_err(|_| MimiError::Truncated)?;
        Ok(buf)
    }

    fn bytes(&mut self, max: usize) -> Result<Vec<u8>, MimiError> {
        match self.header()? {
            Header::Bytes(Some(len)) if len <= max => self.take(len),
            Header::Bytes(_) => Err(MimiError::Invalid("a byte string over its limit")),
            _ => Err(MimiError::Invalid("a field that should be a byte string")),
        }
    }

    fn text(&mut self, max: usize) -> Result<String, MimiError> {
        match self.header()? {
            Header::Text(Some(len)) if len <= max => String::from_utf8(self.take(len)?)
                .map_err(|_| MimiError::Invalid("text that is not UTF-8")),
            Header::Text(_) => Err(MimiError::Invalid("a text over its limit")),
            _ => Err(MimiError::Invalid("a field that should be text")),
        }
    }

    fn uint(&mut self) -> Result<u64, MimiError> {
        match self.header()? {
            Header::Positive(n) => Ok(n),
            _ => Err(MimiError::Invalid(
                "a field that should be an unsigned integer",
            )),
        }
    }

    fn small<T: TryFrom<u64>>(&mut self, what: &'static str) -> Result<T, MimiError> {
        T::try_from(self.uint()?).map_err(|_| MimiError::Invalid(what))
    }

    fn array(&mut self, len: usize) -> Result<(), MimiError> {
        match self.header()? {
            Header::Array(Some(n)) if n == len => Ok(()),
            _ => Err(MimiError::Invalid("an array of the wrong length")),
        }
    }

    fn optional_id(&mut self) -> Result<Option<MessageId>, MimiError> {
        match self.header()? {
            Header::Simple(NULL) => Ok(None),
            Header::Bytes(Some(32)) => {
                MessageId::from_slice(&self.take(32)?)
                    .map(Some)
                    .ok_or(MimiError::Invalid(
                        "a message id of an unknown hash algorithm",
                    ))
            }
            _ => Err(MimiError::Invalid(
                "a message id that is not null or 32 bytes",
            )),
        }
    }

    fn extensions(&mut self) -> Result<Extensions, MimiError> {
        let count = match self.header()? {
            Header::Map(Some(n)) if n <= MAX_EXTENSIONS => n,
            Header::Map(_) => return Err(MimiError::Invalid("too many extensions")),
            _ => return Err(MimiError::Invalid("extensions that are not a map")),
        };
        let mut ext = Extensions::default();
        let mut previous_key: Option<Vec<u8>> = None;
        for _ in 0..count {
            let start = self.offset();
            let key = match self.header()? {
                Header::Positive(n) if n <= MAX_SAFE_INT => ExtensionKey::Int(n as i64),
                Header::Negative(n) if n < MAX_SAFE_INT => ExtensionKey::Int(-1 - n as i64),
                Header::Text(Some(len)) if (1..=255).contains(&len) => ExtensionKey::Text(
                    String::from_utf8(self.take(len)?)
                        .map_err(|_| MimiError::Invalid("text that is not UTF-8"))?,
                ),
                _ => return Err(MimiError::Invalid("an extension key that is not allowed")),
            };
            let end = self.offset();
            let encoded_key = self.input.get(start..end).unwrap_or_default().to_vec();
            if previous_key.as_ref().is_some_and(|p| *p >= encoded_key) {
                return Err(MimiError::NotDeterministic(start));
            }
            previous_key = Some(encoded_key);
            match key {
                ExtensionKey::Int(1) => ext.sender_uri = Some(self.text(MAX_URI_BYTES)?),
                ExtensionKey::Int(2) => ext.room_uri = Some(self.text(MAX_URI_BYTES)?),
                key => {
                    let start = self.offset();
                    self.skip_value(1)?;
                    let end = self.offset();
                    if end - start > MAX_EXTENSION_VALUE_BYTES {
                        return Err(MimiError::Invalid("an extension value over 4095 bytes"));
                    }
                    let value = self.input.get(start..end).unwrap_or_default().to_vec();
                    ext.other.push((key, value));
                }
            }
        }
        Ok(ext)
    }

    /// Checks and skips one value inside an extension; `level` is the depth
    /// of the container it sits in.
    fn skip_value(&mut self, level: usize) -> Result<(), MimiError> {
        match self.header()? {
            Header::Positive(_) | Header::Negative(_) | Header::Float(_) => Ok(()),
            Header::Simple(_) => Ok(()),
            Header::Bytes(Some(len)) => self.skip(len),
            Header::Text(Some(len)) => {
                if len > self.remaining() {
                    return Err(MimiError::Truncated);
                }
                String::from_utf8(self.take(len)?)
                    .map(|_| ())
                    .map_err(|_| MimiError::Invalid("text that is not UTF-8"))
            }
            Header::Array(Some(n)) => {
                self.deeper(level, n)?;
                for _ in 0..n {
                    self.skip_value(level + 1)?;
                }
                Ok(())
            }
            Header::Map(Some(n)) => {
                self.deeper(level, n)?;
                let mut previous_key: Option<Vec<u8>> = None;
                for _ in 0..n {
                    let start = self.offset();
                    match self.header()? {
                        Header::Positive(_) | Header::Negative(_) => {}
                        Header::Text(Some(len)) | Header::Bytes(Some(len)) => self.skip(len)?,
                        _ => return Err(MimiError::Invalid("a map key that is not allowed")),
                    }
                    let end = self.offset();
                    let key = self.input.get(start..end).unwrap_or_default().to_vec();
                    if previous_key.as_ref().is_some_and(|p| *p >= key) {
                        return Err(MimiError::NotDeterministic(start));
                    }
                    previous_key = Some(key);
                    self.skip_value(level + 1)?;
                }
                Ok(())
            }
            Header::Tag(_) => {
                self.deeper(level, 1)?;
                self.skip_value(level + 1)
            }
            _ => Err(MimiError::Malformed(self.offset())),
        }
    }

    /// A container one level deeper than `level`, of `items` items.
    fn deeper(&mut self, level: usize, items: usize) -> Result<(), MimiError> {
        if level + 1 > MAX_EXTENSION_DEPTH {
            return Err(MimiError::TooDeep);
        }
        if items > self.remaining() {
            return Err(MimiError::Truncated);
        }
        Ok(())
    }

    fn skip(&mut self, len: usize) -> Result<(), MimiError> {
        self.take(len).map(|_| ())
    }

    fn part(&mut self, depth: usize, count: &mut usize) -> Result<NestedPart, MimiError> {
        if depth > MAX_PART_DEPTH {
            return Err(MimiError::TooDeep);
        }
        *count += 1;
        if *count > MAX_PARTS {
            return Err(MimiError::Invalid("more than 1024 body parts"));
        }
        let len = match self.header()? {
            Header::Array(Some(n)) => n,
            _ => return Err(MimiError::Invalid("a body part that is not an array")),
        };
        let disposition = Disposition(self.small("a disposition over 255")?);
        let language = self.text(MAX_LABEL_BYTES)?;
        let part = match (self.uint()?, len) {
            (0, 3) => Part::Null,
            (1, 5) => Part::Single {
                content_type: self.text(MAX_LABEL_BYTES)?,
                content: self.bytes(MAX_CONTENT_BYTES)?,
            },
            (2, 15) => Part::External(Box::new(ExternalPart {
                content_type: self.text(MAX_LABEL_BYTES)?,
                url: self.text(MAX_URL_BYTES)?,
                expires: self.small("an external expiry over 32 bits")?,
                size: self.uint()?,
                enc_alg: self.small("an AEAD algorithm over 16 bits")?,
                key: self.bytes(MAX_LABEL_BYTES)?,
                nonce: self.bytes(MAX_LABEL_BYTES)?,
                aad: self.bytes(MAX_LABEL_BYTES)?,
                hash_alg: self.small("a hash algorithm over 8 bits")?,
                content_hash: self.bytes(MAX_LABEL_BYTES)?,
                description: self.text(MAX_LABEL_BYTES)?,
                filename: self.text(MAX_LABEL_BYTES)?,
            })),
            (3, 5) => {
                let semantics = match self.uint()? {
                    0 => PartSemantics::ChooseOne,
                    1 => PartSemantics::SingleUnit,
                    2 => PartSemantics::ProcessAll,
                    _ => return Err(MimiError::Invalid("an unknown part semantics")),
                };
                let n = match self.header()? {
                    Header::Array(Some(n)) if n >= 2 && n <= self.remaining() => n,
                    _ => return Err(MimiError::Invalid("a multipart of fewer than two parts")),
                };
                let mut parts = Vec::new();
                for _ in 0..n {
                    parts.push(self.part(depth + 1, count)?);
                }
                Part::Multi { semantics, parts }
            }
            _ => {
                return Err(MimiError::Invalid(
                    "a body part whose cardinality and length disagree",
                ));
            }
        };
        Ok(NestedPart {
            disposition,
            language,
            part,
        })
    }
}

// ------------------------------------------------------------------ Sotto's use

/// The URIs Sotto names senders and rooms by, in every message's extensions:
/// `mimi://<authority>/u/<username>` for the sending account and
/// `mimi://<authority>/r/<hex of the MLS group id>` for the room, where
/// `<authority>` is the host (and port, if any) of the sender's server URL.
///
/// A receiver takes the URIs as the sender wrote them (so members reaching
/// the server under different names still derive the same ids), but only
/// if the sender URI names the account MLS authenticated as the sender and
/// the room URI names the group the message came in, both under the same
/// authority.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SottoUris {
    pub sender: String,
    pub room: String,
}

impl SottoUris {
    /// The URIs a sender writes.
    pub fn new(authority: &str, username: &str, group_id: &[u8]) -> Self {
        Self {
            sender: format!("mimi://{authority}/u/{username}"),
            room: format!("mimi://{authority}/r/{}", hex::encode(group_id)),
        }
    }

    /// The URIs of received content, if they name `username` (the
    /// authenticated sender's account) and `group_id` (the group it came in).
    pub fn check(ext: &Extensions, username: &str, group_id: &[u8]) -> Result<Self, MimiError> {
        let (Some(sender), Some(room)) = (&ext.sender_uri, &ext.room_uri) else {
            return Err(MimiError::Invalid("no sender or room URI"));
        };
        let authority = sender
            .strip_prefix("mimi://")
            .and_then(|rest| rest.strip_suffix(username))
            .and_then(|rest| rest.strip_suffix("/u/"))
            .filter(|a| !a.is_empty() && !a.contains('/'))
            .ok_or(MimiError::Invalid("a sender URI that is not the sender's"))?;
        if *room != format!("mimi://{authority}/r/{}", hex::encode(group_id)) {
            return Err(MimiError::Invalid("a room URI that is not this group's"));
        }
        Ok(Self {
            sender: sender.clone(),
            room: room.clone(),
        })
    }
}

/// What a chat message asks for, in Sotto's terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatAction {
    /// A new text, perhaps a reply.
    Text {
        text: String,
        reply_to: Option<MessageId>,
    },
    /// A new version of the text of `target` (its first version).
    Edit { target: MessageId, text: String },
    /// Takes back `target`: delete a message, or remove a reaction.
    Retract { target: MessageId },
    /// A reaction to `target`; `replaces` is the sender's earlier reaction
    /// to it, if any (one reaction per account and message).
    React {
        target: MessageId,
        emoji: String,
        replaces: Option<MessageId>,
    },
    /// A file (an encrypted external part), with an optional text, perhaps
    /// a reply. Sent as the external part alone (disposition attachment),
    /// or as a MultiPart (process all) of the text then the file.
    Attachment {
        file: Box<ExternalPart>,
        text: Option<String>,
        reply_to: Option<MessageId>,
    },
}

/// Longest reaction, in bytes (a few emoji with modifiers).
pub const MAX_REACTION_BYTES: usize = 64;

impl ChatAction {
    /// What `content` asks for; `None` for content Sotto cannot show yet
    /// (attachments, multipart, media types other than text).
    pub fn of(content: &MimiContent) -> Result<Option<Self>, MimiError> {
        let body = &content.body;
        let text = match &body.part {
            Part::Null => {
                return match content.replaces {
                    Some(target) => Ok(Some(Self::Retract { target })),
                    None => Err(MimiError::Invalid("an empty message that replaces nothing")),
                };
            }
            Part::Single {
                content_type,
                content,
            } if is_text(content_type) => String::from_utf8(content.clone())
                .map_err(|_| MimiError::Invalid("text that is not UTF-8"))?,
            Part::External(_) | Part::Multi { .. } => return Ok(Self::attachment(content)),
            _ => return Ok(None),
        };
        if body.disposition == Disposition::REACTION {
            let target = content
                .in_reply_to
                .ok_or(MimiError::Invalid("a reaction to no message"))?;
            if text.is_empty() || text.len() > MAX_REACTION_BYTES {
                return Err(MimiError::Invalid("a reaction that is empty or too long"));
            }
            return Ok(Some(Self::React {
                target,
                emoji: text,
                replaces: content.replaces,
            }));
        }
        Ok(Some(match content.replaces {
            Some(target) => Self::Edit { target, text },
            None => Self::Text {
                text,
                reply_to: content.in_reply_to,
            },
        }))
    }

    /// A new message with a file Sotto can open: the external part alone,
    /// or a MultiPart of a text and the file. `None` for anything else.
    fn attachment(content: &MimiContent) -> Option<Self> {
        if content.replaces.is_some() || content.body.disposition == Disposition::REACTION {
            return None;
        }
        let (file, text) = match &content.body.part {
            Part::External(file) => (file, None),
            Part::Multi {
                semantics: PartSemantics::ProcessAll,
                parts,
            } => match parts.as_slice() {
                [
                    NestedPart {
                        part:
                            Part::Single {
                                content_type,
                                content,
                            },
                        ..
                    },
                    NestedPart {
                        part: Part::External(file),
                        ..
                    },
                ] if is_text(content_type) => {
                    (file, Some(String::from_utf8(content.clone()).ok()?))
                }
                _ => return None,
            },
            _ => return None,
        };
        file.is_sotto_attachment().then(|| Self::Attachment {
            file: file.clone(),
            text,
            reply_to: content.in_reply_to,
        })
    }

    /// The content that asks for this, from `uris` with a fresh `salt`.
    pub fn to_content(&self, uris: &SottoUris, salt: [u8; SALT_LEN]) -> MimiContent {
        let ext = Extensions::with_uris(&uris.sender, &uris.room);
        match self {
            Self::Text { text, reply_to } => MimiContent {
                in_reply_to: *reply_to,
                ..MimiContent::new(salt, ext, NestedPart::text(Disposition::RENDER, text))
            },
            Self::Edit { target, text } => MimiContent {
                replaces: Some(*target),
                ..MimiContent::new(salt, ext, NestedPart::text(Disposition::RENDER, text))
            },
            Self::Retract { target } => MimiContent {
                replaces: Some(*target),
                ..MimiContent::new(salt, ext, NestedPart::null(Disposition::RENDER))
            },
            Self::React {
                target,
                emoji,
                replaces,
            } => MimiContent {
                replaces: *replaces,
                in_reply_to: Some(*target),
                ..MimiContent::new(salt, ext, NestedPart::text(Disposition::REACTION, emoji))
            },
            Self::Attachment {
                file,
                text,
                reply_to,
            } => {
                let file_part = NestedPart {
                    disposition: Disposition::ATTACHMENT,
                    language: String::new(),
                    part: Part::External(file.clone()),
                };
                let body = match text {
                    None => file_part,
                    Some(text) => NestedPart {
                        disposition: Disposition::RENDER,
                        language: String::new(),
                        part: Part::Multi {
                            semantics: PartSemantics::ProcessAll,
                            parts: vec![NestedPart::text(Disposition::RENDER, text), file_part],
                        },
                    },
                };
                MimiContent {
                    in_reply_to: *reply_to,
                    ..MimiContent::new(salt, ext, body)
                }
            }
        }
    }
}

/// Text Sotto shows: plain text, or Markdown shown as it is.
fn is_text(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "text/plain" || essence == "text/markdown"
}

#[cfg(test)]
#[path = "mimi_tests.rs"]
mod tests;
