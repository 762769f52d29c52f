//! URIs: `sip:`, `sips:`, `tel:` (RFC 3966) and any other scheme kept whole.
//!
//! Parsed URIs borrow the text they came from. Escapes are kept as written;
//! the `*_decoded` accessors undo them.

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::{ParseError, ParseErrorKind, Position};
use crate::grammar::{self, Fail, PResult, Step, fail, fail_at};

/// A URI as it appears in a Request-URI or a header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uri<'a> {
    /// `sip:` or `sips:` (RFC 3261 §19.1).
    Sip(SipUri<'a>),
    /// `tel:` (RFC 3966).
    Tel(TelUri<'a>),
    /// Any other absolute URI, kept as written.
    Other(AbsoluteUri<'a>),
}

/// Whether a SIP URI asks for TLS on every hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SipScheme {
    /// `sip:`
    Sip,
    /// `sips:`
    Sips,
}

/// A `sip:` or `sips:` URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SipUri<'a> {
    /// `sip` or `sips`.
    pub scheme: SipScheme,
    /// The user part, escapes kept.
    pub user: Option<&'a str>,
    /// The password, escapes kept (deprecated by RFC 3261 but legal).
    pub password: Option<&'a str>,
    /// The host.
    pub host: Host<'a>,
    /// The port, when given.
    pub port: Option<u16>,
    /// The URI parameters (`;transport=tcp;lr`).
    pub params: UriParams<'a>,
    /// The URI headers after `?` (`subject=x&priority=urgent`).
    pub headers: UriHeaders<'a>,
}

/// A host name or an IP address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Host<'a> {
    /// A domain name, as written.
    Domain(&'a str),
    /// An IPv4 address.
    Ipv4(Ipv4Addr),
    /// An IPv6 address (written in brackets in URIs and sent-by).
    Ipv6(Ipv6Addr),
}

/// A `tel:` URI (RFC 3966).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelUri<'a> {
    /// The number with its visual separators, e.g. `+1-201-555-0123`.
    pub number: &'a str,
    /// Parameters such as `phone-context` or `ext`.
    pub params: UriParams<'a>,
}

/// A URI of a scheme this crate does not interpret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AbsoluteUri<'a> {
    /// The scheme, as written.
    pub scheme: &'a str,
    /// Everything after the colon.
    pub rest: &'a str,
}

/// URI parameters: the raw `;name=value` text (empty when there are none).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UriParams<'a>(&'a str);

/// URI headers: the raw `name=value&name=value` text after `?`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UriHeaders<'a>(&'a str);

/// Where a URI ends when it is not enclosed in angle brackets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UriContext {
    /// The whole input is the URI (Request-URI, inside `<>`).
    Whole,
    /// An addr-spec in a header: `;` starts header parameters (RFC 3261 §20.10).
    AddrSpec,
}

impl<'a> Uri<'a> {
    /// Parses a complete URI.
    pub fn parse(input: &'a str) -> Result<Self, ParseError> {
        whole_uri_at(input, 0, input.len()).map_err(|e| ParseError {
            kind: ParseErrorKind::InvalidUri {
                expected: e.expected,
            },
            position: Position::of_offset(input.as_bytes(), e.at),
        })
    }

    /// The SIP URI, if this is one.
    pub fn as_sip(&self) -> Option<&SipUri<'a>> {
        match self {
            Uri::Sip(u) => Some(u),
            _ => None,
        }
    }

    /// The scheme in lower case for `sip`, `sips` and `tel`, as written otherwise.
    pub fn scheme(&self) -> &str {
        match self {
            Uri::Sip(u) => u.scheme.as_str(),
            Uri::Tel(_) => "tel",
            Uri::Other(o) => o.scheme,
        }
    }
}

impl SipScheme {
    /// `"sip"` or `"sips"`.
    pub fn as_str(self) -> &'static str {
        match self {
            SipScheme::Sip => "sip",
            SipScheme::Sips => "sips",
        }
    }
}

