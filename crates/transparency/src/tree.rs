//! The Merkle tree ([`MerkleLog`], the server's) and the proofs clients
//! check against a signed head: inclusion of an entry, consistency of two
//! heads.

use std::fmt;
use std::sync::Arc;

use ct_merkle::mem_backed_tree::MemoryBackedTree;
use ct_merkle::{InclusionProof, RootHash};
use sha2::Sha256;

use crate::{HASH_LEN, Hash, LogError, MAX_TREE_SIZE, SignedTreeHead, to_hash};

type Tree = MemoryBackedTree<Sha256, Arc<[u8]>>;

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
