//! `Pii<T>`: personal data that prints masked unless the user turned on
//! personal-data logging.

use std::fmt::{self, Write as _};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use super::secrets::redact_secrets;

/// The process-wide switch: off means personal data prints masked.
static LOG_PERSONAL_DATA: AtomicBool = AtomicBool::new(false);

/// Turns unmasked output of personal data on or off for the whole process
/// (the `log-personal-data` privacy setting). Secrets are removed from logs
/// either way.
pub fn set_log_personal_data(on: bool) {
    LOG_PERSONAL_DATA.store(on, Ordering::Relaxed);
}

/// Whether personal data is printed unmasked (see [`set_log_personal_data`]).
#[must_use]
pub fn logs_personal_data() -> bool {
    LOG_PERSONAL_DATA.load(Ordering::Relaxed)
}

/// What kind of personal data a [`Pii`] holds, which decides how it is masked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PiiKind {
    /// A phone number or extension: `+49*******67`, `*****67`.
    Number,
    /// A SIP, SIPS, tel or other URI: the user part is masked
    /// (`sip:****67@example.com`), a password dropped, an IP host masked,
    /// the path and query of other URLs hidden.
    Uri,
    /// A display name: initials (`A. S.`) or `***`.
    Name,
    /// A name and address as in a From header (`"Alice" <sip:alice@x>`):
    /// both parts masked.
    NameAddr,
    /// An IP address or socket address: the host part masked
    /// (`192.168.*.*:5060`, `2001:db8:*`).
    Ip,
    /// Anything else personal (a contact field, free text): `***`.
    Text,
}

impl PiiKind {
    /// `text` masked as this kind, whatever the switch says.
    ///
    /// ```
    /// use softphone::diagnostics::PiiKind;
    ///
    /// assert_eq!(PiiKind::Number.mask("+4930123456767"), "+49*********67");
    /// assert_eq!(PiiKind::Uri.mask("sip:123467@example.com"), "sip:****67@example.com");
    /// assert_eq!(PiiKind::Name.mask("Alice Smith"), "A. S.");
    /// assert_eq!(PiiKind::Ip.mask("192.168.10.7:5060"), "192.168.*.*:5060");
    /// ```
    #[must_use]
    pub fn mask(self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        match self {
            PiiKind::Number => mask_number(text, &mut out),
            PiiKind::Uri => mask_uri(text, &mut out),
            PiiKind::Name => mask_name(text, &mut out),
            PiiKind::NameAddr => mask_name_addr(text, &mut out),
            PiiKind::Ip => mask_ip_text(text, &mut out),
            PiiKind::Text => out.push_str(MASK),
        }
        out
    }
}

/// Personal data that prints masked (`Display` and `Debug` alike) unless
/// [`set_log_personal_data`] turned unmasked output on.
///
/// Wrap every number, URI, name, address and contact field that goes into a
/// log line or an error text meant for logs:
///
/// ```
/// use softphone::diagnostics::Pii;
///
/// let uri = "sip:alice@example.com";
/// tracing::info!(to = %Pii::uri(uri), "dialing");
/// assert_eq!(Pii::uri(uri).to_string(), "sip:***ce@example.com");
/// assert_eq!(format!("{:?}", Pii::number("+4930123456767")), "+49*********67");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pii<T> {
    kind: PiiKind,
    value: T,
}

impl<T> Pii<T> {
    /// `value` of the given kind.
    pub const fn new(kind: PiiKind, value: T) -> Self {
        Self { kind, value }
    }

    /// A phone number or extension.
    pub const fn number(value: T) -> Self {
        Self::new(PiiKind::Number, value)
    }

    /// A SIP URI (or tel URI).
    pub const fn sip_uri(value: T) -> Self {
        Self::new(PiiKind::Uri, value)
    }

    /// Any URI or URL.
    pub const fn uri(value: T) -> Self {
        Self::new(PiiKind::Uri, value)
    }

    /// A display name.
    pub const fn name(value: T) -> Self {
        Self::new(PiiKind::Name, value)
    }

    /// A name and address (`"Alice" <sip:alice@example.com>`), such as a
    /// [`Identity`](crate::Identity).
    pub const fn name_addr(value: T) -> Self {
        Self::new(PiiKind::NameAddr, value)
    }