impl<'a> SipUri<'a> {
    /// The user part with `%HH` escapes decoded.
    pub fn user_decoded(&self) -> Option<Cow<'a, str>> {
        self.user.map(grammar::percent_decode)
    }

    /// The `transport` parameter.
    pub fn transport(&self) -> Option<&'a str> {
        self.params.get("transport").flatten()
    }

    /// Whether the URI carries `lr` (a loose router, RFC 3261 §16.12).
    pub fn is_loose_router(&self) -> bool {
        self.params.get("lr").is_some()
    }

    /// The `maddr` parameter.
    pub fn maddr(&self) -> Option<&'a str> {
        self.params.get("maddr").flatten()
    }

    /// Whether two SIP URIs are equivalent under RFC 3261 §19.1.4: same
    /// scheme; user and password equal case-sensitively once unescaped;
    /// host (names without case, addresses as addresses) and port (an
    /// absent port differs from 5060) equal; every parameter present in
    /// both equal without case, and `user`, `ttl`, `method`, `maddr` and
    /// `transport` present in both or neither (the section's examples count
    /// a transport in one URI only as a difference); the same URI headers.
    /// Other parameters present in only one are ignored.
    pub fn equivalent(&self, other: &SipUri<'_>) -> bool {
        fn decoded(v: Option<&str>) -> Option<Cow<'_, str>> {
            v.map(grammar::percent_decode)
        }
        let host_eq = match (self.host, other.host) {
            (Host::Domain(a), Host::Domain(b)) => {
                grammar::percent_decode(a).eq_ignore_ascii_case(&grammar::percent_decode(b))
            }
            (a, b) => a == b,
        };
        if self.scheme != other.scheme
            || decoded(self.user) != decoded(other.user)
            || decoded(self.password) != decoded(other.password)
            || !host_eq
            || self.port != other.port
        {
            return false;
        }
        let value_eq = |a: Option<&str>, b: Option<&str>| match (a, b) {
            (Some(a), Some(b)) => {
                grammar::percent_decode(a).eq_ignore_ascii_case(&grammar::percent_decode(b))
            }
            (a, b) => a.is_none() && b.is_none(),
        };
        let params_match = |a: &UriParams<'_>, b: &UriParams<'_>| {
            a.iter().all(|(name, value)| match b.get(name) {
                Some(theirs) => value_eq(value, theirs),
                None => !["user", "ttl", "method", "maddr", "transport"]
                    .iter()
                    .any(|n| n.eq_ignore_ascii_case(name)),
            })
        };
        let headers_within = |a: &UriHeaders<'_>, b: &UriHeaders<'_>| {
            a.iter().all(|(name, value)| {
                b.iter().any(|(n, v)| {
                    n.eq_ignore_ascii_case(name)
                        && grammar::percent_decode(v) == grammar::percent_decode(value)
                })
            })
        };
        params_match(&self.params, &other.params)
            && params_match(&other.params, &self.params)
            && headers_within(&self.headers, &other.headers)
            && headers_within(&other.headers, &self.headers)
    }
}

impl fmt::Display for Host<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Domain(d) => f.write_str(d),
            Host::Ipv4(a) => write!(f, "{a}"),
            Host::Ipv6(a) => write!(f, "[{a}]"),
        }
    }
}

impl fmt::Display for Uri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Uri::Sip(u) => u.fmt(f),
            Uri::Tel(t) => write!(f, "tel:{}{}", t.number, t.params.0),
            Uri::Other(o) => write!(f, "{}:{}", o.scheme, o.rest),
        }
    }
}

impl fmt::Display for SipUri<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.scheme.as_str())?;
        if let Some(user) = self.user {
            f.write_str(user)?;
            if let Some(pw) = self.password {
                write!(f, ":{pw}")?;
            }
            f.write_str("@")?;
        }
        write!(f, "{}", self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        f.write_str(self.params.0)?;
        if !self.headers.0.is_empty() {
            write!(f, "?{}", self.headers.0)?;
        }
        Ok(())
    }
}

