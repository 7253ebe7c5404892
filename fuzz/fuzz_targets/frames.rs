//! The node's wire decoders on arbitrary bytes: the length-prefixed CBOR framing of every
//! request-response protocol (messages, profiles, files; requests and responses), and the chat
//! payloads (a text, a file offer) found inside opened envelopes. The first byte picks the
//! decoder. None may panic, and a frame over its protocol's limit is refused, never read.
#![no_main]

use encrypto_node::protocol::{
    self, ChatPayload, FILE_PROTOCOL, MSG_PROTOCOL, PROFILE_PROTOCOL,
};
use futures::executor::block_on;
use futures::io::Cursor;
use libfuzzer_sys::fuzz_target;
use libp2p::request_response::Codec;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let mut io = Cursor::new(bytes);
    match which % 7 {
        0 => drop(block_on(protocol::msg_codec().read_request(&MSG_PROTOCOL, &mut io))),
        1 => drop(block_on(protocol::msg_codec().read_response(&MSG_PROTOCOL, &mut io))),
        2 => drop(block_on(
            protocol::profile_codec().read_request(&PROFILE_PROTOCOL, &mut io),
        )),
        3 => drop(block_on(
            protocol::profile_codec().read_response(&PROFILE_PROTOCOL, &mut io),
        )),
        4 => drop(block_on(protocol::file_codec().read_request(&FILE_PROTOCOL, &mut io))),
        5 => drop(block_on(protocol::file_codec().read_response(&FILE_PROTOCOL, &mut io))),
        _ => {
            if let Ok(payload) = ChatPayload::from_bytes(bytes) {
                // What decodes encodes again, and that decodes the same way.
                let again = payload.to_bytes();
                assert!(ChatPayload::from_bytes(&again).is_ok());
            }
        }
    }
});
