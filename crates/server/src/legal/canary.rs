//! The warrant canary: a dated statement signed with the legal key,
//! stored by a [`LegalStore`] and served by the running server at
//! `GET /canary`.

use serde_json::{Value, json};

use super::canonical::{hex_field, verify_signature};
use super::{LegalError, MAX_STATEMENT_BYTES, check_text, legal_key};
use crate::store::{CanaryRecord, LegalStore, UnixDay};

/// A signed, dated statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    /// The statement.
    pub statement: String,
    /// Day it was signed.
    pub day: UnixDay,
    /// The legal public key.
    pub key: [u8; 32],
    /// Signature over the canonical bytes of `{"day", "statement"}`.
    pub signature: [u8; 64],
}

impl Canary {
    /// What is signed.
    pub fn signed_part(statement: &str, day: UnixDay) -> Value {
        json!({ "statement": statement, "day": day })
    }

    /// `{"statement", "day", "key", "signature"}`, as served at `/canary`.
    pub fn to_json(&self) -> Value {
        json!({
            "statement": self.statement,
            "day": self.day,
            "key": hex::encode(self.key),
            "signature": hex::encode(self.signature),
        })
    }

    /// Parses the served form and checks its signature.
    pub fn verify(value: &Value) -> Result<Self, LegalError> {
        let bad = |what: String| LegalError::BadDocument(format!("not a valid canary: {what}"));
        let statement = value
            .get("statement")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("\"statement\" is missing".into()))?
            .to_owned();
        let day = value
            .get("day")
            .and_then(Value::as_u64)
            .ok_or_else(|| bad("\"day\" is missing".into()))?;
        let key = hex_field::<32>(value, "key").map_err(bad)?;
        let signature = hex_field::<64>(value, "signature").map_err(bad)?;
        verify_signature(&key, &Self::signed_part(&statement, day), &signature).map_err(bad)?;
        Ok(Self {
            statement,
            day,
            key,
            signature,
        })
    }
}

impl From<CanaryRecord> for Canary {
    fn from(record: CanaryRecord) -> Self {
        Self {
            statement: record.statement,
            day: record.day,
            key: record.key,
            signature: record.signature,
        }
    }
}

/// Signs and stores `statement` as of `today`; it becomes the one served.
pub async fn publish_canary<S: LegalStore>(
    store: &S,
    statement: &str,
    today: UnixDay,
) -> Result<Canary, LegalError> {
    check_text("statement", statement, MAX_STATEMENT_BYTES)?;
    let key = legal_key(store).await?;
    let canary = Canary {
        statement: statement.to_owned(),
        day: today,
        key: key.public(),
        signature: key.sign(&Canary::signed_part(statement, today)),
    };
    store
        .publish_canary(CanaryRecord {
            day: canary.day,
            statement: canary.statement.clone(),
            key: canary.key,
            signature: canary.signature,
        })
        .await?;
    Ok(canary)
}

/// The newest canary, if any.
pub async fn latest_canary<S: LegalStore>(store: &S) -> Result<Option<Canary>, LegalError> {
    Ok(store.latest_canary().await?.map(Canary::from))
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;
    use crate::legal::LegalKey;

    #[test]
    fn canary_round_trips_and_detects_edits() {
        let key = LegalKey(SigningKey::from_bytes(&[9; 32]));
        let canary = Canary {
            statement: "no orders".into(),
            day: 20_000,
            key: key.public(),
            signature: key.sign(&Canary::signed_part("no orders", 20_000)),
        };
        let value = canary.to_json();
        assert_eq!(Canary::verify(&value).unwrap(), canary);
        let mut edited = value.clone();
        edited["day"] = json!(20_001);
        assert!(Canary::verify(&edited).is_err());
    }
}
