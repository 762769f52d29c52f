//! SIP messages: framing, lazy typed access, modification and serialisation.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::error::{ParseError, ParseErrorKind};
use crate::grammar::{self, Fail, ValueError, is_token, is_wsp, text};
use crate::headers::{
    self, Auth, CSeq, Contact, ContentType, NameAddr, Replaces, RetryAfter, SessionExpires,
    TokenParams, TypedValue, Via, ViaSpans,
};
use crate::name::{HeaderName, Method};
use crate::uri::{self, Uri, UriContext};

/// Bounds on what the parser accepts, so a peer cannot make it hold or scan
/// unbounded input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseLimits {
    /// Largest whole message (start line, headers and body) in bytes.
    pub max_message_size: usize,
    /// Most header lines (folded continuations do not count).
    pub max_headers: usize,
}

impl Default for ParseLimits {
    /// 64 KiB per message (a UDP datagram cannot be larger) and 256 headers.
    fn default() -> Self {
        ParseLimits {
            max_message_size: 65_535,
            max_headers: 256,
        }
    }
}

/// How the message arrived, which decides how its body is delimited
/// (RFC 3261 §18.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One datagram: Content-Length may be absent (the body is the rest) and
    /// must not exceed the bytes received; extra bytes are ignored.
    Datagram,
    /// A stream (TCP, TLS, WebSocket frame): Content-Length is mandatory.
    Stream,
}

/// The first line of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartLine<'a> {
    /// `Method Request-URI SIP/2.0`
    Request {
        /// The method.
        method: &'a Method,
        /// The Request-URI as written.
        uri: &'a str,
    },
    /// `SIP/2.0 Status-Code Reason-Phrase`
    Response {
        /// 100-699.
        status: u16,
        /// The reason phrase (may be empty, may hold UTF-8).
        reason: &'a str,
    },
}

/// One header line as written: its name, recognised kind and raw value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderField<'a> {
    /// The recognised name (or [`HeaderName::Other`]).
    pub kind: HeaderName,
    /// The name as written (compact forms stay compact).
    pub name: &'a str,
    /// The value as written, without leading and trailing white space; folded
    /// lines keep their line breaks.
    pub value: &'a str,
}

/// A SIP request or response over one [`Bytes`] buffer.
///
/// Parsing splits the message into spans (start line, headers, body) and checks
/// what every message must satisfy (RFC 3261 §8.1.1, §18.3, §20); typed header
/// values are parsed on access from those spans, without copying. A message
/// that was not modified serialises back byte for byte; a modified one in
/// canonical form (full header names, unfolded values).
///
/// ```
/// use sip_core::Message;
///
/// let msg = Message::parse(&b"OPTIONS sip:carol@example.com SIP/2.0\r\n\
///     Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK74bf9\r\n\
///     f: <sip:alice@example.com>;tag=9fxced76sl\r\n\
///     To: <sip:carol@example.com>\r\n\
///     Call-ID: 3848276298220188511@example.com\r\n\
///     CSeq: 63104 OPTIONS\r\n\
///     Max-Forwards: 70\r\n\
///     Content-Length: 0\r\n\r\n"[..])?;
/// assert_eq!(msg.via()?.branch(), Some("z9hG4bK74bf9"));
/// assert_eq!(msg.from()?.tag(), Some("9fxced76sl"));
/// assert_eq!(msg.cseq()?.seq, 63104);
/// # Ok::<(), sip_core::ParseError>(())
/// ```
#[derive(Clone)]
pub struct Message {
    /// The whole message and nothing after it.
    buf: Bytes,
    /// The start line and headers of `buf` (up to the empty line), checked as
    /// UTF-8 once, so reading a value as text costs nothing more.
    head: ByteString,
    start: Start,
    headers: Vec<Header>,
    /// Content-Length and CSeq as checked by the parser, valid while unmodified.
    parsed: Parsed,
    /// The first value of the topmost Via, parsed once: every transaction
    /// step reads it.
    top_via: Option<TopVia>,
    /// Rewritten in canonical form; what the parser noted is stale.
    modified: bool,
    /// A value was replaced in place (the top Via's `received` and `rport`,
    /// RFC 3581): every other byte is as parsed, and so is what the parser
    /// noted.
    spliced: bool,
}

/// The first Via value: its header, its offset in the header's value, and
/// what parsing it gave.
#[derive(Debug, Clone, Copy)]
struct TopVia {
    idx: u32,
    offset: u32,
    via: Result<ViaSpans, ValueError>,
}

impl TopVia {
    fn of(head: &str, headers: &[Header]) -> Option<TopVia> {
        let idx = headers.iter().position(|h| h.kind == HeaderName::Via)?;
        let v = headers[idx].value;
        let v = head.get(v.start as usize..v.end as usize).unwrap_or("");
        if let Some(spans) = headers::via_spans_first(v) {
            return Some(TopVia {
                idx: u32::try_from(idx).ok()?,
                offset: 0,
                // Too long to keep as spans: read it when asked.
                via: Ok(spans?),
            });
        }
        let (offset, elem) = if grammar::find_comma(v) {
            grammar::split_list(v).next().unwrap_or((0, v))
        } else {
            (0, v)
        };
        Some(TopVia {
            idx: u32::try_from(idx).ok()?,
            offset: u32::try_from(offset).ok()?,
            via: match headers::via_spans(elem) {
                Ok(Some(v)) => Ok(v),
                // Too long to keep as spans: read it when asked.
                Ok(None) => return None,
                Err(e) => Err(ValueError::from(e)),
            },
        })
    }
}

/// Values the parser had to read anyway, kept so reading them again is free.
#[derive(Debug, Clone, Copy)]
struct Parsed {
    content_length: Option<u32>,
    cseq: u32,
    cseq_method: (u32, u32),
    /// Where the first From, To, Call-ID and Contact are (`u16::MAX`: none
    /// or too far), so reading them needs no search.
    first: [u16; 4],
}

#[derive(Debug, Clone)]
enum Start {
    Request { method: Method, uri: Span },
    Response { status: u16, reason: Span },
}

/// Bytes `start..end` of the message's buffer. Every part of a message lies
/// in its one buffer: a modification writes a new buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Span {
    start: u32,
    end: u32,
}

#[derive(Debug, Clone, Copy)]
struct Header {
    kind: HeaderName,
    /// Whether the value spans folded lines (and needs unfolding to print).
    folded: bool,
    name: Span,
    value: Span,
}

impl Message {
    /// Parses one datagram with the default [`ParseLimits`].
    pub fn parse(datagram: impl Into<Bytes>) -> Result<Message, ParseError> {
        Self::parse_with(datagram.into(), &ParseLimits::default(), Framing::Datagram)
    }

    /// Parses a message with explicit limits and framing.
    pub fn parse_with(
        buf: Bytes,
        limits: &ParseLimits,
        framing: Framing,
    ) -> Result<Message, ParseError> {
        parse_message(buf, limits, framing)
    }

    /// Starts a request; see [`RequestBuilder`].
    pub fn request(method: Method, uri: &str) -> RequestBuilder {
        RequestBuilder::new(method, uri)
    }

    /// Starts a response; see [`ResponseBuilder`].
    pub fn response(status: u16, reason: &str) -> ResponseBuilder {
        ResponseBuilder::new(status, reason)
    }

    /// Starts a response to `request` with its Via, From, To, Call-ID and CSeq
    /// copied (RFC 3261 §8.2.6.2). Fails on a response.
    pub fn response_to(
        request: &Message,
        status: u16,
        reason: &str,
    ) -> Result<ResponseBuilder, BuildError> {
        if !request.is_request() {
            return Err(BuildError::NotARequest);
        }
        let mut b = ResponseBuilder::new(status, reason);
        for (i, h) in request.headers.iter().enumerate() {
            if matches!(
                h.kind,
                HeaderName::Via
                    | HeaderName::From
                    | HeaderName::To
                    | HeaderName::CallId
                    | HeaderName::CSeq
            ) {
                let name = h.kind.canonical().unwrap_or("");
                let value = request.value_of(h);
                // The name is canonical and the value parsed, trimmed and
                // unfolded: only a line break could make it unfit. Other
                // control characters are legal as quoted-pairs (RFC 3261
                // §25.1; RFC 4475 §3.1.1.2 has them in a To).
                if grammar::find_byte2(value.as_bytes(), b'\r', b'\n').is_some() {
                    return Err(BuildError::ControlCharacter(name.to_owned()));
                }
                if h.kind == HeaderName::To && b.inner.to.is_none() {
                    b.inner.to = Some(b.inner.headers.len());
                }
                if let Some(top) = request.top_via
                    && top.idx as usize == i
                    && !h.folded
                    && let Ok(idx) = u32::try_from(b.inner.headers.len())
                {
                    // The same text, so the same spans within it.
                    b.inner.top_via = Some(TopVia { idx, ..top });
                }
                b.inner.push(h.kind, name.as_bytes(), value.as_bytes());
            }
        }
        Ok(b)
    }

