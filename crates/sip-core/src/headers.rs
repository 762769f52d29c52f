//! Typed header values, parsed lazily from the spans of a [`Message`](crate::Message).
//!
//! Each type borrows the message's bytes. `Display` writes the canonical form.

use std::borrow::Cow;
use std::fmt;

use crate::error::{ParseError, ParseErrorKind, Position};
use crate::grammar::{
    self, Fail, PResult, ValueError, complete, consumed, fail_at, lws, quoted_string, sep, sws,
    token,
};
use crate::name::{HeaderName, Method};
use crate::uri::{self, Host, Uri, UriContext};

/// A typed header value: how it is parsed from the raw value bytes.
pub(crate) trait TypedValue<'a>: Sized {
    fn parse_value(value: &'a str) -> Result<Self, ValueError>;

    /// [`TypedValue::parse_value`] with its error mapped by `err`; a large
    /// value overrides it to build its result in place.
    #[inline(always)]
    fn parse_value_or<E>(value: &'a str, err: impl FnOnce(ValueError) -> E) -> Result<Self, E> {
        Self::parse_value(value).map_err(err)
    }
}

macro_rules! public_parse {
    ($ty:ident, $header:literal) => {
        impl<'a> $ty<'a> {
            #[doc = concat!("Parses one `", $header, "` value.")]
            pub fn parse(value: &'a str) -> Result<Self, ParseError> {
                <Self as TypedValue<'a>>::parse_value(value).map_err(|e| ParseError {
                    kind: ParseErrorKind::InvalidHeader {
                        header: $header,
                        expected: e.expected,
                    },
                    position: Position::of_offset(value.as_bytes(), e.offset),
                })
            }
        }
    };
}

/// Header parameters: the raw `;name=value` text after a header value.
#[derive(Clone, Copy, Default)]
pub struct Params<'a> {
    raw: &'a str,
    /// What [`Params::get`] answers for the one parameter read most from
    /// this header (`tag`, `branch`), noted while the value was parsed.
    hot: Hot,
}

/// A parameter looked up once while parsing: `found` is [`Params::get`]'s
/// answer as offsets into the raw text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Hot {
    #[default]
    Unknown,
    Tag(Found),
    Branch(Found),
}

/// `None` when absent, `Some(None)` for a flag, `Some(Some(span))` with a value.
pub(crate) type Found = Option<Option<(u16, u16)>>;

impl Hot {
    /// Notes parameter `name` with its value (indexes into the text whose
    /// parameters start at `base`) when it is the first called `hot`.
    #[inline]
    pub(crate) fn note(
        &mut self,
        hot: &[u8],
        name: &[u8],
        value: Option<(usize, usize)>,
        base: usize,
    ) {
        // Only the first one counts, and once lost it stays lost.
        if !matches!(self, Hot::Tag(None) | Hot::Branch(None)) {
            return;
        }
        if name.len() == hot.len() && name.eq_ignore_ascii_case(hot) {
            let at = |x: usize| u16::try_from(x - base).ok();
            let found = match value {
                Some((a, b)) => match (at(a), at(b)) {
                    (Some(a), Some(b)) => Some(Some((a, b))),
                    _ => {
                        *self = Hot::Unknown;
                        return;
                    }
                },
                None => Some(None),
            };
            *self = if hot == b"tag" {
                Hot::Tag(found)
            } else {
                Hot::Branch(found)
            };
        }
    }
}

impl<'a> Params<'a> {
    pub(crate) fn new(raw: &'a str, hot: Hot) -> Self {
        Params { raw, hot }
    }

    /// The raw text, starting with `;` (or empty).
    pub fn as_str(&self) -> &'a str {
        self.raw
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// `(name, value)` pairs in order; quotes are removed from quoted values,
    /// escapes kept; a flag parameter has no value.
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter { rest: self.raw }
    }

    /// `None` when absent, `Some(None)` for a flag, `Some(Some(v))` with a value.
    /// Names compare case-insensitively.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        let found = match self.hot {
            Hot::Tag(f) if name.eq_ignore_ascii_case("tag") => Some(f),
            Hot::Branch(f) if name.eq_ignore_ascii_case("branch") => Some(f),
            _ => None,
        };
        if let Some(f) = found {
            let raw = self.raw;
            return f.map(|v| v.map(|(a, b)| raw.get(a as usize..b as usize).unwrap_or("")));
        }
        let mut it = self.iter();
        it.find_raw(name.as_bytes())
    }

    /// The value of `name`, if present with a value.
    pub fn value(&self, name: &str) -> Option<&'a str> {
        self.get(name).flatten()
    }

    /// [`Params::value`] of `tag` (`branch` with `tag` false), answered
    /// from the note taken while parsing without comparing names.
    #[inline]
    fn hot_value(&self, tag: bool) -> Option<&'a str> {
        match (self.hot, tag) {
            (Hot::Tag(f), true) | (Hot::Branch(f), false) => f
                .flatten()
                .map(|(a, b)| self.raw.get(a as usize..b as usize).unwrap_or("")),
            (_, true) => self.value("tag"),
            (_, false) => self.value("branch"),
        }
    }
}

impl PartialEq for Params<'_> {
    /// Parameters are equal when their text is.
    fn eq(&self, other: &Self) -> bool {
        self.raw == other.raw
    }
}

impl Eq for Params<'_> {}

impl fmt::Debug for Params<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Params").field(&self.raw).finish()
    }
}

impl fmt::Display for Params<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, value) in self.iter() {
            write!(f, ";{name}")?;
            if let Some(v) = value {
                // Re-quote what was quoted: anything that is not a plain value.
                if grammar::param_value_run(v) == v.len() && !v.is_empty() {
                    write!(f, "={v}")?;
                } else {
                    write!(f, "=\"{v}\"")?;
                }
            }
        }
        Ok(())
    }
}

/// Iterator over [`Params`].
#[derive(Debug, Clone)]
pub struct ParamIter<'a> {
    rest: &'a str,
}

/// A byte range `start..end`.
type Span = (usize, usize);

impl<'a> ParamIter<'a> {
    /// The next parameter as index ranges into `rest` and where it ends.
    #[inline]
    fn next_span(&self) -> Option<(Span, Option<Span>, usize)> {
        let b = self.rest.as_bytes();
        let n = b.len();
        let i = grammar::sws_at(b, 0, n);
        if i >= n || b[i] != b';' {
            return None;
        }
        let ns = grammar::sws_at(b, i + 1, n);
        let ne = grammar::run_at(b, ns, n, grammar::C_TOKEN);
        if ne == ns {
            return None;
        }
        let j = grammar::sws_at(b, ne, n);
        if j < n && b[j] == b'=' {
            let v = grammar::sws_at(b, j + 1, n);
            if v < n && b[v] == b'"' {
                let (r, close) = grammar::quoted_string_at(b, v, n).ok()?;
                return Some(((ns, ne), Some((v + 1, close)), r));
            }
            let ve = grammar::run_at(b, v, n, grammar::C_PARAM_VALUE);
            Some(((ns, ne), Some((v, ve)), ve))
        } else {
            Some(((ns, ne), None, ne))
        }
    }

