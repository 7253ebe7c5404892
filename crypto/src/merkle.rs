//! Merkle trees over SHA-256, shaped and hashed as in RFC 9162 (Certificate Transparency 2.0,
//! section 2.1): so that one signature can cover many envelopes, each of which still carries
//! what it takes to check it alone (see [`crate::envelope::sign_batch`]).
//!
//! A leaf is `SHA-256(0x00 || data)`, an inner node `SHA-256(0x01 || left || right)`; the
//! prefixes keep a leaf from ever passing for an inner node. A tree of `n` leaves splits at the
//! largest power of two below `n`, so every tree size has exactly one shape, and an inclusion
//! path is exactly as long as that shape makes it (at most [`MAX_PATH_LEN`] hashes for
//! [`MAX_LEAVES`] leaves).

use sha2::{Digest, Sha256};

/// A SHA-256 digest.
pub type Hash = [u8; 32];

/// Most leaves one tree may have.
pub const MAX_LEAVES: usize = 1024;
/// Longest inclusion path (a tree of [`MAX_LEAVES`] leaves is this deep).
pub const MAX_PATH_LEN: usize = MAX_LEAVES.ilog2() as usize;

const LEAF: u8 = 0;
const NODE: u8 = 1;

/// The hash of a leaf holding `data`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([LEAF]);
    h.update(data);
    h.finalize().into()
}

fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([NODE]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the tree over `leaves` (leaf hashes, in order) and every leaf's inclusion path,
/// in the same order. Built level by level: pairs are hashed left to right and an odd node at
/// the end of a level moves up unchanged, which gives RFC 9162's shape.
///
/// # Panics
/// If `leaves` is empty or longer than [`MAX_LEAVES`]: callers split larger sets.
pub fn build(leaves: &[Hash]) -> (Hash, Vec<Vec<Hash>>) {
    assert!(
        (1..=MAX_LEAVES).contains(&leaves.len()),
        "a tree has 1 to {MAX_LEAVES} leaves"
    );
    let mut paths = vec![Vec::new(); leaves.len()];
    // Which node of the current level each leaf is under.
    let mut position: Vec<usize> = (0..leaves.len()).collect();
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        for (path, at) in paths.iter_mut().zip(position.iter_mut()) {
            let sibling = *at ^ 1;
            if sibling < level.len() {
                path.push(level[sibling]);
            }
            *at /= 2;
        }
        level = level
            .chunks(2)
            .map(|pair| match pair {
                [left, right] => node_hash(left, right),
                [alone] => *alone,
                _ => unreachable!("chunks of two"),
            })
            .collect();
    }
    (level[0], paths)
}

