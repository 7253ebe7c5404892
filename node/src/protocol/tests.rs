use std::pin::Pin;
use std::task::{Context, Poll};

use encrypto_crypto::control::{Control, ControlKind, MAX_ACK_IDS};
use encrypto_crypto::envelope::{self, Envelope, MAX_BODY_LEN, MessageId, OutboundSession};
use encrypto_crypto::identity::MAX_NAME_LEN;
use encrypto_crypto::{Identity, RsaBits, SignedProfile};
use futures::AsyncRead;
use futures::executor::block_on;
use futures::io::Cursor;
use libp2p::request_response::Codec;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_bytes::ByteBuf;

use std::fmt;
use std::io;

use encrypto_crypto::codec::encode;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::codec::invalid_data;
use super::*;

const NOW: u64 = 1_767_225_600_000;

fn buf(len: usize, byte: u8) -> ByteBuf {
    ByteBuf::from(vec![byte; len])
}

/// The bytes `write_request` puts on the wire.
fn written_request<Req, Resp>(codec: &mut CborCodec<Req, Resp>, req: Req) -> Vec<u8>
where
    Req: Serialize + DeserializeOwned + Send,
    Resp: Serialize + DeserializeOwned + Send,
{
    let mut out = Cursor::new(Vec::new());
    block_on(codec.write_request(&MSG_PROTOCOL, &mut out, req)).unwrap();
    out.into_inner()
}

fn written_response<Req, Resp>(codec: &mut CborCodec<Req, Resp>, resp: Resp) -> Vec<u8>
where
    Req: Serialize + DeserializeOwned + Send,
    Resp: Serialize + DeserializeOwned + Send,
{
    let mut out = Cursor::new(Vec::new());
    block_on(codec.write_response(&MSG_PROTOCOL, &mut out, resp)).unwrap();
    out.into_inner()
}

fn round_trip_request<Req, Resp>(codec: &mut CborCodec<Req, Resp>, req: Req) -> usize
where
    Req: Serialize + DeserializeOwned + Send + Clone + PartialEq + fmt::Debug,
    Resp: Serialize + DeserializeOwned + Send,
{
    let bytes = written_request(codec, req.clone());
    let mut input = Cursor::new(bytes.clone());
    let back = block_on(codec.read_request(&MSG_PROTOCOL, &mut input)).unwrap();
    assert_eq!(back, req);
    assert_eq!(
        input.position(),
        bytes.len() as u64,
        "the whole frame is read"
    );
    bytes.len()
}

fn round_trip_response<Req, Resp>(codec: &mut CborCodec<Req, Resp>, resp: Resp) -> usize
where
    Req: Serialize + DeserializeOwned + Send,
    Resp: Serialize + DeserializeOwned + Send + Clone + PartialEq + fmt::Debug,
{
    let bytes = written_response(codec, resp.clone());
    let mut input = Cursor::new(bytes.clone());
    let back = block_on(codec.read_response(&MSG_PROTOCOL, &mut input)).unwrap();
    assert_eq!(back, resp);
    bytes.len()
}

fn read_msg_request(bytes: &[u8]) -> io::Result<MsgRequest> {
    block_on(msg_codec().read_request(&MSG_PROTOCOL, &mut Cursor::new(bytes.to_vec())))
}

fn prefixed(len: u32, body: &[u8]) -> Vec<u8> {
    let mut v = len.to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

/// Yields a fixed prefix, then fails the test if anyone reads further.
struct Tripwire {
    prefix: Vec<u8>,
    pos: usize,
}

impl AsyncRead for Tripwire {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let rest = &self.prefix[self.pos..];
        assert!(!rest.is_empty(), "the codec read past the length prefix");
        let n = rest.len().min(out.len());
        out[..n].copy_from_slice(&rest[..n]);
        self.pos += n;
        Poll::Ready(Ok(n))
    }
}

fn identity(seed: u64) -> Identity {
    Identity::generate(&mut StdRng::seed_from_u64(seed), RsaBits::B2048).unwrap()
}

#[test]
fn protocol_names() {
    assert_eq!(MSG_PROTOCOL.as_ref(), "/encrypto/msg/3");
    assert_eq!(PROFILE_PROTOCOL.as_ref(), "/encrypto/profile/1");
    assert_eq!(KAD_PROTOCOL.as_ref(), "/encrypto/kad/1.0.0");
}