    /// The next parameter, as text.
    #[inline]
    fn next_raw(&mut self) -> Option<(&'a str, Option<&'a str>)> {
        let ((ns, ne), value, end) = self.next_span()?;
        let s = self.rest;
        self.rest = &s[end..];
        Some((&s[ns..ne], value.map(|(a, b)| &s[a..b])))
    }

    /// The next parameter: its name, its text as written from the name on
    /// (quotes and escapes kept, white space around `=` too), and where
    /// its value lies within that text.
    pub(crate) fn next_written(&mut self) -> Option<(&'a str, &'a str, Option<Span>)> {
        let ((ns, ne), value, end) = self.next_span()?;
        let s = self.rest;
        self.rest = &s[end..];
        Some((
            &s[ns..ne],
            &s[ns..end],
            value.map(|(a, b)| (a - ns, b - ns)),
        ))
    }

    /// The value of the first remaining parameter called `name` (any case).
    #[inline]
    fn find_raw(&mut self, name: &[u8]) -> Option<Option<&'a str>> {
        loop {
            let ((ns, ne), value, end) = self.next_span()?;
            let s = self.rest;
            self.rest = &s[end..];
            if s.as_bytes()[ns..ne].eq_ignore_ascii_case(name) {
                return Some(value.map(|(a, b)| &s[a..b]));
            }
        }
    }
}

impl<'a> Iterator for ParamIter<'a> {
    type Item = (&'a str, Option<&'a str>);

    fn next(&mut self) -> Option<Self::Item> {
        self.next_raw()
    }
}

fn params(i: &str) -> PResult<'_, Params<'_>> {
    let (r, raw) = grammar::generic_params(i)?;
    Ok((r, Params::new(raw, Hot::Unknown)))
}

/// A display name and address: From, To, Contact, Route, Record-Route,
/// Refer-To, Referred-By, P-Asserted-Identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameAddr<'a> {
    /// The display name as written: the inside of the quotes (escapes kept) or
    /// the tokens.
    pub display: Option<&'a str>,
    /// Whether the display name was quoted.
    pub display_quoted: bool,
    /// The address.
    pub uri: Uri<'a>,
    /// Whether the address was in angle brackets (name-addr rather than addr-spec).
    pub bracketed: bool,
    /// Header parameters after the address (tag, expires…).
    pub params: Params<'a>,
}

impl<'a> NameAddr<'a> {
    /// The `tag` parameter (From and To).
    pub fn tag(&self) -> Option<&'a str> {
        self.params.hot_value(true)
    }

    /// The display name with quoting undone.
    pub fn display_name(&self) -> Option<Cow<'a, str>> {
        let d = self.display?;
        Some(if self.display_quoted {
            grammar::unquote(d)
        } else {
            Cow::Borrowed(d)
        })
    }

    /// Contact `expires` parameter.
    pub fn expires(&self) -> Option<u32> {
        self.params.value("expires").and_then(|v| v.parse().ok())
    }

    /// Contact `q` parameter in thousandths (0..=1000).
    pub fn q(&self) -> Option<u16> {
        self.params.value("q").and_then(qvalue)
    }

    /// Contact `+sip.instance` (RFC 5626), without the angle brackets.
    pub fn sip_instance(&self) -> Option<&'a str> {
        let v = self.params.value("+sip.instance")?;
        Some(
            v.strip_prefix('<')
                .and_then(|v| v.strip_suffix('>'))
                .unwrap_or(v),
        )
    }

    /// Contact `reg-id` (RFC 5626).
    pub fn reg_id(&self) -> Option<u32> {
        self.params.value("reg-id").and_then(|v| v.parse().ok())
    }

    /// An RFC 8599 push parameter: a parameter of the Contact URI, or of the
    /// header when a peer put it there.
    fn push_param(&self, name: &str) -> Option<&'a str> {
        match &self.uri {
            Uri::Sip(u) => u.params.get(name).flatten(),
            _ => None,
        }
        .or_else(|| self.params.value(name))
    }

    /// Contact `pn-provider` (RFC 8599).
    pub fn pn_provider(&self) -> Option<&'a str> {
        self.push_param("pn-provider")
    }

    /// Contact `pn-prid` (RFC 8599).
    pub fn pn_prid(&self) -> Option<&'a str> {
        self.push_param("pn-prid")
    }

    /// Contact `pn-param` (RFC 8599).
    pub fn pn_param(&self) -> Option<&'a str> {
        self.push_param("pn-param")
    }
}

impl fmt::Display for NameAddr<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.display {
            Some(d) if self.display_quoted => write!(f, "\"{d}\" ")?,
            Some(d) => write!(f, "{d} ")?,
            None => {}
        }
        write!(f, "<{}>{}", self.uri, self.params)
    }
}

/// qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] ), in thousandths.
fn qvalue(v: &str) -> Option<u16> {
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    if frac.len() > 3 || !frac.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let mut thousandths: u16 = 0;
    for (k, c) in frac.bytes().enumerate() {
        thousandths += u16::from(c - b'0') * [100, 10, 1][k];
    }
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

/// A whole name-addr / addr-spec value with header parameters.
///
/// Every check is made before the value is built, and the value is built
/// wrapped as the caller returns it (`wrap`, with errors through `err`), so
/// it is written once: it is large, and each copy is a `memcpy` call.
#[inline(always)]
fn name_addr_value<'a, T, E>(
    s: &'a str,
    wrap: impl FnOnce(NameAddr<'a>) -> T,
    err: impl FnOnce(ValueError) -> E,
) -> Result<T, E> {
    macro_rules! ok {
        ($e:expr) => {
            match $e {
                Ok(v) => v,
                Err(x) => return Err(err(ValueError::from(x))),
            }
        };
    }
    let k = 0;
    let b = s.as_bytes();
    let n = b.len();
    let i = grammar::sws_at(b, k, n);
    let mut display = None;
    let mut quoted = false;
    let mut j = i;
    let first = b.get(i).copied();
    if first == Some(b'"') {
        let (r, close) = ok!(grammar::quoted_string_at(b, i, n));
        display = Some(&s[i + 1..close]);
        quoted = true;
        j = grammar::sws_at(b, r, n);
        if j >= n || b[j] != b'<' {
            return Err(err(ValueError {
                offset: j,
                expected: "< after the display name",
            }));
        }
    } else if first != Some(b'<') {
        // Either `token *(LWS token) <uri>` or an addr-spec.
        let mut t = i;
        loop {
            let e = grammar::run_at(b, t, n, grammar::C_TOKEN);
            if e == t {
                break;
            }
            t = grammar::sws_at(b, e, n);
        }
        if t < n && b[t] == b'<' && t > i {
            let mut e = t;
            while e > i && b[e - 1].is_ascii_whitespace() {
                e -= 1;
            }
            display = Some(&s[i..e]);
            j = t;
        }
    }
    let mut check = false;
    let mut tag = Hot::Tag(None);
    if j < n && b[j] == b'<' {
        // No URI character is `>`, so the URI read up to the end of the
        // value stops where it would stop at the first `>`, with no search
        // for it first; otherwise it is read as the rule says, which also
        // names the error.
        let (close, addr) = match bracketed_uri_to_end(s, j) {
            Some(found) => found,
            None => ok!(bracketed_uri(s, j)),
        };
        let r = ok!(name_addr_params(b, close + 1, n, &mut check, &mut tag));
        let params = ok!(name_addr_end(s, close + 1, r, tag, check));
        return Ok(wrap(NameAddr {
            display,
            display_quoted: quoted,
            uri: addr,
            bracketed: true,
            params,
        }));
    }
    let (r, addr) = ok!(uri::uri_at(s, i, n, UriContext::AddrSpec));
    let e = ok!(name_addr_params(b, r, n, &mut check, &mut tag));
    let params = ok!(name_addr_end(s, r, e, tag, check));
    Ok(wrap(NameAddr {
        display: None,
        display_quoted: false,
        uri: addr,
        bracketed: false,
        params,
    }))
}

/// [`bracketed_uri`] when it succeeds, read up to the end of `s` instead of
/// the first `>` (the same thing, as no URI character is `>`); `None` when
/// it does not succeed.
#[inline(always)]
fn bracketed_uri_to_end(s: &str, j: usize) -> Option<(usize, Uri<'_>)> {
    let b = s.as_bytes();
    let (r, addr) = uri::uri_at(s, j + 1, b.len(), UriContext::Whole).ok()?;
    let close = grammar::sws_at(b, r, b.len());
    (b.get(close) == Some(&b'>')).then_some((close, addr))
}

/// The URI in angle brackets opened at `s[j]`: where the `>` is, and the URI.
#[cold]
#[inline(never)]
fn bracketed_uri(s: &str, j: usize) -> Result<(usize, Uri<'_>), ValueError> {
    let Some(end) = grammar::find_byte(&s.as_bytes()[j + 1..], b'>') else {
        return Err(ValueError {
            offset: j,
            expected: "> closing the address",
        });
    };
    let close = j + 1 + end;
    Ok((close, uri::whole_uri_at(s, j + 1, close)?))
}

/// The header parameters at `s[k..e]`, where nothing but white space may
/// follow; `check` when `q` or `expires` need a closer look.
#[inline(always)]
fn name_addr_end(
    s: &str,
    k: usize,
    e: usize,
    tag: Hot,
    check: bool,
) -> Result<Params<'_>, ValueError> {
    grammar::end_at(s.as_bytes(), e)?;
    let params = Params::new(s.get(k..e).unwrap_or(""), tag);
    if check {
        check_contact_params(&params)?;
    }
    Ok(params)
}

/// The header parameters of a name-addr at `b[k..n]`, noting the tag and
/// whether a parameter is named like `q` or `expires`.
#[inline]
fn name_addr_params(
    b: &[u8],
    k: usize,
    n: usize,
    check: &mut bool,
    tag: &mut Hot,
) -> Result<usize, Fail> {
    grammar::generic_params_at(b, k, n, |(a, z), v| {
        *check |= z - a == 1 || z - a == 7;
        tag.note(b"tag", &b[a..z], v, k);
    })
}

impl<'a> TypedValue<'a> for NameAddr<'a> {
    #[inline]
    fn parse_value(value: &'a str) -> Result<Self, ValueError> {
        name_addr_value(value, |a| a, |e| e)
    }

    #[inline]
    fn parse_value_or<E>(value: &'a str, err: impl FnOnce(ValueError) -> E) -> Result<Self, E> {
        name_addr_value(value, |a| a, err)
    }
}

/// `q` and `expires` must hold a q-value and delta seconds.
#[inline(never)]
fn check_contact_params(params: &Params<'_>) -> Result<(), ValueError> {
    let mut it = params.iter();
    while let Some((name, v)) = it.next_raw() {
        let bad = if name.eq_ignore_ascii_case("q") {
            v.and_then(qvalue)
                .is_none()
                .then_some("q value between 0 and 1")
        } else if name.eq_ignore_ascii_case("expires") {
            v.and_then(|e| (e).parse::<u32>().ok())
                .is_none()
                .then_some("expires in seconds")
        } else {
            None
        };
        if let Some(expected) = bad {
            return Err(ValueError {
                offset: 0,
                expected,
            });
        }
    }
    Ok(())
}
public_parse!(NameAddr, "From");

/// One Contact value: `*` or an address (RFC 3261 §20.10).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contact<'a> {
    /// `*`: all bindings (only in a REGISTER with Expires: 0).
    Any,
    /// An address with its parameters.
    Address(NameAddr<'a>),
}

impl<'a> Contact<'a> {
    /// The address, unless this is `*`.
    pub fn address(&self) -> Option<&NameAddr<'a>> {
        match self {
            Contact::Any => None,
            Contact::Address(a) => Some(a),
        }
    }
}

impl<'a> TypedValue<'a> for Contact<'a> {
    #[inline]
    fn parse_value(value: &'a str) -> Result<Self, ValueError> {
        Self::parse_value_or(value, |e| e)
    }

    #[inline]
    fn parse_value_or<E>(value: &'a str, err: impl FnOnce(ValueError) -> E) -> Result<Self, E> {
        let b = value.as_bytes();
        if b.get(grammar::sws_at(b, 0, b.len())) == Some(&b'*') && sws(value).trim_end() == "*" {
            return Ok(Contact::Any);
        }
        name_addr_value(value, Contact::Address, err)
    }
}
public_parse!(Contact, "Contact");

impl fmt::Display for Contact<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Contact::Any => f.write_str("*"),
            Contact::Address(a) => a.fmt(f),
        }
    }
}

/// A Via value (RFC 3261 §20.42).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Via<'a> {
    /// Protocol name, normally `SIP`.
    pub protocol: &'a str,
    /// Protocol version, normally `2.0`.
    pub version: &'a str,
    /// Transport token: UDP, TCP, TLS, SCTP, WS, WSS or another.
    pub transport: &'a str,
    /// sent-by host.
    pub host: Host<'a>,
    /// sent-by port.
    pub port: Option<u16>,
    /// Parameters (branch, received, rport, maddr, ttl, others).
    pub params: Params<'a>,
}

