//! The server's warrant canary: a dated statement signed by the operator's
//! legal key, fetched from `GET /canary` and checked here.
//!
//! A canary is only as good as the key that signed it: a server could sign
//! a fresh one with a new key of its own. So a canary is accepted only if
//! its key is one the user pinned, or if the server's log key — which every
//! client of the server pins, and linked devices and auditors cross-check —
//! certifies it.

use crate::ClientError;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};

/// A verified warrant canary.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Canary {
    pub statement: String,
    /// Days since the Unix epoch when it was signed.
    pub day: u64,
    /// Hex of the operator's legal key that signed it.
    pub key: String,
}

/// What vouches for a canary's key.
#[derive(Clone, Copy, Debug)]
pub enum CanaryPin<'a> {
    /// The server's log key (as the user's profile pinned it, or as given
    /// with `--log-key`): it must certify the canary's key.
    LogKey(&'a [u8]),
    /// The legal key itself, given by the user (`--legal-key`).
    LegalKey(&'a [u8]),
}

#[derive(serde::Deserialize)]
struct Published {
    statement: String,
    day: u64,
    key: String,
    signature: String,
    #[serde(default)]
    log_key: String,
    #[serde(default)]
    key_certificate: String,
}

/// Fetches and verifies the canary of the server at `server_url`
/// (`https://host` or, on loopback, `http://host:port`). `Ok(None)`: the
/// server publishes none.
#[cfg(not(target_arch = "wasm32"))]
pub async fn fetch_canary(
    server_url: &str,
    trust: &crate::Trust,
    pin: CanaryPin<'_>,
) -> Result<Option<Canary>, ClientError> {
    let server = crate::endpoint::ServerUrl::parse(server_url)?;
    let (status, body) = server.get(trust, "/canary", usize::MAX).await?;
    if status == hyper::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !status.is_success() {
        return Err(ClientError::Protocol(format!(
            "GET /canary answered {status}"
        )));
    }
    verify(&body, pin).map(Some)
}

/// Checks a published canary: its key is vouched for by `pin`, and its
/// signature is Ed25519 by that key over the canonical JSON
/// `{"day":…,"statement":…}` (sorted keys, no whitespace).
pub fn verify(json: &[u8], pin: CanaryPin<'_>) -> Result<Canary, ClientError> {
    let bad = |what: &str| ClientError::KeyLog(format!("the warrant canary is not valid: {what}"));
    let published: Published =
        serde_json::from_slice(json).map_err(|_| bad("not the expected JSON"))?;
    let key: [u8; 32] = hex::decode(&published.key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| bad("malformed key"))?;
    match pin {
        CanaryPin::LegalKey(pinned) if pinned != key.as_slice() => {
            return Err(bad("it is signed by another key than the one you gave"));
        }
        CanaryPin::LegalKey(_) => {}
        CanaryPin::LogKey(pinned) => {
            let announced = hex::decode(&published.log_key).unwrap_or_default();
            if announced != pinned {
                return Err(bad(
                    "the server vouches for it with another log key than the one you pinned",
                ));
            }
            let certificate = hex::decode(&published.key_certificate).unwrap_or_default();
            sotto_transparency::verify_legal_key(pinned, &key, &certificate)
                .map_err(|_| bad("the log key does not vouch for the key that signed it"))?;
        }
    }
    let key = VerifyingKey::from_bytes(&key).map_err(|_| bad("malformed key"))?;
    let signature = hex::decode(&published.signature)
        .ok()
        .and_then(|s| Signature::from_slice(&s).ok())
        .ok_or_else(|| bad("malformed signature"))?;
    // serde_json's default map is sorted, and `to_string` is compact.
    let signed =
        serde_json::json!({ "day": published.day, "statement": published.statement }).to_string();
    key.verify(signed.as_bytes(), &signature)
        .map_err(|_| bad("the signature does not match"))?;
    Ok(Canary {
        statement: published.statement,
        day: published.day,
        key: published.key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer as _, SigningKey};
    use sotto_transparency::LogKey;

    fn published(statement: &str, day: u64, key: &SigningKey, log: &LogKey) -> String {
        let signed = serde_json::json!({ "day": day, "statement": statement }).to_string();
        let public = key.verifying_key().to_bytes();
        serde_json::json!({
            "statement": statement,
            "day": day,
            "key": hex::encode(public),
            "signature": hex::encode(key.sign(signed.as_bytes()).to_bytes()),
            "log_key": hex::encode(log.public()),
            "key_certificate": hex::encode(log.certify_legal_key(&public)),
        })
        .to_string()
    }

    #[test]
    fn a_signed_canary_verifies_and_an_edited_one_does_not() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let log = LogKey::generate();
        let pin = CanaryPin::LogKey(&log.public());
        let good = published("No \"orders\"\nso far — none.", 20_400, &key, &log);
        assert_eq!(verify(good.as_bytes(), pin).unwrap().day, 20_400);
        let edited = good.replace("20400", "20401");
        assert!(verify(edited.as_bytes(), pin).is_err());
        let reworded = good.replace("none", "some");
        assert!(verify(reworded.as_bytes(), pin).is_err());
        assert!(verify(b"{}", pin).is_err());
    }

    #[test]
    fn a_canary_needs_a_key_the_user_pinned_or_the_log_key_vouches_for() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let log = LogKey::generate();
        // A server re-signing with a key of its own, vouched for by a log
        // key that is not the pinned one, is refused.
        let impostor_log = LogKey::generate();
        let forged = published("All fine.", 20_400, &key, &impostor_log);
        assert!(verify(forged.as_bytes(), CanaryPin::LogKey(&log.public())).is_err());
        // The pinned log key's certificate for another legal key is no use.
        let other = SigningKey::from_bytes(&[6; 32]);
        let good = published("All fine.", 20_400, &key, &log);
        let swapped = good.replace(
            &hex::encode(key.verifying_key().to_bytes()),
            &hex::encode(other.verifying_key().to_bytes()),
        );
        assert!(verify(swapped.as_bytes(), CanaryPin::LogKey(&log.public())).is_err());
        // A legal key given by the user needs no certificate.
        let legal = key.verifying_key().to_bytes();
        assert!(verify(forged.as_bytes(), CanaryPin::LegalKey(&legal)).is_ok());
        assert!(verify(forged.as_bytes(), CanaryPin::LegalKey(&[9; 32])).is_err());
    }
}