#[test]
fn codecs_carry_their_protocol_limits() {
    let m = msg_codec();
    assert_eq!(
        (m.max_request(), m.max_response()),
        (MAX_MSG_FRAME, MAX_MSG_FRAME)
    );
    let d = MsgCodec::default();
    assert_eq!(
        (d.max_request(), d.max_response()),
        (MAX_MSG_FRAME, MAX_MSG_FRAME)
    );
    let p = profile_codec();
    assert_eq!(
        (p.max_request(), p.max_response()),
        (MAX_PROFILE_FRAME, MAX_PROFILE_FRAME)
    );
    let d = ProfileCodec::default();
    assert_eq!(
        (d.max_request(), d.max_response()),
        (MAX_PROFILE_FRAME, MAX_PROFILE_FRAME)
    );
    let c = d.clone();
    assert_eq!(c.max_request(), MAX_PROFILE_FRAME);
}

#[test]
fn every_message_type_round_trips() {
    let mut msg = msg_codec();
    for req in [
        MsgRequest::Envelope(buf(0, 0)),
        MsgRequest::Envelope(buf(300, 0xe1)),
        MsgRequest::Control(buf(1, 0xc0)),
        MsgRequest::Control(buf(5000, 0x17)),
        MsgRequest::Envelopes(batch_of(1, 300)),
        MsgRequest::Envelopes(batch_of(3, 10)),
    ] {
        round_trip_request(&mut msg, req);
    }
    for resp in [
        MsgResponse::Ack(buf(120, 0xac)),
        MsgResponse::Ack(buf(0, 0)),
        MsgResponse::Rejected,
    ] {
        round_trip_response(&mut msg, resp);
    }
    let mut profile = profile_codec();
    round_trip_request(
        &mut profile,
        ProfileRequest {
            profile: buf(700, 0x50),
        },
    );
    round_trip_response(
        &mut profile,
        ProfileResponse {
            profile: buf(700, 0x51),
        },
    );
}

#[test]
fn frame_is_big_endian_length_then_cbor() {
    let req = MsgRequest::Control(buf(3, 7));
    let bytes = written_request(&mut msg_codec(), req.clone());
    let body = encode(&req).unwrap();
    assert_eq!(&bytes[..4], &(body.len() as u32).to_be_bytes());
    assert_eq!(&bytes[4..], &body[..]);
}

#[test]
fn payloads_of_the_largest_allowed_size_fit() {
    let mut msg = msg_codec();
    let n = round_trip_request(&mut msg, MsgRequest::Envelope(buf(MAX_ENVELOPE_LEN, 0xff)));
    assert!(n <= PREFIX_LEN + MAX_MSG_FRAME);
    round_trip_request(&mut msg, MsgRequest::Control(buf(MAX_CONTROL_LEN, 0xff)));
    round_trip_response(&mut msg, MsgResponse::Ack(buf(MAX_CONTROL_LEN, 0xff)));
    let mut profile = profile_codec();
    round_trip_request(
        &mut profile,
        ProfileRequest {
            profile: buf(MAX_PROFILE_LEN, 0xff),
        },
    );
    round_trip_response(
        &mut profile,
        ProfileResponse {
            profile: buf(MAX_PROFILE_LEN, 0xff),
        },
    );
}

