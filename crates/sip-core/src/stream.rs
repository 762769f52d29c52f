//! Splitting a byte stream (TCP, TLS, WebSocket) into messages.

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{ParseError, ParseErrorKind, Position};
use crate::grammar::is_wsp;
use crate::message::{Framing, Message, ParseLimits};
use crate::name::HeaderName;

/// What a stream carried next.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum StreamItem {
    /// A complete message.
    Message(Message),
    /// A double CRLF keep-alive ping (RFC 5626 §4.4.1): answer with a single CRLF.
    Ping,
    /// A single CRLF after [`StreamDecoder::ping_sent`]: the pong to our ping.
    Pong,
}

/// Splits arbitrary chunks of a stream into messages by Content-Length.
///
/// Memory is bounded: a header section or a declared message larger than
/// [`ParseLimits::max_message_size`] is refused as soon as that is known,
/// without buffering it. A framing error leaves the stream unusable (close
/// the connection); a message that is framed correctly but fails to parse is
/// reported and skipped, and decoding continues with the next one.
///
/// A lone CRLF is a pong only while a ping of ours is unanswered; otherwise
/// it may be the first half of the peer's ping, split across two reads, and
/// the decoder waits for what follows. A CRLF before a start line is skipped
/// (RFC 3261 §7.5).
///
/// ```
/// use sip_core::{StreamDecoder, StreamItem};
///
/// let mut d = StreamDecoder::default();
/// d.push(b"\r\n\r\nOPTIONS sip:a@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\n");
/// assert_eq!(d.next_item(), Some(Ok(StreamItem::Ping)));
/// assert_eq!(d.next_item(), None); // waits for the rest
/// d.push(b"From: <sip:b@example.com>;tag=1\r\nTo: <sip:a@example.com>\r\nCall-ID: c1\r\n\
///          CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n");
/// assert!(matches!(d.next_item(), Some(Ok(StreamItem::Message(_)))));
/// ```
#[derive(Debug)]
pub struct StreamDecoder {
    buf: BytesMut,
    limits: ParseLimits,
    /// Bytes already searched for the end of the header section.
    scanned: usize,
    /// Total length of the message being received, once known.
    expected: Option<usize>,
    failed: bool,
    /// A ping of ours went out and its pong has not come yet.
    awaiting_pong: bool,
    /// The last message framed but not parsed (see [`StreamDecoder::take_rejected`]).
    rejected: Option<Bytes>,
}

impl Default for StreamDecoder {
    fn default() -> Self {
        Self::new(ParseLimits::default())
    }
}

impl StreamDecoder {
    /// A decoder with the given limits.
    pub fn new(limits: ParseLimits) -> Self {
        StreamDecoder {
            buf: BytesMut::new(),
            limits,
            scanned: 0,
            expected: None,
            failed: false,
            awaiting_pong: false,
            rejected: None,
        }
    }

