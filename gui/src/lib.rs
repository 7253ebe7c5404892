//! Encrypto's desktop window (egui/eframe), driven only through `encrypto-node`'s public API.
//!
//! Not built yet: the window is the desktop-window issue. This crate holds its place in the
//! workspace so the dependency direction (`crypto` ← `node` ← `gui` ← the binary) is fixed from
//! the start. Note for whoever builds it: libp2p 0.57 and eframe 0.37 need a lock-file
//! workaround to live in one workspace (see the foundation issue's closing note).
