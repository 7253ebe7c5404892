//! Identities and RNGs shared by the unit tests. RSA keys are generated once per test binary.

use std::sync::OnceLock;

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::identity::{Identity, RsaBits};

/// A deterministic CSPRNG for tests.
pub(crate) fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

fn cached(cell: &'static OnceLock<Identity>, seed: u64) -> &'static Identity {
    cell.get_or_init(|| {
        Identity::generate(&mut rng(seed), RsaBits::B2048).expect("test key generation")
    })
}

pub(crate) fn alice() -> &'static Identity {
    static CELL: OnceLock<Identity> = OnceLock::new();
    cached(&CELL, 1)
}

pub(crate) fn bob() -> &'static Identity {
    static CELL: OnceLock<Identity> = OnceLock::new();
    cached(&CELL, 2)
}

pub(crate) fn carol() -> &'static Identity {
    static CELL: OnceLock<Identity> = OnceLock::new();
    cached(&CELL, 3)
}
