//! Where the directory keeps akd's records.
//!
//! akd talks to storage through its [`akd::storage::Database`] trait. Only
//! [`sqlite`] knows SQLite; a PostgreSQL backend implements the same trait
//! with the same tables (see the schema in `sqlite.rs`) and the same
//! encoding of tree nodes ([`codec`]).
//!
//! What each table holds, and who may see it:
//!
//! | table | holds | published? |
//! |---|---|---|
//! | `akd_azks` | the latest complete epoch and the node count | yes |
//! | `akd_tree_nodes` | every node of the tree, keyed by its label (a VRF output or a prefix of one), with the epoch it last changed and its previous value | yes: audit proofs are drawn from it |
//! | `akd_epoch_roots` | each epoch's root hash, written in the same transaction as the epoch | yes: what auditors and clients compare against |
//! | `akd_meta` | the VRF public key the directory was created with | yes (it is public) |
//! | `akd_value_states` | username → (version, epoch, value, leaf label) | no: the server's private index, needed to answer a lookup for a username |
//!
//! Old proofs come from these rows, not from rebuilding old trees: a leaf
//! never changes once inserted (a new version is a new leaf under a new VRF
//! label), each node records the epoch it last changed, and so akd's audit
//! of epoch `e → e+1` walks only the subtrees that changed in `e+1`.

pub(crate) mod codec;
pub mod sqlite;
