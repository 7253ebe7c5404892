//! Encrypto window.