impl<'a> Via<'a> {
    /// The branch parameter.
    pub fn branch(&self) -> Option<&'a str> {
        self.params.hot_value(false)
    }

    /// Whether the branch carries the RFC 3261 magic cookie `z9hG4bK`.
    pub fn is_rfc3261_branch(&self) -> bool {
        self.branch().is_some_and(|b| b.starts_with("z9hG4bK"))
    }

    /// The `received` address (RFC 3261 §18.2.1).
    pub fn received(&self) -> Option<std::net::IpAddr> {
        self.params.value("received").and_then(uri::parse_ip)
    }

    /// `None` without rport, `Some(None)` for a bare `rport` (a request for it),
    /// `Some(Some(port))` once filled in (RFC 3581).
    pub fn rport(&self) -> Option<Option<u16>> {
        self.params
            .get("rport")
            .map(|v| v.and_then(|p| p.parse().ok()))
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&'a str> {
        // Rare, and asked of every response sent: look for the name before
        // reading the parameters one by one.
        if !mentions_maddr(self.params.as_str().as_bytes()) {
            return None;
        }
        self.params.value("maddr")
    }

    /// The `ttl` parameter.
    pub fn ttl(&self) -> Option<u8> {
        self.params.value("ttl").and_then(|v| v.parse().ok())
    }
}

impl fmt::Display for Via<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{} {}",
            self.protocol, self.version, self.transport, self.host
        )?;
        if let Some(p) = self.port {
            write!(f, ":{p}")?;
        }
        self.params.fmt(f)
    }
}

/// One Via value over all of `s`, in one pass.
#[inline]
fn via_at(s: &str) -> Result<Via<'_>, Fail> {
    let p = via_parts(s)?;
    grammar::end_at(s.as_bytes(), p.params.1)?;
    let at = |(a, b): (usize, usize)| s.get(a..b).unwrap_or("");
    Ok(Via {
        protocol: at(p.protocol),
        version: at(p.version),
        transport: at(p.transport),
        host: p.host,
        port: p.port,
        params: Params::new(at(p.params), p.hot),
    })
}

/// A Via value as parsed: index ranges into its text.
#[derive(Debug, Clone, Copy)]
struct ViaParts<'a> {
    protocol: (usize, usize),
    version: (usize, usize),
    transport: (usize, usize),
    host: Host<'a>,
    host_at: (usize, usize),
    port: Option<u16>,
    params: (usize, usize),
    hot: Hot,
}

/// Where the parts of a Via value lie in its text, compactly, so a message
/// can keep its top Via parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ViaSpans {
    protocol: (u16, u16),
    version: (u16, u16),
    transport: (u16, u16),
    host: HostSpan,
    port: Option<u16>,
    params: (u16, u16),
    hot: Hot,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostSpan {
    Domain(u16, u16),
    Ipv4(std::net::Ipv4Addr),
    /// Where the address lies (without brackets): read again on access,
    /// which is rare, to keep the span small.
    Ipv6(u16, u16),
}

impl ViaSpans {
    /// Where the parameters start and end.
    pub(crate) fn params_span(&self) -> (usize, usize) {
        (usize::from(self.params.0), usize::from(self.params.1))
    }

    /// The same Via with its parameters at `start..end` and the branch value
    /// at `branch` within them.
    pub(crate) fn with_params(
        self,
        start: usize,
        end: usize,
        branch: Option<(usize, usize)>,
    ) -> Option<ViaSpans> {
        let at = |x: usize| u16::try_from(x).ok();
        let hot = match branch {
            Some((a, b)) => Hot::Branch(Some(Some((at(a)?, at(b)?)))),
            None => Hot::Branch(None),
        };
        Some(ViaSpans {
            params: (at(start)?, at(end)?),
            hot,
            ..self
        })
    }

    /// The Via over the text it was parsed from.
    #[inline]
    pub(crate) fn resolve(self, s: &str) -> Via<'_> {
        let at = |(a, b): (u16, u16)| s.get(usize::from(a)..usize::from(b)).unwrap_or("");
        Via {
            protocol: at(self.protocol),
            version: at(self.version),
            transport: at(self.transport),
            host: match self.host {
                HostSpan::Domain(a, b) => Host::Domain(at((a, b))),
                HostSpan::Ipv4(a) => Host::Ipv4(a),
                HostSpan::Ipv6(a, b) => at((a, b))
                    .parse()
                    .map_or(Host::Domain(at((a, b))), Host::Ipv6),
            },
            port: self.port,
            params: Params::new(at(self.params), self.hot),
        }
    }
}

/// [`via_at`] as compact spans: `Ok(None)` for a value too long for them.
#[inline]
pub(crate) fn via_spans(s: &str) -> Result<Option<ViaSpans>, Fail> {
    let p = via_parts(s)?;
    grammar::end_at(s.as_bytes(), p.params.1)?;
    Ok(spans_of(&p))
}

/// The first value of a Via header value `s` as [`via_spans`] reads it
/// after splitting the list, when it parses and the value ends or a comma
/// follows it; `None` otherwise (read the list then, as written).
///
/// No Via grammar rule takes a comma outside quotes, so the comma after a
/// value that parses is where the list splits: no search for one first.
#[inline]
pub(crate) fn via_spans_first(s: &str) -> Option<Option<ViaSpans>> {
    let p = via_parts(s).ok()?;
    let b = s.as_bytes();
    let j = grammar::sws_at(b, p.params.1, b.len());
    (j == b.len() || b[j] == b',').then(|| spans_of(&p))
}

/// [`ViaParts`] as compact spans, or `None` when an offset needs more than
/// 16 bits.
#[inline]
fn spans_of(p: &ViaParts<'_>) -> Option<ViaSpans> {
    let span = |(a, b): (usize, usize)| Some((u16::try_from(a).ok()?, u16::try_from(b).ok()?));
    let spans = || {
        Some(ViaSpans {
            protocol: span(p.protocol)?,
            version: span(p.version)?,
            transport: span(p.transport)?,
            host: match p.host {
                Host::Domain(_) => {
                    let (a, b) = span(p.host_at)?;
                    HostSpan::Domain(a, b)
                }
                Host::Ipv4(a) => HostSpan::Ipv4(a),
                Host::Ipv6(_) => {
                    let (a, b) = span((p.host_at.0 + 1, p.host_at.1 - 1))?;
                    HostSpan::Ipv6(a, b)
                }
            },
            port: p.port,
            params: span(p.params)?,
            hot: p.hot,
        })
    };
    spans()
}

