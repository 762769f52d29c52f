//! Typed header values, parsed lazily from the spans of a [`Message`](crate::Message).
//!
//! Each type borrows the message's bytes. `Display` writes the canonical form.

use std::borrow::Cow;
use std::fmt;

use crate::error::{ParseError, ParseErrorKind, Position};
use crate::grammar::{
    self, PResult, ValueError, complete, consumed, fail, lws, quoted_string, sep, sws, token,
};
use crate::name::{HeaderName, Method};
use crate::uri::{self, Host, Uri, UriContext};

/// A typed header value: how it is parsed from the raw value bytes.
pub(crate) trait TypedValue<'a>: Sized {
    fn parse_value(value: &'a str) -> Result<Self, ValueError>;
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Params<'a>(&'a str);

impl<'a> Params<'a> {
    /// The raw text, starting with `;` (or empty).
    pub fn as_str(&self) -> &'a str {
        self.0
    }

    /// Whether there are no parameters.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `(name, value)` pairs in order; quotes are removed from quoted values,
    /// escapes kept; a flag parameter has no value.
    pub fn iter(&self) -> ParamIter<'a> {
        ParamIter { rest: self.0 }
    }

    /// `None` when absent, `Some(None)` for a flag, `Some(Some(v))` with a value.
    /// Names compare case-insensitively.
    pub fn get(&self, name: &str) -> Option<Option<&'a str>> {
        let mut it = self.iter();
        while let Some((n, v)) = it.next_raw() {
            if n.eq_ignore_ascii_case(name) {
                return Some(v);
            }
        }
        None
    }

    /// The value of `name`, if present with a value.
    pub fn value(&self, name: &str) -> Option<&'a str> {
        self.get(name).flatten()
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

