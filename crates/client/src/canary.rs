//! The server's warrant canary: a dated statement signed by the operator's
//! legal key, fetched from `GET /canary` and checked here.

use crate::ClientError;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use http_body_util::BodyExt as _;
use hyper_util::rt::TokioIo;

/// A verified warrant canary.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Canary {
    pub statement: String,
    /// Days since the Unix epoch when it was signed.
    pub day: u64,
    /// Hex of the operator's legal key that signed it.
    pub key: String,
}

#[derive(serde::Deserialize)]
struct Published {
    statement: String,
    day: u64,
    key: String,
    signature: String,
}

/// Fetches and verifies the canary of the server at `server_url`
/// (`https://host` or, on loopback, `http://host:port`). `Ok(None)`: the
/// server publishes none.
pub async fn fetch_canary(
    server_url: &str,
    trust: &crate::Trust,
) -> Result<Option<Canary>, ClientError> {
    let server = crate::endpoint::ServerUrl::parse(server_url)?;
    let stream = server.open(trust).await?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ClientError::Network(format!("HTTP handshake failed: {e}")))?;
    tokio::spawn(connection);
    let request = hyper::Request::get(server.path("/canary"))
        .header(hyper::header::HOST, &server.authority)
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .map_err(|e| ClientError::Usage(format!("bad request: {e}")))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| ClientError::Network(format!("GET /canary failed: {e}")))?;
    if response.status() == hyper::StatusCode::NOT_FOUND {
        return Ok(None);
    }
    if !response.status().is_success() {
        return Err(ClientError::Protocol(format!(
            "GET /canary answered {}",
            response.status()
        )));
    }
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Network(format!("reading the canary failed: {e}")))?
        .to_bytes();
    verify(&body).map(Some)
}

/// Checks a published canary's signature: Ed25519 by `key` over the
/// canonical JSON `{"day":…,"statement":…}` (sorted keys, no whitespace).
pub fn verify(json: &[u8]) -> Result<Canary, ClientError> {
    let bad = |what: &str| ClientError::KeyLog(format!("the warrant canary is not valid: {what}"));
    let published: Published =
        serde_json::from_slice(json).map_err(|_| bad("not the expected JSON"))?;
    let key: [u8; 32] = hex::decode(&published.key)
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| bad("malformed key"))?;
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

    fn published(statement: &str, day: u64, key: &SigningKey) -> String {
        let signed = serde_json::json!({ "day": day, "statement": statement }).to_string();
        serde_json::json!({
            "statement": statement,
            "day": day,
            "key": hex::encode(key.verifying_key().to_bytes()),
            "signature": hex::encode(key.sign(signed.as_bytes()).to_bytes()),
        })
        .to_string()
    }

    #[test]
    fn a_signed_canary_verifies_and_an_edited_one_does_not() {
        let key = SigningKey::from_bytes(&[5; 32]);
        let good = published("No \"orders\"\nso far — none.", 20_400, &key);
        assert_eq!(verify(good.as_bytes()).unwrap().day, 20_400);
        let edited = good.replace("20400", "20401");
        assert!(verify(edited.as_bytes()).is_err());
        let reworded = good.replace("none", "some");
        assert!(verify(reworded.as_bytes()).is_err());
        assert!(verify(b"{}").is_err());
    }
}