impl<'a> UriParams<'a> {
    /// The raw parameter text, starting with `;` (or empty).
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(name, value)` pairs in order; a flag parameter has no value.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, Option<&'a str>)> + 'a {
        self.0.split(';').skip(1).map(|p| match p.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (p, None),
        })
    }

    /// `None` when absent, `Some(None)` for a flag, `Some(Some(v))` with a value.
    /// Names compare case-insensitively.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
}

impl<'a> UriHeaders<'a> {
    /// The raw header text after `?` (or empty).
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// Whether there are no URI headers.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(name, value)` pairs in order, escapes kept.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, &'a str)> + 'a {
        self.0
            .split('&')
            .filter(|h| !h.is_empty())
            .map(|h| h.split_once('=').unwrap_or((h, "")))
    }

    /// The decoded value of the first header called `name` (case-insensitive).
    pub fn get_decoded(&self, name: &str) -> Option<Cow<'a, str>> {
        self.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| grammar::percent_decode(v))
    }
}

/// Parses a URI starting at `i`.
pub(crate) fn uri(i: &str, ctx: UriContext) -> PResult<'_, Uri<'_>> {
    match uri_at(i, 0, i.len(), ctx) {
        Ok((r, u)) => Ok((&i[r..], u)),
        Err(f) => Err(f.into_nom(i)),
    }
}

/// A whole URI in `s[k..limit]` (Request-URI, inside `<>`): nothing but white
/// space may follow it before `limit`.
#[inline(always)]
pub(crate) fn whole_uri_at(s: &str, k: usize, limit: usize) -> Result<Uri<'_>, Fail> {
    let (r, u) = uri_at(s, k, limit, UriContext::Whole)?;
    let r2 = grammar::sws_at(s.as_bytes(), r, limit);
    if r2 < limit {
        return fail_at(r2, "end of value");
    }
    Ok(u)
}

/// A URI starting at `s[k]` that ends by `limit`; returns where it ended.
#[inline(always)]
pub(crate) fn uri_at(s: &str, k: usize, limit: usize, ctx: UriContext) -> Step<Uri<'_>> {
    let b = s.as_bytes();
    let limit = limit.min(b.len());
    // The usual scheme first, without the general scan.
    if let Some(w) = b.get(k..limit).and_then(|r| r.first_chunk::<4>())
        && w[..3].eq_ignore_ascii_case(b"sip")
    {
        if w[3] == b':' {
            return sip_uri_at(s, k + 4, limit, SipScheme::Sip, ctx);
        }
        if (w[3] | 0x20) == b's' && b.get(k + 4) == Some(&b':') && k + 4 < limit {
            return sip_uri_at(s, k + 5, limit, SipScheme::Sips, ctx);
        }
    }
    let mut n = k;
    while n < limit && (b[n].is_ascii_alphanumeric() || matches!(b[n], b'+' | b'-' | b'.')) {
        n += 1;
    }
    if n == k || !b[k].is_ascii_alphabetic() || n >= limit || b[n] != b':' {
        return fail_at(k, "URI scheme");
    }
    let scheme = &b[k..n];
    let rest = n + 1;
    if scheme.eq_ignore_ascii_case(b"sip") {
        sip_uri_at(s, rest, limit, SipScheme::Sip, ctx)
    } else if scheme.eq_ignore_ascii_case(b"sips") {
        sip_uri_at(s, rest, limit, SipScheme::Sips, ctx)
    } else if scheme.eq_ignore_ascii_case(b"tel") {
        match tel_uri(&s[rest..limit], ctx) {
            Ok((r, u)) => Ok((limit - r.len(), u)),
            Err(nom::Err::Error(e) | nom::Err::Failure(e)) => {
                fail_at(limit - e.input.len(), e.expected)
            }
            Err(nom::Err::Incomplete(_)) => fail_at(limit, "more input"),
        }
    } else {
        let mut m = grammar::run_at(b, rest, limit, grammar::C_OPAQUE);
        if ctx == UriContext::AddrSpec {
            m = b[rest..m]
                .iter()
                .position(|&c| c == b';' || c == b',')
                .map_or(m, |p| rest + p);
        }
        if m == rest {
            return fail_at(rest, "URI after scheme");
        }
        if let Some(at) = grammar::escape_error(b, rest, m) {
            return fail_at(at, "%HH escape");
        }
        Ok((
            m,
            Uri::Other(AbsoluteUri {
                scheme: &s[k..n],
                rest: &s[rest..m],
            }),
        ))
    }
}