    /// The start line.
    pub fn start_line(&self) -> StartLine<'_> {
        match &self.start {
            Start::Request { method, uri } => StartLine::Request {
                method,
                uri: self.str_of(*uri),
            },
            Start::Response { status, reason } => StartLine::Response {
                status: *status,
                reason: self.str_of(*reason),
            },
        }
    }

    /// Whether this is a request.
    pub fn is_request(&self) -> bool {
        matches!(self.start, Start::Request { .. })
    }

    /// The request method (`None` for a response).
    pub fn method(&self) -> Option<&Method> {
        match &self.start {
            Start::Request { method, .. } => Some(method),
            Start::Response { .. } => None,
        }
    }

    /// The Request-URI (`None` for a response).
    pub fn request_uri(&self) -> Option<Uri<'_>> {
        match &self.start {
            Start::Request { uri, .. } => {
                grammar::complete(self.str_of(*uri), |i| uri::uri(i, UriContext::Whole)).ok()
            }
            Start::Response { .. } => None,
        }
    }

    /// The status code (`None` for a request).
    pub fn status(&self) -> Option<u16> {
        match self.start {
            Start::Response { status, .. } => Some(status),
            Start::Request { .. } => None,
        }
    }

    /// The reason phrase (`None` for a request).
    pub fn reason(&self) -> Option<&str> {
        match &self.start {
            Start::Response { reason, .. } => Some(self.str_of(*reason)),
            Start::Request { .. } => None,
        }
    }

    /// The body (empty when there is none).
    pub fn body(&self) -> &[u8] {
        self.buf.get(self.head.len() + 2..).unwrap_or_default()
    }

    /// The body if it is of type `mtype/subtype`, or the first part of that
    /// type in a multipart body (RFC 5621, as gateways send SDP beside
    /// ISUP); `None` when there is no such content. A body without a
    /// Content-Type is taken to be of the type asked for; one whose
    /// Content-Type does not parse is of none.
    ///
    /// ```
    /// use sip_core::Message;
    ///
    /// let msg = Message::parse(&b"INVITE sip:bob@example.com SIP/2.0\r\n\
    ///     Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK1\r\nFrom: <sip:a@example.com>;tag=1\r\n\
    ///     To: <sip:bob@example.com>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n\
    ///     Content-Type: multipart/mixed;boundary=unique\r\n\r\n\
    ///     --unique\r\nContent-Type: application/sdp\r\n\r\nv=0\r\n\
    ///     --unique\r\nContent-Type: application/isup\r\n\r\nxx\r\n--unique--"[..])?;
    /// assert_eq!(msg.body_of_type("application", "sdp"), Some(&b"v=0"[..]));
    /// assert_eq!(msg.body_of_type("text", "plain"), None);
    /// # Ok::<(), sip_core::ParseError>(())
    /// ```
    pub fn body_of_type(&self, mtype: &str, subtype: &str) -> Option<&[u8]> {
        let body = self.body();
        if body.is_empty() {
            return None;
        }
        let ct = match self.content_type() {
            Ok(Some(ct)) => ct,
            Ok(None) => return Some(body),
            Err(_) => return None,
        };
        if ct.is(mtype, subtype) {
            return Some(body);
        }
        if !ct.mtype.eq_ignore_ascii_case("multipart") {
            return None;
        }
        let boundary = ct.params.get("boundary").flatten()?;
        multipart_parts(body, boundary.as_bytes())
            .find(|(part_type, _)| part_type.as_ref().is_some_and(|t| t.is(mtype, subtype)))
            .map(|(_, content)| content)
    }

    /// Every header line in order.
    pub fn headers(&self) -> impl Iterator<Item = HeaderField<'_>> + '_ {
        self.headers.iter().map(|h| HeaderField {
            kind: h.kind,
            name: self.str_of(h.name),
            value: self.str_of(h.value),
        })
    }

    /// The first value of the header called `name` (full or compact, any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let i = self.position_of(name)?;
        Some(self.str_of(self.headers[i].value))
    }

    /// Every value of the header called `name`, one per header line.
    pub fn header_values<'s, 'n>(
        &'s self,
        name: &'n str,
    ) -> impl Iterator<Item = &'s str> + use<'s, 'n> {
        let kind = HeaderName::from_bytes(name.as_bytes());
        self.headers
            .iter()
            .filter(move |h| {
                h.kind == kind
                    && (kind != HeaderName::Other
                        || self.bytes_of(h.name).eq_ignore_ascii_case(name.as_bytes()))
            })
            .map(|h| self.str_of(h.value))
    }

    /// The topmost Via.
    pub fn via(&self) -> Result<Via<'_>, ParseError> {
        match self.top_via {
            Some(TopVia {
                idx,
                offset,
                via: Ok(spans),
            }) => {
                let v = self.str_of(self.headers[idx as usize].value);
                Ok(spans.resolve(v.get(offset as usize..).unwrap_or("")))
            }
            Some(TopVia {
                idx,
                offset,
                via: Err(e),
            }) => Err(self.value_error(idx as usize, offset as usize, e)),
            None => self.first(HeaderName::Via),
        }
    }

    /// Every Via, top first.
    pub fn vias(&self) -> impl Iterator<Item = Result<Via<'_>, ParseError>> + '_ {
        self.all(HeaderName::Via)
    }

    /// The From header.
    pub fn from(&self) -> Result<NameAddr<'_>, ParseError> {
        self.first(HeaderName::From)
    }

    /// The To header.
    pub fn to(&self) -> Result<NameAddr<'_>, ParseError> {
        self.first(HeaderName::To)
    }

    /// The Call-ID.
    pub fn call_id(&self) -> Result<&str, ParseError> {
        let (idx, h) = self.find(HeaderName::CallId)?;
        headers::call_id(self.str_of(h.value)).map_err(|e| self.value_error(idx, 0, e))
    }

    /// The CSeq.
    pub fn cseq(&self) -> Result<CSeq<'_>, ParseError> {
        if self.modified {
            return self.first(HeaderName::CSeq);
        }
        let (s, e) = self.parsed.cseq_method;
        Ok(CSeq {
            seq: self.parsed.cseq,
            method_token: self.head.get(s as usize..e as usize).unwrap_or(""),
        })
    }

    /// Max-Forwards, when present.
    pub fn max_forwards(&self) -> Result<Option<u8>, ParseError> {
        self.number(HeaderName::MaxForwards, 255, "number from 0 to 255")
            .map(|v| v.map(|v| u8::try_from(v).unwrap_or(u8::MAX)))
    }

    /// The first Contact, when present.
    pub fn contact(&self) -> Result<Option<Contact<'_>>, ParseError> {
        self.optional(HeaderName::Contact)
    }

    /// Every Contact value.
    pub fn contacts(&self) -> impl Iterator<Item = Result<Contact<'_>, ParseError>> + '_ {
        self.all(HeaderName::Contact)
    }

    /// Every Route value, top first.
    pub fn routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> + '_ {
        self.all(HeaderName::Route)
    }

    /// Every Record-Route value, top first.
    pub fn record_routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> + '_ {
        self.all(HeaderName::RecordRoute)
    }

    /// Every Path value (RFC 3327).
    pub fn paths(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> + '_ {
        self.all(HeaderName::Path)
    }

    /// Every Service-Route value (RFC 3608).
    pub fn service_routes(&self) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> + '_ {
        self.all(HeaderName::ServiceRoute)
    }

    /// Every P-Asserted-Identity value (RFC 3325).
    pub fn p_asserted_identities(
        &self,
    ) -> impl Iterator<Item = Result<NameAddr<'_>, ParseError>> + '_ {
        self.all(HeaderName::PAssertedIdentity)
    }

    /// The Content-Length as declared (checked when the message was parsed).
    pub fn content_length(&self) -> Option<u32> {
        if !self.modified {
            return self.parsed.content_length;
        }
        self.number(HeaderName::ContentLength, u64::from(u32::MAX), "")
            .ok()
            .flatten()
            .map(|v| u32::try_from(v).unwrap_or(u32::MAX))
    }

    /// The Content-Type, when present.
    pub fn content_type(&self) -> Result<Option<ContentType<'_>>, ParseError> {
        self.optional(HeaderName::ContentType)
    }

    /// Expires, when present.
    pub fn expires(&self) -> Result<Option<u32>, ParseError> {
        self.seconds(HeaderName::Expires)
    }

    /// Min-Expires, when present.
    pub fn min_expires(&self) -> Result<Option<u32>, ParseError> {
        self.seconds(HeaderName::MinExpires)
    }

    /// Every WWW-Authenticate challenge.
    pub fn www_authenticate(&self) -> impl Iterator<Item = Result<Auth<'_>, ParseError>> + '_ {
        self.all(HeaderName::WwwAuthenticate)
    }

    /// Every Proxy-Authenticate challenge.
    pub fn proxy_authenticate(&self) -> impl Iterator<Item = Result<Auth<'_>, ParseError>> + '_ {
        self.all(HeaderName::ProxyAuthenticate)
    }

    /// Every Authorization credential.
    pub fn authorization(&self) -> impl Iterator<Item = Result<Auth<'_>, ParseError>> + '_ {
        self.all(HeaderName::Authorization)
    }

    /// Every Proxy-Authorization credential.
    pub fn proxy_authorization(&self) -> impl Iterator<Item = Result<Auth<'_>, ParseError>> + '_ {
        self.all(HeaderName::ProxyAuthorization)
    }

    /// The methods in Allow.
    pub fn allow(&self) -> impl Iterator<Item = Result<Method, ParseError>> + '_ {
        self.tokens(HeaderName::Allow)
            .map(|t| t.map(Method::from_token))
    }

    /// The option tags in Supported.
    pub fn supported(&self) -> impl Iterator<Item = Result<&str, ParseError>> + '_ {
        self.tokens(HeaderName::Supported)
    }

    /// The option tags in Require.
    pub fn require(&self) -> impl Iterator<Item = Result<&str, ParseError>> + '_ {
        self.tokens(HeaderName::Require)
    }

    /// The Event header (RFC 6665).
    pub fn event(&self) -> Result<Option<TokenParams<'_>>, ParseError> {
        self.optional(HeaderName::Event)
    }

    /// The Subscription-State header (RFC 6665).
    pub fn subscription_state(&self) -> Result<Option<TokenParams<'_>>, ParseError> {
        self.optional(HeaderName::SubscriptionState)
    }

    /// The Refer-To header (RFC 3515).
    pub fn refer_to(&self) -> Result<Option<NameAddr<'_>>, ParseError> {
        self.optional(HeaderName::ReferTo)
    }

    /// The Referred-By header (RFC 3892).
    pub fn referred_by(&self) -> Result<Option<NameAddr<'_>>, ParseError> {
        self.optional(HeaderName::ReferredBy)
    }

    /// The Replaces header (RFC 3891).
    pub fn replaces(&self) -> Result<Option<Replaces<'_>>, ParseError> {
        let Some((idx, h)) = self.find(HeaderName::Replaces).ok() else {
            return Ok(None);
        };
        headers::replaces(self.str_of(h.value))
            .map(Some)
            .map_err(|e| self.value_error(idx, 0, e))
    }

    /// Every Reason value (RFC 3326): protocol (`SIP`, `Q.850`) with `cause`
    /// and `text`.
    pub fn reasons(&self) -> impl Iterator<Item = Result<TokenParams<'_>, ParseError>> + '_ {
        self.all(HeaderName::Reason)
    }

    /// The Retry-After header (RFC 3261 §20.33), when present.
    pub fn retry_after(&self) -> Result<Option<RetryAfter<'_>>, ParseError> {
        self.optional(HeaderName::RetryAfter)
    }

    /// The Session-Expires header (RFC 4028).
    pub fn session_expires(&self) -> Result<Option<SessionExpires<'_>>, ParseError> {
        let Some((idx, h)) = self.find(HeaderName::SessionExpires).ok() else {
            return Ok(None);
        };
        headers::session_expires(self.str_of(h.value))
            .map(Some)
            .map_err(|e| self.value_error(idx, 0, e))
    }

    /// Parses every header this crate knows and the Request-URI, and checks
    /// the rules that span headers (a Contact `*` stands alone).
    ///
    /// [`Message::parse`] checks only what framing and routing need; call this
    /// to hold a message to the full grammar.
    pub fn validate(&self) -> Result<(), ParseError> {
        for (idx, h) in self.headers.iter().enumerate() {
            // Parsing or building checked these while the message is unchanged.
            if !self.modified
                && matches!(
                    h.kind,
                    HeaderName::CSeq | HeaderName::MaxForwards | HeaderName::ContentLength
                )
            {
                continue;
            }
            if h.kind == HeaderName::Other {
                continue;
            }
            if let Some(top) = self.top_via
                && top.idx as usize == idx
                && top.offset == 0
            {
                // Parsed with the message; a single value needs no second look.
                match top.via {
                    Err(e) => return Err(self.value_error(idx, 0, e)),
                    Ok(_) if !grammar::find_comma(self.str_of(h.value)) => continue,
                    Ok(_) => {}
                }
            }
            let v = self.str_of(h.value);
            let err = |off: usize, e: ValueError| self.value_error(idx, off, e);
            if h.kind.is_list() && grammar::find_comma(v) {
                let n = grammar::split_list(v).count();
                let mut star = false;
                for (off, e) in grammar::split_list(v) {
                    check_value(h.kind, e, n == 1).map_err(|er| err(off, er))?;
                    star |= grammar::sws(e) == "*";
                }
                if h.kind == HeaderName::Contact && star && n > 1 {
                    return Err(err(0, STAR_ALONE));
                }
            } else {
                check_value(h.kind, v, true).map_err(|er| err(0, er))?;
                if h.kind == HeaderName::Contact
                    && grammar::sws(v) == "*"
                    && self
                        .headers
                        .iter()
                        .filter(|x| x.kind == HeaderName::Contact)
                        .nth(1)
                        .is_some()
                {
                    return Err(err(0, STAR_ALONE));
                }
            }
        }
        Ok(())
    }

    /// The message as bytes: the original bytes when unmodified, else the
    /// canonical form.
    pub fn to_bytes(&self) -> Bytes {
        // A modification writes the canonical form, so the buffer is right
        // either way.
        self.buf.clone()
    }

    /// The canonical form: full header names, one space after the colon,
    /// folded values unfolded, the body unchanged.
    pub fn canonical(&self) -> Bytes {
        if self.modified {
            return self.to_bytes();
        }
        let pieces: Vec<Piece<'_>> = (0..self.headers.len()).map(Piece::Kept).collect();
        self.write_canonical(None, &pieces, self.body()).0.freeze()
    }

    /// Whether the message was changed since it was parsed or built.
    pub fn is_modified(&self) -> bool {
        self.modified || self.spliced
    }

    /// Appends a header line.
    pub fn push_header(&mut self, name: &str, value: &str) -> Result<(), BuildError> {
        let h = new_piece(name, value)?;
        let mut pieces = self.kept();
        pieces.push(h);
        self.rewrite(None, &pieces, None);
        Ok(())
    }

    /// Inserts a header line before every other (e.g. a proxy's Via).
    pub fn prepend_header(&mut self, name: &str, value: &str) -> Result<(), BuildError> {
        let h = new_piece(name, value)?;
        let mut pieces = self.kept();
        pieces.insert(0, h);
        self.rewrite(None, &pieces, None);
        Ok(())
    }

    /// Replaces every line of the header called `name` with one line holding
    /// `value`, at the place of the first (or at the end).
    pub fn set_header(&mut self, name: &str, value: &str) -> Result<(), BuildError> {
        let h = new_piece(name, value)?;
        let pieces = self.with_header_set(name, h);
        self.rewrite(None, &pieces, None);
        Ok(())
    }

    /// Removes every line of the header called `name`; returns how many.
    pub fn remove_header(&mut self, name: &str) -> usize {
        let pieces: Vec<Piece<'_>> = (0..self.headers.len())
            .filter(|&i| !self.is_named(&self.headers[i], name))
            .map(Piece::Kept)
            .collect();
        let removed = self.headers.len() - pieces.len();
        if removed > 0 {
            self.rewrite(None, &pieces, None);
        }
        removed
    }

    /// Removes the first value of the topmost Via (a response on its way back,
    /// RFC 3261 §18.1.2); returns whether there was one.
    pub fn pop_via(&mut self) -> bool {
        let Some(idx) = self.headers.iter().position(|h| h.kind == HeaderName::Via) else {
            return false;
        };
        let value = self.value_of(&self.headers[idx]).into_owned();
        let mut parts = grammar::split_list(&value);
        parts.next();
        let rest: Vec<&str> = parts.map(|(_, e)| e).collect();
        let joined = rest.join(", ");
        let mut pieces = self.kept();
        if rest.is_empty() {
            pieces.remove(idx);
        } else {
            pieces[idx] = Piece::New(HeaderName::Via, "Via", &joined);
        }
        self.rewrite(None, &pieces, None);
        true
    }

    /// The raw value of the first Via header line (every Via value on it).
    pub(crate) fn top_via_value(&self) -> Option<&str> {
        let idx = match self.top_via {
            Some(top) => top.idx as usize,
            None => self
                .headers
                .iter()
                .position(|h| h.kind == HeaderName::Via)?,
        };
        let v = self.headers.get(idx)?.value;
        self.head.get(v.start as usize..v.end as usize)
    }

    /// [`top_via_value`](Self::top_via_value), sharing the message's buffer.
    pub(crate) fn top_via_value_shared(&self) -> Option<ByteString> {
        self.top_via_value().map(|v| self.head.slice_ref(v))
    }

    /// Replaces the first value of the topmost Via with `value` where it
    /// stands (RFC 3581 `received` and `rport`): one copy of the message.
    pub(crate) fn replace_top_via(&mut self, value: &str) -> Result<(), BuildError> {
        self.replace_top_via_with(value, None)
    }

    /// RFC 3581: sets `received` (and `rport` when given) on the top Via, its
    /// other parameters kept in order and the text before them as written, so
    /// the parsed spans carry over. Returns false, changing nothing, when the
    /// top Via is not a lone, parsed, unfolded value.
    pub(crate) fn set_via_received(
        &mut self,
        received: std::net::IpAddr,
        rport: Option<u16>,
    ) -> bool {
        let Some(top) = self.top_via else {
            return false;
        };
        let Ok(spans) = top.via else {
            return false;
        };
        let h = self.headers[top.idx as usize];
        let value = self.str_of(h.value);
        if h.folded || top.offset != 0 || grammar::find_comma(value) {
            return false;
        }
        let (ps, _) = spans.params_span();
        let via = spans.resolve(value);
        let mut new = String::with_capacity(value.len() + 48);
        new.push_str(value.get(..ps).unwrap_or(""));
        let mut branch = None;
        // Each kept parameter as written: a quoted value keeps its quotes.
        let mut params = via.params.iter();
        while let Some((name, written, value)) = params.next_written() {
            if name.eq_ignore_ascii_case("received") || name.eq_ignore_ascii_case("rport") {
                continue;
            }
            new.push(';');
            let at = new.len() - ps;
            new.push_str(written);
            if let Some((a, b)) = value
                && branch.is_none()
                && name.eq_ignore_ascii_case("branch")
            {
                branch = Some((at + a, at + b));
            }
        }
        new.push_str(";received=");
        push_ip(&mut new, received);
        if let Some(p) = rport {
            new.push_str(";rport=");
            let mut digits = [0u8; 20];
            new.push_str(text(decimal(u64::from(p), &mut digits)));
        }
        let hint = spans
            .with_params(ps, new.len(), branch)
            .map(|v| TopVia { via: Ok(v), ..top });
        if has_control(new.as_bytes()) {
            return false;
        }
        if self.modified {
            let mut pieces = self.kept();
            pieces[top.idx as usize] = Piece::New(HeaderName::Via, "Via", &new);
            self.rewrite_with(None, &pieces, None, hint);
        } else {
            self.splice_value(top.idx as usize, &new, hint);
        }
        true
    }

    /// Replaces header `idx`'s value with `value` in place, every other
    /// byte as it was: what the parser noted stays valid, shifted.
    fn splice_value(&mut self, idx: usize, value: &str, top_via: Option<TopVia>) {
        let old = self.headers[idx].value;
        let (start, end) = (old.start as usize, old.end as usize);
        let Ok(grown) = u32::try_from(value.len()) else {
            return;
        };
        let shrunk = old.end - old.start;
        let shift = |at: &mut u32| {
            if *at >= old.end {
                *at = *at - shrunk + grown;
            }
        };
        let mut out = BytesMut::with_capacity(self.buf.len() + value.len());
        out.put_slice(&self.buf[..start]);
        out.put_slice(value.as_bytes());
        out.put_slice(&self.buf[end..]);
        let head_end = self.head.len() + value.len() - (end - start);
        for h in &mut self.headers {
            for at in [
                &mut h.name.start,
                &mut h.name.end,
                &mut h.value.start,
                &mut h.value.end,
            ] {
                shift(at);
            }
        }
        self.headers[idx].value.end = old.start + grown;
        let (mut s, mut e) = self.parsed.cseq_method;
        shift(&mut s);
        shift(&mut e);
        self.parsed.cseq_method = (s, e);
        self.buf = out.freeze();
        // Text spliced into text at a value's bounds: still UTF-8.
        self.head = ByteString::try_from(self.buf.slice(..head_end)).unwrap_or_default();
        self.top_via = top_via.or_else(|| TopVia::of(&self.head, &self.headers));
        self.spliced = true;
    }

    fn replace_top_via_with(
        &mut self,
        value: &str,
        hint: Option<TopVia>,
    ) -> Result<(), BuildError> {
        check_header("Via", value)?;
        let value = value.trim_matches([' ', '\t']);
        let Some(idx) = self.headers.iter().position(|h| h.kind == HeaderName::Via) else {
            return Ok(());
        };
        let old = self.value_of(&self.headers[idx]);
        let mut joined = String::new();
        if grammar::find_comma(&old) {
            let mut parts = grammar::split_list(&old);
            parts.next();
            joined.push_str(value);
            for (_, e) in parts {
                joined.push_str(", ");
                joined.push_str(e);
            }
        }
        let mut pieces = self.kept();
        pieces[idx] = Piece::New(
            HeaderName::Via,
            "Via",
            if joined.is_empty() { value } else { &joined },
        );
        self.rewrite_with(None, &pieces, None, hint);
        Ok(())
    }

    /// Replaces the body and its Content-Type; Content-Length follows.
    pub fn set_body(&mut self, content_type: Option<&str>, body: Bytes) -> Result<(), BuildError> {
        let mut pieces = match content_type {
            Some(ct) => {
                ContentType::parse(ct).map_err(BuildError::InvalidValue)?;
                self.with_header_set("Content-Type", new_piece("Content-Type", ct)?)
            }
            None => (0..self.headers.len())
                .filter(|&i| self.headers[i].kind != HeaderName::ContentType)
                .map(Piece::Kept)
                .collect(),
        };
        let mut digits = [0u8; 20];
        let length = text(decimal(body.len() as u64, &mut digits));
        let at = pieces.iter().position(|p| match p {
            Piece::Kept(i) => self.headers[*i].kind == HeaderName::ContentLength,
            Piece::New(k, ..) => *k == HeaderName::ContentLength,
        });
        pieces.retain(|p| match p {
            Piece::Kept(i) => self.headers[*i].kind != HeaderName::ContentLength,
            Piece::New(k, ..) => *k != HeaderName::ContentLength,
        });
        let cl = Piece::New(HeaderName::ContentLength, "Content-Length", length);
        match at {
            Some(i) => pieces.insert(i.min(pieces.len()), cl),
            None => pieces.push(cl),
        }
        self.rewrite(None, &pieces, Some(&body));
        Ok(())
    }

    /// Replaces the Request-URI.
    pub fn set_request_uri(&mut self, new_uri: &str) -> Result<(), BuildError> {
        Uri::parse(new_uri).map_err(BuildError::InvalidValue)?;
        if new_uri.bytes().any(|c| c <= b' ' || c == 0x7F) {
            return Err(BuildError::ControlCharacter("Request-URI".to_owned()));
        }
        if !self.is_request() {
            return Err(BuildError::NotARequest);
        }
        let pieces = self.kept();
        self.rewrite(Some(new_uri), &pieces, None);
        Ok(())
    }

    /// Every header kept as it is.
    fn kept(&self) -> Vec<Piece<'static>> {
        (0..self.headers.len()).map(Piece::Kept).collect()
    }

    /// The headers with every line called `name` replaced by `h`, at the
    /// place of the first (or at the end).
    fn with_header_set<'p>(&self, name: &str, h: Piece<'p>) -> Vec<Piece<'p>> {
        let mut pieces: Vec<Piece<'p>> = Vec::with_capacity(self.headers.len() + 1);
        let mut placed = false;
        for (i, x) in self.headers.iter().enumerate() {
            if self.is_named(x, name) {
                if !placed {
                    pieces.push(h);
                    placed = true;
                }
            } else {
                pieces.push(Piece::Kept(i));
            }
        }
        if !placed {
            pieces.push(h);
        }
        pieces
    }

    fn is_named(&self, h: &Header, name: &str) -> bool {
        let kind = HeaderName::from_bytes(name.as_bytes());
        h.kind == kind
            && (kind != HeaderName::Other
                || self.bytes_of(h.name).eq_ignore_ascii_case(name.as_bytes()))
    }

    /// Writes the canonical form with `pieces` as the headers and returns
    /// the buffer and where each part lies in it.
    fn write_canonical(
        &self,
        new_uri: Option<&str>,
        pieces: &[Piece<'_>],
        body: &[u8],
    ) -> (BytesMut, Start, Vec<Header>, usize) {
        let mut out = BytesMut::with_capacity(self.buf.len() + 128);
        let start = match &self.start {
            Start::Request { method, uri } => {
                out.put_slice(method.as_str().as_bytes());
                out.put_u8(b' ');
                let s = out.len();
                match new_uri {
                    Some(u) => out.put_slice(u.as_bytes()),
                    None => out.put_slice(self.bytes_of(*uri)),
                }
                let uri = span(s, out.len());
                out.put_slice(b" SIP/2.0\r\n");
                Start::Request {
                    method: method.clone(),
                    uri,
                }
            }
            Start::Response { status, reason } => {
                out.put_slice(b"SIP/2.0 ");
                let mut digits = [0u8; 20];
                out.put_slice(decimal(u64::from(*status), &mut digits));
                out.put_u8(b' ');
                let s = out.len();
                out.put_slice(self.bytes_of(*reason));
                let reason = span(s, out.len());
                out.put_slice(b"\r\n");
                Start::Response {
                    status: *status,
                    reason,
                }
            }
        };
        let mut headers = Vec::with_capacity(pieces.len());
        for p in pieces {
            let (kind, name, value) = match *p {
                Piece::Kept(i) => {
                    let h = &self.headers[i];
                    let name = match h.kind.canonical() {
                        Some(n) => n.as_bytes(),
                        None => self.bytes_of(h.name),
                    };
                    (h.kind, name, self.value_of(h))
                }
                Piece::New(kind, name, value) => (
                    kind,
                    kind.canonical().unwrap_or(name).as_bytes(),
                    std::borrow::Cow::Borrowed(value),
                ),
            };
            let ns = out.len();
            out.put_slice(name);
            let ne = out.len();
            out.put_slice(b": ");
            let vs = out.len();
            out.put_slice(value.as_bytes());
            headers.push(Header {
                kind,
                folded: false,
                name: span(ns, ne),
                value: span(vs, out.len()),
            });
            out.put_slice(b"\r\n");
        }
        let head_end = out.len();
        out.put_slice(b"\r\n");
        out.put_slice(body);
        (out, start, headers, head_end)
    }

    /// Replaces the message with its canonical form holding `pieces`.
    fn rewrite(&mut self, new_uri: Option<&str>, pieces: &[Piece<'_>], body: Option<&[u8]>) {
        self.rewrite_with(new_uri, pieces, body, None);
    }

    /// [`Message::rewrite`] with the top Via already known.
    fn rewrite_with(
        &mut self,
        new_uri: Option<&str>,
        pieces: &[Piece<'_>],
        body: Option<&[u8]>,
        top_via: Option<TopVia>,
    ) {
        let (out, start, headers, head_end) =
            self.write_canonical(new_uri, pieces, body.unwrap_or(self.body()));
        self.buf = out.freeze();
        // Written from text, so this holds.
        self.head = ByteString::try_from(self.buf.slice(..head_end)).unwrap_or_default();
        self.start = start;
        self.headers = headers;
        self.top_via = top_via.or_else(|| TopVia::of(&self.head, &self.headers));
        self.modified = true;
    }

    /// A header's value as one line (folds replaced by a space).
    fn value_of(&self, h: &Header) -> std::borrow::Cow<'_, str> {
        if h.folded {
            unfold(self.str_of(h.value))
        } else {
            std::borrow::Cow::Borrowed(self.str_of(h.value))
        }
    }

    fn position_of(&self, name: &str) -> Option<usize> {
        let kind = HeaderName::from_bytes(name.as_bytes());
        self.headers.iter().position(|h| {
            h.kind == kind
                && (kind != HeaderName::Other
                    || self.bytes_of(h.name).eq_ignore_ascii_case(name.as_bytes()))
        })
    }

    #[inline]
    fn bytes_of(&self, t: Span) -> &[u8] {
        self.buf
            .get(t.start as usize..t.end as usize)
            .unwrap_or_default()
    }

    #[inline]
    fn str_of(&self, t: Span) -> &str {
        self.head
            .get(t.start as usize..t.end as usize)
            .unwrap_or("")
    }

    /// The first header of `kind` as noted by the parser, while unmodified.
    #[inline]
    fn noted(&self, kind: HeaderName) -> Option<usize> {
        let slot = match kind {
            HeaderName::From => 0,
            HeaderName::To => 1,
            HeaderName::CallId => 2,
            HeaderName::Contact => 3,
            _ => return None,
        };
        let i = usize::from(self.parsed.first[slot]);
        (!self.modified && i < self.headers.len()).then_some(i)
    }

    #[inline]
    fn find(&self, kind: HeaderName) -> Result<(usize, &Header), ParseError> {
        if let Some(i) = self.noted(kind) {
            return Ok((i, &self.headers[i]));
        }
        self.headers
            .iter()
            .enumerate()
            .find(|(_, h)| h.kind == kind)
            .ok_or_else(|| {
                ParseError::at(
                    ParseErrorKind::MissingHeader {
                        header: headers::header_label(kind),
                    },
                    &self.buf,
                    self.head.len(),
                )
            })
    }

    #[inline]
    fn first<'s, T: TypedValue<'s>>(&'s self, kind: HeaderName) -> Result<T, ParseError> {
        let (idx, h) = self.find(kind)?;
        self.parse_first(idx, h)
    }

    /// The first element of header line `idx` as a typed value.
    #[inline]
    fn parse_first<'s, T: TypedValue<'s>>(
        &'s self,
        idx: usize,
        h: &'s Header,
    ) -> Result<T, ParseError> {
        let v = self.str_of(h.value);
        // A list value without a comma is a single element.
        let (off, elem) = if h.kind.is_list() && grammar::find_comma(v) {
            grammar::split_list(v).next().unwrap_or((0, v))
        } else {
            (0, v)
        };
        T::parse_value_or(elem, |e| self.value_error(idx, off, e))
    }

    #[inline]
    fn optional<'s, T: TypedValue<'s>>(
        &'s self,
        kind: HeaderName,
    ) -> Result<Option<T>, ParseError> {
        match self
            .noted(kind)
            .or_else(|| self.headers.iter().position(|h| h.kind == kind))
        {
            Some(idx) => self.parse_first(idx, &self.headers[idx]).map(Some),
            None => Ok(None),
        }
    }

    fn all<'s, T: TypedValue<'s> + 's>(
        &'s self,
        kind: HeaderName,
    ) -> impl Iterator<Item = Result<T, ParseError>> + 's {
        self.elements(kind).map(move |(idx, off, e)| {
            T::parse_value(e).map_err(|er| self.value_error(idx, off, er))
        })
    }

    fn elements(&self, kind: HeaderName) -> impl Iterator<Item = (usize, usize, &str)> + '_ {
        self.headers
            .iter()
            .enumerate()
            .filter(move |(_, h)| h.kind == kind)
            .flat_map(move |(idx, h)| {
                let v = self.str_of(h.value);
                let parts: Box<dyn Iterator<Item = (usize, &str)>> = if kind.is_list() {
                    Box::new(grammar::split_list(v).filter(|(_, e)| !e.is_empty()))
                } else {
                    Box::new(std::iter::once((0, v)))
                };
                parts.map(move |(off, e)| (idx, off, e))
            })
    }

    fn tokens(&self, kind: HeaderName) -> impl Iterator<Item = Result<&str, ParseError>> + '_ {
        self.elements(kind).map(move |(idx, off, e)| {
            headers::check_token(e).map_err(|er| self.value_error(idx, off, er))
        })
    }

    fn number(
        &self,
        kind: HeaderName,
        max: u64,
        what: &'static str,
    ) -> Result<Option<u64>, ParseError> {
        let Ok((idx, h)) = self.find(kind) else {
            return Ok(None);
        };
        headers::delta(self.str_of(h.value), max, what)
            .map(Some)
            .map_err(|e| self.value_error(idx, 0, e))
    }

    fn seconds(&self, kind: HeaderName) -> Result<Option<u32>, ParseError> {
        self.number(kind, u64::from(u32::MAX), "delta seconds")
            .map(|v| v.map(|v| u32::try_from(v).unwrap_or(u32::MAX)))
    }

    #[cold]
    fn value_error(&self, idx: usize, elem_offset: usize, e: ValueError) -> ParseError {
        let h = &self.headers[idx];
        let kind = ParseErrorKind::InvalidHeader {
            header: headers::header_label(h.kind),
            expected: e.expected,
        };
        ParseError::at(
            kind,
            &self.buf,
            h.value.start as usize + elem_offset + e.offset,
        )
    }
}

