//! URIs: `sip:`, `sips:`, `tel:` (RFC 3966) and any other scheme kept whole.
//!
//! Parsed URIs borrow the text they came from. Escapes are kept as written;
//! the `*_decoded` accessors undo them.

use std::borrow::Cow;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::error::{ParseError, ParseErrorKind, Position};
use crate::grammar::{self, PResult, complete, fail};

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
        complete(input, |i| uri(i, UriContext::Whole)).map_err(|e| ParseError {
            kind: ParseErrorKind::InvalidUri {
                expected: e.expected,
            },
            position: Position::of_offset(input.as_bytes(), e.offset),
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
    let n = i
        .bytes()
        .position(|c| !(c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.')))
        .unwrap_or(i.len());
    if n == 0 || !i.as_bytes()[0].is_ascii_alphabetic() || i.as_bytes().get(n) != Some(&b':') {
        return fail(i, "URI scheme");
    }
    let scheme = &i[..n];
    let rest = &i[n + 1..];
    if scheme.eq_ignore_ascii_case("sip") {
        sip_uri(rest, SipScheme::Sip, ctx)
    } else if scheme.eq_ignore_ascii_case("sips") {
        sip_uri(rest, SipScheme::Sips, ctx)
    } else if scheme.eq_ignore_ascii_case("tel") {
        tel_uri(rest, ctx)
    } else {
        let mut m = grammar::opaque_run(rest);
        if ctx == UriContext::AddrSpec {
            m = rest[..m]
                .bytes()
                .position(|c| c == b';' || c == b',')
                .unwrap_or(m);
        }
        if m == 0 {
            return fail(rest, "URI after scheme");
        }
        if let Some(at) = grammar::escapes_valid(&rest[..m]) {
            return fail(&rest[at..], "%HH escape");
        }
        Ok((
            &rest[m..],
            Uri::Other(AbsoluteUri {
                scheme: (scheme),
                rest: (&rest[..m]),
            }),
        ))
    }
}

fn sip_uri(i: &str, scheme: SipScheme, ctx: UriContext) -> PResult<'_, Uri<'_>> {
    // Userinfo is present when an "@" follows a run of userinfo characters.
    let n = memchr::memchr(b'@', i.as_bytes())
        .filter(|&at| grammar::userinfo_run(&i[..at]) == at)
        .unwrap_or(usize::MAX);
    let (mut user, mut password, mut rest) = (None, None, i);
    if n != usize::MAX {
        let info = &i[..n];
        let (u, p) = match memchr::memchr(b':', info.as_bytes()) {
            Some(c) => (&info[..c], Some(&info[c + 1..])),
            None => (info, None),
        };
        if u.is_empty() || !u.as_bytes().iter().all(|&c| grammar::is_user(c)) {
            return fail(i, "user part");
        }
        if let Some(at) = grammar::escapes_valid(u) {
            return fail(&i[at..], "%HH escape");
        }
        if let Some(p) = p {
            if let Some(k) = p.as_bytes().iter().position(|&c| !grammar::is_password(c)) {
                return fail(&p[k..], "password");
            }
            if let Some(at) = grammar::escapes_valid(p) {
                return fail(&p[at..], "%HH escape");
            }
            password = Some(p);
        }
        user = Some(u);
        rest = &i[n + 1..];
    }
    let (r, host) = host(rest)?;
    let (r, port) = opt_port(r)?;
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
    let (r, params) = uri_params(r)?;
    out.params = params;
    let r = if r.as_bytes().first() == Some(&b'?') {
        let h = &r[1..];
        let mut k = 0;
        loop {
            let name = grammar::uri_header_run(&h[k..]);
            if name == 0 {
                return fail(&h[k..], "URI header name");
            }
            k += name;
            if h.as_bytes().get(k) != Some(&b'=') {
                return fail(&h[k..], "= in URI header");
            }
            k += 1;
            k += grammar::uri_header_run(&h[k..]);
            if h.as_bytes().get(k) == Some(&b'&') {
                k += 1;
            } else {
                break;
            }
        }
        if let Some(at) = grammar::escapes_valid(&h[..k]) {
            return fail(&h[at..], "%HH escape");
        }
        out.headers = UriHeaders(&h[..k]);
        &h[k..]
    } else {
        r
    };
    Ok((r, Uri::Sip(out)))
}

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

/// host = hostname / IPv4address / IPv6reference.
pub(crate) fn host(i: &str) -> PResult<'_, Host<'_>> {
    if i.as_bytes().first() == Some(&b'[') {
        let Some(end) = memchr::memchr(b']', i.as_bytes()) else {
            return fail(i, "IPv6 host reference closed by ]");
        };
        return match i[1..end].parse::<Ipv6Addr>() {
            Ok(a) => Ok((&i[end + 1..], Host::Ipv6(a))),
            Err(_) => fail(&i[1..], "IPv6 address"),
        };
    }
    let n = grammar::host_run(i);
    if n == 0 {
        return fail(i, "host");
    }
    let h = &i[..n];
    let hb = h.as_bytes();
    let last = hb[n - 1];
    if last.is_ascii_digit()
        && hb[0].is_ascii_digit()
        && hb.iter().all(|&c| c.is_ascii_digit() || c == b'.')
    {
        return match h.parse::<Ipv4Addr>() {
            Ok(a) => Ok((&i[n..], Host::Ipv4(a))),
            Err(_) => fail(i, "IPv4 address"),
        };
    }
    // Labels are non-empty and neither start nor end with a hyphen; a
    // trailing dot (a fully qualified name) is allowed.
    let bad_label = last == b'-'
        || memchr::memchr2_iter(b'.', b'-', hb).any(|p| {
            let before = if p == 0 { b'.' } else { hb[p - 1] };
            before == b'.' || (hb[p] == b'.' && before == b'-')
        });
    if bad_label {
        return fail(i, "host name");
    }
    Ok((&i[n..], Host::Domain(h)))
}

/// IPv6address without brackets (the `received` parameter).
pub(crate) fn parse_ip(s: &str) -> Option<std::net::IpAddr> {
    s.parse().ok()
}

/// `[":" port]`.
pub(crate) fn opt_port(i: &str) -> PResult<'_, Option<u16>> {
    if i.as_bytes().first() != Some(&b':') {
        return Ok((i, None));
    }
    let (r, p) = grammar::number(&i[1..], u64::from(u16::MAX), "port")?;
    Ok((r, Some(u16::try_from(p).unwrap_or(u16::MAX))))
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
    fn errors_point_at_the_problem() {
        let e = Uri::parse("sip:alice@example.com:7x").unwrap_err();
        assert_eq!(e.position.column, 24);
    }
}