fn via_parts(s: &str) -> Result<ViaParts<'_>, Fail> {
    let b = s.as_bytes();
    let n = b.len();
    let token = |k: usize, what: &'static str| {
        let e = grammar::run_at(b, k, n, grammar::C_TOKEN);
        if e == k { fail_at(k, what) } else { Ok(e) }
    };
    let slash = |k: usize, what: &'static str| {
        let j = grammar::sws_at(b, k, n);
        if j < n && b[j] == b'/' {
            Ok(grammar::sws_at(b, j + 1, n))
        } else {
            fail_at(k, what)
        }
    };
    // The usual "SIP/2.0/" without the general token and slash rules.
    let (ps, pe, vs, ve, ts) = match b.first_chunk::<8>() {
        // SWS may follow the last slash (SLASH = SWS "/" SWS).
        Some(w) if w[..4].eq_ignore_ascii_case(b"SIP/") && &w[4..] == b"2.0/" => {
            (0, 3, 4, 7, grammar::sws_at(b, 8, n))
        }
        _ => {
            let ps = grammar::sws_at(b, 0, n);
            let pe = token(ps, "protocol name").map_err(|f| Fail { at: 0, ..f })?;
            let vs = slash(pe, "/ after the protocol name")?;
            let ve = token(vs, "protocol version")?;
            let ts = slash(ve, "/ after the protocol version")?;
            (ps, pe, vs, ve, ts)
        }
    };
    let te = token(ts, "transport")?;
    let hs = grammar::sws_at(b, te, n);
    if hs == te {
        return fail_at(te, "white space before sent-by");
    }
    let (he, host) = uri::host_at(s, hs, n)?;
    let j = grammar::sws_at(b, he, n);
    let (r, port) = if j < n && b[j] == b':' {
        let k = grammar::sws_at(b, j + 1, n);
        let (r, p) = grammar::number_at(b, k, n, u64::from(u16::MAX), "sent-by port")?;
        (r, Some(u16::try_from(p).unwrap_or(u16::MAX)))
    } else {
        (he, None)
    };
    let mut ok = true;
    let mut hot = Hot::Branch(None);
    let end = grammar::generic_params_at(b, r, n, |(a, z), span| {
        let name = &b[a..z];
        hot.note(b"branch", name, span, r);
        let value = span.map(|(x, y)| &s[x..y]);
        // The length picks the one name to compare.
        ok &= match name.len() {
            6 if name.eq_ignore_ascii_case(b"branch") => {
                span.is_some_and(|(x, y)| y > x && grammar::run_at(b, x, y, grammar::C_TOKEN) == y)
            }
            5 if name.eq_ignore_ascii_case(b"rport") => {
                value.is_none_or(|v| v.parse::<u16>().is_ok())
            }
            8 if name.eq_ignore_ascii_case(b"received") => value.and_then(uri::parse_ip).is_some(),
            3 if name.eq_ignore_ascii_case(b"ttl") => {
                value.and_then(|t| t.parse::<u8>().ok()).is_some()
            }
            _ => true,
        };
    })?;
    if !ok {
        return fail_at(end, "valid ttl, received, rport and branch parameters");
    }
    // The caller checks what follows: the value's end, or a comma in a list.
    Ok(ViaParts {
        protocol: (ps, pe),
        version: (vs, ve),
        transport: (ts, te),
        host,
        host_at: (hs, he),
        port,
        params: (r, end),
        hot,
    })
}

fn expected<'a>(input: &'a str, what: &'static str) -> nom::Err<grammar::GrammarError<'a>> {
    nom::Err::Error(grammar::GrammarError {
        input,
        expected: what,
    })
}

/// Whether `maddr` (in any case) occurs in `text`.
fn mentions_maddr(text: &[u8]) -> bool {
    let mut from = 0;
    while let Some(i) = text
        .get(from..)
        .and_then(|t| grammar::find_byte2(t, b'm', b'M'))
    {
        let at = from + i;
        if text
            .get(at + 1..at + 5)
            .is_some_and(|rest| rest.eq_ignore_ascii_case(b"addr"))
        {
            return true;
        }
        from = at + 1;
    }
    false
}

impl<'a> TypedValue<'a> for Via<'a> {
    #[inline]
    fn parse_value(value: &'a str) -> Result<Self, ValueError> {
        Ok(via_at(value)?)
    }
}
public_parse!(Via, "Via");

/// The CSeq value (RFC 3261 §20.16).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CSeq<'a> {
    /// Sequence number, below 2^31.
    pub seq: u32,
    /// The method token as written.
    pub method_token: &'a str,
}

impl CSeq<'_> {
    /// The method.
    pub fn method(&self) -> Method {
        Method::from_token(self.method_token)
    }
}

impl fmt::Display for CSeq<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.seq, self.method_token)
    }
}

impl<'a> TypedValue<'a> for CSeq<'a> {
    #[inline]
    fn parse_value(value: &'a str) -> Result<Self, ValueError> {
        let (seq, (ms, me)) = cseq_at(value.as_bytes())?;
        Ok(CSeq {
            seq,
            method_token: &value[ms..me],
        })
    }
}
public_parse!(CSeq, "CSeq");

/// A CSeq value over bytes: the number and where the method token lies.
#[inline]
pub(crate) fn cseq_at(b: &[u8]) -> Result<(u32, (usize, usize)), Fail> {
    let n = b.len();
    let k = grammar::sws_at(b, 0, n);
    let (r, seq) = grammar::number_at(b, k, n, (1 << 31) - 1, "sequence number below 2^31")?;
    let ms = grammar::sws_at(b, r, n);
    if ms == r {
        return fail_at(r, "white space");
    }
    let me = grammar::run_at(b, ms, n, grammar::C_TOKEN);
    if me == ms {
        return fail_at(ms, "method");
    }
    grammar::end_at(b, me)?;
    Ok((u32::try_from(seq).unwrap_or(0), (ms, me)))
}

/// Call-ID = word [ "@" word ].
#[inline]
pub(crate) fn call_id(value: &str) -> Result<&str, ValueError> {
    let b = value.as_bytes();
    let n = b.len();
    let start = grammar::sws_at(b, 0, n);
    let mut r = grammar::run_at(b, start, n, grammar::C_WORD);
    if r == start {
        return Err(Fail {
            at: start,
            expected: "word",
        }
        .into());
    }
    if r < n && b[r] == b'@' {
        let e = grammar::run_at(b, r + 1, n, grammar::C_WORD);
        if e == r + 1 {
            return Err(Fail {
                at: r + 1,
                expected: "word",
            }
            .into());
        }
        r = e;
    }
    grammar::end_at(b, r)?;
    Ok(&value[start..r])
}

/// A number header: Expires, Min-Expires, Max-Forwards, Content-Length, Min-SE.
pub(crate) fn delta(value: &str, max: u64, what: &'static str) -> Result<u64, ValueError> {
    Ok(delta_at(value.as_bytes(), max, what)?)
}

/// [`delta`] over bytes.
#[inline]
pub(crate) fn delta_at(b: &[u8], max: u64, what: &'static str) -> Result<u64, Fail> {
    let k = grammar::sws_at(b, 0, b.len());
    let (r, v) = grammar::number_at(b, k, b.len(), max, what)?;
    grammar::end_at(b, r)?;
    Ok(v)
}

/// A challenge (WWW-Authenticate, Proxy-Authenticate) or credentials
/// (Authorization, Proxy-Authorization): a scheme and its parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth<'a> {
    /// The scheme, e.g. `Digest`.
    pub scheme: &'a str,
    /// The comma-separated parameters (or a token68 for schemes like Basic).
    pub params: AuthParams<'a>,
}

/// The raw `name=value, name="value"` list of a challenge or credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthParams<'a>(&'a str);