/// The part of a SIP URI after the scheme, in one pass.
#[inline(always)]
fn sip_uri_at(
    s: &str,
    k: usize,
    limit: usize,
    scheme: SipScheme,
    ctx: UriContext,
) -> Step<Uri<'_>> {
    let b = s.as_bytes();
    // Userinfo is present when an "@" ends a run of userinfo characters.
    let p = grammar::run_at(b, k, limit, grammar::C_USERINFO);
    let (mut user, mut password, mut h) = (None, None, k);
    if p < limit && b[p] == b'@' {
        let colon = b[k..p]
            .iter()
            .position(|&c| c == b':')
            .map_or(usize::MAX, |c| k + c);
        // A byte loop: `contains` goes through memchr, which costs more on
        // a user part of a few bytes.
        #[allow(clippy::manual_contains)]
        let percent = b[k..p].iter().any(|&c| c == b'%');
        let user_end = colon.min(p);
        if user_end == k {
            return fail_at(k, "user part");
        }
        if percent && let Some(at) = grammar::escape_error(b, k, user_end) {
            return fail_at(at, "%HH escape");
        }
        if colon < p {
            let bad = grammar::run_at(b, colon + 1, p, grammar::C_PASSWORD);
            if bad < p {
                return fail_at(bad, "password");
            }
            if percent && let Some(at) = grammar::escape_error(b, colon + 1, p) {
                return fail_at(at, "%HH escape");
            }
            password = Some(&s[colon + 1..p]);
        }
        user = Some(&s[k..user_end]);
        h = p + 1;
    }
    let (r, host) = host_at(s, h, limit)?;
    let (r, port) = opt_port_at(b, r, limit)?;
    let mut out = SipUri {
        scheme,
        user,
        password,
        host,
        port,
        params: UriParams(""),
        headers: UriHeaders(""),
    };
    if ctx == UriContext::AddrSpec {
        return Ok((r, Uri::Sip(out)));
    }
    let mut e = r;
    while e < limit && b[e] == b';' {
        let name = grammar::run_at(b, e + 1, limit, grammar::C_URI_PARAM);
        if name == e + 1 {
            return fail_at(e + 1, "URI parameter name");
        }
        e = name;
        if e < limit && b[e] == b'=' {
            let value = grammar::run_at(b, e + 1, limit, grammar::C_URI_PARAM);
            if value == e + 1 {
                return fail_at(e + 1, "URI parameter value");
            }
            e = value;
        }
    }
    if let Some(at) = grammar::escape_error(b, r, e) {
        return fail_at(at, "%HH escape");
    }
    out.params = UriParams(&s[r..e]);
    if e < limit && b[e] == b'?' {
        let h = e + 1;
        let mut q = h;
        loop {
            let name = grammar::run_at(b, q, limit, grammar::C_URI_HEADER);
            if name == q {
                return fail_at(q, "URI header name");
            }
            q = name;
            if q >= limit || b[q] != b'=' {
                return fail_at(q, "= in URI header");
            }
            q = grammar::run_at(b, q + 1, limit, grammar::C_URI_HEADER);
            if q < limit && b[q] == b'&' {
                q += 1;
            } else {
                break;
            }
        }
        if let Some(at) = grammar::escape_error(b, h, q) {
            return fail_at(at, "%HH escape");
        }
        out.headers = UriHeaders(&s[h..q]);
        e = q;
    }
    Ok((e, Uri::Sip(out)))
}

