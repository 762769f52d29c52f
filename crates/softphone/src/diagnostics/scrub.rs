//! The safety net under every log line: personal data that a log statement
//! forgot to wrap in [`Pii`](super::Pii) is masked by pattern, and secrets are
//! removed.

use std::borrow::Cow;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::edit::{Edits, after_separator, ident_before, is_ident, is_word, value_span};
use super::pii::{
    MASK, is_impersonal, logs_personal_data, mask_ipv4, mask_ipv6, mask_name, mask_number,
    mask_user,
};
use super::secrets::redact_secrets;

/// Fields and header names whose numbers are not personal: a run of digits
/// right after `name=` or `name: ` is left alone.
const IMPERSONAL_NUMBER_FIELDS: &[&str] = &[
    "port",
    "local_port",
    "remote_port",
    "rtp_port",
    "size",
    "len",
    "length",
    "bytes",
    "content-length",
    "l",
    "cseq",
    "seq",
    "ssrc",
    "ts",
    "timestamp",
    "expires",
    "max-forwards",
    "pid",
    "elapsed",
    "elapsed_ms",
    "duration_ms",
    "ms",
    "us",
    "limit",
    "count",
    "packets",
    "lost",
    "line",
    "status",
];

/// Header and field names whose value may carry a display name before a
/// `<uri>`.
const NAME_ADDR_FIELDS: &[&str] = &[
    "from",
    "to",
    "contact",
    "f",
    "t",
    "m",
    "p-asserted-identity",
    "p-preferred-identity",
    "remote-party-id",
    "referred-by",
    "refer-to",
    "diversion",
    "reply-to",
    "caller",
    "callee",
    "remote",
    "peer",
    "identity",
    "party",
    "target",
];

/// Fields whose value is a person's name.
const NAME_FIELDS: &[&str] = &[
    "display_name",
    "display-name",
    "displayname",
    "caller_name",
    "callee_name",
    "contact_name",
    "full_name",
    "first_name",
    "last_name",
    "given_name",
    "family_name",
    "surname",
    "nickname",
];

/// One log line (or several) as it may be written: secrets are always
/// removed; personal data is masked unless personal-data logging is on
/// ([`set_log_personal_data`](super::set_log_personal_data)).
///
/// ```
/// use softphone::diagnostics::scrub;
///
/// let line = "INFO call from \"Alice Smith\" <sip:alice@example.com> at 203.0.113.9, cb 0301234567";
/// assert_eq!(
///     scrub(line),
///     "INFO call from \"A. S.\" <sip:***ce@example.com> at 203.0.*.*, cb ********67"
/// );
/// ```
#[must_use]
pub fn scrub(text: &str) -> Cow<'_, str> {
    let redacted = redact_secrets(text);
    if logs_personal_data() {
        return redacted;
    }
    match redacted {
        Cow::Borrowed(text) => mask_personal_data(text),
        Cow::Owned(text) => Cow::Owned(mask_personal_data(&text).into_owned()),
    }
}

/// Masks personal data in free text by pattern, whatever the switch says
/// (exports and crash reports use this):
///
/// - the user part of anything before an `@` (SIP URIs, e-mail addresses);
/// - runs of five or more digits that look like a phone number (`+`, spaces,
///   `-`, `/` and parentheses between groups), except after a field such as
///   `port=` or `cseq=`; international numbers keep `+` and two digits, all
///   keep their last two;
/// - IPv4 addresses (the last two octets) and IPv6 addresses (all but the
///   first two groups); loopback and unspecified addresses stay;
/// - display names before a `<sip:`, `<sips:` or `<tel:` URI, quoted
///   anywhere or unquoted in From, To, Contact and similar fields, and the
///   values of name fields (`display_name=`);
///
/// Secrets are not its job: see [`redact_secrets`](super::redact_secrets).
#[must_use]
pub fn mask_personal_data(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut edits = Edits::new();
    let mut at = 0;
    while at < bytes.len() {
        let b = bytes[at];
        if b.is_ascii_alphabetic() || b == b'_' {
            // A word: maybe a name field or an IPv6 address; digits glued to
            // its letters are never a number, so skip it whole.
            if at == 0 || !is_ident(bytes[at - 1]) {
                name_field_at(text, at, &mut edits);
            }
            if b.is_ascii_hexdigit()
                && let Some(end) = address_or_number_at(text, at, &mut edits)
            {
                at = end;
                continue;
            }
            at += 1;
            while at < bytes.len() && is_word(bytes[at]) {
                at += 1;
            }
            continue;
        }
        at = match b {
            b'@' => {
                user_part_before(text, at, &mut edits);
                at + 1
            }
            b'<' => {
                display_name_before(text, at, &mut edits);
                at + 1
            }
            b'0'..=b'9' | b':' | b'+' | b'(' => {
                address_or_number_at(text, at, &mut edits).unwrap_or(at + 1)
            }
            _ => at + 1,
        };
    }
    edits.apply(text)
}