impl<'a> AuthParams<'a> {
    /// The raw text.
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// `(name, raw value)` pairs; quoted values keep their escapes, without quotes.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        grammar::split_list(self.0).filter_map(|(_, p)| {
            let (r, name) = token(p).ok()?;
            let r = sws(r).strip_prefix('=')?;
            let r = sws(r);
            let v = match quoted_string(r) {
                Ok((_, q)) => q,
                Err(_) => r,
            };
            Some(((name), (v)))
        })
    }

    /// The value of `name` (case-insensitive), with quoting undone.
    pub fn get(&self, name: &str) -> Option<Cow<'a, str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| grammar::unquote(v))
    }
}

impl<'a> Auth<'a> {
    /// A parameter's value with quoting undone.
    pub fn param(&self, name: &str) -> Option<Cow<'a, str>> {
        self.params.get(name)
    }
}

impl fmt::Display for Auth<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.scheme, self.params.0)
    }
}

fn auth_param(i: &str) -> PResult<'_, ()> {
    let (i, _) = token(i).map_err(|_| expected(i, "auth parameter name"))?;
    let (i, _) = sep(b'=', "= after the parameter name")(i)?;
    if i.as_bytes().first() == Some(&b'"') {
        let (i, _) = quoted_string(i)?;
        Ok((i, ()))
    } else {
        let (i, _) = token(i).map_err(|_| expected(i, "token or quoted string"))?;
        Ok((i, ()))
    }
}

impl<'a> TypedValue<'a> for Auth<'a> {
    fn parse_value(value: &'a str) -> Result<Self, ValueError> {
        complete(value, |i| {
            let (i, scheme) = token(sws(i)).map_err(|_| expected(i, "scheme"))?;
            let (i, _) = lws(i).map_err(|_| expected(i, "white space after the scheme"))?;
            let start = i;
            // token68 (e.g. Basic credentials) or an auth-param list.
            let t68 = i
                .bytes()
                .position(|c| !(c.is_ascii_alphanumeric() || b"-._~+/".contains(&c)))
                .unwrap_or(i.len());
            let after = &i[t68..];
            let eq = after.as_bytes().iter().take_while(|&&c| c == b'=').count();
            if t68 > 0 && sws(&after[eq..]).is_empty() {
                return Ok((
                    &after[eq..],
                    Auth {
                        scheme: (scheme),
                        params: AuthParams(consumed(start, &after[eq..])),
                    },
                ));
            }
            let (mut i, _) = auth_param(i)?;
            loop {
                let j = sws(i);
                if j.as_bytes().first() != Some(&b',') {
                    break;
                }
                i = auth_param(sws(&j[1..]))?.0;
            }
            Ok((
                i,
                Auth {
                    scheme: (scheme),
                    params: AuthParams(consumed(start, i)),
                },
            ))
        })
    }
}
public_parse!(Auth, "Authorization");

/// Content-Type (RFC 3261 §20.15).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType<'a> {
    /// The type, e.g. `application`.
    pub mtype: &'a str,
    /// The subtype, e.g. `sdp`.
    pub subtype: &'a str,
    /// Parameters such as `boundary` or `charset`.
    pub params: Params<'a>,
}

impl ContentType<'_> {
    /// Whether this is `mtype/subtype` (case-insensitive).
    pub fn is(&self, mtype: &str, subtype: &str) -> bool {
        self.mtype.eq_ignore_ascii_case(mtype) && self.subtype.eq_ignore_ascii_case(subtype)
    }
}

impl fmt::Display for ContentType<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}{}", self.mtype, self.subtype, self.params)
    }
}

impl<'a> TypedValue<'a> for ContentType<'a> {
    fn parse_value(value: &'a str) -> Result<Self, ValueError> {
        complete(value, |i| {
            let (i, mtype) = token(sws(i)).map_err(|_| expected(i, "media type"))?;
            let (i, _) = sep(b'/', "/ in the media type")(i)?;
            let (i, subtype) = token(i).map_err(|_| expected(i, "media subtype"))?;
            let (i, p) = params(i)?;
            Ok((
                i,
                ContentType {
                    mtype: (mtype),
                    subtype: (subtype),
                    params: p,
                },
            ))
        })
    }
}
public_parse!(ContentType, "Content-Type");

/// A token with parameters: Event, Subscription-State, Replaces' call-id,
/// Session-Expires' delta, Retry-After, Allow-Events…
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenParams<'a> {
    /// The leading token (event package, subscription state, call-id, delta).
    pub value: &'a str,
    /// The parameters after it.
    pub params: Params<'a>,
}

impl fmt::Display for TokenParams<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.value, self.params)
    }
}

fn token_params<'a>(
    value: &'a str,
    lead: fn(&'a str) -> PResult<'a, &'a str>,
) -> Result<TokenParams<'a>, ValueError> {
    complete(value, |i| {
        let (i, v) = lead(sws(i))?;
        let (i, p) = params(i)?;
        Ok((
            i,
            TokenParams {
                value: (v),
                params: p,
            },
        ))
    })
}

/// The Event header (RFC 6665): package and parameters such as `id`.
pub type Event<'a> = TokenParams<'a>;
/// The Subscription-State header (RFC 6665): state, `expires`, `reason`.
pub type SubscriptionState<'a> = TokenParams<'a>;
/// The Replaces header (RFC 3891): call-id, `to-tag`, `from-tag`, `early-only`.
pub type Replaces<'a> = TokenParams<'a>;
/// The Session-Expires header (RFC 4028): delta seconds and `refresher`.
pub type SessionExpires<'a> = TokenParams<'a>;

impl<'a> TypedValue<'a> for TokenParams<'a> {
    fn parse_value(value: &'a str) -> Result<Self, ValueError> {
        token_params(value, token)
    }
}

pub(crate) fn replaces(value: &str) -> Result<Replaces<'_>, ValueError> {
    let r = token_params(value, |i| {
        let (r, _) = grammar::word(i)?;
        let r = if r.as_bytes().first() == Some(&b'@') {
            grammar::word(&r[1..])?.0
        } else {
            r
        };
        Ok((r, consumed(i, r)))
    })?;
    if r.params.value("to-tag").is_none() || r.params.value("from-tag").is_none() {
        return Err(ValueError {
            offset: 0,
            expected: "to-tag and from-tag",
        });
    }
    Ok(r)
}

pub(crate) fn session_expires(value: &str) -> Result<SessionExpires<'_>, ValueError> {
    let s = token_params(value, grammar::digits)?;
    if s.value.parse::<u32>().is_err() {
        return Err(ValueError {
            offset: 0,
            expected: "delta seconds",
        });
    }
    if let Some(r) = s.params.get("refresher")
        && !matches!(r, Some("uac" | "uas"))
    {
        return Err(ValueError {
            offset: 0,
            expected: "refresher uac or uas",
        });
    }
    Ok(s)
}

