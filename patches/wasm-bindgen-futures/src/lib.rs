//! An empty stand-in for `wasm-bindgen-futures` 0.4.58.
//!
//! Why it exists: libp2p-swarm 0.48 pins `wasm-bindgen-futures = "=0.4.58"` (used only when
//! building for wasm32), which pins `js-sys` 0.3.85; eframe 0.37 needs `js-sys` ^0.3.103 (also
//! only for wasm32). Cargo resolves target-specific dependencies for every target, so the two
//! cannot share one lock file. Encrypto never builds for wasm, so the root `Cargo.toml` patches
//! this crate with an empty one of the same version, which drops the conflicting `js-sys` pin.
//! Remove it once libp2p-swarm relaxes its pin.
