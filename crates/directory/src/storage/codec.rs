//! A fixed-size encoding of one akd tree node, shared by every backend.
//!
//! The node's own label is the row's key and is not repeated. Layout
//! (big-endian integers), [`NODE_LEN`] bytes:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | `last_epoch` |
//! | 8 | `min_descendant_epoch` |
//! | 4 + 32 | parent label (length in bits, value) |
//! | 1 | node type (1 leaf, 2 root, 3 interior) |
//! | 1 + 4 + 32 | left child (present flag, label) |
//! | 1 + 4 + 32 | right child (present flag, label) |
//! | 32 | `hash` (the node's aZKS value) |

use akd::NodeLabel;
use akd::tree_node::TreeNode;

/// Length of one encoded node.
pub(crate) const NODE_LEN: usize = 8 + 8 + 36 + 1 + 37 + 37 + 32;

/// Offset of the 32-byte hash inside an encoded node (tests flip bytes there).
pub const HASH_OFFSET: usize = NODE_LEN - 32;

/// The fields of one decoded node, in the order akd's builder takes them.
pub(crate) struct NodeFields {
    pub last_epoch: u64,
    pub min_descendant_epoch: u64,
    pub parent: NodeLabel,
    pub node_type: u8,
    pub left: Option<NodeLabel>,
    pub right: Option<NodeLabel>,
    pub hash: [u8; 32],
}

pub(crate) fn encode_node(node: &TreeNode) -> Vec<u8> {
    let mut out = Vec::with_capacity(NODE_LEN);
    out.extend_from_slice(&node.last_epoch.to_be_bytes());
    out.extend_from_slice(&node.min_descendant_epoch.to_be_bytes());
    put_label(&mut out, &node.parent);
    out.push(node.node_type as u8);
    put_child(&mut out, node.left_child.as_ref());
    put_child(&mut out, node.right_child.as_ref());
    out.extend_from_slice(&node.hash.0);
    out
}

fn put_label(out: &mut Vec<u8>, label: &NodeLabel) {
    out.extend_from_slice(&label.label_len.to_be_bytes());
    out.extend_from_slice(&label.label_val);
}

fn put_child(out: &mut Vec<u8>, child: Option<&NodeLabel>) {
    match child {
        Some(label) => {
            out.push(1);
            put_label(out, label);
        }
        None => out.extend_from_slice(&[0u8; 37]),
    }
}

/// Decodes a node written by [`encode_node`]; `None` if the bytes are not one.
pub(crate) fn decode_node(bytes: &[u8]) -> Option<NodeFields> {
    if bytes.len() != NODE_LEN {
        return None;
    }
    let mut r = Reader(bytes);
    let last_epoch = r.u64()?;
    let min_descendant_epoch = r.u64()?;
    let parent = r.label()?;
    let node_type = r.u8()?;
    if !(1..=3).contains(&node_type) {
        return None;
    }
    let left = r.child()?;
    let right = r.child()?;
    let hash = r.array::<32>()?;
    Some(NodeFields {
        last_epoch,
        min_descendant_epoch,
        parent,
        node_type,
        left,
        right,
        hash,
    })
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.array::<1>().map(|[b]| b)
    }
    fn u64(&mut self) -> Option<u64> {
        self.array::<8>().map(u64::from_be_bytes)
    }
    fn label(&mut self) -> Option<NodeLabel> {
        let len = u32::from_be_bytes(self.array::<4>()?);
        let val = self.array::<32>()?;
        Some(NodeLabel::new(val, len))
    }
    fn child(&mut self) -> Option<Option<NodeLabel>> {
        match self.u8()? {
            0 => {
                self.array::<36>()?;
                Some(None)
            }
            1 => self.label().map(Some),
            _ => None,
        }
    }
}