/// A header line of a message being rewritten: one it has, or a new one.
#[derive(Debug, Clone, Copy)]
enum Piece<'a> {
    Kept(usize),
    New(HeaderName, &'a str, &'a str),
}

const STAR_ALONE: ValueError = ValueError {
    offset: 0,
    expected: "* as the only Contact",
};

/// One element of a known header held to its grammar; `single` when it is
/// the value's only element.
fn check_value(kind: HeaderName, e: &str, single: bool) -> Result<(), ValueError> {
    match kind {
        HeaderName::Via => Via::parse_value(e).map(drop),
        HeaderName::From
        | HeaderName::To
        | HeaderName::Route
        | HeaderName::RecordRoute
        | HeaderName::ReferTo
        | HeaderName::ReferredBy
        | HeaderName::PAssertedIdentity
        | HeaderName::Path
        | HeaderName::ServiceRoute => NameAddr::parse_value(e).map(drop),
        HeaderName::Contact => Contact::parse_value(e).map(drop),
        HeaderName::CallId => headers::call_id(e).map(drop),
        HeaderName::CSeq => CSeq::parse_value(e).map(drop),
        HeaderName::MaxForwards => headers::delta(e, 255, "number from 0 to 255").map(drop),
        HeaderName::ContentLength
        | HeaderName::Expires
        | HeaderName::MinExpires
        | HeaderName::MinSe => headers::delta(e, u64::from(u32::MAX), "delta seconds").map(drop),
        HeaderName::ContentType => ContentType::parse_value(e).map(drop),
        HeaderName::WwwAuthenticate
        | HeaderName::Authorization
        | HeaderName::ProxyAuthenticate
        | HeaderName::ProxyAuthorization => Auth::parse_value(e).map(drop),
        HeaderName::Allow
        | HeaderName::Supported
        | HeaderName::Require
        | HeaderName::ProxyRequire
        | HeaderName::Unsupported
        | HeaderName::AllowEvents
        | HeaderName::ContentEncoding => {
            if single && grammar::sws(e).is_empty() {
                // An empty Allow or Supported is legal.
                if matches!(kind, HeaderName::Allow | HeaderName::Supported) {
                    Ok(())
                } else {
                    headers::nonempty(e)
                }
            } else {
                headers::check_token(e).map(drop)
            }
        }
        HeaderName::Event | HeaderName::SubscriptionState => TokenParams::parse_value(e).map(drop),
        HeaderName::Replaces => headers::replaces(e).map(drop),
        HeaderName::SessionExpires => headers::session_expires(e).map(drop),
        _ => Ok(()),
    }
}