/// At a candidate start: an IPv4 address, an IPv6 address or a phone
/// number. Returns where scanning goes on when one was found.
fn address_or_number_at(text: &str, at: usize, edits: &mut Edits) -> Option<usize> {
    let bytes = text.as_bytes();
    let prev = at.checked_sub(1).map(|i| bytes[i]);
    let after_word = prev.is_some_and(|p| is_word(p) || p == b'.');
    if bytes[at].is_ascii_digit()
        && !after_word
        && let Some(end) = ipv4_at(text, at, edits)
    {
        return Some(end);
    }
    if (bytes[at].is_ascii_hexdigit() || bytes[at] == b':')
        && !after_word
        && prev != Some(b':')
        && let Some(end) = ipv6_at(text, at, edits)
    {
        return Some(end);
    }
    let starts_number = bytes[at].is_ascii_digit() || matches!(bytes[at], b'+' | b'(');
    if starts_number && !after_word && prev != Some(b'+') {
        return number_at(text, at, edits);
    }
    None
}

fn ipv4_at(text: &str, at: usize, edits: &mut Edits) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut end = at;
    while end < bytes.len() && (bytes[end].is_ascii_digit() || bytes[end] == b'.') && end - at < 15
    {
        end += 1;
    }
    while end > at && bytes[end - 1] == b'.' {
        end -= 1;
    }
    let ip: Ipv4Addr = text[at..end].parse().ok()?;
    let next = bytes.get(end).copied();
    if next.is_some_and(is_word) {
        return None;
    }
    if !is_impersonal(IpAddr::V4(ip)) {
        let mut masked = String::new();
        mask_ipv4(ip, &mut masked);
        edits.push(at, end, masked);
    }
    Some(end)
}

fn ipv6_at(text: &str, at: usize, edits: &mut Edits) -> Option<usize> {
    let bytes = text.as_bytes();
    let mut end = at;
    let mut colons = 0;
    let mut digits = false;
    while end < bytes.len() && end - at < 45 {
        match bytes[end] {
            b':' => colons += 1,
            b'0'..=b'9' => digits = true,
            b'a'..=b'f' | b'A'..=b'F' | b'.' => {}
            _ => break,
        }
        end += 1;
    }
    // Module paths like `fec::dec` parse as addresses; real ones have digits.
    if colons < 2 || !digits || bytes.get(end).copied().is_some_and(is_word) {
        return None;
    }
    for _ in 0..3 {
        if let Ok(ip) = text[at..end].parse::<Ipv6Addr>() {
            if !is_impersonal(IpAddr::V6(ip)) {
                let mut masked = String::new();
                mask_ipv6(ip, &mut masked);
                edits.push(at, end, masked);
            }
            return Some(end);
        }
        if end > at && matches!(bytes[end - 1], b':' | b'.') {
            end -= 1;
        } else {
            return None;
        }
    }
    None
}

/// A phone-number-like run: at least five digits, groups joined by single
/// separators (dots too, when there are at least two, as in 212.555.0123),
/// not glued to letters, not a decimal fraction.
fn number_at(text: &str, at: usize, edits: &mut Edits) -> Option<usize> {
    let (mut end, mut digits, dots) = number_run(text.as_bytes(), at, true);
    if dots == 1 {
        // One dot: a decimal fraction, or a number ending a sentence.
        (end, digits, _) = number_run(text.as_bytes(), at, false);
    }
    number_found(text, at, end, digits, edits)
}