/// The Retry-After header (RFC 3261 §20.33): how long to wait before trying
/// again, an optional comment and parameters such as `duration`.
///
/// ```
/// use sip_core::RetryAfter;
///
/// let r = RetryAfter::parse("120 (I'm in a meeting) ;duration=3600")?;
/// assert_eq!(r.seconds, 120);
/// assert_eq!(r.comment, Some("I'm in a meeting"));
/// assert_eq!(r.duration(), Some(3600));
/// # Ok::<(), sip_core::ParseError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryAfter<'a> {
    /// Delta seconds (saturating at `u32::MAX`).
    pub seconds: u32,
    /// The inside of the comment, as written.
    pub comment: Option<&'a str>,
    /// The parameters after it.
    pub params: Params<'a>,
}

impl RetryAfter<'_> {
    /// The `duration` parameter: how long the callee stays available.
    pub fn duration(&self) -> Option<u32> {
        self.params.value("duration")?.parse().ok()
    }
}

impl<'a> TypedValue<'a> for RetryAfter<'a> {
    fn parse_value(value: &'a str) -> Result<Self, ValueError> {
        complete(value, |i| {
            let (i, digits) = grammar::digits(sws(i))?;
            let seconds = digits
                .parse::<u64>()
                .map_or(u32::MAX, |v| u32::try_from(v).unwrap_or(u32::MAX));
            let (i, comment) = match sws(i).strip_prefix('(') {
                Some(inner) => match comment_end(inner) {
                    Some(end) => (&inner[end + 1..], Some(&inner[..end])),
                    None => return grammar::fail(inner, "a comment closed by `)`"),
                },
                None => (i, None),
            };
            let (i, params) = params(i)?;
            Ok((
                i,
                RetryAfter {
                    seconds,
                    comment,
                    params,
                },
            ))
        })
    }
}
public_parse!(RetryAfter, "Retry-After");

/// Where the comment whose inside starts `inner` closes (RFC 3261 §25.1:
/// nested comments and quoted-pairs); `None` if it never does or holds a
/// control character.
fn comment_end(inner: &str) -> Option<usize> {
    let b = inner.as_bytes();
    let mut depth = 0usize;
    let mut k = 0;
    while k < b.len() {
        match b[k] {
            b'\\' => k += 1,
            b'(' => depth += 1,
            b')' if depth == 0 => return Some(k),
            b')' => depth -= 1,
            b'\r' | b'\n' | b'\t' | b' ' => {}
            c if c < 0x20 || c == 0x7f => return None,
            _ => {}
        }
        k += 1;
    }
    None
}

impl<'a> Replaces<'a> {
    /// Replaces: the `to-tag`.
    pub fn to_tag(&self) -> Option<&'a str> {
        self.params.value("to-tag")
    }
    /// Replaces: the `from-tag`.
    pub fn from_tag(&self) -> Option<&'a str> {
        self.params.value("from-tag")
    }
    /// Replaces: whether `early-only` is set.
    pub fn is_early_only(&self) -> bool {
        self.params.get("early-only").is_some()
    }
    /// Subscription-State and Contact: the `expires` parameter.
    pub fn expires(&self) -> Option<u32> {
        self.params.value("expires").and_then(|v| v.parse().ok())
    }
    /// Session-Expires: the `refresher` parameter.
    pub fn refresher(&self) -> Option<&'a str> {
        self.params.value("refresher")
    }
    /// Session-Expires: the interval in seconds.
    pub fn delta_seconds(&self) -> Option<u32> {
        self.value.parse().ok()
    }
}

/// The header a value belongs to, for error messages.
pub(crate) fn header_label(name: HeaderName) -> &'static str {
    name.canonical().unwrap_or("extension")
}

pub(crate) fn check_token(value: &str) -> Result<&str, ValueError> {
    complete(value, |i| {
        let (r, t) = token(sws(i))?;
        Ok((r, (t)))
    })
}