/// An IP address in its usual text form, without the formatting machinery
/// for IPv4.
pub(crate) fn push_ip(out: &mut String, ip: std::net::IpAddr) {
    match ip {
        std::net::IpAddr::V4(a) => {
            for (i, o) in a.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                let mut digits = [0u8; 20];
                for &d in decimal(u64::from(o), &mut digits) {
                    out.push(char::from(d));
                }
            }
        }
        std::net::IpAddr::V6(a) => {
            use std::fmt::Write;
            let _ = write!(out, "{a}");
        }
    }
}

/// `n` in decimal, written into `buf`.
pub(crate) fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Replaces every fold (white space around a line break) with one space.
fn unfold(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains('\r') {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("\r\n") {
        out.push_str(rest[..i].trim_end_matches([' ', '\t']));
        out.push(' ');
        rest = rest[i + 2..].trim_start_matches([' ', '\t']);
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

fn check_header(name: &str, value: &str) -> Result<HeaderName, BuildError> {
    let n = name.as_bytes();
    if n.is_empty() || grammar::run_at(n, 0, n.len(), grammar::C_TOKEN) != n.len() {
        return Err(BuildError::InvalidName(name.to_owned()));
    }
    if has_control(value.as_bytes()) {
        return Err(BuildError::ControlCharacter(name.to_owned()));
    }
    Ok(HeaderName::from_token_bytes(n))
}

/// Whether `v` holds a control character other than HTAB (CR and LF
/// included).
fn has_control(v: &[u8]) -> bool {
    // No early exit, so the loop runs on whole vectors.
    v.iter()
        .fold(false, |acc, &c| acc | ((c < 0x20) & (c != b'\t')))
}

fn new_piece<'a>(name: &'a str, value: &'a str) -> Result<Piece<'a>, BuildError> {
    let kind = check_header(name, value)?;
    Ok(Piece::New(kind, name, value.trim_matches([' ', '\t'])))
}

/// Most parts read from one multipart body; the rest are ignored.
const MAX_PARTS: usize = 16;

/// The parts of a multipart body (RFC 2046 §5.1.1) between its delimiter
/// lines: each part's Content-Type (`None` when it has none, or one that
/// does not parse) and its content. Nested multiparts are not opened.
fn multipart_parts<'b>(
    body: &'b [u8],
    boundary: &'b [u8],
) -> impl Iterator<Item = (Option<ContentType<'b>>, &'b [u8])> + 'b {
    let mut delimiter = Vec::with_capacity(boundary.len() + 4);
    delimiter.extend_from_slice(b"\r\n--");
    delimiter.extend_from_slice(boundary);
    // The first delimiter may open the body, without the CRLF before it.
    let mut at = if body.starts_with(&delimiter[2..]) {
        Some(delimiter.len() - 2)
    } else {
        memchr::memmem::find(body, &delimiter).map(|i| i + delimiter.len())
    };
    let mut parts = 0;
    std::iter::from_fn(move || {
        let start = at?;
        parts += 1;
        let rest = body.get(start..)?;
        // "--" after the boundary closes the body; else padding and CRLF.
        if parts > MAX_PARTS || rest.starts_with(b"--") || boundary.is_empty() {
            at = None;
            return None;
        }
        let line_end = memchr::memmem::find(rest, b"\r\n")?;
        if !rest[..line_end].iter().all(|&c| c == b' ' || c == b'\t') {
            at = None;
            return None;
        }
        let part_start = start + line_end + 2;
        let part = body.get(part_start..)?;
        let part_end = memchr::memmem::find(part, &delimiter);
        at = part_end.map(|e| part_start + e + delimiter.len());
        let part = &part[..part_end.unwrap_or(part.len())];
        // Headers up to the empty line; none when the part opens with it.
        let (headers, content) = if part.starts_with(b"\r\n") {
            (&part[..0], &part[2..])
        } else {
            match memchr::memmem::find(part, b"\r\n\r\n") {
                Some(e) => (&part[..e], &part[e + 4..]),
                None => (part, &part[part.len()..]),
            }
        };
        let part_type = std::str::from_utf8(headers).ok().and_then(|h| {
            h.split("\r\n").find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.trim()
                    .eq_ignore_ascii_case("content-type")
                    .then(|| ContentType::parse(value.trim()).ok())
                    .flatten()
            })
        });
        Some((part_type, content))
    })
}

