//! Arbitrary chunking of a byte stream: the decoder yields the same items
//! however the bytes are cut, never panics and never holds more than its limit.
#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sip_core::{ParseLimits, StreamDecoder, StreamItem};

#[derive(Debug, Arbitrary)]
struct Input {
    data: Vec<u8>,
    cuts: Vec<u8>,
}

fn decode(data: &[u8], cuts: &[u8], limits: ParseLimits) -> Vec<Result<StreamItem, ()>> {
    let mut d = StreamDecoder::new(limits);
    let mut out = Vec::new();
    let mut rest = data;
    let mut k = 0;
    while !rest.is_empty() {
        let n = usize::from(cuts.get(k).copied().unwrap_or(255).max(1)).min(rest.len());
        k += 1;
        d.push(&rest[..n]);
        rest = &rest[n..];
        while let Some(item) = d.next_item() {
            out.push(item.map_err(drop));
        }
        assert!(d.buffered() <= limits.max_message_size + 256);
    }
    out
}

fuzz_target!(|input: Input| {
    let limits = ParseLimits {
        max_message_size: 4096,
        max_headers: 64,
    };
    let chunked = decode(&input.data, &input.cuts, limits);
    let whole = decode(&input.data, &[255], limits);
    // A lone CRLF at a chunk end may read as a pong where a whole read sees a
    // ping; compare the messages and errors only.
    let messages = |v: &[Result<StreamItem, ()>]| {
        v.iter()
            .filter(|i| !matches!(i, Ok(StreamItem::Ping | StreamItem::Pong)))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert_eq!(messages(&chunked), messages(&whole));
});
