//! Canonical byte encodings for signatures.
//!
//! A signature never covers CBOR: each signed structure is written field by field into a
//! `Canonical` buffer that starts with a domain-separation tag, uses fixed-width big-endian
//! integers, and length-prefixes every variable-length field. Two different structures can
//! therefore never produce the same signed bytes.

pub(crate) struct Canonical(Vec<u8>);

impl Canonical {
    /// Starts a buffer with a NUL-terminated domain tag such as `b"encrypto/envelope/v1"`.
    pub(crate) fn new(domain: &[u8]) -> Self {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(domain);
        buf.push(0);
        Canonical(buf)
    }

    pub(crate) fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }

    pub(crate) fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// A fixed-size field (its size is implied by the structure, so no prefix).
    pub(crate) fn fixed(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }

    /// A variable-length field, prefixed with its length as u64.
    pub(crate) fn bytes(self, v: &[u8]) -> Self {
        self.u64(v.len() as u64).fixed(v)
    }

    /// An optional variable-length field: a presence byte, then the field.
    pub(crate) fn opt_bytes(self, v: Option<&[u8]>) -> Self {
        match v {
            None => self.u8(0),
            Some(v) => self.u8(1).bytes(v),
        }
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.0
    }
}