impl<'a> ParamIter<'a> {
    /// The next parameter as bytes, so lookups compare without converting.
    fn next_raw(&mut self) -> Option<(&'a str, Option<&'a str>)> {
        let i = sws(self.rest);
        let i = sws(i.strip_prefix(';')?);
        let (i, name) = token(i).ok()?;
        let j = sws(i);
        if let Some(j) = j.strip_prefix('=') {
            let j = sws(j);
            if j.as_bytes().first() == Some(&b'"') {
                let (r, q) = quoted_string(j).ok()?;
                self.rest = r;
                return Some((name, Some(q)));
            }
            let n = grammar::param_value_run(j);
            self.rest = &j[n..];
            Some((name, Some(&j[..n])))
        } else {
            self.rest = i;
            Some((name, None))
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
    Ok((r, Params(raw)))
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
        self.params.value("tag")
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

pub(crate) fn name_addr(i: &str) -> PResult<'_, NameAddr<'_>> {
    let i = sws(i);
    let mut display = None;
    let mut quoted = false;
    let mut j = i;
    if i.as_bytes().first() == Some(&b'"') {
        let (r, q) = quoted_string(i)?;
        display = Some(q);
        quoted = true;
        j = sws(r);
        if j.as_bytes().first() != Some(&b'<') {
            return fail(j, "< after the display name");
        }
    } else if i.as_bytes().first() != Some(&b'<') {
        // Either `token *(LWS token) <uri>` or an addr-spec.
        let mut k = i;
        while let Ok((r, _)) = token(k) {
            k = sws(r);
        }
        if k.as_bytes().first() == Some(&b'<') && k.len() < i.len() {
            let raw = consumed(i, k);
            let trimmed = raw.len()
                - raw
                    .bytes()
                    .rev()
                    .take_while(|c| c.is_ascii_whitespace())
                    .count();
            display = Some(&raw[..trimmed]);
            j = k;
        }
    }
    if j.as_bytes().first() == Some(&b'<') {
        let inner = &j[1..];
        let Some(end) = memchr::memchr(b'>', inner.as_bytes()) else {
            return fail(j, "> closing the address");
        };
        let addr = complete(&inner[..end], |u| uri::uri(u, UriContext::Whole)).map_err(|e| {
            nom::Err::Error(grammar::GrammarError {
                input: &inner[e.offset..],
                expected: e.expected,
            })
        })?;
        let (r, p) = params(&inner[end + 1..])?;
        return Ok((
            r,
            NameAddr {
                display,
                display_quoted: quoted,
                uri: addr,
                bracketed: true,
                params: p,
            },
        ));
    }
    let (r, addr) = uri::uri(i, UriContext::AddrSpec)?;
    let (r, p) = params(r)?;
    Ok((
        r,
        NameAddr {
            display: None,
            display_quoted: false,
            uri: addr,
            bracketed: false,
            params: p,
        },
    ))
}

impl<'a> TypedValue<'a> for NameAddr<'a> {
    fn parse_value(value: &'a str) -> Result<Self, ValueError> {
        let na = complete(value, name_addr)?;
        let mut it = na.params.iter();
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
        Ok(na)
    }
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
    fn parse_value(value: &'a str) -> Result<Self, ValueError> {
        if sws(value).trim_end() == "*" {
            return Ok(Contact::Any);
        }
        NameAddr::parse_value(value).map(Contact::Address)
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
        self.params.value("branch")
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

fn via(i: &str) -> PResult<'_, Via<'_>> {
    let (i, protocol) = token(sws(i)).map_err(|_| expected(i, "protocol name"))?;
    let (i, _) = sep(b'/', "/ after the protocol name")(i)?;
    let (i, version) = token(i).map_err(|_| expected(i, "protocol version"))?;
    let (i, _) = sep(b'/', "/ after the protocol version")(i)?;
    let (i, transport) = token(i).map_err(|_| expected(i, "transport"))?;
    let (i, _) = lws(i).map_err(|_| expected(i, "white space before sent-by"))?;
    let (i, host) = uri::host(i)?;
    let j = sws(i);
    let (i, port) = if j.as_bytes().first() == Some(&b':') {
        let k = sws(&j[1..]);
        let (r, n) = grammar::number(k, u64::from(u16::MAX), "sent-by port")?;
        (r, Some(u16::try_from(n).unwrap_or(u16::MAX)))
    } else {
        (i, None)
    };
    let (i, p) = params(i)?;
    let v = Via {
        protocol: (protocol),
        version: (version),
        transport: (transport),
        host,
        port,
        params: p,
    };
    let mut it = v.params.iter();
    while let Some((name, value)) = it.next_raw() {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        let ok = if is("branch") {
            value.is_some_and(|b| !b.is_empty() && b.bytes().all(grammar::is_token))
        } else if is("rport") {
            value.is_none_or(|r| (r).parse::<u16>().is_ok())
        } else if is("received") {
            value.and_then(uri::parse_ip).is_some()
        } else if is("ttl") {
            value.and_then(|t| (t).parse::<u8>().ok()).is_some()
        } else {
            true
        };
        if !ok {
            return fail(i, "valid ttl, received, rport and branch parameters");
        }
    }
    Ok((i, v))
}

fn expected<'a>(input: &'a str, what: &'static str) -> nom::Err<grammar::GrammarError<'a>> {
    nom::Err::Error(grammar::GrammarError {
        input,
        expected: what,
    })
}

impl<'a> TypedValue<'a> for Via<'a> {
    fn parse_value(value: &'a str) -> Result<Self, ValueError> {
        complete(value, via)
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
    fn parse_value(value: &'a str) -> Result<Self, ValueError> {
        complete(value, |i| {
            let (i, seq) = grammar::number(sws(i), (1 << 31) - 1, "sequence number below 2^31")?;
            let (i, _) = lws(i)?;
            let (i, m) = token(i).map_err(|_| expected(i, "method"))?;
            Ok((
                i,
                CSeq {
                    seq: u32::try_from(seq).unwrap_or(0),
                    method_token: (m),
                },
            ))
        })
    }
}
public_parse!(CSeq, "CSeq");

/// Call-ID = word [ "@" word ].
pub(crate) fn call_id(value: &str) -> Result<&str, ValueError> {
    complete(value, |i| {
        let start = sws(i);
        let (r, _) = grammar::word(start)?;
        let r = if r.as_bytes().first() == Some(&b'@') {
            grammar::word(&r[1..])?.0
        } else {
            r
        };
        Ok((r, (consumed(start, r))))
    })
}

/// A number header: Expires, Min-Expires, Max-Forwards, Content-Length, Min-SE.
pub(crate) fn delta(value: &str, max: u64, what: &'static str) -> Result<u64, ValueError> {
    complete(value, |i| grammar::number(sws(i), max, what))
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