fn tel_uri(i: &str, ctx: UriContext) -> PResult<'_, Uri<'_>> {
    let n = i
        .bytes()
        .position(|c| !grammar::is_tel_number(c))
        .unwrap_or(i.len());
    let number = &i[..n];
    let global = number.as_bytes().first() == Some(&b'+');
    let has_digit = number
        .bytes()
        .any(|c| c.is_ascii_hexdigit() || c == b'*' || c == b'#');
    if !has_digit || (global && !number[1..].bytes().any(|c| c.is_ascii_digit())) {
        return fail(i, "telephone number");
    }
    let (r, params) = if ctx == UriContext::Whole {
        uri_params(&i[n..])?
    } else {
        (&i[n..], UriParams(""))
    };
    if !global && params.get("phone-context").is_none() && ctx == UriContext::Whole {
        return fail(&i[n..], "phone-context for a local number");
    }
    Ok((
        r,
        Uri::Tel(TelUri {
            number: (number),
            params,
        }),
    ))
}

/// A host starting at `s[k]` that ends by `limit`, checked in one pass.
#[inline]
pub(crate) fn host_at(s: &str, k: usize, limit: usize) -> Step<Host<'_>> {
    let b = s.as_bytes();
    let limit = limit.min(b.len());
    if k < limit && b[k] == b'[' {
        let Some(end) = memchr::memchr(b']', &b[k..limit]) else {
            return fail_at(k, "IPv6 host reference closed by ]");
        };
        return match s[k + 1..k + end].parse::<Ipv6Addr>() {
            Ok(a) => Ok((k + end + 1, Host::Ipv6(a))),
            Err(_) => fail_at(k + 1, "IPv6 address"),
        };
    }
    let q = grammar::run_at(b, k, limit, grammar::C_HOST);
    if q == k {
        return fail_at(k, "host");
    }
    let h = &b[k..q];
    let last = h[h.len() - 1];
    if last.is_ascii_digit() && h[0].is_ascii_digit() {
        if let Some(a) = ipv4(h) {
            return Ok((q, Host::Ipv4(a)));
        }
        if h.iter().all(|&c| c.is_ascii_digit() || c == b'.') {
            return fail_at(k, "IPv4 address");
        }
    }
    // Labels are non-empty and neither start nor end with a hyphen; a
    // trailing dot (a fully qualified name) is allowed. That is: no "..",
    // ".-" or "-." and no "." or "-" first; checked over byte pairs without
    // branches, so no state carries from one byte to the next.
    let bad = h[1..]
        .iter()
        .zip(h.iter())
        .fold(matches!(h[0], b'.' | b'-'), |bad, (&c, &prev)| {
            let punct = (c == b'.') | (c == b'-');
            bad | (punct & (prev == b'.')) | ((c == b'.') & (prev == b'-'))
        });
    if bad || last == b'-' {
        return fail_at(k, "host name");
    }
    Ok((q, Host::Domain(&s[k..q])))
}

/// IPv6address without brackets (the `received` parameter).
pub(crate) fn parse_ip(s: &str) -> Option<std::net::IpAddr> {
    match ipv4(s.as_bytes()) {
        Some(a) => Some(std::net::IpAddr::V4(a)),
        None => s.parse().ok(),
    }
}

/// Dotted-quad IPv4 as `Ipv4Addr` parses it (four decimal octets, no
/// leading zeros), in one pass.
#[inline]
fn ipv4(b: &[u8]) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut n = 0;
    let mut v: u16 = 0;
    let mut digits = 0;
    for &c in b {
        if c == b'.' {
            if digits == 0 || n == 3 {
                return None;
            }
            octets[n] = u8::try_from(v).ok()?;
            n += 1;
            v = 0;
            digits = 0;
        } else if c.is_ascii_digit() {
            if (digits > 0 && v == 0) || digits == 3 {
                return None;
            }
            v = v * 10 + u16::from(c - b'0');
            digits += 1;
        } else {
            return None;
        }
    }
    if digits == 0 || n != 3 {
        return None;
    }
    octets[3] = u8::try_from(v).ok()?;
    Some(Ipv4Addr::from(octets))
}