    /// Appends bytes read from the stream. Ignored after a framing error.
    pub fn push(&mut self, data: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(data);
        }
    }

    /// Bytes held, waiting for the rest of a message. The start of a
    /// keep-alive (a CR, a CRLF, a CRLF and a CR) does not count: a peer may
    /// pause there for as long as it likes.
    pub fn buffered(&self) -> usize {
        if self.expected.is_none() && b"\r\n\r".starts_with(&self.buf) {
            0
        } else {
            self.buf.len()
        }
    }

    /// Records that we sent a keep-alive ping on this stream: the next lone
    /// CRLF is its pong.
    pub fn ping_sent(&mut self) {
        self.awaiting_pong = true;
    }

    /// Whether a framing error made the stream unusable.
    pub fn is_failed(&self) -> bool {
        self.failed
    }

    /// The bytes of the message behind the last error that left the stream
    /// usable (framed by its Content-Length, but not a valid message), once:
    /// a request among them is still answered 400 when its Via, From, To,
    /// Call-ID and CSeq lines can be read (RFC 3261 §8.2).
    pub fn take_rejected(&mut self) -> Option<Bytes> {
        self.rejected.take()
    }

    /// The next complete item, `None` when more bytes are needed.
    pub fn next_item(&mut self) -> Option<Result<StreamItem, ParseError>> {
        self.rejected = None;
        if self.failed {
            return None;
        }
        if self.expected.is_none() {
            // Keep-alives between messages.
            while self.buf.starts_with(b"\r\n") {
                if std::mem::take(&mut self.awaiting_pong) {
                    self.buf.advance(2);
                    return Some(Ok(StreamItem::Pong));
                }
                if self.buf.starts_with(b"\r\n\r\n") {
                    self.buf.advance(4);
                    return Some(Ok(StreamItem::Ping));
                }
                if b"\r\n\r".starts_with(&self.buf) {
                    // Perhaps half a ping: the rest decides.
                    return None;
                }
                self.buf.advance(2);
            }
            if self.buf.as_ref() == b"\r" {
                return None;
            }
            let from = self.scanned.saturating_sub(3);
            let Some(found) = memchr::memmem::find(&self.buf[from..], b"\r\n\r\n") else {
                self.scanned = self.buf.len();
                if self.buf.len() > self.limits.max_message_size {
                    return Some(Err(self.fail(ParseErrorKind::MessageTooLarge {
                        size: self.buf.len(),
                        limit: self.limits.max_message_size,
                    })));
                }
                return None;
            };
            let head_len = from + found + 4;
            let length = match content_length(&self.buf[..head_len]) {
                Ok(Some(n)) => n,
                Ok(None) => {
                    return Some(Err(self.fail(ParseErrorKind::MissingContentLength)));
                }
                Err(()) => {
                    return Some(Err(self.fail(ParseErrorKind::InvalidHeader {
                        header: "Content-Length",
                        expected: "one length in bytes",
                    })));
                }
            };
            let total = head_len.saturating_add(length);
            if total > self.limits.max_message_size {
                return Some(Err(self.fail(ParseErrorKind::MessageTooLarge {
                    size: total,
                    limit: self.limits.max_message_size,
                })));
            }
            self.expected = Some(total);
        }
        let total = self.expected?;
        if self.buf.len() < total {
            return None;
        }
        let frame = self.buf.split_to(total).freeze();
        self.expected = None;
        self.scanned = 0;
        match Message::parse_with(frame.clone(), &self.limits, Framing::Stream) {
            Ok(message) => Some(Ok(StreamItem::Message(message))),
            Err(error) => {
                self.rejected = Some(frame);
                Some(Err(error))
            }
        }
    }

    fn fail(&mut self, kind: ParseErrorKind) -> ParseError {
        self.failed = true;
        self.buf = BytesMut::new();
        ParseError {
            kind,
            position: Position { line: 1, column: 1 },
        }
    }
}

