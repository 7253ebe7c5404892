//! Fingerprints and safety numbers: what two people compare to know they talk to each other.
//!
//! A [`Fingerprint`] is 30 decimal digits derived from both public keys of one identity by
//! iterated SHA-512 (Signal's construction: slow enough that searching for a colliding key is
//! expensive). A [`SafetyNumber`] joins two fingerprints in a fixed order, so both sides of a
//! chat see the same 60 digits.

use std::fmt;

use sha2::{Digest, Sha512};

use crate::identity::PublicIdentity;

/// SHA-512 iterations per fingerprint (as Signal).
const ITERATIONS: usize = 5200;
const VERSION: [u8; 2] = [0, 1];
/// Digits per group when printed.
const GROUP: usize = 5;

/// The 30-digit fingerprint of one identity.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint([u8; 30]);

impl Fingerprint {
    /// Computes the fingerprint of an identity's two public keys.
    pub fn of(public: &PublicIdentity) -> Self {
        let ed = public.ed25519_bytes();
        let rsa = public.rsa_der();
        let mut h = Sha512::new();
        h.update(VERSION);
        h.update(b"encrypto/fingerprint/v1");
        h.update(ed);
        h.update((rsa.len() as u64).to_be_bytes());
        h.update(rsa);
        let mut out = h.finalize();
        for _ in 1..ITERATIONS {
            let mut h = Sha512::new();
            h.update(out);
            h.update(ed);
            out = h.finalize();
        }
        let mut digits = [0u8; 30];
        for (group, chunk) in out[..30].chunks_exact(5).enumerate() {
            let mut v = 0u64;
            for b in chunk {
                v = (v << 8) | u64::from(*b);
            }
            let mut v = v % 100_000;
            for i in (0..GROUP).rev() {
                digits[group * GROUP + i] = (v % 10) as u8;
                v /= 10;
            }
        }
        Fingerprint(digits)
    }

    /// The 30 digits, each 0–9.
    pub fn digits(&self) -> &[u8; 30] {
        &self.0
    }

    /// The first group of five digits, for compact displays next to a name.
    pub fn short(&self) -> String {
        digits_to_string(&self.0[..GROUP], usize::MAX)
    }
}

impl fmt::Display for Fingerprint {
    /// Six groups of five digits separated by spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&digits_to_string(&self.0, GROUP))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

/// The 60-digit number two contacts compare: the same on both sides.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SafetyNumber([u8; 60]);

impl SafetyNumber {
    /// The safety number of the chat between `a` and `b`; `between(a, b) == between(b, a)`.
    pub fn between(a: &PublicIdentity, b: &PublicIdentity) -> Self {
        let (fa, fb) = (a.fingerprint(), b.fingerprint());
        // Order by key, not by fingerprint, so two identities with equal fingerprints (a
        // collision) still give a well-defined order.
        let (first, second) = if a.ed25519_bytes() <= b.ed25519_bytes() {
            (fa, fb)
        } else {
            (fb, fa)
        };
        let mut digits = [0u8; 60];
        digits[..30].copy_from_slice(&first.0);
        digits[30..].copy_from_slice(&second.0);
        SafetyNumber(digits)
    }

    /// The 60 digits, each 0–9.
    pub fn digits(&self) -> &[u8; 60] {
        &self.0
    }
}

impl fmt::Display for SafetyNumber {
    /// Twelve groups of five digits separated by spaces.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&digits_to_string(&self.0, GROUP))
    }
}

impl fmt::Debug for SafetyNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SafetyNumber({self})")
    }
}

fn digits_to_string(digits: &[u8], group: usize) -> String {
    let mut s = String::with_capacity(digits.len() + digits.len() / GROUP);
    for (i, d) in digits.iter().enumerate() {
        if i > 0 && i % group == 0 {
            s.push(' ');
        }
        s.push(char::from(b'0' + d));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{alice, bob, carol};

    #[test]
    fn fingerprint_prints_six_groups() {
        let s = alice().public().fingerprint().to_string();
        assert_eq!(s.len(), 35);
        assert_eq!(s.split(' ').count(), 6);
        assert!(
            s.split(' ')
                .all(|g| g.len() == 5 && g.bytes().all(|b| b.is_ascii_digit()))
        );
    }

    #[test]
    fn fingerprints_differ_between_identities() {
        assert_ne!(alice().public().fingerprint(), bob().public().fingerprint());
    }

    #[test]
    fn safety_number_is_symmetric_and_pairwise() {
        let (a, b, c) = (alice().public(), bob().public(), carol().public());
        assert_eq!(SafetyNumber::between(a, b), SafetyNumber::between(b, a));
        assert_ne!(SafetyNumber::between(a, b), SafetyNumber::between(a, c));
        assert_eq!(
            SafetyNumber::between(a, b).to_string().split(' ').count(),
            12
        );
    }
}
