//! Errors of the message layer: what is wrong and where.

use std::fmt;

/// A position in a message, both counted from 1.
///
/// Columns count bytes, so a position inside UTF-8 text points at the byte
/// where the problem starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Position {
    /// Line number, from 1.
    pub line: u32,
    /// Byte column within the line, from 1.
    pub column: u32,
}

impl Position {
    /// The position of byte `offset` within `text`.
    pub fn of_offset(text: &[u8], offset: usize) -> Self {
        let offset = offset.min(text.len());
        let before = &text[..offset];
        let line = memchr::memchr_iter(b'\n', before).count() + 1;
        let line_start = memchr::memrchr(b'\n', before).map_or(0, |i| i + 1);
        Position {
            line: u32::try_from(line).unwrap_or(u32::MAX),
            column: u32::try_from(offset - line_start + 1).unwrap_or(u32::MAX),
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// A message, header or URI that could not be parsed, with where it went wrong.
///
/// `Display` prints `WHAT at line L, column C`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} at {position}")]
pub struct ParseError {
    /// What is wrong.
    pub kind: ParseErrorKind,
    /// Where it is wrong.
    pub position: Position,
}

impl ParseError {
    pub(crate) fn at(kind: ParseErrorKind, text: &[u8], offset: usize) -> Self {
        ParseError {
            kind,
            position: Position::of_offset(text, offset),
        }
    }
}

/// What is wrong with a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// The input holds no bytes (or only line breaks).
    #[error("empty message")]
    Empty,
    /// The message is larger than the configured limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    MessageTooLarge {
        /// Bytes seen so far.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// More header lines than the configured limit.
    #[error("more than {limit} header fields")]
    TooManyHeaders {
        /// The configured limit.
        limit: usize,
    },
    /// A line ends in a bare LF, or a CR appears without LF.
    #[error("line not terminated by CRLF")]
    BadLineEnding,
    /// The header section never ends with an empty line.
    #[error("end of headers (empty line) not found")]
    UnterminatedHeaders,
    /// The header section is not valid UTF-8.
    #[error("invalid UTF-8 in the header section")]
    InvalidUtf8,
    /// The first line is neither a request line nor a status line.
    #[error("malformed request line: {expected}")]
    BadRequestLine {
        /// What the parser expected.
        expected: &'static str,
    },
    /// The status line is malformed.
    #[error("malformed status line: {expected}")]
    BadStatusLine {
        /// What the parser expected.
        expected: &'static str,
    },
    /// A SIP version other than 2.0.
    #[error("unsupported SIP version")]
    UnsupportedVersion,
    /// A status code outside 100-699 or not three digits.
    #[error("status code out of range 100-699")]
    StatusCodeOutOfRange,
    /// The Request-URI or a URI in a header is malformed.
    #[error("invalid URI: {expected}")]
    InvalidUri {
        /// What the parser expected.
        expected: &'static str,
    },
    /// A header line has no colon.
    #[error("header line without colon")]
    MissingColon,
    /// A header name holds characters that are not allowed in a token.
    #[error("invalid header name")]
    InvalidHeaderName,
    /// A continuation line before the first header.
    #[error("folded line without a header to continue")]
    OrphanContinuation,
    /// A header value does not follow its grammar.
    #[error("invalid {header} header: {expected}")]
    InvalidHeader {
        /// The canonical header name.
        header: &'static str,
        /// What the parser expected.
        expected: &'static str,
    },
    /// A mandatory header is absent (RFC 3261 §8.1.1).
    #[error("missing mandatory {header} header")]
    MissingHeader {
        /// The canonical header name.
        header: &'static str,
    },
    /// A header that must be unique appears more than once.
    #[error("{header} header appears more than once")]
    DuplicateHeader {
        /// The canonical header name.
        header: &'static str,
    },
    /// The CSeq method differs from the request method.
    #[error("CSeq method {cseq} does not match request method {request}")]
    CSeqMethodMismatch {
        /// The method in CSeq.
        cseq: String,
        /// The method of the request line.
        request: String,
    },
    /// The declared Content-Length exceeds the bytes received.
    #[error("Content-Length {declared} exceeds the {actual} body bytes received")]
    ContentLengthMismatch {
        /// What the Content-Length header says.
        declared: usize,
        /// Body bytes actually present.
        actual: usize,
    },
    /// A message on a stream transport has no Content-Length (RFC 3261 §18.3).
    #[error("missing Content-Length on a stream transport")]
    MissingContentLength,
    /// The body is larger than the configured limit.
    #[error("body of {size} bytes exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// Declared body size.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
}
