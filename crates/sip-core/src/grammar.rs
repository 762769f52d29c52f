//! RFC 3261 §25 building blocks as nom parsers over bytes.
//!
//! Every parser here takes `&str` and returns the rest; nothing allocates.
//! Character classes are lookup tables so the hot loops stay branch-light.

use std::borrow::Cow;

use nom::IResult;
use nom::error::ErrorKind;

/// Why a grammar rule failed, and at which remaining input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GrammarError<'a> {
    pub(crate) input: &'a str,
    pub(crate) expected: &'static str,
}

impl<'a> nom::error::ParseError<&'a str> for GrammarError<'a> {
    fn from_error_kind(input: &'a str, _kind: ErrorKind) -> Self {
        GrammarError {
            input,
            expected: "valid syntax",
        }
    }

    fn append(_input: &'a str, _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

pub(crate) type PResult<'a, O> = IResult<&'a str, O, GrammarError<'a>>;

/// A failure `offset` bytes into a header value or URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ValueError {
    pub(crate) offset: usize,
    pub(crate) expected: &'static str,
}

pub(crate) fn fail<'a, O>(input: &'a str, expected: &'static str) -> PResult<'a, O> {
    Err(nom::Err::Error(GrammarError { input, expected }))
}

/// Runs `parser` over all of `value` (trailing whitespace allowed) and maps a
/// failure to an offset within `value`.
pub(crate) fn complete<'a, O>(
    value: &'a str,
    mut parser: impl FnMut(&'a str) -> PResult<'a, O>,
) -> Result<O, ValueError> {
    match parser(value) {
        Ok((rest, out)) => {
            let rest = sws(rest);
            if rest.is_empty() {
                Ok(out)
            } else {
                Err(ValueError {
                    offset: value.len() - rest.len(),
                    expected: "end of value",
                })
            }
        }
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => Err(ValueError {
            offset: value.len() - e.input.len(),
            expected: e.expected,
        }),
        Err(nom::Err::Incomplete(_)) => Err(ValueError {
            offset: value.len(),
            expected: "more input",
        }),
    }
}

/// Bytes between `whole` and its suffix `rest`.
pub(crate) fn consumed<'a>(whole: &'a str, rest: &str) -> &'a str {
    &whole[..whole.len() - rest.len()]
}

/// Bytes the grammar already restricted to ASCII or validated UTF-8 as text.
///
/// The message parser validates the header section as UTF-8 and every rule
/// splits at ASCII delimiters, so this does not fail on parsed input; the
/// lossy fallback keeps a hand-built value from panicking.
pub(crate) fn text(bytes: &[u8]) -> &str {
    match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
    }
}

const fn class(chars: &[u8], alnum: bool) -> [bool; 256] {
    let mut table = [false; 256];
    let mut i = 0;
    while i < chars.len() {
        table[chars[i] as usize] = true;
        i += 1;
    }
    if alnum {
        let mut c = b'0';
        while c <= b'9' {
            table[c as usize] = true;
            c += 1;
        }
        let mut c = b'a';
        while c <= b'z' {
            table[c as usize] = true;
            table[(c - 32) as usize] = true;
            c += 1;
        }
    }
    table
}

static TOKEN: [bool; 256] = class(b"-.!%*_+`'~", true);
static WORD: [bool; 256] = class(b"-.!%*_+`'~()<>:\\\"/[]?{}", true);
/// unreserved / escaped / user-unreserved / ":" and password characters:
/// everything that may appear before the "@" of a SIP URI.
static USERINFO: [bool; 256] = class(b"-_.!~*'()%&=+$,;?/:", true);
static USER: [bool; 256] = class(b"-_.!~*'()%&=+$,;?/", true);
static PASSWORD: [bool; 256] = class(b"-_.!~*'()%&=+$,", true);
static HOST: [bool; 256] = class(b"-.", true);
/// paramchar: param-unreserved / unreserved / escaped.
static URI_PARAM: [bool; 256] = class(b"[]/:&+$-_.!~*'()%", true);
/// hnv-unreserved / unreserved / escaped.
static URI_HEADER: [bool; 256] = class(b"[]/?:+$-_.!~*'()%", true);
/// A generic-param value: token / host (with bare IPv6 for `received`).
static PARAM_VALUE: [bool; 256] = class(b"-.!%*_+`'~:[]", true);
/// Characters of an absolute URI's opaque part (RFC 3986 without spaces).
static OPAQUE: [bool; 256] = class(b"-_.!~*'()%;/?:@&=+$,#[]", true);
/// phonedigit-hex / visual separators / "*" "#" "+".
static TEL_NUMBER: [bool; 256] = class(b"0123456789abcdefABCDEF*#+-.()", false);

