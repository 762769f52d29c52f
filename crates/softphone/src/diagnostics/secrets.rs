//! Removing secrets from free text: they never reach a log, an export or a
//! crash report, whatever the personal-data switch says.

use std::borrow::Cow;

use super::edit::{
    Edits, after_separator, is_ident, line_end, skip_option, skip_spaces, value_span,
};

/// Parameter and field names whose value is a secret wherever they appear
/// (compared case-insensitively): digest parameters, push tokens.
const SECRET_NAMES: &[&str] = &["nonce", "cnonce", "response", "pn-prid", "pwd", "passwd"];

/// Name endings that mark a secret (`password`, `client_secret`,
/// `access_token`, `x-api-key`, ...).
const SECRET_SUFFIXES: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "api_key",
    "api-key",
    "credentials",
];

/// `text` with its secrets replaced by `***`:
///
/// - the values of `Authorization` and `Proxy-Authorization` header fields
///   (and fields or tuples named so), keeping the scheme (`Digest ***`);
/// - `Bearer` tokens;
/// - the values of parameters and fields named like a secret (`password=`,
///   `"client_secret":`, `access_token=`, `pn-prid=`) and of the digest
///   parameters `nonce`, `cnonce` and `response`;
/// - the password of a URI (`sip:alice:pw@host`, `https://u:pw@host`).
///
/// It is meant for free text such as a SIP message logged at trace level;
/// text without secrets is returned as it is, without copying.
///
/// ```
/// use softphone::diagnostics::redact_secrets;
///
/// let message = "REGISTER sip:pbx.example.com SIP/2.0\r\n\
///     Authorization: Digest username=\"alice\", nonce=\"84f1c1ae6cbe\", response=\"b9c3a3e0\"\r\n\
///     Contact: <sip:alice@192.0.2.4>;pn-prid=fcm-token-123\r\n";
/// let clean = redact_secrets(message);
/// assert!(clean.contains("Authorization: Digest ***\r\n"));
/// assert!(clean.contains(";pn-prid=***"));
/// assert!(!clean.contains("84f1c1ae6cbe") && !clean.contains("b9c3a3e0"));
/// ```
#[must_use]
pub fn redact_secrets(text: &str) -> Cow<'_, str> {
    let bytes = text.as_bytes();
    let mut edits = Edits::new();
    let mut at = 0;
    while at < bytes.len() {
        if !is_ident(bytes[at]) || (at > 0 && is_ident(bytes[at - 1])) {
            at += 1;
            continue;
        }
        let mut end = at;
        while end < bytes.len() && is_ident(bytes[end]) {
            end += 1;
        }
        let ident = &text[at..end];
        // Most words are not followed by a separator: skip the name checks.
        let separated = matches!(
            bytes.get(skip_spaces(
                bytes,
                end + usize::from(matches!(bytes.get(end), Some(b'"' | b'\'' | b'\\')))
            )),
            Some(b'=' | b':' | b',' | b'"')
        );
        if !separated && !ident.eq_ignore_ascii_case("bearer") {
            at = end;
            continue;
        }
        if ends_with_ignore_case(ident, "authorization") {
            authorization_value(bytes, end, &mut edits);
        } else if ident.eq_ignore_ascii_case("bearer") {
            bearer_token(bytes, end, &mut edits);
        } else if is_secret_name(ident) {
            if let Some((start, stop)) =
                after_separator(bytes, end).and_then(|v| value_span(bytes, v))
            {
                // `user:password@host` with a user named like a secret: the
                // value ends at the `@`, so the host stays and the user part
                // can still be found and masked.
                let stop = if bytes.get(end) == Some(&b':') {
                    bytes[start..stop]
                        .iter()
                        .position(|b| *b == b'@')
                        .map_or(stop, |i| start + i)
                } else {
                    stop
                };
                edits.push(start, stop, "***");
            }
        } else if bytes.get(end) == Some(&b':') {
            uri_password(bytes, ident, end + 1, &mut edits);
        }
        at = end;
    }
    edits.apply(text)
}