/// The root that `path` leads to from leaf `index` (holding `leaf`) of a tree of `count`
/// leaves, or `None` when the path cannot belong to such a tree (wrong length, index out of
/// range). RFC 9162, section 2.1.3.2, up to the comparison with a known root: here the root is
/// what the signature is then checked against.
pub fn root_from_path(leaf: &Hash, index: usize, count: usize, path: &[Hash]) -> Option<Hash> {
    if index >= count || count > MAX_LEAVES || path.len() > MAX_PATH_LEN {
        return None;
    }
    let (mut f, mut s) = (index, count - 1);
    let mut root = *leaf;
    for p in path {
        if s == 0 {
            return None;
        }
        if f & 1 == 1 || f == s {
            root = node_hash(p, &root);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            root = node_hash(&root, p);
        }
        f >>= 1;
        s >>= 1;
    }
    (s == 0).then_some(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 9162's recursive definitions, written out as they read: the reference `build` is
    /// checked against.
    fn reference_root(leaves: &[Hash]) -> Hash {
        if leaves.len() == 1 {
            return leaves[0];
        }
        let k = split(leaves.len());
        node_hash(&reference_root(&leaves[..k]), &reference_root(&leaves[k..]))
    }

    fn reference_path(index: usize, leaves: &[Hash]) -> Vec<Hash> {
        if leaves.len() == 1 {
            return Vec::new();
        }
        let k = split(leaves.len());
        if index < k {
            let mut path = reference_path(index, &leaves[..k]);
            path.push(reference_root(&leaves[k..]));
            path
        } else {
            let mut path = reference_path(index - k, &leaves[k..]);
            path.push(reference_root(&leaves[..k]));
            path
        }
    }

    /// The largest power of two below `n` (n > 1).
    fn split(n: usize) -> usize {
        1 << (n - 1).ilog2()
    }

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn one_leaf_is_its_own_root() {
        let l = leaves(1);
        let (root, paths) = build(&l);
        assert_eq!(root, l[0]);
        assert_eq!(paths, vec![Vec::<Hash>::new()]);
        assert_eq!(root_from_path(&l[0], 0, 1, &[]), Some(root));
    }

    #[test]
    fn leaf_and_node_hashes_are_separated() {
        let (a, b) = (leaf_hash(b"a"), leaf_hash(b"b"));
        let mut concatenated = a.to_vec();
        concatenated.extend_from_slice(&b);
        assert_ne!(node_hash(&a, &b), leaf_hash(&concatenated));
    }

    #[test]
    fn every_size_matches_the_rfc_and_every_path_leads_to_the_root() {
        for n in (1..=70).chain([127, 128, 129, 255, 256, 257, MAX_LEAVES]) {
            let l = leaves(n);
            let (root, paths) = build(&l);
            assert_eq!(root, reference_root(&l), "root of {n}");
            for (i, path) in paths.iter().enumerate() {
                assert_eq!(*path, reference_path(i, &l), "path {i} of {n}");
                assert!(path.len() <= MAX_PATH_LEN);
                assert_eq!(
                    root_from_path(&l[i], i, n, path),
                    Some(root),
                    "leaf {i} of {n}"
                );
            }
        }
    }

    #[test]
    fn a_path_does_not_fit_another_index_or_size() {
        let l = leaves(13);
        let (root, paths) = build(&l);
        for (i, path) in paths.iter().enumerate() {
            for j in (0..13).filter(|&j| j != i) {
                assert_ne!(root_from_path(&l[i], j, 13, path), Some(root), "{i} as {j}");
            }
        }
        // A path of the right length for another size can lead to the same root (leaf 0's
        // path has the same shape in every tree of 9 to 16 leaves): the root does not bind the
        // size, which is why the signed statement names it (see the envelope tests).
        assert_eq!(root_from_path(&l[0], 0, 9, &paths[0]), Some(root));
    }

    #[test]
    fn impossible_paths_are_refused() {
        let l = leaves(8);
        let (_, paths) = build(&l);
        assert_eq!(root_from_path(&l[0], 8, 8, &paths[0]), None);
        assert_eq!(root_from_path(&l[0], 0, 8, &paths[0][..2]), None);
        let mut long = paths[0].clone();
        long.push(l[1]);
        assert_eq!(root_from_path(&l[0], 0, 8, &long), None);
        assert_eq!(root_from_path(&l[0], 0, MAX_LEAVES + 1, &paths[0]), None);
        assert_eq!(root_from_path(&l[0], 0, 1, &paths[0]), None);
    }

    proptest! {
        #[test]
        fn a_changed_leaf_or_path_changes_the_root(
            n in 2usize..200,
            pick in any::<prop::sample::Index>(),
            byte in 0usize..32,
            flip in 1u8..=255,
        ) {
            let l = leaves(n);
            let (root, paths) = build(&l);
            let i = pick.index(n);
            let mut leaf = l[i];
            leaf[byte] ^= flip;
            prop_assert_ne!(root_from_path(&leaf, i, n, &paths[i]), Some(root));
            let mut path = paths[i].clone();
            let hop = byte % path.len();
            path[hop][byte] ^= flip;
            prop_assert_ne!(root_from_path(&l[i], i, n, &path), Some(root));
        }
    }
}