#[test]
fn max_msg_frame_admits_a_maximal_envelope_and_ack() {
    let alice = identity(1);
    let bob = identity(2);
    let mut rng = StdRng::seed_from_u64(3);
    let mut session = OutboundSession::new(&mut rng, bob.public(), NOW).unwrap();
    let plaintext = vec![0x42; MAX_BODY_LEN];
    let mut env = envelope::seal_aes(
        &alice,
        bob.public(),
        &mut session,
        MessageId::random(&mut rng),
        NOW,
        &plaintext,
        &mut rng,
    )
    .unwrap();
    assert!(env.wrapped_key.is_some(), "a fresh session carries its key");
    let mut codec = msg_codec();

    let bytes = env.to_bytes();
    assert!(bytes.len() <= MAX_ENVELOPE_LEN);
    let framed = round_trip_request(&mut codec, MsgRequest::Envelope(ByteBuf::from(bytes)));
    assert!(framed <= PREFIX_LEN + MAX_MSG_FRAME);

    // The same envelope as a 4096-bit recipient would get it: a 512-byte wrapped key. The
    // signature no longer matches, but the size is what matters here, and the crypto crate
    // still accepts the structure.
    env.wrapped_key = Some(buf(512, 0x99));
    let bytes = env.to_bytes();
    assert!(bytes.len() <= MAX_ENVELOPE_LEN);
    let frame = written_request(&mut codec, MsgRequest::Envelope(ByteBuf::from(bytes)));
    let back = block_on(codec.read_request(&MSG_PROTOCOL, &mut Cursor::new(frame))).unwrap();
    let MsgRequest::Envelope(inner) = back else {
        panic!("wrong variant")
    };
    assert_eq!(Envelope::from_bytes(&inner).unwrap(), env);

    // The largest delivery ack.
    let ids = (0..MAX_ACK_IDS)
        .map(|_| MessageId::random(&mut rng))
        .collect();
    let ack = Control::sign(
        &bob,
        alice.public(),
        MessageId::random(&mut rng),
        NOW,
        ControlKind::DeliveryAck { ids },
    )
    .unwrap();
    let bytes = ack.to_bytes();
    assert!(bytes.len() <= MAX_CONTROL_LEN);
    let frame = written_response(&mut codec, MsgResponse::Ack(ByteBuf::from(bytes)));
    let back = block_on(codec.read_response(&MSG_PROTOCOL, &mut Cursor::new(frame))).unwrap();
    let MsgResponse::Ack(inner) = back else {
        panic!("wrong variant")
    };
    assert_eq!(Control::from_bytes(&inner).unwrap(), ack);

    // The largest profile.
    let profile = alice.sign_profile(&"n".repeat(MAX_NAME_LEN), NOW).unwrap();
    let bytes = profile.to_bytes();
    let mut codec = profile_codec();
    let frame = written_request(
        &mut codec,
        ProfileRequest {
            profile: ByteBuf::from(bytes),
        },
    );
    let back = block_on(codec.read_request(&PROFILE_PROTOCOL, &mut Cursor::new(frame))).unwrap();
    assert_eq!(SignedProfile::from_bytes(&back.profile).unwrap(), profile);
}