/// Where a number run from `at` ends, its digits and the dots joining its
/// groups (`dots`: whether a dot may join them).
fn number_run(bytes: &[u8], at: usize, dots: bool) -> (usize, usize, usize) {
    let mut pos = at;
    if bytes[pos] == b'+' {
        pos += 1;
    }
    let mut digits = 0;
    let mut dot_count = 0;
    let mut end = at;
    loop {
        match bytes.get(pos) {
            Some(b) if b.is_ascii_digit() => {
                digits += 1;
                pos += 1;
                end = pos;
            }
            Some(b'.')
                if dots
                    && digits > 0
                    && pos == end
                    && bytes.get(pos + 1).is_some_and(u8::is_ascii_digit) =>
            {
                dot_count += 1;
                pos += 1;
            }
            Some(b' ' | b'-' | b'/' | b'(' | b')') => {
                let mut sep = pos;
                while sep < bytes.len()
                    && sep - pos < 2
                    && matches!(bytes[sep], b' ' | b'-' | b'/' | b'(' | b')')
                {
                    sep += 1;
                }
                let joins = bytes.get(sep).is_some_and(u8::is_ascii_digit)
                    && (digits > 0 || bytes[at] == b'(' || bytes[at] == b'+');
                if !joins {
                    break;
                }
                pos = sep;
            }
            _ => break,
        }
    }
    (end, digits, dot_count)
}

/// Masks the number run `at..end` of `digits` digits found by
/// [`number_run`], unless it is too short, glued to a word or a field
/// that holds no personal number.
fn number_found(
    text: &str,
    at: usize,
    end: usize,
    digits: usize,
    edits: &mut Edits,
) -> Option<usize> {
    let bytes = text.as_bytes();
    if digits < 5 {
        return None;
    }
    let glued = bytes.get(end).copied().is_some_and(is_word)
        || (bytes.get(end) == Some(&b'.') && bytes.get(end + 1).is_some_and(u8::is_ascii_digit));
    if glued || follows_impersonal_field(text, at) {
        return Some(end);
    }
    let mut masked = String::new();
    mask_number(&text[at..end], &mut masked);
    edits.push(at, end, masked);
    Some(end)
}

/// Whether `name=` or `name: ` with an impersonal name comes right before.
fn follows_impersonal_field(text: &str, at: usize) -> bool {
    let bytes = text.as_bytes();
    let mut pos = at;
    while pos > 0 && bytes[pos - 1] == b' ' {
        pos -= 1;
    }
    if pos == 0 || !matches!(bytes[pos - 1], b'=' | b':') {
        return false;
    }
    let name = ident_before(text, pos - 1);
    IMPERSONAL_NUMBER_FIELDS
        .iter()
        .any(|f| name.eq_ignore_ascii_case(f))
}

/// The user part before an `@` followed by a host.
fn user_part_before(text: &str, at: usize, edits: &mut Edits) {
    let bytes = text.as_bytes();
    let host_follows = bytes
        .get(at + 1)
        .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'[');
    if !host_follows {
        return;
    }
    let start = user_chars_before(bytes, at);
    // `scheme:user:password@`: what stands before `@` is the password, and
    // the user comes before it.
    if start > 0 && bytes[start - 1] == b':' {
        let user_start = user_chars_before(bytes, start - 1);
        // A scheme starts with a letter (RFC 3986 §3.1): `1:0:*@` is a
        // masked IPv6 address, not `scheme:user:password@`.
        let after_scheme = user_start > 0
            && match bytes[user_start - 1] {
                b'/' => true,
                b':' => {
                    let mut scheme = user_start - 1;
                    while scheme > 0
                        && (bytes[scheme - 1].is_ascii_alphanumeric()
                            || matches!(bytes[scheme - 1], b'+' | b'-' | b'.'))
                    {
                        scheme -= 1;
                    }
                    scheme < user_start - 1 && bytes[scheme].is_ascii_alphabetic()
                }
                _ => false,
            };
        if after_scheme && user_start < start - 1 {
            if !bytes[start..at].iter().all(|b| *b == b'*') {
                edits.push(start, at, MASK);
            }
            mask_user_span(text, user_start, start - 1, edits);
            return;
        }
    }
    mask_user_span(text, start, at, edits);
}

/// Where the run of user-part characters ending at `end` starts.
fn user_chars_before(bytes: &[u8], end: usize) -> usize {
    let mut start = end;
    while start > 0
        && (bytes[start - 1].is_ascii_alphanumeric()
            || matches!(
                bytes[start - 1],
                b'-' | b'_' | b'.' | b'!' | b'~' | b'*' | b'%' | b'+'
            ))
    {
        start -= 1;
    }
    start
}