/// `[":" port]`.
#[inline]
pub(crate) fn opt_port_at(b: &[u8], k: usize, limit: usize) -> Step<Option<u16>> {
    if k >= limit || b[k] != b':' {
        return Ok((k, None));
    }
    let (r, p) = grammar::number_at(b, k + 1, limit, u64::from(u16::MAX), "port")?;
    Ok((r, Some(u16::try_from(p).unwrap_or(u16::MAX))))
}

/// URI parameters for `tel:`: `*( ";" pname [ "=" pvalue ] )`.
fn uri_params(i: &str) -> PResult<'_, UriParams<'_>> {
    let mut k = 0;
    while i.as_bytes().get(k) == Some(&b';') {
        let name = grammar::uri_param_run(&i[k + 1..]);
        if name == 0 {
            return fail(&i[k + 1..], "URI parameter name");
        }
        k += 1 + name;
        if i.as_bytes().get(k) == Some(&b'=') {
            let value = grammar::uri_param_run(&i[k + 1..]);
            if value == 0 {
                return fail(&i[k + 1..], "URI parameter value");
            }
            k += 1 + value;
        }
    }
    if let Some(at) = grammar::escapes_valid(&i[..k]) {
        return fail(&i[at..], "%HH escape");
    }
    Ok((&i[k..], UriParams(&i[..k])))
}

#[cfg(test)]
mod equivalence_tests {
    use super::*;