/// Ensures a value is not empty and starts after optional white space.
pub(crate) fn nonempty(value: &str) -> Result<(), ValueError> {
    if sws(value).is_empty() {
        Err(ValueError {
            offset: 0,
            expected: "a value",
        })
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Reading a bracketed URI to the value's end (no search for `>`)
        /// gives what reading it to the first `>` gives, whenever it succeeds,
        /// and succeeds whenever that does.
        #[test]
        fn bracketed_uri_read_to_the_end_is_read_to_the_first_gt(
            v in prop_oneof![
                "<sips?:([a-z0-9]{1,6}(:[a-z]{1,3})?@)?[a-z]{1,8}(\\.[a-z]{1,6}){0,2}(:[0-9]{1,4})?(;[a-z]{1,5}(=[a-z0-9]{1,4})?){0,2}(\\?[a-z]=[a-z]{1,3})?[ ]?>[;a-z=> ]{0,6}",
                "<(tel:\\+[0-9-]{1,8}|urn:[a-z:]{1,10}|sip:\\[[0-9a-f:]{2,8}\\]?)[ >;a-z]{0,4}",
                "<(sips?:|tel:\\+|[a-z]{1,4}:)?[a-zA-Z0-9:;=@.%\\[\\]?&+$,/ <>\"-]{0,24}>?[;a-z=>\\] ]{0,8}",
            ]
        ) {
            let fast = bracketed_uri_to_end(&v, 0);
            let slow = bracketed_uri(&v, 0).ok();
            prop_assert_eq!(fast, slow, "{:?}", v);
        }
    }

    proptest! {
        /// The top Via read in place is the list's first value as splitting
        /// the list gives it, and errors are left to the split reading.
        #[test]
        fn first_via_read_in_place_is_the_first_value_of_the_list(
            v in "SIP/2\\.0/(UDP|TCP) [a-z]{1,8}(\\.[a-z]{1,8}){0,2}(:[0-9]{1,4})?(;[a-z]{1,6}(=([a-z0-9.]{1,6}|\"[a-z ,]{0,6}\"))?){0,3}( |\r\n |\t|x)?(,[ a-z0-9;=\"/.]{0,20})?"
        ) {
            if let Some(fast) = via_spans_first(&v) {
                let first = grammar::split_list(&v).next();
                prop_assert_eq!(first.map(|(at, _)| at), Some(0));
                let elem = first.map_or("", |(_, e)| e);
                prop_assert_eq!(Ok(fast), via_spans(elem), "{:?}", v);
            }
        }
    }

    #[test]
    fn bracketed_uri_edges() {
        for v in [
            "<sip:a@b>",
            "<sip:a@b >;tag=1",
            "<sip:a b>",
            "<sip:[::1>;x=]",
            "<sip:[2001:db8::1]:5060;lr>",
            "<sips>",
            "<sip:a@b?subject=x&p=y>",
            "<tel:+1-201-555-0123;ext=1>",
            "<urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6>",
            "<sip:a@b;transport=udp",
            "<sip:a@b>>",
        ] {
            assert_eq!(bracketed_uri_to_end(v, 0), bracketed_uri(v, 0).ok(), "{v}");
        }
    }

    #[test]
    fn rfc3261_20_42_via_with_all_parameters() {
        let v = Via::parse(
            "SIP / 2.0 / UDP  pc33.example.com : 5066 ;branch=z9hG4bK776;received=2001:db8::9;rport=5070;maddr=224.2.0.1;ttl=16;x-y",
        )
        .unwrap();
        assert_eq!(v.transport, "UDP");
        assert_eq!(v.host, Host::Domain("pc33.example.com"));
        assert_eq!(v.port, Some(5066));
        assert_eq!(v.branch(), Some("z9hG4bK776"));
        assert!(v.is_rfc3261_branch());
        assert_eq!(v.received(), Some("2001:db8::9".parse().unwrap()));
        assert_eq!(v.rport(), Some(Some(5070)));
        assert_eq!(v.ttl(), Some(16));
        assert_eq!(v.params.get("x-y"), Some(None));
        assert!(Via::parse("SIP/2.0 host").is_err());
        assert!(Via::parse("SIP/2.0/UDP host:70000").is_err());
        assert!(Via::parse("SIP/2.0/UDP host;ttl=300").is_err());
        assert_eq!(
            Via::parse("SIP/2.0/TCP [2001:db8::1]:5060;rport")
                .unwrap()
                .rport(),
            Some(None)
        );
    }

    #[test]
    fn name_addr_forms() {
        let n =
            NameAddr::parse("\"Alice \\\"A\\\" Smith\" <sip:alice@example.com>;tag=1928").unwrap();
        assert_eq!(n.display_name().unwrap(), "Alice \"A\" Smith");
        assert_eq!(n.tag(), Some("1928"));
        let n = NameAddr::parse("Bob  Jones <sip:bob@example.com;transport=tcp>;tag=x").unwrap();
        assert_eq!(n.display_name().unwrap(), "Bob  Jones");
        assert_eq!(n.uri.as_sip().unwrap().transport(), Some("tcp"));
        let n = NameAddr::parse("sip:carol@example.com;tag=77").unwrap();
        assert!(!n.bracketed);
        assert_eq!(n.tag(), Some("77"));
        assert!(n.uri.as_sip().unwrap().params.is_empty());
        assert!(NameAddr::parse("<sip:a@b").is_err());
        assert!(NameAddr::parse("\"open <sip:a@b>").is_err());
        let n = NameAddr::parse("\"Zoë\" <tel:+441234567890>").unwrap();
        assert_eq!(n.display_name().unwrap(), "Zoë");
    }

    #[test]
    fn parameters_noted_while_parsing_read_like_a_scan() {
        for v in [
            "<sip:a@b>;x=1;TAG=abc;tag=def",
            "<sip:a@b>;tag",
            "<sip:a@b>;tag=\"q d\";x",
            "sip:a@b;tag=7",
            "<sip:a@b>",
        ] {
            let n = NameAddr::parse(v).unwrap();
            let scanned = n.params.iter().find(|(k, _)| k.eq_ignore_ascii_case("tag"));
            assert_eq!(n.params.get("tag"), scanned.map(|(_, v)| v), "{v}");
            assert_eq!(n.params.get("Tag"), n.params.get("tag"), "{v}");
        }
        let via = Via::parse("SIP/2.0/UDP h;rport;BRANCH=z9hG4bK1;branch=z9hG4bK2").unwrap();
        assert_eq!(via.branch(), Some("z9hG4bK1"));
        assert_eq!(via.rport(), Some(None));
    }

    #[test]
    fn contact_parameters() {
        let Contact::Address(c) = Contact::parse(
            "<sip:u@192.0.2.4:5060;ob>;expires=3600;q=0.7;+sip.instance=\"<urn:uuid:00000000-0000-1000-8000-000A95A0E128>\";reg-id=1;pn-provider=apns;pn-prid=abc;pn-param=x.y",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(c.expires(), Some(3600));
        assert_eq!(c.q(), Some(700));
        assert_eq!(
            c.sip_instance(),
            Some("urn:uuid:00000000-0000-1000-8000-000A95A0E128")
        );
        assert_eq!(c.reg_id(), Some(1));
        assert_eq!(c.pn_provider(), Some("apns"));
        assert_eq!(c.pn_prid(), Some("abc"));
        assert_eq!(c.pn_param(), Some("x.y"));
        assert_eq!(Contact::parse(" * ").unwrap(), Contact::Any);
        assert!(Contact::parse("<sip:a@b>;q=1.5").is_err());
    }

    #[test]
    fn digest_challenge_and_basic_credentials() {
        let a = Auth::parse(
            "Digest realm=\"example.com\", nonce=\"a,b\", algorithm=SHA-256, qop=\"auth,auth-int\", stale=FALSE",
        )
        .unwrap();
        assert_eq!(a.scheme, "Digest");
        assert_eq!(a.param("nonce").unwrap(), "a,b");
        assert_eq!(a.param("algorithm").unwrap(), "SHA-256");
        assert_eq!(a.param("QOP").unwrap(), "auth,auth-int");
        let b = Auth::parse("Basic dXNlcjpwYXNz").unwrap();
        assert_eq!(b.params.as_str(), "dXNlcjpwYXNz");
        assert!(Auth::parse("Digest realm=\"open").is_err());
    }

    #[test]
    fn cseq_limits() {
        assert_eq!(CSeq::parse("2147483647 INVITE").unwrap().seq, 2_147_483_647);
        assert!(CSeq::parse("2147483648 INVITE").is_err());
        assert!(CSeq::parse("x INVITE").is_err());
        assert_eq!(
            CSeq::parse("1 FOO").unwrap().method(),
            Method::Extension("FOO".into())
        );
    }

    #[test]
    fn rfc3261_20_33_retry_after() {
        let r = RetryAfter::parse_value("18000;duration=3600").unwrap();
        assert_eq!(
            (r.seconds, r.comment, r.duration()),
            (18000, None, Some(3600))
        );
        let r = RetryAfter::parse_value("120 (I'm in a meeting)").unwrap();
        assert_eq!((r.seconds, r.comment), (120, Some("I'm in a meeting")));
        // Nested comments, a quoted-pair and a comma inside the comment.
        let r = RetryAfter::parse_value(r"5 (back (soon), \) really) ;duration=1").unwrap();
        assert_eq!(r.comment, Some(r"back (soon), \) really"));
        assert_eq!(r.duration(), Some(1));
        // Too large a number waits as long as it can rather than not at all.
        assert_eq!(
            RetryAfter::parse_value("99999999999").unwrap().seconds,
            u32::MAX
        );
        for bad in [
            "",
            "soon",
            "5 (unclosed",
            "5 (a (b)",
            "5 (\u{1}) ",
            "-1",
            "5 x",
        ] {
            assert!(RetryAfter::parse_value(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn session_expires_and_replaces() {
        let s = session_expires("1800;refresher=uac").unwrap();
        assert_eq!(s.delta_seconds(), Some(1800));
        assert_eq!(s.refresher(), Some("uac"));
        let r =
            replaces("98732@sip.example.com;from-tag=r33th4x0r;to-tag=ff87ff;early-only").unwrap();
        assert_eq!(r.value, "98732@sip.example.com");
        assert_eq!(r.to_tag(), Some("ff87ff"));
        assert!(r.is_early_only());
    }
}