fn mask_user_span(text: &str, start: usize, at: usize, edits: &mut Edits) {
    let user = &text[start..at];
    // A `*` means it was masked already (masking twice changes nothing).
    if user.is_empty() || user.contains('*') {
        return;
    }
    let mut masked = String::new();
    mask_user(user, &mut masked);
    if masked != user {
        edits.push(start, at, masked);
    }
}

/// The display name before `<sip:`, `<sips:` or `<tel:`.
fn display_name_before(text: &str, at: usize, edits: &mut Edits) {
    let bytes = text.as_bytes();
    let rest = &bytes[at + 1..];
    let uri_follows = [&b"sip:"[..], b"sips:", b"tel:"]
        .iter()
        .any(|s| rest.len() >= s.len() && rest[..s.len()].eq_ignore_ascii_case(s));
    if !uri_follows {
        return;
    }
    let mut end = at;
    while end > 0 && bytes[end - 1] == b' ' {
        end -= 1;
    }
    if end == 0 {
        return;
    }
    let (start, stop) = if bytes[end - 1] == b'"' {
        let escaped = end >= 2 && bytes[end - 2] == b'\\';
        let stop = if escaped { end - 2 } else { end - 1 };
        let Some(open) = text[..stop].rfind('"') else {
            return;
        };
        (open + 1, stop)
    } else {
        // Unquoted: only in a From/To/Contact-like field.
        let mut start = end;
        while start > 0
            && (bytes[start - 1].is_ascii_alphanumeric()
                || bytes[start - 1] >= 0x80
                || matches!(bytes[start - 1], b' ' | b'.' | b'-' | b'\''))
        {
            start -= 1;
        }
        if start == 0 || !matches!(bytes[start - 1], b':' | b'=') {
            return;
        }
        let field = ident_before(text, start - 1);
        if !NAME_ADDR_FIELDS
            .iter()
            .any(|f| field.eq_ignore_ascii_case(f))
        {
            return;
        }
        while start < end && bytes[start] == b' ' {
            start += 1;
        }
        (start, end)
    };
    let name = &text[start..stop];
    let name = name.strip_suffix('\\').unwrap_or(name);
    if name.is_empty() {
        return;
    }
    let mut masked = String::new();
    mask_name(name, &mut masked);
    if masked != name {
        edits.push(start, start + name.len(), masked);
    }
}

/// `display_name=...`, `display_name: Some("...")`: the value. An unquoted
/// value runs to the next `field=` or the end of the line.
fn name_field_at(text: &str, at: usize, edits: &mut Edits) {
    let bytes = text.as_bytes();
    let mut end = at;
    while end < bytes.len() && is_ident(bytes[end]) {
        end += 1;
    }
    let Some(value) = after_separator(bytes, end) else {
        return;
    };
    let ident = &text[at..end];
    if !NAME_FIELDS.iter().any(|f| ident.eq_ignore_ascii_case(f)) {
        return;
    }
    let quoted = matches!(bytes.get(value), Some(b'"' | b'\'' | b'\\'));
    let span = if quoted {
        value_span(bytes, value)
    } else {
        let mut stop = value;
        while stop < bytes.len() && !matches!(bytes[stop], b'\r' | b'\n' | b',' | b'}' | b')') {
            if bytes[stop] == b' ' && next_is_field(bytes, stop + 1) {
                break;
            }
            stop += 1;
        }
        (stop > value).then_some((value, stop))
    };
    if let Some((start, stop)) = span {
        let name = &text[start..stop];
        if name == "None" || name == MASK {
            return;
        }
        let mut masked = String::new();
        mask_name(name, &mut masked);
        edits.push(start, stop, masked);
    }
}