fn ends_with_ignore_case(text: &str, suffix: &str) -> bool {
    text.len() >= suffix.len()
        && text.as_bytes()[text.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
}

fn is_secret_name(ident: &str) -> bool {
    SECRET_NAMES.iter().any(|n| ident.eq_ignore_ascii_case(n))
        || SECRET_SUFFIXES
            .iter()
            .any(|s| ends_with_ignore_case(ident, s))
}

/// The value after `Authorization` (`: v`, `=v`, `", "v"` in a tuple) up to
/// the end of the line or its closing quote; the scheme word stays.
fn authorization_value(bytes: &[u8], end: usize, edits: &mut Edits) {
    let mut at = end;
    if bytes.get(at) == Some(&b'\\') && bytes.get(at + 1) == Some(&b'"') {
        at += 2;
    } else if matches!(bytes.get(at), Some(b'"' | b'\'')) {
        at += 1;
    }
    at = skip_spaces(bytes, at);
    match bytes.get(at) {
        Some(b':' | b'=' | b',') => at = skip_option(bytes, skip_spaces(bytes, at + 1)),
        _ => return,
    }
    let (start, stop) = match bytes.get(at) {
        Some(b'"' | b'\'') => quoted_span(bytes, at, 1, bytes[at]),
        Some(b'\\') if bytes.get(at + 1) == Some(&b'"') => quoted_span(bytes, at, 2, b'"'),
        _ => (at, line_end(bytes, at)),
    };
    if stop <= start {
        return;
    }
    // Keep the scheme (`Digest`, `Basic`, `Bearer`) when a value follows it.
    let mut scheme_end = start;
    while scheme_end < stop && bytes[scheme_end].is_ascii_alphabetic() {
        scheme_end += 1;
    }
    let keep = if scheme_end > start && scheme_end < stop && bytes[scheme_end] == b' ' {
        scheme_end + 1
    } else {
        start
    };
    edits.push(keep, stop, "***");
}

/// A quoted value from `at` (its opening quote, `quote_len` bytes) up to
/// the closing quote, which may come after commas, or the end of the line.
fn quoted_span(bytes: &[u8], at: usize, quote_len: usize, quote: u8) -> (usize, usize) {
    let start = at + quote_len;
    let mut stop = start;
    while stop < bytes.len() && bytes[stop] != quote && !matches!(bytes[stop], b'\r' | b'\n') {
        if bytes[stop] == b'\\' && quote_len == 1 {
            stop += 1;
        }
        stop += 1;
    }
    let stop = stop.min(bytes.len());
    // An escaped closing quote leaves its backslash behind.
    if quote_len == 2 && stop > start && bytes[stop - 1] == b'\\' {
        (start, stop - 1)
    } else {
        (start, stop)
    }
}

/// The token after `Bearer `, unless `Bearer` is followed by a parameter
/// (`Bearer realm="x"` in a challenge).
fn bearer_token(bytes: &[u8], end: usize, edits: &mut Edits) {
    let start = skip_spaces(bytes, end);
    if start == end {
        return;
    }
    let mut stop = start;
    while stop < bytes.len()
        && (bytes[stop].is_ascii_alphanumeric()
            || matches!(bytes[stop], b'-' | b'.' | b'_' | b'~' | b'+' | b'/'))
    {
        stop += 1;
    }
    if bytes.get(stop) == Some(&b'=') && bytes.get(stop + 1) == Some(&b'"') {
        return;
    }
    while bytes.get(stop) == Some(&b'=') {
        stop += 1;
    }
    if stop - start >= 8 {
        edits.push(start, stop, "***");
    }
}

/// `scheme:user:password@` or `scheme://user:password@`: the password.
fn uri_password(bytes: &[u8], scheme: &str, mut at: usize, edits: &mut Edits) {
    let hierarchical = bytes.get(at) == Some(&b'/') && bytes.get(at + 1) == Some(&b'/');
    if hierarchical {
        at += 2;
    } else if !(scheme.eq_ignore_ascii_case("sip") || scheme.eq_ignore_ascii_case("sips")) {
        return;
    }
    let mut colon = None;
    let mut stop = at;
    while stop < bytes.len() {
        match bytes[stop] {
            b'@' => break,
            b':' if colon.is_none() => colon = Some(stop),
            b if b.is_ascii_whitespace()
                || matches!(
                    b,
                    b'/' | b'<'
                        | b'>'
                        | b'"'
                        | b'\''
                        | b';'
                        | b'?'
                        | b'#'
                        | b'['
                        | b']'
                        | b','
                        | b'\\'
                ) =>
            {
                return;
            }
            _ => {}
        }
        stop += 1;
    }
    if let Some(colon) = colon
        && stop < bytes.len()
    {
        edits.push(colon + 1, stop, "***");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn authorization_headers_of_a_full_sip_message_are_removed() {
        let message = "INVITE sip:bob@pbx.example.com SIP/2.0\r\n\
            Via: SIP/2.0/TLS 192.0.2.4:5061;branch=z9hG4bK776asdhds\r\n\
            From: \"Alice\" <sip:alice@pbx.example.com>;tag=1928301774\r\n\
            Authorization: Digest username=\"alice\", realm=\"pbx\", nonce=\"dcd98b7102dd2f0e8b11d0f600bfb0c093\", uri=\"sip:bob@pbx.example.com\", response=\"6629fae49393a05397450978507c4ef1\", algorithm=MD5, cnonce=\"0a4f113b\", qop=auth, nc=00000001\r\n\
            Proxy-Authorization: Digest username=\"alice\", response=\"e6f99bf4\"\r\n\
            Content-Length: 0\r\n\r\n";
        let clean = redact_secrets(message);
        assert!(
            clean.contains("\r\nAuthorization: Digest ***\r\n"),
            "{clean}"
        );
        assert!(
            clean.contains("\r\nProxy-Authorization: Digest ***\r\n"),
            "{clean}"
        );
        for secret in [
            "dcd98b7102dd",
            "6629fae4939",
            "0a4f113b",
            "e6f99bf4",
            "username",
        ] {
            assert!(!clean.contains(secret), "{secret} left in {clean}");
        }
        // Everything else is untouched.
        assert!(clean.contains("From: \"Alice\" <sip:alice@pbx.example.com>;tag=1928301774\r\n"));
        assert!(clean.ends_with("Content-Length: 0\r\n\r\n"));
    }

    #[test]
    fn digest_parameters_outside_authorization_are_removed() {
        let challenge =
            r#"WWW-Authenticate: Digest realm="pbx", nonce="abc123def456", opaque="x", qop="auth""#;
        assert_eq!(
            redact_secrets(challenge),
            r#"WWW-Authenticate: Digest realm="pbx", nonce="***", opaque="x", qop="auth""#
        );
        assert_eq!(
            redact_secrets("nc=1 response=9f8e7d6c"),
            "nc=1 response=***"
        );
    }

    #[test]
    fn escaped_messages_and_debug_tuples_are_covered() {
        // How `?message` prints a SIP message: one line with escapes.
        let debug = r#"msg="REGISTER sip:x SIP/2.0\r\nAuthorization: Basic YWxpY2U6c2VjcmV0\r\nCSeq: 1 REGISTER""#;
        let clean = redact_secrets(debug);
        assert!(!clean.contains("YWxpY2U6c2VjcmV0"), "{clean}");
        assert!(
            clean.contains(r"Authorization: Basic ***\r\nCSeq: 1 REGISTER"),
            "{clean}"
        );
        let tuple =
            r#"headers=[("Authorization", "Bearer eyJhbGciOi.abc.def"), ("Accept", "*/*")]"#;
        assert_eq!(
            redact_secrets(tuple),
            r#"headers=[("Authorization", "Bearer ***"), ("Accept", "*/*")]"#
        );
    }

    #[test]
    fn passwords_tokens_and_uri_passwords_are_removed() {
        assert_eq!(
            redact_secrets("login password=hunter2 user=alice"),
            "login password=*** user=alice"
        );
        assert_eq!(
            redact_secrets(r#"{"access_token": "ya29.a0Af", "expires_in": 3599}"#),
            r#"{"access_token": "***", "expires_in": 3599}"#
        );
        assert_eq!(
            redact_secrets("GET /cb?code=1&client_secret=s3cr3t&x=1"),
            "GET /cb?code=1&client_secret=***&x=1"
        );
        assert_eq!(
            redact_secrets("token sent: Bearer abcdefgh12345678"),
            "token sent: Bearer ***"
        );
        assert_eq!(
            redact_secrets("to sip:alice:hunter2@pbx.example.com and https://bob:pw@host/x"),
            "to sip:alice:***@pbx.example.com and https://bob:***@host/x"
        );
        assert_eq!(
            redact_secrets("Account { password: Some(\"hunter2\"), user: \"alice\" }"),
            "Account { password: Some(\"***\"), user: \"alice\" }"
        );
    }

    #[test]
    fn text_without_secrets_is_borrowed() {
        let line = "INFO softphone: call-1 answered, codec=PCMU sip:pbx.example.com:5060";
        assert!(matches!(redact_secrets(line), Cow::Borrowed(_)));
        assert!(matches!(
            redact_secrets("Bearer realm=\"api\""),
            Cow::Borrowed(_)
        ));
    }
}
