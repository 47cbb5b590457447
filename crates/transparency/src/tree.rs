//! The Merkle tree ([`MerkleLog`], the server's) and the proofs clients
//! check against a signed head: inclusion of an entry, consistency of two
//! heads.

use std::fmt;
use std::sync::Arc;

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{InclusionProof, RootHash};
use sha2::{Digest as _, Sha256};

use crate::{HASH_LEN, Hash, LogError, MAX_TREE_SIZE, SignedTreeHead, to_hash};

type Tree = MemoryBackedTree<Sha256, Arc<[u8]>>;

/// The whole tree, in memory, for the server. Rebuilt from the stored
/// leaves at startup; proofs can be made against any earlier size.
///
/// `ct-merkle` keeps only the newest tree's nodes, so proofs against an
/// earlier size would mean rebuilding that tree: linear in its size, per
/// request — a cheap way for anyone to burn the server's CPU. So the log
/// also keeps the root of every complete, aligned subtree (`levels[j][i]`
/// covers leaves `i·2^j .. (i+1)·2^j`, about two hashes per leaf), and
/// puts older roots and proofs together from them by RFC 6962's own
/// recursion, in O(log² n). Tests check them byte for byte against
/// `ct-merkle` trees of the same prefixes.
#[derive(Clone, Default)]
pub struct MerkleLog {
    tree: Tree,
    levels: Vec<Vec<Hash>>,
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
        let mut hash: Hash = Sha256::new()
            .chain_update([LEAF_PREFIX])
            .chain_update(leaf)
            .finalize()
            .into();
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let Some(row) = self.levels.get_mut(level) else {
                return;
            };
            row.push(hash);
            // A completed pair makes a complete subtree one level up.
            match row.len().is_multiple_of(2).then(|| row.last_chunk::<2>()) {
                Some(Some([left, right])) => {
                    hash = node(left, right);
                    level += 1;
                }
                _ => return,
            }
        }
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
        self.check_size(tree_size)?;
        if tree_size == 0 {
            return Ok(crate::empty_root());
        }
        Ok(self.subtree_root(0, tree_size))
    }

    fn check_size(&self, size: u64) -> Result<(), LogError> {
        if size > self.len() {
            return Err(LogError::OutOfRange(format!(
                "the log has {} entries, not {size}",
                self.len()
            )));
        }
        Ok(())
    }

    /// MTH(D[lo:hi]) of RFC 6962 (`lo < hi <= len`): a stored subtree
    /// root when the range is one, else split at the largest power of two
    /// below its length (whose left part always is one).
    fn subtree_root(&self, lo: u64, hi: u64) -> Hash {
        let n = hi - lo;
        if n.is_power_of_two() && lo.is_multiple_of(n) {
            let level = n.trailing_zeros() as usize;
            let at = usize::try_from(lo >> level).unwrap_or(usize::MAX);
            if let Some(hash) = self.levels.get(level).and_then(|row| row.get(at)) {
                return *hash;
            }
        }
        if n < 2 {
            // Unreachable for `lo < hi <= len`; a wrong hash only makes a
            // proof fail to verify.
            return crate::empty_root();
        }
        let k = split(n);
        node(
            &self.subtree_root(lo, lo + k),
            &self.subtree_root(lo + k, hi),
        )
    }

    /// PATH(m, D[lo:hi]) of RFC 6962, leaf to root.
    fn path(&self, m: u64, lo: u64, hi: u64, out: &mut Vec<Vec<u8>>) {
        let n = hi - lo;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, lo, lo + k, out);
            out.push(self.subtree_root(lo + k, hi).to_vec());
        } else {
            self.path(m - k, lo + k, hi, out);
            out.push(self.subtree_root(lo, lo + k).to_vec());
        }
    }

    /// SUBPROOF(m, D[lo:hi], b) of RFC 6962.
    fn subproof(&self, m: u64, lo: u64, hi: u64, whole: bool, out: &mut Vec<Vec<u8>>) {
        let n = hi - lo;
        if m == n {
            if !whole {
                out.push(self.subtree_root(lo, hi).to_vec());
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, lo, lo + k, whole, out);
            out.push(self.subtree_root(lo + k, hi).to_vec());
        } else {
            self.subproof(m - k, lo + k, hi, false, out);
            out.push(self.subtree_root(lo, lo + k).to_vec());
        }
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
        self.check_size(tree_size)?;
        if tree_size == self.len() {
            return Ok(split_path(self.tree.prove_inclusion(position).as_bytes()));
        }
        let mut path = Vec::new();
        self.path(index, 0, tree_size, &mut path);
        Ok(path)
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
        if new_size == self.len() {
            return Ok(split_path(
                self.tree.prove_consistency(additions).as_bytes(),
            ));
        }
        let mut path = Vec::new();
        self.subproof(old_size, 0, new_size, true, &mut path);
        Ok(path)
    }
}

/// RFC 6962's leaf and interior-node hash prefixes.
const LEAF_PREFIX: u8 = 0;
const NODE_PREFIX: u8 = 1;

fn node(left: &Hash, right: &Hash) -> Hash {
    Sha256::new()
        .chain_update([NODE_PREFIX])
        .chain_update(left)
        .chain_update(right)
        .finalize()
        .into()
}

/// The largest power of two below `n` (`n >= 2`): where RFC 6962 splits.
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
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
