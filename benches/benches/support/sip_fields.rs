//! What the `sip_parse` benchmark reads from a message, with sip-core and
//! with rsip 0.4: the same fields, so neither can skip work the other does.

use bytes::Bytes;
use rsip::headers::{ToTypedHeader, UntypedHeader};
use rsip::message::HasHeaders;
use rsip::prelude::HeadersExt;

/// What both parsers read, so neither can skip work the other does.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub(crate) struct Fields {
    pub(crate) branch: usize,
    pub(crate) from_tag: usize,
    pub(crate) to_tag: usize,
    pub(crate) call_id: usize,
    pub(crate) cseq: u32,
    pub(crate) contact: usize,
    pub(crate) content_length: u32,
}

pub(crate) fn with_sip_core(raw: &Bytes) -> Fields {
    let m = sip_core::Message::parse(raw.clone()).expect("sip-core parses the corpus");
    Fields {
        branch: m.via().ok().and_then(|v| v.branch()).map_or(0, str::len),
        from_tag: m.from().ok().and_then(|f| f.tag()).map_or(0, str::len),
        to_tag: m.to().ok().and_then(|t| t.tag()).map_or(0, str::len),
        call_id: m.call_id().map_or(0, str::len),
        cseq: m.cseq().map_or(0, |c| c.seq),
        contact: m
            .contact()
            .ok()
            .flatten()
            .and_then(|c| {
                c.address()
                    .and_then(|a| a.uri.as_sip().and_then(|u| u.user).map(str::len))
            })
            .unwrap_or(0),
        content_length: m.content_length().unwrap_or(0),
    }
}

pub(crate) fn with_rsip(raw: &[u8]) -> Fields {
    let m = rsip::SipMessage::try_from(raw).expect("rsip parses the corpus");
    Fields {
        branch: m
            .via_header()
            .ok()
            .and_then(|v| v.typed().ok())
            .and_then(|v| v.branch().map(|b| b.value().len()))
            .unwrap_or(0),
        from_tag: m
            .from_header()
            .ok()
            .and_then(|f| f.tag().ok().flatten())
            .map_or(0, |t| t.value().len()),
        to_tag: m
            .to_header()
            .ok()
            .and_then(|t| t.tag().ok().flatten())
            .map_or(0, |t| t.value().len()),
        call_id: m.call_id_header().map_or(0, |c| c.value().len()),
        cseq: m.cseq_header().ok().and_then(|c| c.seq().ok()).unwrap_or(0),
        contact: m
            .contact_header()
            .ok()
            .and_then(|c| c.uri().ok())
            .and_then(|u| u.auth.map(|a| a.user.len()))
            .unwrap_or(0),
        content_length: m
            .headers()
            .iter()
            .find_map(|h| match h {
                rsip::Header::ContentLength(cl) => cl.length().ok(),
                _ => None,
            })
            .unwrap_or(0),
    }
}