/// Whether `name=` starts at `at`.
fn next_is_field(bytes: &[u8], at: usize) -> bool {
    let mut end = at;
    while end < bytes.len() && is_ident(bytes[end]) {
        end += 1;
    }
    end > at && bytes.get(end) == Some(&b'=')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(text: &str) -> String {
        mask_personal_data(text).into_owned()
    }

    #[test]
    fn sip_uri_user_parts_and_email_addresses_are_masked() {
        assert_eq!(
            mask("dialing sip:0301234567@pbx.example.com;user=phone"),
            "dialing sip:********67@pbx.example.com;user=phone"
        );
        assert_eq!(
            mask("To: <sips:alice.smith@example.com>"),
            "To: <sips:*********th@example.com>"
        );
        assert_eq!(
            mask("mail bob.jones@example.org"),
            "mail *******es@example.org"
        );
    }

    #[test]
    fn phone_numbers_are_masked_but_not_other_numbers() {
        assert_eq!(mask("callback +49 30 1234567"), "callback +49 ** *****67");
        assert_eq!(mask("number=(030) 123-4567"), "number=(***) ***-**67");
        assert_eq!(mask("tel:+4930123456767"), "tel:+49*********67");
        // Groups joined by dots, as numbers are written in the US and France.
        assert_eq!(mask("cb 212.555.0123"), "cb ***.***.**23");
        assert_eq!(mask("tel 01.23.45.67.89"), "tel **.**.**.**.89");
        let international = mask("cb +1.212.555.0123 now");
        assert!(!international.contains("555"), "{international}");
        assert!(international.ends_with("23 now"), "{international}");
        // Short numbers, fractions, timestamps, hex ids, allowed fields.
        for kept in [
            "2026-11-26T10:20:30.123456Z  INFO call-3 answered",
            "expires=3600 size=1500 mos=4.41 jitter=12.345678",
            "branch=z9hG4bK776asdhds tag=a84b4c76e66710",
            "rtp port=50000 ssrc=2864434397 cseq: 102345",
            "took 12345.678 ms, version 1.95.0, v3.20.100",
        ] {
            assert_eq!(mask(kept), kept);
        }
    }

    #[test]
    fn ip_addresses_are_masked() {
        assert_eq!(
            mask("send failed to=203.0.113.25:5060 error=refused"),
            "send failed to=203.0.*.*:5060 error=refused"
        );
        assert_eq!(
            mask("Via: SIP/2.0/UDP [2001:db8:85a3::8a2e:370:7334]:5060;branch=z9"),
            "Via: SIP/2.0/UDP [2001:db8:*]:5060;branch=z9"
        );
        assert_eq!(mask("from fe80::1c2d:3e4f%eth0"), "from fe80:0:*%eth0");
        assert_eq!(
            mask("bound 127.0.0.1:5060 and [::1]:5061"),
            "bound 127.0.0.1:5060 and [::1]:5061"
        );
        // Not addresses.
        for kept in [
            "softphone::engine: ok",
            "at 10:20:30",
            "mac aa:bb:cc:dd:ee:ff",
            "v1.2.3.4.5",
        ] {
            assert_eq!(mask(kept), kept);
        }
    }

    #[test]
    fn display_names_in_from_to_contact_are_masked() {
        let message = "From: \"Alice Smith\" <sip:alice@example.com>;tag=1\r\n\
                       To: Bob Jones <sip:bob@example.com>\r\n\
                       Contact: <sip:alice@192.0.2.4:5060>\r\n";
        assert_eq!(
            mask(message),
            "From: \"A. S.\" <sip:***ce@example.com>;tag=1\r\n\
             To: B. J. <sip:***@example.com>\r\n\
             Contact: <sip:***ce@192.0.*.*:5060>\r\n"
        );
        // As `?identity` prints an event's identity.
        assert_eq!(
            mask(
                r#"caller=Identity { uri: "sip:alice@example.com", display_name: Some("Alice Smith") }"#
            ),
            r#"caller=Identity { uri: "sip:***ce@example.com", display_name: Some("A. S.") }"#
        );
        assert_eq!(
            mask(r#"msg="INVITE\r\nFrom: \"Alice Smith\" <sip:alice@x.org>""#),
            r#"msg="INVITE\r\nFrom: \"A. S.\" <sip:***ce@x.org>""#
        );
        assert_eq!(
            mask("display_name=Alice Smith call=call-1"),
            "display_name=A. S. call=call-1"
        );
    }

    #[test]
    fn masking_is_idempotent() {
        let line = "From: \"Alice Smith\" <sip:0301234567@203.0.113.7> +4930123456767";
        let once = mask(line);
        assert_eq!(mask(&once), once);
    }

    #[test]
    fn clean_lines_are_not_copied() {
        let line = "2026-11-26T10:20:30.123456Z DEBUG softphone::engine: state changed call=call-1";
        assert!(matches!(mask_personal_data(line), Cow::Borrowed(_)));
    }
}
