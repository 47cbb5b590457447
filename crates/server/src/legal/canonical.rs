//! The bytes every legal signature covers, and the signed-document
//! envelope that carries a signature with what it signs.

use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use serde_json::{Value, json};

use super::{LegalError, LegalKey};

/// The bytes every legal signature covers: `value` as JSON with object keys
/// sorted (by their UTF-8 bytes) and no whitespace. The documents hold only
/// strings, non-negative integers, booleans, null, arrays and objects, so
/// this equals RFC 8785 (JCS) output for them.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out.into_bytes()
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (key, value)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(value, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        // Scalars: serde_json's compact form.
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// A document with the legal key's signature over its canonical bytes, as
/// `{"document": …, "signature": "hex", "key": "hex"}`.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedDocument {
    /// What is signed.
    pub document: Value,
    /// Ed25519 signature over `canonical_json(document)`.
    pub signature: [u8; 64],
    /// The legal public key.
    pub key: [u8; 32],
}

impl SignedDocument {
    pub(super) fn sign(key: &LegalKey, document: Value) -> Self {
        Self {
            signature: key.sign(&document),
            key: key.public(),
            document,
        }
    }

    /// The JSON form.
    pub fn to_json(&self) -> Value {
        json!({
            "document": self.document,
            "signature": hex::encode(self.signature),
            "key": hex::encode(self.key),
        })
    }

    /// Parses the JSON form and checks the signature (against `expected`
    /// if given, else against the key it names).
    pub fn verify(value: &Value, expected: Option<&[u8; 32]>) -> Result<Self, LegalError> {
        let bad = |what: &str| LegalError::BadDocument(format!("not a signed document: {what}"));
        let document = value
            .get("document")
            .ok_or_else(|| bad("no \"document\""))?;
        let signature = hex_field::<64>(value, "signature").map_err(|e| bad(&e))?;
        let key = hex_field::<32>(value, "key").map_err(|e| bad(&e))?;
        if let Some(expected) = expected
            && *expected != key
        {
            return Err(LegalError::BadDocument(format!(
                "signed by key {}, not the expected {}",
                hex::encode(key),
                hex::encode(expected)
            )));
        }
        verify_signature(&key, document, &signature)
            .map_err(|reason| LegalError::BadDocument(format!("the document's {reason}")))?;
        Ok(Self {
            document: document.clone(),
            signature,
            key,
        })
    }
}

pub(super) fn verify_signature(
    key: &[u8; 32],
    document: &Value,
    signature: &[u8; 64],
) -> Result<(), String> {
    let key = VerifyingKey::from_bytes(key).map_err(|_| "key is not a valid Ed25519 key")?;
    key.verify(&canonical_json(document), &Signature::from_bytes(signature))
        .map_err(|_| "signature does not verify".to_owned())
}

pub(super) fn hex_field<const N: usize>(value: &Value, name: &str) -> Result<[u8; N], String> {
    let text = value
        .get(name)
        .and_then(Value::as_str)
        .ok_or_else(|| format!("\"{name}\" is missing or not a string"))?;
    let bytes = hex::decode(text).map_err(|_| format!("\"{name}\" is not hex"))?;
    <[u8; N]>::try_from(bytes.as_slice()).map_err(|_| format!("\"{name}\" is not {N} bytes"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_json_sorts_keys_and_has_no_whitespace() {
        let value = json!({"b": [1, {"z": null, "a": "x\"y"}], "a": true});
        assert_eq!(
            String::from_utf8(canonical_json(&value)).unwrap(),
            r#"{"a":true,"b":[1,{"a":"x\"y","z":null}]}"#
        );
    }
}
