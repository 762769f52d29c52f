//! bytes -> parse -> print -> parse: the reparsed message equals the first,
//! typed access never panics, and the canonical form of any accepted message
//! is accepted too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sip_core::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = Message::parse(data.to_vec()) else {
        return;
    };
    // Unmodified: byte for byte.
    let printed = msg.to_bytes();
    assert!(data.starts_with(&printed));
    let again = Message::parse(printed).expect("printed message parses");
    assert_eq!(again, msg);
    // Canonical: parses to an equal message.
    let canonical = Message::parse(msg.canonical()).expect("canonical form parses");
    assert_eq!(canonical, msg);
    assert_eq!(canonical.validate().is_ok(), msg.validate().is_ok());
    // Typed access on whatever was accepted.
    let _ = (msg.via(), msg.from(), msg.to(), msg.call_id(), msg.cseq());
    let _ = (msg.contact(), msg.content_type(), msg.expires(), msg.request_uri());
    let _ = msg.vias().count() + msg.contacts().count() + msg.routes().count();
    let _ = msg.www_authenticate().count() + msg.authorization().count();
    let _ = (msg.event(), msg.replaces(), msg.session_expires(), msg.refer_to());
    // Multipart bodies: any part found lies within the body.
    if let Some(part) = msg.body_of_type("application", "sdp") {
        let body = msg.body().as_ptr_range();
        let part = part.as_ptr_range();
        assert!(body.start <= part.start && part.end <= body.end);
    }
});
