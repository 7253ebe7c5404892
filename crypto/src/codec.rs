//! The one CBOR codec for everything Encrypto puts on the wire or on disk.
//!
//! Structures are encoded *packed* (struct fields keyed by their index, enum variants by
//! index), which keeps frames small and lets fields be appended in later versions. The size
//! limit is checked before a single byte is parsed, and trailing bytes are an error, so there
//! is exactly one accepted encoding length for a value.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a value could not be encoded or decoded.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodecError {
    /// The input is larger than the caller's limit; nothing was parsed.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input in bytes.
        size: usize,
        /// The limit it was checked against.
        limit: usize,
    },
    /// The bytes are not a valid encoding of the expected type.
    #[error("malformed CBOR: {0}")]
    Malformed(String),
    /// The value could not be encoded (a bug, not bad input).
    #[error("cannot encode value: {0}")]
    Encode(String),
}

/// Encodes `value` as packed CBOR.
///
/// # Errors
/// [`CodecError::Encode`] if serde reports an error (only for types that cannot be CBOR, such
/// as maps with non-string keys that fail to serialise).
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    serde_cbor::ser::to_vec_packed(value).map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a value from `bytes`, refusing inputs longer than `limit` before parsing.
///
/// Trailing bytes after the value are rejected.
///
/// # Errors
/// [`CodecError::TooLarge`] when `bytes.len() > limit`; [`CodecError::Malformed`] for anything
/// that is not exactly one valid encoding of `T`.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], limit: usize) -> Result<T, CodecError> {
    if bytes.len() > limit {
        return Err(CodecError::TooLarge {
            size: bytes.len(),
            limit,
        });
    }
    serde_cbor::from_slice(bytes).map_err(|e| CodecError::Malformed(e.to_string()))
}

/// Decodes like [`decode`], then insists that `bytes` is exactly the encoding [`encode`]
/// produces for the decoded value.
///
/// CBOR has several encodings for one value (an integer in a longer form than needed, `undefined`
/// for `null`, indefinite lengths). Signatures cover values, not bytes, so those variants are not
/// forgeries; but accepting them would let a relay alter a frame without detection and would give
/// one message several wire forms. Everything signed is therefore decoded with this function.
///
/// # Errors
/// As [`decode`], plus [`CodecError::Malformed`] for a non-canonical encoding.
pub fn decode_canonical<T: Serialize + DeserializeOwned>(
    bytes: &[u8],
    limit: usize,
) -> Result<T, CodecError> {
    let value: T = decode(bytes, limit)?;
    if encode(&value)? != bytes {
        return Err(CodecError::Malformed("non-canonical encoding".into()));
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        a: u32,
        #[serde(with = "serde_bytes")]
        b: Vec<u8>,
        c: Option<String>,
    }

    #[test]
    fn round_trip() {
        let s = Sample {
            a: 7,
            b: vec![1, 2, 3],
            c: Some("x".into()),
        };
        let bytes = encode(&s).unwrap();
        assert_eq!(decode::<Sample>(&bytes, 1024).unwrap(), s);
    }

    #[test]
    fn limit_checked_before_parsing() {
        let s = Sample {
            a: 7,
            b: vec![0; 100],
            c: None,
        };
        let bytes = encode(&s).unwrap();
        let err = decode::<Sample>(&bytes, 10).unwrap_err();
        assert_eq!(
            err,
            CodecError::TooLarge {
                size: bytes.len(),
                limit: 10
            }
        );
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut bytes = encode(&Sample {
            a: 1,
            b: vec![],
            c: None,
        })
        .unwrap();
        bytes.push(0);
        assert!(matches!(
            decode::<Sample>(&bytes, 1024),
            Err(CodecError::Malformed(_))
        ));
    }

    #[test]
    fn non_canonical_encodings_rejected() {
        let canonical = encode(&Some(5u64)).unwrap();
        assert_eq!(
            decode_canonical::<Option<u64>>(&canonical, 64).unwrap(),
            Some(5)
        );
        // 5 written as a two-byte integer instead of the one-byte form.
        assert!(decode::<Option<u64>>(&[0x18, 0x05], 64).is_ok());
        assert!(decode_canonical::<Option<u64>>(&[0x18, 0x05], 64).is_err());
        // `undefined` instead of `null`.
        assert!(decode_canonical::<Option<u64>>(&[0xf7], 64).is_err());
    }

    #[test]
    fn huge_declared_length_does_not_allocate_or_panic() {
        // A byte string claiming 2^63 bytes, followed by nothing.
        let bytes = [0x5b, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
        assert!(decode::<Sample>(&bytes, 1024).is_err());
        // An array claiming 2^32 elements.
        let bytes = [0x9a, 0xff, 0xff, 0xff, 0xff];
        assert!(decode::<Vec<u64>>(&bytes, 1024).is_err());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let bytes = vec![0x81; 10_000];
        assert!(decode::<serde_cbor::Value>(&bytes, 1 << 20).is_err());
    }
}
