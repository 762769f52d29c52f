//! Arbitrary bytes as a STUN message or ChannelData frame: decoding never
//! panics, and a decoded message encodes to bytes that decode to the same
//! attributes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use proxy_client::stun::{ChannelData, StunMessage};

fuzz_target!(|data: &[u8]| {
    let _ = ChannelData::decode(data);
    let _ = ChannelData::frame_len(data);
    let _ = StunMessage::frame_len(data);
    let Ok(message) = StunMessage::decode(data) else {
        return;
    };
    let again = StunMessage::decode(&message.encode(None, true)).expect("an encoded message decodes");
    assert_eq!(again.attributes, message.attributes);
    assert_eq!((again.class, again.method), (message.class, message.method));
});