impl PartialEq for Message {
    /// Messages are equal when their start lines, header names (compact and
    /// full forms alike), unfolded header values and bodies are equal.
    fn eq(&self, other: &Self) -> bool {
        let start_eq = match (&self.start, &other.start) {
            (
                Start::Request {
                    method: m1,
                    uri: u1,
                },
                Start::Request {
                    method: m2,
                    uri: u2,
                },
            ) => m1 == m2 && self.bytes_of(*u1) == other.bytes_of(*u2),
            (
                Start::Response {
                    status: s1,
                    reason: r1,
                },
                Start::Response {
                    status: s2,
                    reason: r2,
                },
            ) => s1 == s2 && self.bytes_of(*r1) == other.bytes_of(*r2),
            _ => false,
        };
        start_eq
            && self.headers.len() == other.headers.len()
            && self.headers.iter().zip(&other.headers).all(|(a, b)| {
                a.kind == b.kind
                    && (a.kind != HeaderName::Other
                        || self
                            .bytes_of(a.name)
                            .eq_ignore_ascii_case(other.bytes_of(b.name)))
                    && self.value_of(a) == other.value_of(b)
            })
            && self.body() == other.body()
    }
}

impl fmt::Debug for Message {
    /// Shows the start line and header names only: values and bodies carry
    /// personal data (numbers, names, addresses, credentials).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Message");
        match &self.start {
            Start::Request { method, .. } => d.field("method", method),
            Start::Response { status, .. } => d.field("status", status),
        };
        d.field(
            "headers",
            &self
                .headers
                .iter()
                .map(|h| h.kind.canonical().unwrap_or("extension"))
                .collect::<Vec<_>>(),
        )
        .field("body_len", &self.body().len())
        .finish()
    }
}

/// A header or start line that cannot be put into a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A header name that is not a token.
    #[error("invalid header name {0:?}")]
    InvalidName(String),
    /// A header value with a line break or control character.
    #[error("control character in the value of {0}")]
    ControlCharacter(String),
    /// A value that does not follow its grammar.
    #[error("invalid value: {0}")]
    InvalidValue(ParseError),
    /// The built message does not parse (e.g. a mandatory header is missing).
    #[error("incomplete message: {0}")]
    Incomplete(ParseError),
    /// A request-only operation on a response.
    #[error("not a request")]
    NotARequest,
}

/// Builds a request. [`RequestBuilder::build`] checks it like a received one.
#[derive(Debug, Clone)]
pub struct RequestBuilder {
    head: BytesMut,
    /// Where the start line ends (before its CRLF).
    line_end: usize,
    /// The header lines written so far.
    headers: Vec<Header>,
    body: Bytes,
    has_length: bool,
    /// The first To line, so a response can add its tag there.
    to: Option<usize>,
    /// The top Via as parsed in the request a response copies it from.
    top_via: Option<TopVia>,
}

/// Builds a response. [`ResponseBuilder::build`] checks it like a received one.
#[derive(Debug, Clone)]
pub struct ResponseBuilder {
    inner: RequestBuilder,
    to_tag: Option<String>,
}

impl RequestBuilder {
    fn new(method: Method, uri: &str) -> Self {
        let mut head = BytesMut::with_capacity(512);
        head.put_slice(method.as_str().as_bytes());
        head.put_u8(b' ');
        head.put_slice(uri.as_bytes());
        head.put_slice(b" SIP/2.0");
        Self::with_start_line(head)
    }

    fn with_start_line(mut head: BytesMut) -> Self {
        let line_end = head.len();
        head.put_slice(b"\r\n");
        RequestBuilder {
            head,
            line_end,
            headers: Vec::with_capacity(12),
            body: Bytes::new(),
            has_length: false,
            to: None,
            top_via: None,
        }
    }

    /// Adds a header line.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, BuildError> {
        let kind = check_header(name, value)?;
        if kind == HeaderName::ContentLength {
            self.has_length = true;
        }
        if kind == HeaderName::To && self.to.is_none() {
            self.to = Some(self.headers.len());
        }
        self.push(
            kind,
            name.as_bytes(),
            value.trim_matches([' ', '\t']).as_bytes(),
        );
        Ok(self)
    }

    fn push(&mut self, kind: HeaderName, name: &[u8], value: &[u8]) {
        let ns = self.head.len();
        self.head.put_slice(name);
        let ne = self.head.len();
        self.head.put_slice(b": ");
        let vs = self.head.len();
        self.head.put_slice(value);
        self.headers.push(Header {
            kind,
            folded: false,
            name: span(ns, ne),
            value: span(vs, self.head.len()),
        });
        self.head.put_slice(b"\r\n");
    }

    /// Sets the body; Content-Length is added unless given.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// Finishes and checks the message: what [`Message::parse`] would check,
    /// from the spans written, without parsing the bytes again.
    pub fn build(mut self) -> Result<Message, BuildError> {
        if !self.has_length {
            let mut digits = [0u8; 20];
            let n = decimal(self.body.len() as u64, &mut digits);
            self.push(HeaderName::ContentLength, b"Content-Length", n);
        }
        let mut out = self.head;
        let head_end = out.len();
        out.put_slice(b"\r\n");
        out.put_slice(&self.body);
        let buf = out.freeze();
        // Written from text, so this holds.
        let head = ByteString::try_from(buf.slice(..head_end)).unwrap_or_default();
        finish(
            buf,
            head,
            (0, self.line_end),
            self.headers,
            head_end,
            Framing::Datagram,
            self.top_via,
        )
        .map_err(BuildError::Incomplete)
    }
}

impl ResponseBuilder {
    fn new(status: u16, reason: &str) -> Self {
        let mut head = BytesMut::with_capacity(512);
        head.put_slice(b"SIP/2.0 ");
        let mut digits = [0u8; 20];
        head.put_slice(decimal(u64::from(status), &mut digits));
        head.put_u8(b' ');
        head.put_slice(reason.as_bytes());
        ResponseBuilder {
            inner: RequestBuilder::with_start_line(head),
            to_tag: None,
        }
    }

    /// Adds a header line.
    pub fn header(mut self, name: &str, value: &str) -> Result<Self, BuildError> {
        self.inner = self.inner.header(name, value)?;
        Ok(self)
    }

    /// Copies `request`'s Record-Route values, in their order: a UAS
    /// must, in every response that creates a dialog (a 1xx with a tag or
    /// a 2xx to an INVITE, RFC 3261 §12.1.1), so that the caller's route
    /// set keeps the proxies that asked to stay on the path.
    pub fn record_route_of(mut self, request: &Message) -> Result<Self, BuildError> {
        for value in request.header_values("Record-Route") {
            self.inner = self.inner.header("Record-Route", value)?;
        }
        Ok(self)
    }