    /// An IP address or socket address.
    pub const fn ip(value: T) -> Self {
        Self::new(PiiKind::Ip, value)
    }

    /// Any other personal text (a contact field, an e-mail address, a note).
    pub const fn text(value: T) -> Self {
        Self::new(PiiKind::Text, value)
    }

    /// The kind, which decides the masking.
    pub const fn kind(&self) -> PiiKind {
        self.kind
    }

    /// The unmasked value.
    pub const fn inner(&self) -> &T {
        &self.value
    }

    /// The unmasked value.
    pub fn into_inner(self) -> T {
        self.value
    }
}

impl<T: fmt::Display> fmt::Display for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if logs_personal_data() {
            return self.value.fmt(f);
        }
        if self.kind == PiiKind::Text {
            return f.write_str(MASK);
        }
        f.write_str(&self.kind.mask(&self.value.to_string()))
    }
}

impl<T: fmt::Display> fmt::Debug for Pii<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// What masked text shows.
pub(crate) const MASK: &str = "***";

/// `*` for all but the last two characters; all `*` when the value is
/// shorter than five characters (the last two would give most of it away).
pub(crate) fn mask_keep_tail(text: &str, out: &mut String) {
    let count = text.chars().count();
    if count < 5 {
        // At least three stars, so a short value does not show its length.
        let stars = if count == 0 { 0 } else { count.max(3) };
        out.extend(std::iter::repeat_n('*', stars));
        return;
    }
    out.extend(std::iter::repeat_n('*', count - 2));
    out.extend(text.chars().skip(count - 2));
}

/// A number masked digit by digit, separators kept: an international
/// number keeps `+` and two digits (the country code, or its start) and the
/// last two; anything else keeps the last two digits (none under five).
pub(crate) fn mask_number(text: &str, out: &mut String) {
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    let international = text.trim_start().starts_with('+');
    let keep_head = if international && digits >= 8 { 2 } else { 0 };
    let keep_tail = if digits >= 5 { 2 } else { 0 };
    let mut seen = 0;
    for c in text.chars() {
        if c.is_ascii_digit() {
            seen += 1;
            if seen <= keep_head || seen > digits - keep_tail {
                out.push(c);
            } else {
                out.push('*');
            }
        } else if c.is_alphanumeric() {
            out.push('*');
        } else {
            out.push(c);
        }
    }
}

/// A user part: numbers as numbers, names keep their last two characters.
pub(crate) fn mask_user(user: &str, out: &mut String) {
    let looks_like_number = !user.is_empty()
        && user
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'(' | b')'));
    if looks_like_number {
        mask_number(user, out);
    } else {
        mask_keep_tail(user, out);
    }
}

/// Initials of up to three words (`A. S.`), or `***` when there are none.
pub(crate) fn mask_name(text: &str, out: &mut String) {
    let initials: Vec<char> = text
        .split_whitespace()
        .filter_map(|word| word.chars().find(|c| c.is_alphabetic()))
        .take(3)
        .collect();
    if initials.is_empty() || text.bytes().any(|b| b.is_ascii_digit()) {
        out.push_str(MASK);
        return;
    }
    for (i, c) in initials.iter().enumerate() {
        if i > 0 {
            out.push(' ');
        }
        out.extend(c.to_uppercase());
        out.push('.');
    }
}