    fn sip(text: &str) -> SipUri<'_> {
        match Uri::parse(text).unwrap() {
            Uri::Sip(s) => s,
            other => panic!("{other:?}"),
        }
    }

    /// The examples of RFC 3261 §19.1.4.
    #[test]
    fn rfc3261_19_1_4_examples() {
        for (a, b) in [
            (
                "sip:%61lice@atlanta.com;transport=TCP",
                "sip:alice@AtLanTa.CoM;Transport=tcp",
            ),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;newparam=5"),
            ("sip:carol@chicago.com", "sip:carol@chicago.com;security=on"),
            (
                "sip:biloxi.com;transport=tcp;method=REGISTER?to=sip:bob%40biloxi.com",
                "sip:biloxi.com;method=REGISTER;transport=tcp?to=sip:bob%40biloxi.com",
            ),
            (
                "sip:alice@atlanta.com?subject=project%20x&priority=urgent",
                "sip:alice@atlanta.com?priority=urgent&subject=project%20x",
            ),
            (
                "sip:[2001:db8::10]:5060",
                "sip:[2001:DB8:0:0:0:0:0:10]:5060",
            ),
        ] {
            assert!(sip(a).equivalent(&sip(b)), "{a} = {b}");
            assert!(sip(b).equivalent(&sip(a)), "{b} = {a}");
        }
        for (a, b) in [
            (
                "SIP:ALICE@AtLanTa.CoM;Transport=udp",
                "sip:alice@AtLanTa.CoM;Transport=UDP",
            ),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com:5060"),
            ("sip:bob@biloxi.com", "sip:bob@biloxi.com;transport=udp"),
            (
                "sip:bob@biloxi.com",
                "sip:bob@biloxi.com:6000;transport=tcp",
            ),
            (
                "sip:carol@chicago.com",
                "sip:carol@chicago.com?Subject=next%20meeting",
            ),
            ("sip:bob@phone21.boxesbybob.com", "sip:bob@192.0.2.4"),
            ("sip:alice@atlanta.com", "sips:alice@atlanta.com"),
            (
                "sip:alice@atlanta.com;maddr=239.255.255.1",
                "sip:alice@atlanta.com",
            ),
        ] {
            assert!(!sip(a).equivalent(&sip(b)), "{a} != {b}");
            assert!(!sip(b).equivalent(&sip(a)), "{b} != {a}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sip(s: &str) -> SipUri<'_> {
        match Uri::parse(s).unwrap() {
            Uri::Sip(u) => u,
            other => panic!("not sip: {other:?}"),
        }
    }

    #[test]
    fn rfc3261_19_1_1_full_sip_uri() {
        let u = sip("sips:alice%20b:secr%3Bt@[2001:db8::10]:5061;transport=tls;lr?subject=hi&x=");
        assert_eq!(u.scheme, SipScheme::Sips);
        assert_eq!(u.user, Some("alice%20b"));
        assert_eq!(u.user_decoded().unwrap(), "alice b");
        assert_eq!(u.password, Some("secr%3Bt"));
        assert_eq!(u.host, Host::Ipv6("2001:db8::10".parse().unwrap()));
        assert_eq!(u.port, Some(5061));
        assert_eq!(u.transport(), Some("tls"));
        assert!(u.is_loose_router());
        assert_eq!(u.headers.get_decoded("Subject").unwrap(), "hi");
        assert_eq!(
            u.to_string(),
            "sips:alice%20b:secr%3Bt@[2001:db8::10]:5061;transport=tls;lr?subject=hi&x="
        );
    }

    #[test]
    fn user_unreserved_characters_and_telephone_subscriber() {
        let u = sip("sip:+1-212-555-1212;phone-context=x;isub=1@gw.example.com;user=phone");
        assert_eq!(u.user, Some("+1-212-555-1212;phone-context=x;isub=1"));
        assert_eq!(u.params.get("user"), Some(Some("phone")));
        let u = sip("SIP:a&b=c+d$e,f?g/h@example.com");
        assert_eq!(u.user, Some("a&b=c+d$e,f?g/h"));
    }

    #[test]
    fn hosts() {
        assert_eq!(
            sip("sip:192.0.2.1").host,
            Host::Ipv4(Ipv4Addr::new(192, 0, 2, 1))
        );
        assert_eq!(sip("sip:example.com.").host, Host::Domain("example.com."));
        assert!(Uri::parse("sip:1.2.3.999").is_err());
        assert!(Uri::parse("sip:-bad.example.com").is_err());
        assert!(Uri::parse("sip:[2001:db8::1").is_err());
        assert!(Uri::parse("sip:user@").is_err());
        assert!(Uri::parse("sip:host:99999").is_err());
        assert!(Uri::parse("sip:host:abc").is_err());
    }

    #[test]
    fn rfc3966_tel_uris() {
        let Uri::Tel(t) = Uri::parse("tel:+1-201-555-0123;ext=12").unwrap() else {
            panic!()
        };
        assert_eq!(t.number, "+1-201-555-0123");
        assert_eq!(t.params.get("ext"), Some(Some("12")));
        assert!(Uri::parse("tel:7042;phone-context=example.com").is_ok());
        assert!(Uri::parse("tel:7042").is_err());
        assert!(Uri::parse("tel:+").is_err());
    }

    #[test]
    fn other_schemes_are_kept_whole() {
        let u = Uri::parse("urn:service:sos").unwrap();
        assert_eq!(u.scheme(), "urn");
        assert_eq!(u.to_string(), "urn:service:sos");
        assert!(Uri::parse("mailto:a@b.example").is_ok());
        assert!(Uri::parse("no-scheme").is_err());
        assert!(Uri::parse("sip:a b@c").is_err());
    }

    #[test]
    fn ipv4_agrees_with_std() {
        for s in [
            "192.0.2.1",
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "01.2.3.4",
            "1.2.3",
            "1.2.3.4.5",
            "1..3.4",
            "1.2.3.",
            "",
            "a.b.c.d",
            "1.2.3.0004",
            "10.0.0.10",
        ] {
            assert_eq!(ipv4(s.as_bytes()), s.parse::<Ipv4Addr>().ok(), "{s}");
        }
    }

    #[test]
    fn errors_point_at_the_problem() {
        let e = Uri::parse("sip:alice@example.com:7x").unwrap_err();
        assert_eq!(e.position.column, 24);
    }
}
