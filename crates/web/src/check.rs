//! The server check: what a browser page does before it trusts a Sotto
//! server with anything. Sans-I/O: the page hands in each binary WebSocket
//! message and sends the frames it is given back.
//!
//! On connect the server sends a `Challenge` carrying its log key. The check
//! then asks (without logging in, as `sotto audit` does) for the log's
//! signed tree head and the key directory's signed epoch, and verifies both
//! signatures against that log key. The page shows the key so a person can
//! compare it with the one their other devices pinned.

use prost::Message;
use sotto_proto::v1::{
    ClientFrame, GetDirectoryEpoch, GetLogHead, ServerFrame, SignedEpoch, SignedTreeHead,
    client_frame, response, server_frame,
};
use sotto_transparency::{LogError, verify_epoch, verify_head};

/// Request id of the `GetLogHead` the check sends.
pub const LOG_HEAD_REQUEST: u64 = 1;
/// Request id of the `GetDirectoryEpoch` the check sends.
pub const DIRECTORY_EPOCH_REQUEST: u64 = 2;

/// Length of the server's log key (Ed25519 public key).
const LOG_KEY_LEN: usize = 32;

/// Why the server check failed. Every one is the server's fault (or the
/// network's): the page cannot go on with this server.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The bytes are not a `ServerFrame`.
    #[error("the server sent a frame that does not decode ({0})")]
    Malformed(#[from] sotto_proto::DecodeError),
    /// Something other than a `Challenge` came first.
    #[error("the server did not open with a challenge")]
    NoChallenge,
    /// A second `Challenge` on the same connection.
    #[error("the server sent a second challenge")]
    SecondChallenge,
    /// The challenge's protocol version is not the one this page speaks.
    #[error("the server speaks protocol version {server}; this page speaks {ours}")]
    ProtocolVersion {
        /// What the server announced.
        server: u32,
        /// [`sotto_proto::PROTOCOL_VERSION`].
        ours: u32,
    },
    /// The challenge's log key is not 32 bytes.
    #[error("the server's log key is {0} bytes, not 32")]
    LogKeyLength(usize),
    /// The server answered a request with an error.
    #[error("the server refused the request for the {what}: {message}")]
    Refused {
        /// What was asked for.
        what: &'static str,
        /// The server's explanation.
        message: String,
    },
    /// An answer of the wrong kind, or to a request never made.
    #[error("the server sent an unexpected answer: {0}")]
    Unexpected(&'static str),
    /// The tree head does not verify against the log key.
    #[error("the log's tree head does not verify: {0}")]
    BadHead(LogError),
    /// The directory epoch does not verify against the log key.
    #[error("the key directory's epoch does not verify: {0}")]
    BadEpoch(LogError),
}

/// What the page has verified so far about one server.
#[derive(Debug, Default)]
pub struct ServerCheck {
    log_key: Option<[u8; LOG_KEY_LEN]>,
    head: Option<SignedTreeHead>,
    epoch: Option<SignedEpoch>,
}

impl ServerCheck {
    /// A check that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes one binary message from the server; returns the frames to send
    /// now (the two requests, right after the challenge). After an error the
    /// connection should be closed: the check does not recover.
    pub fn receive(&mut self, bytes: &[u8]) -> Result<Vec<Vec<u8>>, CheckError> {
        let frame: ServerFrame = sotto_proto::decode_server_frame(bytes)?;
        match (self.log_key, frame.body) {
            (None, Some(server_frame::Body::Challenge(challenge))) => {
                if challenge.protocol_version != sotto_proto::PROTOCOL_VERSION {
                    return Err(CheckError::ProtocolVersion {
                        server: challenge.protocol_version,
                        ours: sotto_proto::PROTOCOL_VERSION,
                    });
                }
                let key = <[u8; LOG_KEY_LEN]>::try_from(challenge.log_key.as_slice())
                    .map_err(|_| CheckError::LogKeyLength(challenge.log_key.len()))?;
                self.log_key = Some(key);
                Ok(vec![get_log_head(), get_directory_epoch()])
            }
            (None, _) => Err(CheckError::NoChallenge),
            (Some(_), Some(server_frame::Body::Challenge(_))) => Err(CheckError::SecondChallenge),
            (Some(key), Some(server_frame::Body::Response(answer))) => {
                self.answer(&key, answer.request_id, answer.result)?;
                Ok(Vec::new())
            }
            // A connection that has not logged in gets nothing else today;
            // a newer server's other frames are none of this check's business.
            (Some(_), _) => Ok(Vec::new()),
        }
    }

    fn answer(
        &mut self,
        log_key: &[u8; LOG_KEY_LEN],
        request_id: u64,
        result: Option<response::Result>,
    ) -> Result<(), CheckError> {
        match (request_id, result) {
            (LOG_HEAD_REQUEST, Some(response::Result::LogHead(head))) => {
                verify_head(log_key, &head).map_err(CheckError::BadHead)?;
                self.head = Some(head);
                Ok(())
            }
            (DIRECTORY_EPOCH_REQUEST, Some(response::Result::DirectoryEpoch(epoch))) => {
                verify_epoch(log_key, &epoch).map_err(CheckError::BadEpoch)?;
                self.epoch = Some(epoch);
                Ok(())
            }
            (LOG_HEAD_REQUEST | DIRECTORY_EPOCH_REQUEST, Some(response::Result::Error(e))) => {
                Err(CheckError::Refused {
                    what: if request_id == LOG_HEAD_REQUEST {
                        "log's tree head"
                    } else {
                        "key directory's epoch"
                    },
                    message: e.message,
                })
            }
            (LOG_HEAD_REQUEST, _) => Err(CheckError::Unexpected(
                "the answer to the tree-head request is not a tree head",
            )),
            (DIRECTORY_EPOCH_REQUEST, _) => Err(CheckError::Unexpected(
                "the answer to the directory-epoch request is not an epoch",
            )),
            _ => Err(CheckError::Unexpected("an answer to a request never made")),
        }
    }

    /// The server's log key, once the challenge came.
    pub fn log_key(&self) -> Option<&[u8; LOG_KEY_LEN]> {
        self.log_key.as_ref()
    }

    /// The log's tree head, once it verified.
    pub fn head(&self) -> Option<&SignedTreeHead> {
        self.head.as_ref()
    }

    /// The key directory's epoch, once it verified.
    pub fn epoch(&self) -> Option<&SignedEpoch> {
        self.epoch.as_ref()
    }

    /// Whether both the head and the epoch verified.
    pub fn verified(&self) -> bool {
        self.head.is_some() && self.epoch.is_some()
    }
}

fn get_log_head() -> Vec<u8> {
    ClientFrame {
        request_id: LOG_HEAD_REQUEST,
        body: Some(client_frame::Body::GetLogHead(GetLogHead {})),
    }
    .encode_to_vec()
}

fn get_directory_epoch() -> Vec<u8> {
    ClientFrame {
        request_id: DIRECTORY_EPOCH_REQUEST,
        body: Some(client_frame::Body::GetDirectoryEpoch(GetDirectoryEpoch {})),
    }
    .encode_to_vec()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

    use super::*;
    use sotto_proto::v1::{Challenge, Error as WireError, Response};
    use sotto_transparency::{LogKey, MerkleLog};

    fn challenge(log_key: &[u8]) -> Vec<u8> {
        ServerFrame {
            body: Some(server_frame::Body::Challenge(Challenge {
                protocol_version: sotto_proto::PROTOCOL_VERSION,
                nonce: vec![9; 32],
                log_key: log_key.to_vec(),
                franking_key: None,
            })),
        }
        .encode_to_vec()
    }

    fn answer(request_id: u64, result: response::Result) -> Vec<u8> {
        ServerFrame {
            body: Some(server_frame::Body::Response(Response {
                request_id,
                result: Some(result),
            })),
        }
        .encode_to_vec()
    }

    fn head(key: &LogKey) -> SignedTreeHead {
        let mut log = MerkleLog::new();
        log.push(b"leaf one");
        log.push(b"leaf two");
        key.sign_head(log.len(), log.root(), 1_700_000_000_000)
    }

    fn epoch(key: &LogKey) -> SignedEpoch {
        key.sign_epoch(&[5; 32], 42, &[6; 32], 1_700_000_000_000)
    }

    #[test]
    fn a_challenge_asks_for_the_head_and_the_epoch() {
        let key = LogKey::generate();
        let mut check = ServerCheck::new();
        let sent = check.receive(&challenge(&key.public())).unwrap();
        let frames: Vec<ClientFrame> = sent
            .iter()
            .map(|b| sotto_proto::decode_client_frame(b).unwrap())
            .collect();
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].request_id, LOG_HEAD_REQUEST);
        assert!(matches!(
            frames[0].body,
            Some(client_frame::Body::GetLogHead(_))
        ));
        assert_eq!(frames[1].request_id, DIRECTORY_EPOCH_REQUEST);
        assert!(matches!(
            frames[1].body,
            Some(client_frame::Body::GetDirectoryEpoch(_))
        ));
        assert_eq!(check.log_key(), Some(&key.public()));
        assert!(!check.verified());
    }

    #[test]
    fn a_signed_head_and_epoch_verify() {
        let key = LogKey::generate();
        let mut check = ServerCheck::new();
        check.receive(&challenge(&key.public())).unwrap();
        let signed = head(&key);
        check
            .receive(&answer(
                LOG_HEAD_REQUEST,
                response::Result::LogHead(signed.clone()),
            ))
            .unwrap();
        assert!(!check.verified());
        check
            .receive(&answer(
                DIRECTORY_EPOCH_REQUEST,
                response::Result::DirectoryEpoch(epoch(&key)),
            ))
            .unwrap();
        assert!(check.verified());
        assert_eq!(check.head().unwrap().tree_size, 2);
        assert_eq!(check.epoch().unwrap().epoch, 42);
    }

    #[test]
    fn a_head_signed_by_another_key_is_refused() {
        let (key, other) = (LogKey::generate(), LogKey::generate());
        let mut check = ServerCheck::new();
        check.receive(&challenge(&key.public())).unwrap();
        let err = check
            .receive(&answer(
                LOG_HEAD_REQUEST,
                response::Result::LogHead(head(&other)),
            ))
            .unwrap_err();
        assert!(matches!(err, CheckError::BadHead(_)), "{err}");
        assert!(
            err.to_string()
                .contains("not signed by the server's log key")
        );
        assert!(check.head().is_none());
    }

    #[test]
    fn a_tampered_epoch_is_refused() {
        let key = LogKey::generate();
        let mut check = ServerCheck::new();
        check.receive(&challenge(&key.public())).unwrap();
        let mut tampered = epoch(&key);
        tampered.epoch += 1;
        let err = check
            .receive(&answer(
                DIRECTORY_EPOCH_REQUEST,
                response::Result::DirectoryEpoch(tampered),
            ))
            .unwrap_err();
        assert!(matches!(err, CheckError::BadEpoch(_)), "{err}");
        assert!(!check.verified());
    }

    #[test]
    fn the_challenge_must_come_first_and_once() {
        let key = LogKey::generate();
        let err = ServerCheck::new()
            .receive(&answer(
                LOG_HEAD_REQUEST,
                response::Result::LogHead(head(&key)),
            ))
            .unwrap_err();
        assert!(matches!(err, CheckError::NoChallenge));

        let mut check = ServerCheck::new();
        check.receive(&challenge(&key.public())).unwrap();
        let err = check.receive(&challenge(&key.public())).unwrap_err();
        assert!(matches!(err, CheckError::SecondChallenge));
    }

    #[test]
    fn bad_challenges_are_refused() {
        let err = ServerCheck::new()
            .receive(&challenge(&[1; 31]))
            .unwrap_err();
        assert_eq!(err.to_string(), "the server's log key is 31 bytes, not 32");
        let newer = ServerFrame {
            body: Some(server_frame::Body::Challenge(Challenge {
                protocol_version: 2,
                log_key: vec![1; 32],
                ..Default::default()
            })),
        }
        .encode_to_vec();
        let err = ServerCheck::new().receive(&newer).unwrap_err();
        assert!(matches!(err, CheckError::ProtocolVersion { server: 2, .. }));
    }

    #[test]
    fn garbage_and_wrong_answers_are_errors_not_panics() {
        let key = LogKey::generate();
        let mut check = ServerCheck::new();
        assert!(matches!(
            check.receive(&[0xff, 0xff, 0xff]).unwrap_err(),
            CheckError::Malformed(_)
        ));
        check.receive(&challenge(&key.public())).unwrap();
        let err = check
            .receive(&answer(
                LOG_HEAD_REQUEST,
                response::Result::DirectoryEpoch(epoch(&key)),
            ))
            .unwrap_err();
        assert!(matches!(err, CheckError::Unexpected(_)));
        let err = check
            .receive(&answer(99, response::Result::LogHead(head(&key))))
            .unwrap_err();
        assert!(matches!(err, CheckError::Unexpected(_)));
        let err = check
            .receive(&answer(
                DIRECTORY_EPOCH_REQUEST,
                response::Result::Error(WireError {
                    message: "no directory yet".into(),
                    ..Default::default()
                }),
            ))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the server refused the request for the key directory's epoch: no directory yet"
        );
    }

    proptest::proptest! {
        /// Whatever a server sends, before or after its challenge, the
        /// check answers with frames or an error, never a panic.
        #[test]
        fn any_bytes_are_an_answer_or_an_error(
            frames in proptest::collection::vec(
                proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                1..8,
            ),
            after_challenge in proptest::bool::ANY,
        ) {
            let mut check = ServerCheck::new();
            if after_challenge {
                check.receive(&challenge(&[3; 32])).unwrap();
            }
            for frame in &frames {
                let _ = check.receive(frame);
            }
        }
    }
}