pub(crate) fn is_token(c: u8) -> bool {
    TOKEN[c as usize]
}
pub(crate) fn is_user(c: u8) -> bool {
    USER[c as usize]
}
pub(crate) fn is_password(c: u8) -> bool {
    PASSWORD[c as usize]
}
pub(crate) fn is_tel_number(c: u8) -> bool {
    TEL_NUMBER[c as usize]
}
pub(crate) fn is_wsp(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Length of the leading run of bytes in `table`.
#[inline]
fn run(i: &str, table: &[bool; 256]) -> usize {
    i.as_bytes()
        .iter()
        .position(|&c| !table[c as usize])
        .unwrap_or(i.len())
}

/// SWS: optional linear white space, folds included. Never fails.
#[inline]
pub(crate) fn sws(i: &str) -> &str {
    match i.as_bytes().first() {
        Some(b' ' | b'\t' | b'\r') => sws_slow(i),
        _ => i,
    }
}

fn sws_slow(mut i: &str) -> &str {
    loop {
        let n = i
            .as_bytes()
            .iter()
            .position(|&c| !is_wsp(c))
            .unwrap_or(i.len());
        i = &i[n..];
        if i.len() >= 3
            && i.as_bytes()[0] == b'\r'
            && i.as_bytes()[1] == b'\n'
            && is_wsp(i.as_bytes()[2])
        {
            i = &i[2..];
        } else {
            return i;
        }
    }
}

/// LWS: at least one white space character (possibly after a fold).
pub(crate) fn lws(i: &str) -> PResult<'_, ()> {
    let rest = sws(i);
    if rest.len() == i.len() {
        fail(i, "white space")
    } else {
        Ok((rest, ()))
    }
}

pub(crate) fn token(i: &str) -> PResult<'_, &str> {
    let n = run(i, &TOKEN);
    if n == 0 {
        fail(i, "token")
    } else {
        Ok((&i[n..], &i[..n]))
    }
}

pub(crate) fn word(i: &str) -> PResult<'_, &str> {
    let n = run(i, &WORD);
    if n == 0 {
        fail(i, "word")
    } else {
        Ok((&i[n..], &i[..n]))
    }
}

pub(crate) fn digits(i: &str) -> PResult<'_, &str> {
    let n = i
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(i.len());
    if n == 0 {
        fail(i, "digits")
    } else {
        Ok((&i[n..], &i[..n]))
    }
}

/// A decimal number that fits `max`.
pub(crate) fn number<'a>(i: &'a str, max: u64, expected: &'static str) -> PResult<'a, u64> {
    let (rest, d) = digits(i).map_err(|_| nom::Err::Error(GrammarError { input: i, expected }))?;
    let mut v: u64 = 0;
    for c in d.bytes() {
        v = match v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(c - b'0')))
        {
            Some(v) if v <= max => v,
            _ => return fail(i, expected),
        };
    }
    Ok((rest, v))
}