/// Whether an address is nobody's: loopback and unspecified stay readable.
pub(crate) fn is_impersonal(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

pub(crate) fn mask_ipv4(ip: Ipv4Addr, out: &mut String) {
    if is_impersonal(IpAddr::V4(ip)) {
        let _ = write!(out, "{ip}");
        return;
    }
    let [a, b, _, _] = ip.octets();
    let _ = write!(out, "{a}.{b}.*.*");
}

pub(crate) fn mask_ipv6(ip: Ipv6Addr, out: &mut String) {
    if is_impersonal(IpAddr::V6(ip)) {
        let _ = write!(out, "{ip}");
        return;
    }
    let segments = ip.segments();
    let _ = write!(out, "{:x}:{:x}:*", segments[0], segments[1]);
}

fn mask_ip_text(text: &str, out: &mut String) {
    if !mask_address(text.trim(), out) {
        out.push_str(MASK);
    }
}

/// Writes `text` masked and returns true when it is an IP address, a
/// socket address or a bracketed IPv6 address; else writes nothing.
fn mask_address(text: &str, out: &mut String) -> bool {
    if let Ok(ip) = text.parse::<IpAddr>() {
        match ip {
            IpAddr::V4(v4) => mask_ipv4(v4, out),
            IpAddr::V6(v6) => mask_ipv6(v6, out),
        }
    } else if let Ok(addr) = text.parse::<SocketAddr>() {
        match addr {
            SocketAddr::V4(v4) => mask_ipv4(*v4.ip(), out),
            SocketAddr::V6(v6) => {
                out.push('[');
                mask_ipv6(*v6.ip(), out);
                out.push(']');
            }
        }
        let _ = write!(out, ":{}", addr.port());
    } else if let Some(v6) = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|t| t.parse::<Ipv6Addr>().ok())
    {
        out.push('[');
        mask_ipv6(v6, out);
        out.push(']');
    } else {
        return false;
    }
    true
}

/// A host (or `host:port`) of a URI: an IP masked, a name kept.
fn mask_host(host: &str, out: &mut String) {
    if !mask_address(host, out) {
        out.push_str(host);
    }
}

/// Splits `scheme:` off when the text starts with one.
fn split_scheme(text: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = text.split_once(':')?;
    let valid = !scheme.is_empty()
        && scheme.as_bytes()[0].is_ascii_alphabetic()
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    valid.then_some((scheme, rest))
}

pub(crate) fn mask_uri(text: &str, out: &mut String) {
    let text = text.trim();
    if text.contains('<') {
        mask_name_addr(text, out);
        return;
    }
    let Some((scheme, rest)) = split_scheme(text) else {
        // Not a URI: an e-mail address or a bare user part.
        match text.rsplit_once('@') {
            Some((user, host)) => {
                mask_user(user, out);
                out.push('@');
                mask_host(host, out);
            }
            None => mask_user(text, out),
        }
        return;
    };
    out.push_str(scheme);
    out.push(':');
    let lower = scheme.to_ascii_lowercase();
    if lower == "tel" {
        let (number, params) = rest.split_at(rest.find(';').unwrap_or(rest.len()));
        mask_number(number, out);
        out.push_str(&redact_secrets(params));
    } else if let Some(rest) = rest.strip_prefix("//") {
        out.push_str("//");
        mask_url_rest(rest, out);
    } else {
        mask_sip_rest(rest, out);
    }
}

/// After `sip:`: `user[:password]@host[:port][;params][?headers]`. The
/// user part may hold `;` (a telephone-subscriber's parameters, RFC 3261
/// §19.1.6) but no `@`, so the `@` before the headers ends it.
fn mask_sip_rest(rest: &str, out: &mut String) {
    let before_headers = rest.find('?').unwrap_or(rest.len());
    let after_user = match rest[..before_headers].rfind('@') {
        Some(at) => {
            let userinfo = &rest[..at];
            let user = userinfo.split(':').next().unwrap_or(userinfo);
            mask_user(user, out);
            if userinfo.len() > user.len() {
                out.push_str(":***");
            }
            out.push('@');
            &rest[at + 1..]
        }
        None => rest,
    };
    let end_of_host = after_user.find([';', '?']).unwrap_or(after_user.len());
    let (host, tail) = after_user.split_at(end_of_host);
    mask_host(host, out);
    let (params, headers) = tail.split_at(tail.find('?').unwrap_or(tail.len()));
    out.push_str(&redact_secrets(params));
    if !headers.is_empty() {
        out.push_str("?***");
    }
}

/// After `scheme://`: userinfo masked, host kept (IP masked), path and query hidden.
fn mask_url_rest(rest: &str, out: &mut String) {
    let end_of_authority = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end_of_authority);
    let host = match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or(userinfo);
            mask_user(user, out);
            if userinfo.len() > user.len() {
                out.push_str(":***");
            }
            out.push('@');
            host
        }
        None => authority,
    };
    mask_host(host, out);
    if tail.len() > 1 {
        out.push_str("/***");
    } else {
        out.push_str(tail);
    }
}