    /// Adds `;tag=` to the To header when it has none.
    pub fn to_tag(mut self, tag: &str) -> Self {
        self.to_tag = Some(tag.to_owned());
        self
    }

    /// Sets the body; Content-Length is added unless given.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.inner = self.inner.body(body);
        self
    }

    /// Finishes and checks the message.
    pub fn build(mut self) -> Result<Message, BuildError> {
        if let (Some(tag), Some(idx)) = (self.to_tag.take(), self.inner.to) {
            // Splice `;tag=` into the To line unless it has a tag already.
            let value = self.inner.headers[idx].value;
            let end = value.end as usize;
            let v = &self.inner.head[value.start as usize..end];
            // Only a value with the letters "tag" in it can have the
            // parameter: parse just those.
            let has_tag = v.windows(3).any(|w| w.eq_ignore_ascii_case(b"tag"))
                && NameAddr::parse(text(v)).is_ok_and(|n| n.tag().is_some());
            if !has_tag {
                check_header("To", &tag)?;
                // Moved along in place: no second buffer.
                let len = self.inner.head.len();
                let added = 5 + tag.len();
                self.inner.head.resize(len + added, 0);
                self.inner.head.copy_within(end..len, end + added);
                self.inner.head[end..end + 5].copy_from_slice(b";tag=");
                self.inner.head[end + 5..end + added].copy_from_slice(tag.as_bytes());
                let shift = u32::try_from(added).unwrap_or(u32::MAX);
                self.inner.headers[idx].value.end += shift;
                for h in &mut self.inner.headers[idx + 1..] {
                    for s in [&mut h.name, &mut h.value] {
                        s.start += shift;
                        s.end += shift;
                    }
                }
            }
        }
        self.inner.build()
    }
}

/// Parses the framing and the checks every message must pass.
fn parse_message(
    buf: Bytes,
    limits: &ParseLimits,
    framing: Framing,
) -> Result<Message, ParseError> {
    let b = &buf[..];
    if b.is_empty() || b.iter().all(|&c| c == b'\r' || c == b'\n') {
        return Err(ParseError::at(ParseErrorKind::Empty, b, 0));
    }
    if b.len() > limits.max_message_size {
        return Err(ParseError::at(
            ParseErrorKind::MessageTooLarge {
                size: b.len(),
                limit: limits.max_message_size,
            },
            b,
            limits.max_message_size,
        ));
    }
    if b.len() > u32::MAX as usize {
        return Err(ParseError::at(
            ParseErrorKind::MessageTooLarge {
                size: b.len(),
                limit: u32::MAX as usize,
            },
            b,
            0,
        ));
    }
    let mut pos = 0usize;
    let mut start_line: Option<(usize, usize)> = None;
    let mut headers: Vec<Header> = Vec::with_capacity(16);
    let mut head_end = None;
    let err = |kind, at: usize| Err(ParseError::at(kind, b, at));
    // One search per line for CR or LF: a line ends in CRLF, and any other
    // CR or LF is a bare one.
    while let Some(off) = grammar::find_byte2(&b[pos..], b'\r', b'\n') {
        let end = pos + off;
        if b[end] != b'\r' || b.get(end + 1) != Some(&b'\n') {
            return err(ParseErrorKind::BadLineEnding, end);
        }
        let nl = end + 1;
        if end == pos {
            if start_line.is_none() {
                return err(
                    ParseErrorKind::BadRequestLine {
                        expected: "start line before an empty line",
                    },
                    pos,
                );
            }
            head_end = Some(pos);
            break;
        }
        if start_line.is_none() {
            start_line = Some((pos, end));
        } else if is_wsp(b[pos]) {
            let Some(last) = headers.last_mut() else {
                return err(ParseErrorKind::OrphanContinuation, pos);
            };
            let vend = trim_end(b, pos, end);
            let v = &mut last.value;
            if vend > pos && v.start == v.end {
                // the value so far was empty: it starts on this line
                v.start =
                    u32::try_from(pos + b[pos..vend].iter().take_while(|c| is_wsp(**c)).count())
                        .unwrap_or(0);
            } else if vend > pos {
                last.folded = true;
            }
            if vend > pos {
                v.end = u32::try_from(vend).unwrap_or(0);
            }
        } else {
            if headers.len() >= limits.max_headers {
                return err(
                    ParseErrorKind::TooManyHeaders {
                        limit: limits.max_headers,
                    },
                    pos,
                );
            }
            // The name is a token, then optional white space and the colon.
            let name_end = grammar::run_at(b, pos, end, grammar::C_TOKEN);
            let mut colon = name_end;
            while colon < end && is_wsp(b[colon]) {
                colon += 1;
            }
            if colon == end || b[colon] != b':' {
                return if name_end > pos && colon == end
                    || memchr::memchr(b':', &b[pos..end]).is_none()
                {
                    err(ParseErrorKind::MissingColon, pos)
                } else {
                    err(ParseErrorKind::InvalidHeaderName, name_end)
                };
            }
            if name_end == pos {
                return err(ParseErrorKind::InvalidHeaderName, pos);
            }
            let kind = HeaderName::from_token_bytes(&b[pos..name_end]);
            let mut vstart = colon + 1;
            while vstart < end && is_wsp(b[vstart]) {
                vstart += 1;
            }
            let vend = trim_end(b, vstart, end);
            headers.push(Header {
                kind,
                folded: false,
                name: span(pos, name_end),
                value: span(vstart, vend),
            });
        }
        pos = nl + 1;
    }
    let Some(head_end) = head_end else {
        return err(ParseErrorKind::UnterminatedHeaders, b.len());
    };
    let head = match ByteString::try_from(buf.slice(..head_end)) {
        Ok(h) => h,
        Err(e) => return err(ParseErrorKind::InvalidUtf8, e.valid_up_to()),
    };
    finish(
        buf,
        head,
        start_line.unwrap_or((0, 0)),
        headers,
        head_end,
        framing,
        None,
    )
}

/// The checks on a framed message, parsed or built: the start line, the
/// mandatory headers, CSeq, Max-Forwards and Content-Length.
fn finish(
    buf: Bytes,
    head: ByteString,
    (ls, le): (usize, usize),
    headers: Vec<Header>,
    head_end: usize,
    framing: Framing,
    top_via: Option<TopVia>,
) -> Result<Message, ParseError> {
    let b = &buf[..];
    let err = |kind, at: usize| Err(ParseError::at(kind, b, at));
    let body_start = head_end + 2;
    let start = parse_start_line(&head, ls, le)?;

    // How many of From, To, Call-ID, CSeq, Max-Forwards and Content-Length,
    // the first of each, and the first repeated one.
    let mut count = [0u8; 6];
    let mut first = [usize::MAX; 6];
    let mut has_via = false;
    let mut contact = usize::MAX;
    let mut duplicate: Option<(HeaderName, usize)> = None;
    for (i, h) in headers.iter().enumerate() {
        let slot = match h.kind {
            HeaderName::From => 0,
            HeaderName::To => 1,
            HeaderName::CallId => 2,
            HeaderName::CSeq => 3,
            HeaderName::MaxForwards => 4,
            HeaderName::ContentLength => 5,
            HeaderName::Via => {
                has_via = true;
                continue;
            }
            HeaderName::Contact => {
                contact = contact.min(i);
                continue;
            }
            _ => continue,
        };
        count[slot] = count[slot].saturating_add(1);
        if count[slot] == 1 {
            first[slot] = i;
        } else if duplicate.is_none() {
            duplicate = Some((h.kind, h.name.start as usize));
        }
    }
    if let Some((kind, at)) = duplicate {
        return err(
            ParseErrorKind::DuplicateHeader {
                header: headers::header_label(kind),
            },
            at,
        );
    }
    let missing = |header| err(ParseErrorKind::MissingHeader { header }, head_end);
    if !has_via {
        return missing("Via");
    }
    for (slot, name) in ["From", "To", "Call-ID", "CSeq"].into_iter().enumerate() {
        if count[slot] == 0 {
            return missing(name);
        }
    }
    let is_request = matches!(start, Start::Request { .. });
    if is_request && count[4] == 0 {
        return missing("Max-Forwards");
    }
    let value_at = |i: usize| {
        (
            headers[i].value.start as usize,
            headers[i].value.end as usize,
        )
    };
    let value_err = |i: usize, e: Fail| {
        let (s, _) = value_at(i);
        Err(ParseError::at(
            ParseErrorKind::InvalidHeader {
                header: headers::header_label(headers[i].kind),
                expected: e.expected,
            },
            b,
            s + e.at,
        ))
    };
    let (cs, ce) = value_at(first[3]);
    let (seq, (ms, me)) = match headers::cseq_at(&b[cs..ce]) {
        Ok(c) => c,
        Err(e) => return value_err(first[3], e),
    };
    let (method_at, method_end) = (cs + ms, cs + me);
    if let Start::Request { method, .. } = &start
        && !method.matches(&b[method_at..method_end])
    {
        return err(
            ParseErrorKind::CSeqMethodMismatch {
                cseq: text(&b[method_at..method_end]).to_owned(),
                request: method.as_str().to_owned(),
            },
            cs,
        );
    }
    if count[4] == 1 {
        let (s, e) = value_at(first[4]);
        if let Err(er) = headers::delta_at(&b[s..e], 255, "number from 0 to 255") {
            return value_err(first[4], er);
        }
    }
    let available = b.len() - body_start.min(b.len());
    let body_len = if count[5] == 1 {
        let (s, e) = value_at(first[5]);
        match headers::delta_at(&b[s..e], u64::from(u32::MAX), "length in bytes") {
            Ok(n) => {
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if n > available {
                    return err(
                        ParseErrorKind::ContentLengthMismatch {
                            declared: n,
                            actual: available,
                        },
                        s,
                    );
                }
                n
            }
            Err(er) => return value_err(first[5], er),
        }
    } else if framing == Framing::Stream {
        return err(ParseErrorKind::MissingContentLength, head_end);
    } else {
        available
    };
    let end = body_start + body_len;
    let parsed = Parsed {
        content_length: (count[5] == 1).then(|| u32::try_from(body_len).unwrap_or(u32::MAX)),
        cseq: seq,
        cseq_method: (
            u32::try_from(method_at).unwrap_or(0),
            u32::try_from(method_end).unwrap_or(0),
        ),
        first: [first[0], first[1], first[2], contact]
            .map(|i| u16::try_from(i).unwrap_or(u16::MAX)),
    };
    Ok(Message {
        parsed,
        top_via: top_via.or_else(|| TopVia::of(&head, &headers)),
        head,
        start,
        headers,
        modified: false,
        spliced: false,
        buf: {
            let mut buf = buf;
            buf.truncate(end);
            buf
        },
    })
}

fn span(s: usize, e: usize) -> Span {
    Span {
        start: u32::try_from(s).unwrap_or(u32::MAX),
        end: u32::try_from(e).unwrap_or(u32::MAX),
    }
}

fn trim_end(b: &[u8], start: usize, mut end: usize) -> usize {
    while end > start && is_wsp(b[end - 1]) {
        end -= 1;
    }
    end
}

fn is_sip_version(v: &[u8]) -> bool {
    v.len() == 7 && v[..4].eq_ignore_ascii_case(b"SIP/") && &v[4..] == b"2.0"
}