/// Expects `c` after optional white space on both sides (SEMI, COMMA, EQUAL…).
#[inline]
pub(crate) fn sep(c: u8, expected: &'static str) -> impl Fn(&str) -> PResult<'_, ()> {
    move |i: &str| {
        let j = sws(i);
        if j.as_bytes().first() == Some(&c) {
            Ok((sws(&j[1..]), ()))
        } else {
            fail(i, expected)
        }
    }
}

/// A quoted string; returns the raw content between the quotes (escapes kept).
pub(crate) fn quoted_string(i: &str) -> PResult<'_, &str> {
    if i.as_bytes().first() != Some(&b'"') {
        return fail(i, "quoted string");
    }
    let body = &i[1..];
    let mut k = 0;
    while k < body.len() {
        match body.as_bytes()[k] {
            b'"' => return Ok((&body[k + 1..], &body[..k])),
            b'\\' => {
                match body.as_bytes().get(k + 1) {
                    Some(b'\r' | b'\n') | None => {
                        return fail(&body[k..], "escaped character in quoted string");
                    }
                    Some(_) => k += 2,
                }
                continue;
            }
            b'\r' => {
                if body.len() > k + 2
                    && body.as_bytes()[k + 1] == b'\n'
                    && is_wsp(body.as_bytes()[k + 2])
                {
                    k += 3;
                    continue;
                }
                return fail(&body[k..], "closing quote of quoted string");
            }
            b'\n' => return fail(&body[k..], "closing quote of quoted string"),
            c if c < 0x20 && c != b'\t' => {
                return fail(&body[k..], "text in quoted string");
            }
            _ => k += 1,
        }
    }
    fail(&i[i.len()..], "closing quote of quoted string")
}

/// Removes the backslash of every quoted-pair and unfolds line breaks.
pub(crate) fn unquote(raw: &str) -> Cow<'_, str> {
    if !raw.contains(['\\', '\r']) {
        return Cow::Borrowed(raw);
    }
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '\r' | '\n' => {}
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Decodes %HH escapes; invalid escapes are kept as written.
pub(crate) fn percent_decode(raw: &str) -> Cow<'_, str> {
    if !raw.contains('%') {
        return Cow::Borrowed(raw);
    }
    let b = raw.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut k = 0;
    while k < b.len() {
        if b[k] == b'%' && k + 2 < b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[k + 1]), hex(b[k + 2])) {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                k += 3;
                continue;
            }
        }
        out.push(b[k]);
        k += 1;
    }
    match String::from_utf8(out) {
        Ok(s) => Cow::Owned(s),
        Err(e) => Cow::Owned(String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// Checks that every `%` starts a valid `%HH` escape.
pub(crate) fn escapes_valid(s: &str) -> Option<usize> {
    let s = s.as_bytes();
    let mut k = 0;
    while let Some(p) = memchr::memchr(b'%', &s[k..]) {
        let at = k + p;
        if at + 2 >= s.len() {
            return Some(at);
        }
        if !(s[at + 1].is_ascii_hexdigit() && s[at + 2].is_ascii_hexdigit()) {
            return Some(at);
        }
        k = at + 3;
    }
    None
}

pub(crate) fn userinfo_run(i: &str) -> usize {
    run(i, &USERINFO)
}
pub(crate) fn host_run(i: &str) -> usize {
    run(i, &HOST)
}
pub(crate) fn uri_param_run(i: &str) -> usize {
    run(i, &URI_PARAM)
}
pub(crate) fn uri_header_run(i: &str) -> usize {
    run(i, &URI_HEADER)
}
pub(crate) fn opaque_run(i: &str) -> usize {
    run(i, &OPAQUE)
}
pub(crate) fn param_value_run(i: &str) -> usize {
    run(i, &PARAM_VALUE)
}

/// `*( SEMI generic-param )`: returns the raw text of all parameters.
///
/// gen-value = token / host / quoted-string; a bare IPv6 address is allowed
/// because `received` carries one.
pub(crate) fn generic_params(i: &str) -> PResult<'_, &str> {
    let mut rest = i;
    let mut end = i;
    loop {
        let j = sws(rest);
        if j.as_bytes().first() != Some(&b';') {
            break;
        }
        let j = sws(&j[1..]);
        let (j, _) = token(j).map_err(|_| {
            nom::Err::Error(GrammarError {
                input: j,
                expected: "parameter name",
            })
        })?;
        let k = sws(j);
        let j = if k.as_bytes().first() == Some(&b'=') {
            let k = sws(&k[1..]);
            if k.as_bytes().first() == Some(&b'"') {
                quoted_string(k)?.0
            } else {
                let n = param_value_run(k);
                if n == 0 {
                    return fail(k, "parameter value");
                }
                &k[n..]
            }
        } else {
            j
        };
        rest = j;
        end = j;
    }
    Ok((end, consumed(i, end)))
}

/// Splits a list header value at top-level commas (outside quotes and `<>`).
///
/// Yields `(offset, element)` with surrounding white space trimmed.
pub(crate) fn split_list(value: &str) -> ListSplit<'_> {
    ListSplit { value, pos: 0 }
}