/// `"Name" <uri>;params` or `Name <uri>`; without angle brackets, a URI.
pub(crate) fn mask_name_addr(text: &str, out: &mut String) {
    let Some(open) = text.find('<') else {
        mask_uri(text, out);
        return;
    };
    let close = text[open..].find('>').map_or(text.len(), |i| open + i);
    let name = text[..open].trim();
    if !name.is_empty() {
        let unquoted = name.trim_matches('"');
        if name.starts_with('"') {
            out.push('"');
            mask_name(unquoted, out);
            out.push_str("\" ");
        } else {
            mask_name(unquoted, out);
            out.push(' ');
        }
    }
    out.push('<');
    mask_uri(&text[open + 1..close], out);
    if close < text.len() {
        out.push('>');
        out.push_str(&redact_secrets(&text[close + 1..]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked<T: fmt::Display>(pii: Pii<T>) -> String {
        pii.to_string()
    }

    #[test]
    fn numbers_keep_country_code_and_last_two_digits() {
        assert_eq!(masked(Pii::number("+4930123456767")), "+49*********67");
        assert_eq!(masked(Pii::number("+49301234567")), "+49*******67");
        assert_eq!(masked(Pii::number("0301234567")), "********67");
        assert_eq!(masked(Pii::number("030 123 45 67")), "*** *** ** 67");
        assert_eq!(masked(Pii::number("1234")), "****");
        assert_eq!(masked(Pii::number(12_345_678_u64)), "******78");
    }

    #[test]
    fn sip_uris_mask_the_user_part_and_drop_passwords() {
        assert_eq!(
            masked(Pii::sip_uri("sip:123467@example.com")),
            "sip:****67@example.com"
        );
        assert_eq!(
            masked(Pii::sip_uri("sips:alice.smith@example.com;transport=tls")),
            "sips:*********th@example.com;transport=tls"
        );
        assert_eq!(
            masked(Pii::sip_uri("sip:alice:hunter2@192.168.1.20:5060")),
            "sip:***ce:***@192.168.*.*:5060"
        );
        assert_eq!(
            masked(Pii::sip_uri("tel:+4930123456767;phone-context=x")),
            "tel:+49*********67;phone-context=x"
        );
        // A number's own parameters sit in the user part, before the `@`.
        let with_params = masked(Pii::sip_uri(
            "sip:+358-555-1234567;postd=pp22@foo.com;user=phone",
        ));
        assert!(!with_params.contains("1234567"), "{with_params}");
        assert!(
            with_params.ends_with("@foo.com;user=phone"),
            "{with_params}"
        );
        assert_eq!(
            masked(Pii::uri(
                "https://bob:pw@pbx.example.com/prov/bob.xml?mac=1"
            )),
            "https://***:***@pbx.example.com/***"
        );
        assert_eq!(
            masked(Pii::uri("sip:pbx.example.com")),
            "sip:pbx.example.com"
        );
    }

    #[test]
    fn names_become_initials() {
        assert_eq!(masked(Pii::name("Alice Smith")), "A. S.");
        assert_eq!(masked(Pii::name("émile zola")), "É. Z.");
        assert_eq!(masked(Pii::name("0301234567")), "***");
        assert_eq!(masked(Pii::name("")), "***");
        assert_eq!(
            masked(Pii::name_addr(
                "\"Alice Smith\" <sip:alice@example.com>;tag=1"
            )),
            "\"A. S.\" <sip:***ce@example.com>;tag=1"
        );
    }

    #[test]
    fn ip_addresses_mask_the_host_part() {
        assert_eq!(masked(Pii::ip("192.168.10.7")), "192.168.*.*");
        assert_eq!(masked(Pii::ip("192.168.10.7:5060")), "192.168.*.*:5060");
        let v6: IpAddr = "2001:db8:85a3::8a2e:370:7334".parse().unwrap();
        assert_eq!(masked(Pii::ip(v6)), "2001:db8:*");
        assert_eq!(masked(Pii::ip("[2001:db8::1]:5061")), "[2001:db8:*]:5061");
        assert_eq!(masked(Pii::ip("127.0.0.1")), "127.0.0.1");
        assert_eq!(masked(Pii::ip("not an address")), "***");
    }

    #[test]
    fn text_is_fully_masked() {
        assert_eq!(masked(Pii::text("alice@example.com")), "***");
        assert_eq!(format!("{:?}", Pii::text("Main Street 1")), "***");
    }
}