/// `SIP/` 1*DIGIT `.` 1*DIGIT: a version we can name in a 505.
fn looks_like_version(v: &[u8]) -> bool {
    v.len() > 4
        && v[..4].eq_ignore_ascii_case(b"SIP/")
        && v[4..].split(|&c| c == b'.').count() == 2
        && v[4..]
            .split(|&c| c == b'.')
            .all(|p| !p.is_empty() && p.iter().all(u8::is_ascii_digit))
}

fn parse_start_line(h: &str, ls: usize, le: usize) -> Result<Start, ParseError> {
    let b = h.as_bytes();
    let line = &b[ls..le];
    let err = |kind, at: usize| Err(ParseError::at(kind, b, ls + at));
    if line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"SIP/") {
        let sp = grammar::find_byte(line, b' ').unwrap_or(line.len());
        let version = &line[..sp];
        if !is_sip_version(version) {
            return if looks_like_version(version) {
                err(ParseErrorKind::UnsupportedVersion, 0)
            } else {
                err(
                    ParseErrorKind::BadStatusLine {
                        expected: "SIP/2.0",
                    },
                    0,
                )
            };
        }
        let rest = &line[(sp + 1).min(line.len())..];
        let code = &rest[..rest.len().min(3)];
        if sp == line.len() || code.len() != 3 || !code.iter().all(u8::is_ascii_digit) {
            return err(ParseErrorKind::StatusCodeOutOfRange, sp + 1);
        }
        let status = code
            .iter()
            .fold(0u16, |acc, c| acc * 10 + u16::from(c - b'0'));
        if !(100..=699).contains(&status) {
            return err(ParseErrorKind::StatusCodeOutOfRange, sp + 1);
        }
        let after = &rest[3..];
        let reason_start = match after.first() {
            None => ls + sp + 4,
            Some(b' ') => ls + sp + 5,
            Some(_) => {
                return err(
                    ParseErrorKind::BadStatusLine {
                        expected: "space after the status code",
                    },
                    sp + 4,
                );
            }
        };
        if b[reason_start.min(le)..le]
            .iter()
            .any(|&c| c < 0x20 && c != b'\t')
        {
            return err(
                ParseErrorKind::BadStatusLine {
                    expected: "printable reason phrase",
                },
                reason_start - ls,
            );
        }
        return Ok(Start::Response {
            status,
            reason: span(reason_start.min(le), le),
        });
    }
    let m = line
        .iter()
        .position(|&c| !is_token(c))
        .unwrap_or(line.len());
    if m == 0 {
        return err(ParseErrorKind::BadRequestLine { expected: "method" }, 0);
    }
    if line.get(m) != Some(&b' ') {
        return err(
            ParseErrorKind::BadRequestLine {
                expected: "one space after the method",
            },
            m,
        );
    }
    let uri_start = m + 1;
    let Some(uri_len) = grammar::find_byte(&line[uri_start..], b' ') else {
        return err(
            ParseErrorKind::BadRequestLine {
                expected: "space and SIP version after the Request-URI",
            },
            line.len(),
        );
    };
    if uri_len == 0 {
        return err(
            ParseErrorKind::BadRequestLine {
                expected: "Request-URI after a single space",
            },
            uri_start,
        );
    }
    let uri_end = uri_start + uri_len;
    let version = &line[uri_end + 1..];
    if !is_sip_version(version) {
        return if looks_like_version(version) {
            err(ParseErrorKind::UnsupportedVersion, uri_end + 1)
        } else {
            err(
                ParseErrorKind::BadRequestLine {
                    expected: "SIP version 2.0 at the end of the request line",
                },
                uri_end + 1,
            )
        };
    }
    let uri_text = h.get(ls + uri_start..ls + uri_end).unwrap_or("");
    if let Err(e) = uri::whole_uri_at(uri_text, 0, uri_text.len()) {
        return err(
            ParseErrorKind::InvalidUri {
                expected: e.expected,
            },
            uri_start + e.at,
        );
    }
    // Request-Line = Method SP Request-URI SP SIP-Version CRLF: no white
    // space in the URI. Its rules take white space only as a trailing
    // SWS, so the last byte tells.
    if uri_text.as_bytes().last().is_some_and(|&c| c <= b' ') {
        let at = uri_text.trim_end_matches(|c: char| c <= ' ').len();
        return err(
            ParseErrorKind::BadRequestLine {
                expected: "one space between the Request-URI and the version",
            },
            uri_start + at,
        );
    }
    Ok(Start::Request {
        method: Method::from_token(h.get(ls..ls + m).unwrap_or("")),
        uri: span(ls + uri_start, ls + uri_end),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Position;

    const INVITE: &[u8] = b"INVITE sip:bob@example.com SIP/2.0\r\n\
Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKnashds8\r\n\
Max-Forwards: 70\r\n\
To: Bob <sip:bob@example.com>\r\n\
From: \"Alice\" <sip:alice@example.com>;tag=1928301774\r\n\
Call-ID: a84b4c76e66710@pc33.example.com\r\n\
CSeq: 314159 INVITE\r\n\
Contact: <sip:alice@pc33.example.com>\r\n\
Content-Type: application/sdp\r\n\
Content-Length: 4\r\n\
\r\n\
v=0\n";

    #[test]
    fn rfc3261_12_1_1_a_dialog_response_keeps_the_record_route_in_order() {
        let text = std::str::from_utf8(INVITE).unwrap().replacen(
            "Max-Forwards: 70\r\n",
            "Max-Forwards: 70\r\nRecord-Route: <sip:p2.example.com;lr>, <sip:p1.example.com;lr>\r\n\
             Record-Route: <sip:edge.example.com;lr;ftag=x>\r\n",
            1,
        );
        let invite = Message::parse(text.into_bytes()).unwrap();
        let ok = Message::response_to(&invite, 200, "OK")
            .unwrap()
            .record_route_of(&invite)
            .unwrap()
            .to_tag("b1")
            .build()
            .unwrap();
        let routes: Vec<&str> = ok.header_values("Record-Route").collect();
        assert_eq!(
            routes,
            [
                "<sip:p2.example.com;lr>, <sip:p1.example.com;lr>",
                "<sip:edge.example.com;lr;ftag=x>"
            ]
        );
        // A plain response copies none.
        let plain = Message::response_to(&invite, 486, "Busy Here")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(plain.header_values("Record-Route").count(), 0);
    }

    #[test]
    fn parses_and_reads_typed_headers() {
        let m = Message::parse(INVITE).unwrap();
        assert_eq!(m.method(), Some(&Method::Invite));
        assert_eq!(m.via().unwrap().branch(), Some("z9hG4bKnashds8"));
        assert_eq!(m.from().unwrap().tag(), Some("1928301774"));
        assert_eq!(m.to().unwrap().tag(), None);
        assert_eq!(m.call_id().unwrap(), "a84b4c76e66710@pc33.example.com");
        assert_eq!(m.cseq().unwrap().seq, 314_159);
        assert_eq!(m.max_forwards().unwrap(), Some(70));
        assert_eq!(m.content_length(), Some(4));
        assert_eq!(m.body(), b"v=0\n");
        assert!(m.content_type().unwrap().unwrap().is("application", "sdp"));
        m.validate().unwrap();
        assert_eq!(&m.to_bytes()[..], INVITE);
    }

    /// SLASH = SWS "/" SWS: white space, even a fold, may follow the slash
    /// before the transport.
    #[test]
    fn rfc3261_25_via_white_space_after_the_last_slash() {
        for via in [
            "Via: SIP/2.0/ UDP pc33.example.com;branch=z9hG4bKws",
            "Via: SIP/2.0/\r\n UDP pc33.example.com;branch=z9hG4bKws",
        ] {
            let text = std::str::from_utf8(INVITE).unwrap().replacen(
                "Via: SIP/2.0/UDP pc33.example.com;branch=z9hG4bKnashds8",
                via,
                1,
            );
            let m = Message::parse(text.into_bytes()).unwrap();
            let v = m.via().unwrap();
            assert_eq!(
                (v.transport, v.branch()),
                ("UDP", Some("z9hG4bKws")),
                "{via}"
            );
            m.validate().unwrap();
        }
    }

    /// RFC 3581: `received` is added with the other parameters as written,
    /// so a quoted value keeps its quotes and the Via still parses.
    #[test]
    fn rfc3581_received_keeps_quoted_parameters() {
        let text = std::str::from_utf8(INVITE).unwrap().replacen(
            "branch=z9hG4bKnashds8",
            "rport;branch=z9hG4bKq;x=\"a b\"",
            1,
        );
        let mut m = Message::parse(text.into_bytes()).unwrap();
        assert!(m.set_via_received("198.51.100.7".parse().unwrap(), Some(40000)));
        let again = Message::parse(m.to_bytes()).unwrap();
        assert_eq!(again.vias().count(), 1);
        let via = again.via().unwrap();
        assert_eq!(via.received(), Some("198.51.100.7".parse().unwrap()));
        assert_eq!(via.branch(), Some("z9hG4bKq"));
        assert_eq!(via.params.get("x"), Some(Some("a b")));
        assert_eq!(m.via().unwrap().branch(), Some("z9hG4bKq"));
    }

    /// quoted-pair allows control characters other than CR and LF
    /// (RFC 4475 §3.1.1.2): a response to such a request can be built.
    #[test]
    fn rfc4475_a_response_copies_quoted_control_characters() {
        let text = std::str::from_utf8(INVITE).unwrap().replacen(
            "To: Bob <sip:bob@example.com>",
            "To: \"BEL:\\\x07 NUL:\\\x00 DEL:\\\x7F\" <sip:bob@example.com>",
            1,
        );
        let m = Message::parse(text.into_bytes()).unwrap();
        m.validate().unwrap();
        let resp = Message::response_to(&m, 501, "Not Implemented")
            .unwrap()
            .to_tag("t")
            .build()
            .unwrap();
        assert_eq!(resp.to().unwrap().tag(), Some("t"));
        assert_eq!(Message::parse(resp.to_bytes()).unwrap(), resp);
    }

    /// The Request-URI holds no white space: a tab or a line break in it is
    /// refused when parsing, building and setting it.
    #[test]
    fn rfc3261_25_request_uri_has_no_white_space() {
        let text = std::str::from_utf8(INVITE).unwrap().replacen(
            "sip:bob@example.com SIP",
            "sip:bob@example.com\t SIP",
            1,
        );
        assert!(matches!(
            Message::parse(text.into_bytes()).unwrap_err().kind,
            ParseErrorKind::BadRequestLine { .. }
        ));
        let built = Message::request(Method::Options, "sip:a@b\r\n\t")
            .header("Via", "SIP/2.0/UDP h;branch=z9hG4bK1")
            .and_then(|b| b.header("From", "<sip:c@d>;tag=1"))
            .and_then(|b| b.header("To", "<sip:a@b>"))
            .and_then(|b| b.header("Call-ID", "x"))
            .and_then(|b| b.header("CSeq", "1 OPTIONS"))
            .and_then(|b| b.header("Max-Forwards", "70"))
            .and_then(|b| b.build());
        assert!(built.is_err());
        let mut m = Message::parse(INVITE).unwrap();
        assert!(m.set_request_uri("sip:a@b\r\n ").is_err());
        assert!(m.set_request_uri("sip:a@b ").is_err());
        assert!(m.set_request_uri("sip:carol@example.com").is_ok());
    }

    #[test]
    fn rfc3261_18_3_datagram_content_length() {
        let mut extra = INVITE.to_vec();
        extra.extend_from_slice(b"garbage");
        let m = Message::parse(extra).unwrap();
        assert_eq!(m.body(), b"v=0\n");
        assert_eq!(&m.to_bytes()[..], INVITE);
        let short = &INVITE[..INVITE.len() - 1];
        let e = Message::parse(short).unwrap_err();
        assert!(matches!(
            e.kind,
            ParseErrorKind::ContentLengthMismatch {
                declared: 4,
                actual: 3
            }
        ));
        let e = Message::parse_with(
            Bytes::from_static(b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/TCP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\n\r\n"),
            &ParseLimits::default(),
            Framing::Stream,
        )
        .unwrap_err();
        assert_eq!(e.kind, ParseErrorKind::MissingContentLength);
    }

    #[test]
    fn modified_message_is_canonical() {
        let raw = b"OPTIONS sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP h;branch=z9hG4bK1\r\nf: <sip:a@b>;tag=1\r\nt: <sip:a@b>\r\ni: x\r\nCSeq: 1\r\n  OPTIONS\r\nMax-Forwards: 70\r\nl: 0\r\n\r\n";
        let mut m = Message::parse(&raw[..]).unwrap();
        assert_eq!(m.cseq().unwrap().method(), Method::Options);
        m.prepend_header("Via", "SIP/2.0/UDP proxy.example.com;branch=z9hG4bK2")
            .unwrap();
        let out = m.to_bytes();
        assert_eq!(
            &out[..],
            &b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP proxy.example.com;branch=z9hG4bK2\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"[..]
        );
        let again = Message::parse(out).unwrap();
        assert_eq!(again, m);
        assert_eq!(again.via().unwrap().branch(), Some("z9hG4bK2"));
        let mut m = again;
        assert!(m.pop_via());
        assert_eq!(m.via().unwrap().branch(), Some("z9hG4bK1"));
    }

    #[test]
    fn builder_and_response_to() {
        let req = Message::request(Method::Register, "sip:registrar.example.com")
            .header("Via", "SIP/2.0/UDP 192.0.2.4;branch=z9hG4bKreg1;rport")
            .unwrap()
            .header("From", "<sip:alice@example.com>;tag=a1")
            .unwrap()
            .header("To", "<sip:alice@example.com>")
            .unwrap()
            .header("Call-ID", "reg-1@192.0.2.4")
            .unwrap()
            .header("CSeq", "1 REGISTER")
            .unwrap()
            .header("Max-Forwards", "70")
            .unwrap()
            .build()
            .unwrap();
        assert_eq!(req.content_length(), Some(0));
        let resp = Message::response_to(&req, 401, "Unauthorized")
            .unwrap()
            .header(
                "WWW-Authenticate",
                "Digest realm=\"example.com\", nonce=\"n1\", algorithm=SHA-256",
            )
            .unwrap()
            .to_tag("srv1")
            .build()
            .unwrap();
        assert_eq!(resp.status(), Some(401));
        assert_eq!(resp.to().unwrap().tag(), Some("srv1"));
        assert_eq!(resp.cseq().unwrap().seq, 1);
        assert_eq!(resp.via().unwrap().branch(), Some("z9hG4bKreg1"));
        let challenge = resp.www_authenticate().next().unwrap().unwrap();
        assert_eq!(challenge.param("algorithm").unwrap(), "SHA-256");
        let e = Message::request(Method::Options, "sip:a@b")
            .build()
            .unwrap_err();
        assert!(matches!(e, BuildError::Incomplete(_)));
        assert!(
            Message::request(Method::Options, "sip:a@b")
                .header("X", "a\r\nb")
                .is_err()
        );
    }

    fn with_body(content_type: &str, body: &str) -> Message {
        let raw = format!(
            "INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n{content_type}Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        Message::parse(raw.into_bytes()).unwrap()
    }

    /// RFC 3326: Reason values on one line or several, with quoted text
    /// that holds a comma.
    #[test]
    fn rfc3326_reasons() {
        let raw = "CANCEL sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 CANCEL\r\nMax-Forwards: 70\r\nReason: SIP ;cause=200 ;text=\"Call completed elsewhere, sorry\", Q.850;cause=16\r\nreason: SIP;cause=487\r\nContent-Length: 0\r\n\r\n";
        let m = Message::parse(raw.as_bytes().to_vec()).unwrap();
        let reasons: Vec<(String, Option<String>)> = m
            .reasons()
            .map(|r| {
                let r = r.unwrap();
                (
                    r.value.to_owned(),
                    r.params.value("cause").map(str::to_owned),
                )
            })
            .collect();
        assert_eq!(
            reasons,
            [
                ("SIP".to_owned(), Some("200".to_owned())),
                ("Q.850".to_owned(), Some("16".to_owned())),
                ("SIP".to_owned(), Some("487".to_owned())),
            ]
        );
        assert!(m.validate().is_ok());
        // Reason and Retry-After are read when needed: one that does not
        // parse never makes the request a 400 (a CANCEL must still cancel).
        let lax = raw.replace("cause=16", "cause=16;text=Normal clearing;");
        let m = Message::parse(lax.as_bytes().to_vec()).unwrap();
        assert!(m.validate().is_ok());
        assert!(m.reasons().any(|r| r.is_err()));
    }

    /// RFC 5621 and RFC 2046 §5.1.1: the SDP part of a multipart body, with
    /// a preamble, a quoted boundary, padding after a delimiter, a part
    /// without headers and an epilogue; a plain body; no Content-Type.
    #[test]
    fn rfc5621_the_sdp_part_of_a_multipart_body() {
        let body = "preamble\r\n--b 1\r\n\r\nno headers\r\n--b 1 \t\r\nContent-Type: application/ISUP;version=nxv3\r\n\r\n\u{1}\u{2}\r\n--b 1\r\ncontent-type : Application/SDP\r\n\r\nv=0\r\nm=audio 4000 RTP/AVP 0\r\n\r\n--b 1--\r\nepilogue";
        let m = with_body("Content-Type: multipart/mixed; boundary=\"b 1\"\r\n", body);
        assert_eq!(
            m.body_of_type("application", "sdp"),
            Some(&b"v=0\r\nm=audio 4000 RTP/AVP 0\r\n"[..])
        );
        assert_eq!(
            m.body_of_type("application", "isup"),
            Some(&b"\x01\x02"[..])
        );
        assert_eq!(m.body_of_type("text", "html"), None);
        let sdp = with_body("Content-Type: application/sdp\r\n", "v=0\r\n");
        assert_eq!(
            sdp.body_of_type("application", "sdp"),
            Some(&b"v=0\r\n"[..])
        );
        assert_eq!(sdp.body_of_type("application", "isup"), None);
        let untyped = with_body("", "v=0\r\n");
        assert_eq!(
            untyped.body_of_type("application", "sdp"),
            Some(&b"v=0\r\n"[..])
        );
        assert_eq!(with_body("", "").body_of_type("application", "sdp"), None);
        // No boundary, or one that never appears: no part.
        let bare = with_body("Content-Type: multipart/mixed\r\n", body);
        assert_eq!(bare.body_of_type("application", "sdp"), None);
        let other = with_body("Content-Type: multipart/mixed;boundary=zz\r\n", body);
        assert_eq!(other.body_of_type("application", "sdp"), None);
    }

    /// RFC 3581 in place: only the top Via changes; compact names, folds,
    /// the body and what the parser noted (CSeq, Content-Length, From)
    /// stay as they were.
    #[test]
    fn rfc3581_received_is_spliced_into_the_message_as_received() {
        let raw = "INVITE sip:a@b SIP/2.0\r\nv: SIP/2.0/UDP 192.0.2.9:5070;rport;branch=z9hG4bKq\r\nf: <sip:a@b>;tag=1\r\nt: <sip:a@b>\r\ni: x\r\nSubject: one\r\n two\r\nCSeq: 7 INVITE\r\nMax-Forwards: 70\r\nl: 5\r\n\r\nhello";
        let mut m = Message::parse(raw.as_bytes().to_vec()).unwrap();
        assert!(m.set_via_received("198.51.100.7".parse().unwrap(), Some(40000)));
        let expected = raw.replace(
            "5070;rport;branch=z9hG4bKq",
            "5070;branch=z9hG4bKq;received=198.51.100.7;rport=40000",
        );
        assert_eq!(m.to_bytes(), expected.as_bytes());
        assert!(m.is_modified());
        assert_eq!(m, Message::parse(expected.into_bytes()).unwrap());
        assert_eq!(m.cseq().unwrap().seq, 7);
        assert_eq!(m.cseq().unwrap().method(), Method::Invite);
        assert_eq!(m.content_length(), Some(5));
        assert_eq!(m.from().unwrap().tag(), Some("1"));
        assert_eq!(m.header("Subject"), Some("one\r\n two"));
        assert_eq!(m.body(), b"hello");
        assert_eq!(m.via().unwrap().branch(), Some("z9hG4bKq"));
        m.validate().unwrap();
        // The canonical form is written from the spliced message.
        let canonical = Message::parse(m.canonical()).unwrap();
        assert_eq!(canonical.via().unwrap(), m.via().unwrap());
        assert_eq!(canonical.header("Subject"), Some("one two"));
    }

    #[test]
    fn rfc3581_received_and_rport_keep_the_via_readable() {
        let raw = "OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP 192.0.2.9:5070;rport;received=203.0.113.1;branch=z9hG4bKq;ttl=3\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n";
        let mut m = Message::parse(raw.as_bytes().to_vec()).unwrap();
        assert!(m.set_via_received("198.51.100.7".parse().unwrap(), Some(40000)));
        let via = m.via().unwrap();
        let again = Message::parse(m.to_bytes()).unwrap();
        assert_eq!(via, again.via().unwrap());
        assert_eq!(via.branch(), Some("z9hG4bKq"));
        assert_eq!(via.received(), Some("198.51.100.7".parse().unwrap()));
        assert_eq!(via.rport(), Some(Some(40000)));
        assert_eq!(via.ttl(), Some(3));
        assert_eq!(via.port, Some(5070));
        assert_eq!(
            again.header("Via"),
            Some(
                "SIP/2.0/UDP 192.0.2.9:5070;branch=z9hG4bKq;ttl=3;received=198.51.100.7;rport=40000"
            )
        );
        // Two values in one line: left to the general path.
        let two = raw.replace(";ttl=3", ";ttl=3, SIP/2.0/UDP h2;branch=z9hG4bKr");
        let mut m = Message::parse(two.into_bytes()).unwrap();
        assert!(!m.set_via_received("198.51.100.7".parse().unwrap(), None));
        assert!(!m.is_modified());
    }

    #[test]
    fn errors_name_line_and_column() {
        let raw = b"OPTIONS sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:a@b>\r\nCall-ID: x\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n\r\n";
        let e = Message::parse(&raw[..]).unwrap_err();
        assert_eq!(e.position, Position { line: 6, column: 7 });
        assert_eq!(
            e.to_string(),
            "CSeq method INVITE does not match request method OPTIONS at line 6, column 7"
        );
    }

    #[test]
    fn unfold_collapses_line_breaks() {
        assert_eq!(unfold("a \r\n\t b"), "a b");
        assert_eq!(unfold("ab"), "ab");
    }
}