#[derive(Debug)]
pub(crate) struct ListSplit<'a> {
    value: &'a str,
    pos: usize,
}

impl<'a> Iterator for ListSplit<'a> {
    type Item = (usize, &'a str);

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos > self.value.len() {
            return None;
        }
        let start = self.pos;
        let v = self.value;
        let vb = v.as_bytes();
        let mut k = start;
        loop {
            let Some(p) = memchr::memchr3(b',', b'"', b'<', &vb[k..]) else {
                k = vb.len();
                break;
            };
            k += p;
            match vb[k] {
                b'"' => {
                    // Skip the quoted string, escapes included.
                    k += 1;
                    while k < vb.len() && vb[k] != b'"' {
                        k += if vb[k] == b'\\' { 2 } else { 1 };
                    }
                    k += 1;
                }
                b'<' => match memchr::memchr(b'>', &vb[k..]) {
                    Some(q) => k += q + 1,
                    None => k = vb.len(),
                },
                _ => break,
            }
            if k >= vb.len() {
                k = vb.len();
                break;
            }
        }
        // `k` is at a comma or the end: both are character boundaries.
        let end = k;
        self.pos = end + 1;
        let raw = v.get(start..end).unwrap_or("");
        let lead = raw.len() - sws(raw).len();
        let elem = raw[lead..].trim_end_matches([' ', '\t', '\r', '\n']);
        Some((start + lead, elem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_string_handles_escapes_and_folds() {
        let (rest, q) = quoted_string("\"a \\\"b\\\" \\\\ c\" x").unwrap();
        assert_eq!(q, "a \\\"b\\\" \\\\ c");
        assert_eq!(rest, " x");
        assert_eq!(unquote(q), "a \"b\" \\ c");
        assert!(quoted_string("\"open").is_err());
        assert!(quoted_string("\"a\r\n b\"").is_ok());
        assert!(quoted_string("\"a\r\nb\"").is_err());
    }

    #[test]
    fn sws_skips_folds_but_not_line_ends() {
        assert_eq!(sws(" \t\r\n  x"), "x");
        assert_eq!(sws(" \r\nx"), "\r\nx");
    }

    #[test]
    fn list_split_respects_quotes_and_angles() {
        let v: Vec<_> = split_list("\"a, b\" <sip:x@y;p=1,2>, sip:z , <sip:w>")
            .map(|(_, e)| e)
            .collect();
        assert_eq!(v, vec!["\"a, b\" <sip:x@y;p=1,2>", "sip:z", "<sip:w>"]);
    }

    #[test]
    fn percent_decode_decodes_valid_escapes_only() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(escapes_valid("a%2"), Some(1));
        assert_eq!(escapes_valid("a%zz"), Some(1));
        assert_eq!(escapes_valid("a%41b"), None);
    }

    #[test]
    fn number_rejects_overflow() {
        assert_eq!(number("255", 255, "n").unwrap().1, 255);
        assert!(number("256", 255, "n").is_err());
        assert!(number("99999999999999999999999", u64::MAX, "n").is_err());
    }
}
