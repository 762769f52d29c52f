//! RTP parsing: any bytes either fail with a typed error or parse to a
//! packet that writes back to bytes that parse to the same packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media_engine::rtp::RtpPacket;

fuzz_target!(|data: &[u8]| {
    let Ok(packet) = RtpPacket::parse(data) else {
        return;
    };
    let bytes = packet.to_bytes().expect("a parsed packet always writes");
    assert_eq!(bytes.len(), packet.wire_len());
    let again = RtpPacket::parse(&bytes).expect("written packet parses");
    assert_eq!(again, packet);
});