/// Finds the Content-Length in a header section without parsing the rest.
/// Its value may be folded onto the next lines (HCOLON takes SWS), so the
/// digits are the one non-empty piece of the header line and its
/// continuations.
fn content_length(head: &[u8]) -> Result<Option<usize>, ()> {
    let mut found = None;
    // The Content-Length being read: its digits so far, `None` before any.
    let mut reading: Option<Option<&[u8]>> = None;
    let finish = |reading: Option<Option<&[u8]>>, found: &mut Option<usize>| {
        let Some(value) = reading else {
            return Ok(());
        };
        let value = value.unwrap_or_default();
        if found.is_some() || value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
            return Err(());
        }
        let n: usize = std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or(())?;
        *found = Some(n);
        Ok(())
    };
    for line in head.split(|&c| c == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|c| is_wsp(*c)) {
            if let Some(value) = reading.as_mut() {
                let piece = line.trim_ascii();
                match (*value, piece.is_empty()) {
                    (_, true) => {}
                    (None, false) => *value = Some(piece),
                    // Digits on two lines: "1\r\n 2" is not a number.
                    (Some(_), false) => return Err(()),
                }
            }
            continue;
        }
        finish(reading.take(), &mut found)?;
        let Some(colon) = memchr::memchr(b':', line) else {
            continue;
        };
        let mut name = &line[..colon];
        while let Some((last, rest)) = name.split_last() {
            if is_wsp(*last) {
                name = rest;
            } else {
                break;
            }
        }
        if HeaderName::from_bytes(name) != HeaderName::ContentLength {
            continue;
        }
        let value = line[colon + 1..].trim_ascii();
        reading = Some((!value.is_empty()).then_some(value));
    }
    finish(reading, &mut found)?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"MESSAGE sip:b@example.com SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1\r\nTo: <sip:b@example.com>\r\nCall-ID: c1\r\nCSeq: 1 MESSAGE\r\nMax-Forwards: 70\r\nl: 5\r\n\r\nhello";

    /// HCOLON takes SWS: a Content-Length whose value is folded onto the
    /// next line frames the message as `Message::parse` reads it.
    #[test]
    fn rfc3261_25_a_folded_content_length_frames_the_message() {
        let folded = std::str::from_utf8(MSG)
            .unwrap()
            .replace("l: 5\r\n", "l:\r\n 5\r\n");
        let mut d = StreamDecoder::default();
        d.push(folded.as_bytes());
        match d.next_item() {
            Some(Ok(StreamItem::Message(m))) => assert_eq!(m.body(), b"hello"),
            other => panic!("{other:?}"),
        }
        let split = std::str::from_utf8(MSG)
            .unwrap()
            .replace("l: 5\r\n", "l: 1\r\n 5\r\n");
        let mut d = StreamDecoder::default();
        d.push(split.as_bytes());
        assert!(matches!(d.next_item(), Some(Err(_))));
    }

    /// Feeds `stream` one byte at a time, after a ping of ours when
    /// `pinged`, and returns every item.
    fn bytewise(stream: &[u8], pinged: bool) -> (Vec<StreamItem>, StreamDecoder) {
        let mut d = StreamDecoder::default();
        if pinged {
            d.ping_sent();
        }
        let mut got = Vec::new();
        for b in stream {
            d.push(std::slice::from_ref(b));
            while let Some(item) = d.next_item() {
                got.push(item.unwrap());
            }
        }
        (got, d)
    }

    #[test]
    fn splits_messages_from_single_bytes() {
        let mut stream = MSG.to_vec();
        stream.extend_from_slice(b"\r\n");
        stream.extend_from_slice(MSG);
        let (got, d) = bytewise(&stream, false);
        // The CRLF between them is no pong: no ping of ours was out.
        assert_eq!(got.len(), 2);
        assert!(matches!(&got[0], StreamItem::Message(m) if m.body() == b"hello"));
        assert!(matches!(&got[1], StreamItem::Message(_)));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn rfc5626_4_4_1_a_ping_split_across_reads_is_one_ping() {
        for cut in 1..4 {
            let mut d = StreamDecoder::default();
            d.push(&b"\r\n\r\n"[..cut]);
            assert_eq!(d.next_item(), None, "cut after {cut} bytes");
            assert_eq!(d.buffered(), 0, "a partial ping is no partial message");
            d.push(&b"\r\n\r\n"[cut..]);
            assert_eq!(d.next_item(), Some(Ok(StreamItem::Ping)));
            assert_eq!(d.next_item(), None);
        }
    }

    #[test]
    fn rfc5626_4_4_1_a_lone_crlf_after_our_ping_is_its_pong() {
        let mut d = StreamDecoder::default();
        d.ping_sent();
        d.push(b"\r\n");
        assert_eq!(d.next_item(), Some(Ok(StreamItem::Pong)));
        // One pong per ping: the next pair of CRLFs is the peer's ping.
        let (got, _) = bytewise(b"\r\n\r\n\r\n\r\n", true);
        assert_eq!(got, vec![StreamItem::Pong, StreamItem::Ping]);
    }

    #[test]
    fn refuses_oversize_declared_body_at_once() {
        let mut d = StreamDecoder::new(ParseLimits {
            max_message_size: 1000,
            max_headers: 64,
        });
        d.push(b"MESSAGE sip:b@example.com SIP/2.0\r\nContent-Length: 100000\r\n\r\n");
        let e = d.next_item().unwrap().unwrap_err();
        assert!(matches!(e.kind, ParseErrorKind::MessageTooLarge { size, .. } if size > 100_000));
        assert!(d.is_failed());
        d.push(&[b'x'; 10_000]);
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn refuses_endless_headers() {
        let mut d = StreamDecoder::new(ParseLimits {
            max_message_size: 1000,
            max_headers: 64,
        });
        for _ in 0..100 {
            d.push(b"X-Filler: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
            if let Some(r) = d.next_item() {
                assert!(r.is_err());
                return;
            }
        }
        panic!("oversize header section was accepted");
    }

    #[test]
    fn bad_message_is_skipped_and_stream_continues() {
        let bad = b"MESSAGE sip:b@example.com SIP/2.0\r\nContent-Length: 0\r\n\r\n";
        let mut d = StreamDecoder::default();
        d.push(bad);
        d.push(MSG);
        assert!(d.next_item().unwrap().is_err());
        assert!(matches!(d.next_item(), Some(Ok(StreamItem::Message(_)))));
    }
}
