//! Safety numbers: a short string two people compare (in person, or by
//! scanning a QR code) to check that each has the other's real identity key.
//!
//! Modeled on Signal's numeric fingerprints: each side's identity key and
//! username are hashed with SHA-512 over 5,200 iterations into 30 digits, and
//! the two halves are ordered by username so both people see the same 60
//! digits.

use crate::identity::Username;
use sha2::{Digest, Sha512};

const ITERATIONS: usize = 5200;
const VERSION: [u8; 2] = [0, 1];

/// The 60-digit safety number of a pair of accounts.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SafetyNumber(String);

impl SafetyNumber {
    /// The same for both people, whichever of them computes it.
    pub fn new(a: (&Username, &[u8]), b: (&Username, &[u8])) -> Self {
        let (first, second) = if a.0 <= b.0 { (a, b) } else { (b, a) };
        Self(format!(
            "{}{}",
            half(first.0, first.1),
            half(second.0, second.1)
        ))
    }

    /// The 60 digits, no separators (what the QR code carries).
    pub fn digits(&self) -> &str {
        &self.0
    }

    /// Twelve groups of five digits, for reading aloud.
    pub fn grouped(&self) -> String {
        self.0
            .as_bytes()
            .chunks(5)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn half(username: &Username, identity_key: &[u8]) -> String {
    let mut hash = Sha512::new()
        .chain_update(VERSION)
        .chain_update(identity_key)
        .chain_update(username.as_str())
        .finalize();
    for _ in 1..ITERATIONS {
        hash = Sha512::new()
            .chain_update(hash)
            .chain_update(identity_key)
            .finalize();
    }
    // Six chunks of five bytes, each shown as five decimal digits.
    hash.chunks(5)
        .take(6)
        .map(|chunk| {
            let value = chunk.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            format!("{:05}", value % 100_000)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_sides_see_the_same_number_and_keys_matter() {
        let (alice, bob) = (
            Username::parse("alice").unwrap(),
            Username::parse("bob").unwrap(),
        );
        let (ka, kb) = ([1u8; 32], [2u8; 32]);
        let from_alice = SafetyNumber::new((&alice, &ka), (&bob, &kb));
        let from_bob = SafetyNumber::new((&bob, &kb), (&alice, &ka));
        assert_eq!(from_alice, from_bob);
        assert_eq!(from_alice.digits().len(), 60);
        assert!(from_alice.digits().bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(from_alice.grouped().split(' ').count(), 12);
        let swapped = SafetyNumber::new((&alice, &ka), (&bob, &[3u8; 32]));
        assert_ne!(from_alice, swapped);
    }
}
