//! Encrypto node.
