//! SDP parsing: any bytes either fail with a typed error or parse to a
//! description whose written form parses to the same description.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media_engine::sdp::SessionDescription;

fuzz_target!(|data: &[u8]| {
    let Ok(description) = SessionDescription::parse_bytes(data) else {
        return;
    };
    let text = description.to_string();
    let again = SessionDescription::parse(&text).expect("written description parses");
    assert_eq!(again, description, "written as:\n{text}");
});
