//! [`DigestTree`]: a Merkle tree over every stored cart, for anti-entropy.
//!
//! Carts are placed in [`LEAVES`] ranges by the hash of their id. A range's digest is the
//! wrapping sum of its carts' digests ([`cart_digest`]: the hash of the id and the encoded
//! state), and an inner node's digest is the wrapping sum of its children's. So a cart write
//! updates one leaf and its ancestors in O(depth) with no read of the other carts, and two
//! nodes holding the same carts have the same tree whatever order the writes came in.
//!
//! The tree is [`LEVELS`] deep with fan-out [`FANOUT`]: level 0 is the root, level
//! `LEVELS - 1` the leaves. Anti-entropy compares it top-down (the root, then the children
//! of every node that differs) and ships full cart states only for the leaves that differ:
//! Dynamo's Merkle trees, kept in memory (65,536 leaves: 512 KiB, plus 35 KiB of inner
//! nodes) and rebuilt by one scan of the carts when the node opens. With 100,000 carts a
//! leaf holds one or two, so a repair ships little more than the carts that differ.
//!
//! Equal digests mean equal carts only if equal states encode to equal bytes. They do: the
//! crdt keeps its causal context compact and every map sorted, and the codec has one format
//! version; a change there changes digests everywhere at once (a rolling upgrade across it
//! ships the differing ranges once).

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

/// Bits of a cart id's hash that pick its leaf.
pub const LEAF_BITS: u32 = 16;
/// Number of leaves (ranges of cart-id hashes).
pub const LEAVES: usize = 1 << LEAF_BITS;
/// Bits per level: each inner node has `1 << FANOUT_BITS` children.
pub const FANOUT_BITS: u32 = 4;
/// Children per inner node.
pub const FANOUT: usize = 1 << FANOUT_BITS;
/// Levels, root (0) to leaves.
pub const LEVELS: u8 = (LEAF_BITS / FANOUT_BITS) as u8 + 1;
const _: () = assert!(LEAF_BITS % FANOUT_BITS == 0, "whole levels");

/// The leaf (range) a cart id falls in.
pub fn leaf_of(cart: &str) -> u32 {
    (xxh3_64(cart.as_bytes()) >> (64 - LEAF_BITS)) as u32
}

/// The digest of one stored cart: its id and its encoded state (as stored, format byte
/// included).
pub fn cart_digest(cart: &str, encoded: &[u8]) -> u64 {
    let mut h = Xxh3::new();
    h.update(&(cart.len() as u32).to_le_bytes());
    h.update(cart.as_bytes());
    h.update(encoded);
    h.digest()
}

/// Number of nodes at `level`.
pub fn level_width(level: u8) -> usize {
    1 << (FANOUT_BITS * u32::from(level))
}

/// The Merkle tree of a node's carts. See the [module docs](self).
#[derive(Clone, PartialEq, Eq)]
pub struct DigestTree {
    /// One vector per level, root first; level `l` has `level_width(l)` digests.
    levels: Vec<Vec<u64>>,
}

impl std::fmt::Debug for DigestTree {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DigestTree {{ root: {:#018x} }}", self.root())
    }
}

impl Default for DigestTree {
    fn default() -> Self {
        Self::new()
    }
}

impl DigestTree {
    /// The tree of no carts.
    pub fn new() -> Self {
        DigestTree {
            levels: (0..LEVELS).map(|l| vec![0; level_width(l)]).collect(),
        }
    }

    /// The root digest: equal roots, equal carts (with overwhelming probability).
    pub fn root(&self) -> u64 {
        self.levels[0][0]
    }

    /// The digest of node `index` at `level`, if both exist.
    pub fn get(&self, level: u8, index: u32) -> Option<u64> {
        self.levels
            .get(usize::from(level))
            .and_then(|l| l.get(index as usize))
            .copied()
    }

    /// Cart `cart`'s digest went from `before` (`None`: it was not stored) to `after`.
    pub fn replace(&mut self, cart: &str, before: Option<u64>, after: u64) {
        let delta = after.wrapping_sub(before.unwrap_or(0));
        if before.is_none() {
            // A cart's presence counts too, so that a cart whose digest happened to be 0
            // still changes its range.
            self.add(leaf_of(cart), delta.wrapping_add(PRESENT));
        } else {
            self.add(leaf_of(cart), delta);
        }
    }

    /// Adds a stored cart (when the tree is built from storage).
    pub fn insert(&mut self, cart: &str, digest: u64) {
        self.replace(cart, None, digest);
    }

    fn add(&mut self, leaf: u32, delta: u64) {
        let mut index = leaf as usize;
        for level in (0..usize::from(LEVELS)).rev() {
            let d = &mut self.levels[level][index];
            *d = d.wrapping_add(delta);
            index >>= FANOUT_BITS;
        }
    }

    /// The children of node `index` at `level` (which must not be the leaf level).
    pub fn children(index: u32) -> std::ops::Range<u32> {
        let first = index << FANOUT_BITS;
        first..first + FANOUT as u32
    }
}

/// Added once per stored cart (see [`DigestTree::replace`]).
const PRESENT: u64 = 0x9e37_79b9_7f4a_7c15;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insertion_order_does_not_matter_and_inner_nodes_sum_their_children() {
        let carts: Vec<(String, u64)> = (0..500)
            .map(|i| {
                (
                    format!("cart-{i}"),
                    cart_digest(&format!("cart-{i}"), &[1, i as u8]),
                )
            })
            .collect();
        let mut a = DigestTree::new();
        let mut b = DigestTree::new();
        for (c, d) in &carts {
            a.insert(c, *d);
        }
        for (c, d) in carts.iter().rev() {
            b.insert(c, *d);
        }
        assert_eq!(a, b);
        for level in 0..LEVELS - 1 {
            for i in 0..level_width(level) as u32 {
                let sum = DigestTree::children(i)
                    .map(|c| a.get(level + 1, c).unwrap())
                    .fold(0u64, u64::wrapping_add);
                assert_eq!(a.get(level, i), Some(sum), "level {level} node {i}");
            }
        }
        // A change, and its undo.
        let root = a.root();
        let (c, d) = &carts[7];
        a.replace(c, Some(*d), d ^ 1);
        assert_ne!(a.root(), root);
        a.replace(c, Some(d ^ 1), *d);
        assert_eq!(a.root(), root);
        assert_ne!(DigestTree::new().root(), root);
    }

    const LEAF_ALICE: u32 = 19873;

    #[test]
    fn the_hashes_are_stable_across_builds() {
        // Nodes of different builds compare digests: the functions must never change.
        assert_eq!(cart_digest("alice", b"\x01state"), 16144486761581074378);
        assert_eq!(leaf_of("alice"), LEAF_ALICE);
        assert_eq!(LEVELS, 5);
    }
}