#[test]
fn oversized_declared_length_is_refused_before_the_body() {
    // A tripwire reader: any read past the prefix fails the test.
    let declared = 2_000_000u32;
    let mut reader = Tripwire {
        prefix: declared.to_be_bytes().to_vec(),
        pos: 0,
    };
    let err = block_on(msg_codec().read_request(&MSG_PROTOCOL, &mut reader)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert_eq!(
        frame_error(&err),
        Some(&FrameError::TooLarge {
            size: 2_000_000,
            limit: MAX_MSG_FRAME
        })
    );

    // The same with a body present: the cursor stays right after the prefix.
    let limit = MAX_MSG_FRAME as u32;
    let mut input = Cursor::new(prefixed(limit + 1, &vec![0; MAX_MSG_FRAME + 1]));
    let err = block_on(msg_codec().read_request(&MSG_PROTOCOL, &mut input)).unwrap_err();
    assert!(matches!(
        frame_error(&err),
        Some(FrameError::TooLarge { .. })
    ));
    assert_eq!(input.position(), 4);

    // u32::MAX is just another oversized length.
    let mut reader = Tripwire {
        prefix: u32::MAX.to_be_bytes().to_vec(),
        pos: 0,
    };
    let err = block_on(profile_codec().read_response(&PROFILE_PROTOCOL, &mut reader)).unwrap_err();
    assert!(matches!(
        frame_error(&err),
        Some(FrameError::TooLarge { .. })
    ));
}

#[test]
fn requests_and_responses_have_their_own_limits() {
    let mut codec = MsgCodec::new(100, 1000);
    let resp = MsgResponse::Ack(buf(500, 1));
    round_trip_response(&mut codec, resp.clone());
    // The same bytes as a request exceed the request limit.
    let frame = written_response(&mut codec, resp);
    let err = block_on(codec.read_request(&MSG_PROTOCOL, &mut Cursor::new(frame))).unwrap_err();
    assert!(matches!(
        frame_error(&err),
        Some(FrameError::TooLarge { limit: 100, .. })
    ));
}

#[test]
fn oversized_write_is_refused_and_nothing_is_sent() {
    let mut codec = msg_codec();
    let mut out = Cursor::new(Vec::new());
    let req = MsgRequest::Envelope(buf(MAX_MSG_FRAME, 0));
    let err = block_on(codec.write_request(&MSG_PROTOCOL, &mut out, req)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let Some(FrameError::TooLarge { size, limit }) = frame_error(&err) else {
        panic!("expected TooLarge, got {err}")
    };
    assert!(*size > MAX_MSG_FRAME);
    assert_eq!(*limit, MAX_MSG_FRAME);
    assert!(out.get_ref().is_empty(), "nothing was written");

    let resp = ProfileResponse {
        profile: buf(MAX_PROFILE_FRAME, 0),
    };
    let err =
        block_on(profile_codec().write_response(&PROFILE_PROTOCOL, &mut out, resp)).unwrap_err();
    assert!(matches!(
        frame_error(&err),
        Some(FrameError::TooLarge { .. })
    ));
    assert!(out.get_ref().is_empty(), "nothing was written");
}

#[test]
fn truncated_frames_are_errors() {
    let frame = written_request(&mut msg_codec(), MsgRequest::Envelope(buf(100, 1)));
    let body_len = frame.len() - 4;

    let err = read_msg_request(&frame[..frame.len() - 1]).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    assert_eq!(
        frame_error(&err),
        Some(&FrameError::Truncated {
            expected: body_len,
            received: body_len - 1
        })
    );
    assert!(err.to_string().contains("truncated"), "{err}");

    for cut in 0..4 {
        let err = read_msg_request(&frame[..cut]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            frame_error(&err),
            Some(&FrameError::TruncatedPrefix { received: cut })
        );
    }
}

#[test]
fn malformed_bodies_are_invalid_data() {
    let cases: Vec<Vec<u8>> = vec![
        // Zero-length frame.
        prefixed(0, &[]),
        // A CBOR text string, not a MsgRequest.
        prefixed(4, &[0x63, b'a', b'b', b'c']),
        // An unknown variant index.
        prefixed(3, &[0xa1, 0x07, 0x40]),
        // Not CBOR at all.
        prefixed(3, &[0xff, 0xff, 0xff]),
    ];
    for bytes in cases {
        let err = read_msg_request(&bytes).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{bytes:02x?}");
        assert!(
            matches!(frame_error(&err), Some(FrameError::Malformed(_))),
            "{err}"
        );
    }
    // A valid message followed by trailing bytes inside the frame.
    let mut body = encode(&MsgRequest::Control(buf(2, 2))).unwrap();
    body.push(0);
    let err = read_msg_request(&prefixed(body.len() as u32, &body)).unwrap_err();
    assert!(matches!(frame_error(&err), Some(FrameError::Malformed(_))));
}

/// [`MsgRequest`] with a batch that is a plain list, to put any count on the wire.
#[derive(Serialize)]
enum RawMsgRequest {
    #[allow(dead_code)]
    Envelope(ByteBuf),
    #[allow(dead_code)]
    Control(ByteBuf),
    Envelopes(Vec<ByteBuf>),
}

fn raw_batch(count: usize, len: usize) -> Vec<u8> {
    let body = encode(&RawMsgRequest::Envelopes(vec![buf(len, 0xb0); count])).unwrap();
    prefixed(body.len() as u32, &body)
}

fn batch_of(count: usize, len: usize) -> EnvelopeBatch {
    let mut batch = EnvelopeBatch::new();
    for _ in 0..count {
        batch.try_push(vec![0xb1; len]).unwrap();
    }
    batch
}

#[test]
fn batches_round_trip_in_order() {
    let mut batch = EnvelopeBatch::new();
    for i in 0..5u8 {
        batch.try_push(vec![i; 100 + usize::from(i)]).unwrap();
    }
    assert_eq!(batch.len(), 5);
    let req = MsgRequest::Envelopes(batch.clone());
    round_trip_request(&mut msg_codec(), req.clone());
    let frame = written_request(&mut msg_codec(), req);
    let MsgRequest::Envelopes(back) = read_msg_request(&frame).unwrap() else {
        panic!("wrong variant")
    };
    let items: Vec<&[u8]> = back.iter().collect();
    assert_eq!(items.len(), 5);
    for (i, item) in items.iter().enumerate() {
        assert_eq!(item.len(), 100 + i);
        assert!(item.iter().all(|b| usize::from(*b) == i));
    }
}

#[test]
fn a_batch_stops_at_its_count_and_byte_limits() {
    // Count: small envelopes stop at MAX_BATCH_ENVELOPES, and a full batch is a valid frame.
    let mut batch = batch_of(MAX_BATCH_ENVELOPES, 400);
    assert_eq!(batch.try_push(vec![1; 400]), Err(vec![1; 400]));
    let n = round_trip_request(&mut msg_codec(), MsgRequest::Envelopes(batch));
    assert!(n <= PREFIX_LEN + MAX_MSG_FRAME);

    // Bytes: maximal envelopes stop at what one frame holds, which is at least two.
    let mut batch = EnvelopeBatch::new();
    while batch.try_push(vec![2; MAX_ENVELOPE_LEN]).is_ok() {}
    assert!(batch.len() >= 2, "{}", batch.len());
    let n = round_trip_request(&mut msg_codec(), MsgRequest::Envelopes(batch.clone()));
    assert!(n <= PREFIX_LEN + MAX_MSG_FRAME);
    // What is left of the frame still takes a small envelope, up to the limit exactly.
    while batch.try_push(vec![3; 1000]).is_ok() {}
    let n = round_trip_request(&mut msg_codec(), MsgRequest::Envelopes(batch));
    assert!(n <= PREFIX_LEN + MAX_MSG_FRAME);
}

#[test]
fn a_batch_over_the_count_limit_is_refused_while_decoding() {
    // The largest count decodes; one more is refused with a clear reason.
    assert!(read_msg_request(&raw_batch(MAX_BATCH_ENVELOPES, 1)).is_ok());
    let err = read_msg_request(&raw_batch(MAX_BATCH_ENVELOPES + 1, 1)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    let Some(FrameError::Malformed(reason)) = frame_error(&err) else {
        panic!("expected Malformed, got {err}")
    };
    assert!(
        reason.contains(&format!("1 to {MAX_BATCH_ENVELOPES} envelopes")),
        "{reason}"
    );
    // As many empty byte strings as the frame holds: refused the same way.
    let err = read_msg_request(&raw_batch(200_000, 0)).unwrap_err();
    assert!(matches!(frame_error(&err), Some(FrameError::Malformed(_))));
    // An empty batch is not a request either.
    let err = read_msg_request(&raw_batch(0, 0)).unwrap_err();
    assert!(matches!(frame_error(&err), Some(FrameError::Malformed(_))));
}

#[test]
fn a_batch_over_the_byte_limit_is_refused_before_the_body() {
    let frame = raw_batch(3, MAX_ENVELOPE_LEN);
    let err = read_msg_request(&frame).unwrap_err();
    assert!(
        matches!(frame_error(&err), Some(FrameError::TooLarge { limit, .. }) if *limit == MAX_MSG_FRAME),
        "{err}"
    );
}

#[test]
fn an_empty_batch_is_not_sent() {
    let mut out = Cursor::new(Vec::new());
    let req = MsgRequest::Envelopes(EnvelopeBatch::new());
    let err = block_on(msg_codec().write_request(&MSG_PROTOCOL, &mut out, req)).unwrap_err();
    assert!(
        matches!(frame_error(&err), Some(FrameError::Encode(_))),
        "{err}"
    );
    assert!(out.get_ref().is_empty());
}

#[test]
fn errors_say_what_happened() {
    let e = FrameError::TooLarge {
        size: 2_000_000,
        limit: 100_000,
    };
    assert_eq!(
        e.to_string(),
        "frame of 2000000 bytes exceeds the 100000-byte limit"
    );
    let io_err = invalid_data(e.clone());
    assert_eq!(io_err.to_string(), e.to_string());
    assert_eq!(frame_error(&io_err), Some(&e));
    assert_eq!(
        FrameError::Truncated {
            expected: 10,
            received: 3
        }
        .to_string(),
        "frame truncated: the stream ended after 3 of 10 bytes"
    );
    // Plain transport errors carry no frame error.
    assert_eq!(frame_error(&io::Error::other("reset")), None);
    assert_eq!(
        frame_error(&io::Error::from(io::ErrorKind::ConnectionReset)),
        None
    );
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = read_msg_request(&bytes);
        let _ = block_on(
            profile_codec().read_response(&PROFILE_PROTOCOL, &mut Cursor::new(bytes.clone())),
        );
    }

    #[test]
    fn random_bodies_behind_a_valid_length_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let frame = prefixed(body.len() as u32, &body);
        match read_msg_request(&frame) {
            // Whatever decodes must re-encode to a frame the codec accepts.
            Ok(req) => {
                let again = written_request(&mut msg_codec(), req.clone());
                prop_assert_eq!(read_msg_request(&again).unwrap(), req);
            }
            Err(e) => prop_assert!(frame_error(&e).is_some(), "{}", e),
        }
    }

    #[test]
    fn any_payload_round_trips(
        payload in proptest::collection::vec(any::<u8>(), 0..2048),
        control in any::<bool>(),
    ) {
        let req = if control {
            MsgRequest::Control(ByteBuf::from(payload))
        } else {
            MsgRequest::Envelope(ByteBuf::from(payload))
        };
        let frame = written_request(&mut msg_codec(), req.clone());
        prop_assert_eq!(read_msg_request(&frame).unwrap(), req);
    }
}
