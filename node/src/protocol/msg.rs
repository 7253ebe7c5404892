//! `/encrypto/msg/3`: requests (one envelope, a batch, or a control payload), the delivery
//! ack, and the chat payload sealed inside an envelope.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::file::FileOffer;
use super::{BATCH_ITEM_OVERHEAD, FRAME_OVERHEAD, MAX_BATCH_ENVELOPES, MAX_MSG_FRAME};

/// A request on `/encrypto/msg/3`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MsgRequest {
    /// The CBOR of a signed [`Envelope`](encrypto_crypto::envelope::Envelope).
    Envelope(serde_bytes::ByteBuf),
    /// The CBOR of a signed [`Control`](encrypto_crypto::control::Control) payload.
    Control(serde_bytes::ByteBuf),
    /// Several envelopes to one recipient, answered by one ack naming those accepted.
    Envelopes(EnvelopeBatch),
}

/// One to [`MAX_BATCH_ENVELOPES`] envelope encodings that fit in one [`MAX_MSG_FRAME`] frame
/// together. Decoding stops at the first envelope past the count limit (the frame's byte limit
/// is checked before decoding), so a hostile batch costs no more than its frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvelopeBatch {
    items: Vec<serde_bytes::ByteBuf>,
    /// Encoded size of `items` (each with its byte-string header).
    bytes: usize,
}

impl EnvelopeBatch {
    /// An empty batch (an empty batch is not a valid request: push at least one).
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an envelope encoding if the batch stays within [`MAX_BATCH_ENVELOPES`] and, framed
    /// as a request, within [`MAX_MSG_FRAME`]; otherwise hands it back.
    ///
    /// # Errors
    /// The envelope, unchanged, when it does not fit (send it in the next batch).
    pub fn try_push(&mut self, envelope: Vec<u8>) -> Result<(), Vec<u8>> {
        let size = envelope.len() + BATCH_ITEM_OVERHEAD;
        if self.items.len() >= MAX_BATCH_ENVELOPES
            || self.bytes + size + FRAME_OVERHEAD > MAX_MSG_FRAME
        {
            return Err(envelope);
        }
        self.bytes += size;
        self.items.push(envelope.into());
        Ok(())
    }

    /// Whether `count` envelopes of `bytes` encoded bytes in all fit in one batch.
    pub fn fits(count: usize, bytes: usize) -> bool {
        count <= MAX_BATCH_ENVELOPES
            && bytes + count * BATCH_ITEM_OVERHEAD + FRAME_OVERHEAD <= MAX_MSG_FRAME
    }

    /// How many envelopes it carries.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether it carries none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The envelope encodings, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.items.iter().map(|b| b.as_slice())
    }
}

impl Serialize for EnvelopeBatch {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.items.is_empty() || self.items.len() > MAX_BATCH_ENVELOPES {
            return Err(serde::ser::Error::custom(format!(
                "a batch carries 1 to {MAX_BATCH_ENVELOPES} envelopes, not {}",
                self.items.len()
            )));
        }
        self.items.serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for EnvelopeBatch {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = EnvelopeBatch;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "1 to {MAX_BATCH_ENVELOPES} envelopes")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<EnvelopeBatch, A::Error> {
                let mut batch = EnvelopeBatch::new();
                while let Some(item) = seq.next_element::<serde_bytes::ByteBuf>()? {
                    if batch.items.len() == MAX_BATCH_ENVELOPES {
                        return Err(serde::de::Error::invalid_length(
                            MAX_BATCH_ENVELOPES + 1,
                            &self,
                        ));
                    }
                    batch.bytes += item.len() + BATCH_ITEM_OVERHEAD;
                    batch.items.push(item);
                }
                if batch.items.is_empty() {
                    return Err(serde::de::Error::invalid_length(0, &self));
                }
                Ok(batch)
            }
        }
        deserializer.deserialize_seq(Visitor)
    }
}

/// The answer on `/encrypto/msg/3`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MsgResponse {
    /// The CBOR of a signed [`Control`](encrypto_crypto::control::Control) with
    /// [`ControlKind::DeliveryAck`](encrypto_crypto::control::ControlKind::DeliveryAck), sent
    /// once the messages are durable. For a batch it names the envelopes accepted (stored now
    /// or before); the others were rejected.
    Ack(serde_bytes::ByteBuf),
    /// Not accepted; deliberately says no more than that.
    Rejected,
}

/// The plaintext inside a chat envelope (what [`MsgRequest::Envelope`] carries, sealed).
/// Versioned by its variants: new kinds are appended, never reordered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChatPayload {
    /// A text message.
    Text(String),
    /// A file offer.
    File(FileOffer),
}

impl ChatPayload {
    /// Encodes as CBOR.
    pub fn to_bytes(&self) -> Vec<u8> {
        encrypto_crypto::codec::encode(self).expect("a chat payload always encodes")
    }

    /// Decodes a payload opened from an envelope.
    ///
    /// # Errors
    /// [`encrypto_crypto::codec::CodecError`] for bytes that are not a payload.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, encrypto_crypto::codec::CodecError> {
        encrypto_crypto::codec::decode(bytes, encrypto_crypto::envelope::MAX_BODY_LEN)
    }
}
