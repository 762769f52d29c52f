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
#[inline]
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

const TOKEN: [bool; 256] = class(b"-.!%*_+`'~", true);
const WORD: [bool; 256] = class(b"-.!%*_+`'~()<>:\\\"/[]?{}", true);
/// unreserved / escaped / user-unreserved / ":" and password characters:
/// everything that may appear before the "@" of a SIP URI.
const USERINFO: [bool; 256] = class(b"-_.!~*'()%&=+$,;?/:", true);
const PASSWORD: [bool; 256] = class(b"-_.!~*'()%&=+$,", true);
const HOST: [bool; 256] = class(b"-.", true);
/// paramchar: param-unreserved / unreserved / escaped.
const URI_PARAM: [bool; 256] = class(b"[]/:&+$-_.!~*'()%", true);
/// hnv-unreserved / unreserved / escaped.
const URI_HEADER: [bool; 256] = class(b"[]/?:+$-_.!~*'()%", true);
/// A generic-param value: token / host (with bare IPv6 for `received`).
const PARAM_VALUE: [bool; 256] = class(b"-.!%*_+`'~:[]", true);
/// Characters of an absolute URI's opaque part (RFC 3986 without spaces).
const OPAQUE: [bool; 256] = class(b"-_.!~*'()%;/?:@&=+$,#[]", true);
/// phonedigit-hex / visual separators / "*" "#" "+".
const TEL_NUMBER: [bool; 256] = class(b"0123456789abcdefABCDEF*#+-.()", false);
const DIGIT: [bool; 256] = class(b"0123456789", false);
const ALNUM: [bool; 256] = class(b"", true);
/// Bytes inside userinfo that need a second look: the password colon and escapes.
const USERINFO_SPECIAL: [bool; 256] = class(b":%", false);
/// Bytes a quoted string holds without a second look: not `"`, not `\\`, no
/// control character other than HTAB.
const QUOTED_PLAIN: [bool; 256] = {
    let mut t = [true; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = c == 0x09;
        c += 1;
    }
    t[b'"' as usize] = false;
    t[b'\\' as usize] = false;
    t
};

/// Character classes as bits of one table, so a scan costs one load per byte.
pub(crate) const C_TOKEN: u16 = 1;
pub(crate) const C_WORD: u16 = 1 << 1;
pub(crate) const C_USERINFO: u16 = 1 << 2;
pub(crate) const C_PASSWORD: u16 = 1 << 3;
pub(crate) const C_HOST: u16 = 1 << 4;
pub(crate) const C_URI_PARAM: u16 = 1 << 5;
pub(crate) const C_URI_HEADER: u16 = 1 << 6;
pub(crate) const C_PARAM_VALUE: u16 = 1 << 7;
pub(crate) const C_OPAQUE: u16 = 1 << 8;
pub(crate) const C_TEL_NUMBER: u16 = 1 << 9;
pub(crate) const C_DIGIT: u16 = 1 << 10;
pub(crate) const C_ALNUM: u16 = 1 << 11;
pub(crate) const C_USERINFO_SPECIAL: u16 = 1 << 12;
pub(crate) const C_QUOTED_PLAIN: u16 = 1 << 13;

const fn classes() -> [u16; 256] {
    let tables: [(&[bool; 256], u16); 14] = [
        (&TOKEN, C_TOKEN),
        (&WORD, C_WORD),
        (&USERINFO, C_USERINFO),
        (&PASSWORD, C_PASSWORD),
        (&HOST, C_HOST),
        (&URI_PARAM, C_URI_PARAM),
        (&URI_HEADER, C_URI_HEADER),
        (&PARAM_VALUE, C_PARAM_VALUE),
        (&OPAQUE, C_OPAQUE),
        (&TEL_NUMBER, C_TEL_NUMBER),
        (&DIGIT, C_DIGIT),
        (&ALNUM, C_ALNUM),
        (&USERINFO_SPECIAL, C_USERINFO_SPECIAL),
        (&QUOTED_PLAIN, C_QUOTED_PLAIN),
    ];
    let mut out = [0u16; 256];
    let mut t = 0;
    while t < tables.len() {
        let mut c = 0;
        while c < 256 {
            if tables[t].0[c] {
                out[c] |= tables[t].1;
            }
            c += 1;
        }
        t += 1;
    }
    out
}

static CLASS: [u16; 256] = classes();

/// The class bits of `c`.
#[inline(always)]
pub(crate) fn class_of(c: u8) -> u16 {
    CLASS[c as usize]
}

/// The end of the run of bytes in `mask` starting at `k`, not beyond `limit`.
///
/// Eight bytes at a time while the run lasts: the classes of a block are
/// combined, so a block inside the run costs one test.
#[inline(always)]
pub(crate) fn run_at(b: &[u8], mut k: usize, limit: usize, mask: u16) -> usize {
    let b = &b[..limit.min(b.len())];
    while let Some(block) = b.get(k..).and_then(|r| r.first_chunk::<8>()) {
        let all = CLASS[block[0] as usize]
            & CLASS[block[1] as usize]
            & CLASS[block[2] as usize]
            & CLASS[block[3] as usize]
            & CLASS[block[4] as usize]
            & CLASS[block[5] as usize]
            & CLASS[block[6] as usize]
            & CLASS[block[7] as usize];
        if all & mask == 0 {
            break;
        }
        k += 8;
    }
    while let Some(&c) = b.get(k) {
        if CLASS[c as usize] & mask == 0 {
            break;
        }
        k += 1;
    }
    k
}

/// The first `needle` in `hay`. The runs searched inside one message are
/// short, so on x86-64 this calls the SSE2 searcher directly: the general
/// entry point's dispatch and AVX2 set-up cost more than such a scan.
#[inline]
pub(crate) fn find_byte(hay: &[u8], needle: u8) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if let Some(one) = memchr::arch::x86_64::sse2::memchr::One::new(needle) {
        return one.find(hay);
    }
    memchr::memchr(needle, hay)
}

/// The first `n1` or `n2` in `hay` (see [`find_byte`]).
#[inline]
pub(crate) fn find_byte2(hay: &[u8], n1: u8, n2: u8) -> Option<usize> {
    #[cfg(target_arch = "x86_64")]
    if let Some(two) = memchr::arch::x86_64::sse2::memchr::Two::new(n1, n2) {
        return two.find(hay);
    }
    memchr::memchr2(n1, n2, hay)
}

/// Whether `v` holds a comma (a list value with more than one element, or a
/// comma inside one).
#[inline]
pub(crate) fn find_comma(v: &str) -> bool {
    find_byte(v.as_bytes(), b',').is_some()
}

#[inline]
pub(crate) fn is_token(c: u8) -> bool {
    CLASS[c as usize] & C_TOKEN != 0
}
#[inline]
pub(crate) fn is_tel_number(c: u8) -> bool {
    CLASS[c as usize] & C_TEL_NUMBER != 0
}
#[inline]
pub(crate) fn is_wsp(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

/// Length of the leading run of bytes in class `mask`.
#[inline]
fn run(i: &str, mask: u16) -> usize {
    run_at(i.as_bytes(), 0, i.len(), mask)
}

/// SWS: optional linear white space, folds included. Never fails.
#[inline]
pub(crate) fn sws(i: &str) -> &str {
    &i[sws_at(i.as_bytes(), 0, i.len())..]
}

/// [`sws`] over `b[k..limit]`: the index after the white space.
#[inline(always)]
pub(crate) fn sws_at(b: &[u8], k: usize, limit: usize) -> usize {
    match b.get(k) {
        Some(b' ' | b'\t' | b'\r') if k < limit => sws_slow_at(b, k, limit.min(b.len())),
        _ => k,
    }
}

#[inline(never)]
fn sws_slow_at(b: &[u8], mut k: usize, limit: usize) -> usize {
    loop {
        while k < limit && is_wsp(b[k]) {
            k += 1;
        }
        if k + 3 <= limit && b[k] == b'\r' && b[k + 1] == b'\n' && is_wsp(b[k + 2]) {
            k += 2;
        } else {
            return k;
        }
    }
}

/// A failure at byte `at` of the text being parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Fail {
    pub(crate) at: usize,
    pub(crate) expected: &'static str,
}

/// What an index-based rule returns: the index after what it read, and the value.
pub(crate) type Step<T> = Result<(usize, T), Fail>;

#[inline]
pub(crate) fn fail_at<T>(at: usize, expected: &'static str) -> Result<T, Fail> {
    Err(Fail { at, expected })
}

impl Fail {
    /// The same failure for a nom-style rule that was given `i`.
    pub(crate) fn into_nom(self, i: &str) -> nom::Err<GrammarError<'_>> {
        nom::Err::Error(GrammarError {
            input: i.get(self.at..).unwrap_or(""),
            expected: self.expected,
        })
    }
}

impl From<Fail> for ValueError {
    fn from(f: Fail) -> Self {
        ValueError {
            offset: f.at,
            expected: f.expected,
        }
    }
}

/// The end of the value: only white space may follow `k`.
#[inline]
pub(crate) fn end_at(b: &[u8], k: usize) -> Result<(), Fail> {
    let r = sws_at(b, k, b.len());
    if r == b.len() {
        Ok(())
    } else {
        fail_at(r, "end of value")
    }
}

/// A decimal number at `b[k..limit]` that fits `max`.
#[inline]
pub(crate) fn number_at(
    b: &[u8],
    k: usize,
    limit: usize,
    max: u64,
    expected: &'static str,
) -> Step<u64> {
    let mut p = k;
    let mut v: u64 = 0;
    let limit = limit.min(b.len());
    while p < limit && b[p].is_ascii_digit() {
        v = match v
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b[p] - b'0')))
        {
            Some(v) => v,
            None => return fail_at(k, expected),
        };
        p += 1;
    }
    if p == k || v > max {
        return fail_at(k, expected);
    }
    Ok((p, v))
}

/// A quoted string at `b[k..limit]`: the index after the closing quote and
/// the index of that quote (the content is `k + 1..quote`).
#[inline]
pub(crate) fn quoted_string_at(b: &[u8], k: usize, limit: usize) -> Step<usize> {
    let limit = limit.min(b.len());
    if k >= limit || b[k] != b'"' {
        return fail_at(k, "quoted string");
    }
    let mut p = k + 1;
    loop {
        while p < limit && class_of(b[p]) & C_QUOTED_PLAIN != 0 {
            p += 1;
        }
        if p >= limit {
            return fail_at(limit, "closing quote of quoted string");
        }
        match b[p] {
            b'"' => return Ok((p + 1, p)),
            b'\\' => {
                if p + 1 >= limit || matches!(b[p + 1], b'\r' | b'\n') {
                    return fail_at(p, "escaped character in quoted string");
                }
                p += 2;
            }
            b'\r' => {
                if p + 2 < limit && b[p + 1] == b'\n' && is_wsp(b[p + 2]) {
                    p += 3;
                } else {
                    return fail_at(p, "closing quote of quoted string");
                }
            }
            b'\n' => return fail_at(p, "closing quote of quoted string"),
            _ => return fail_at(p, "text in quoted string"),
        }
    }
}

/// `*( SEMI generic-param )` at `b[k..limit]`: returns where the parameters
/// end and calls `each(name, value)` with index ranges for every parameter
/// (a quoted value without its quotes).
#[inline]
pub(crate) fn generic_params_at(
    b: &[u8],
    k: usize,
    limit: usize,
    mut each: impl FnMut((usize, usize), Option<(usize, usize)>),
) -> Result<usize, Fail> {
    let limit = limit.min(b.len());
    let mut end = k;
    loop {
        let j = sws_at(b, end, limit);
        if j >= limit || b[j] != b';' {
            return Ok(end);
        }
        let ns = sws_at(b, j + 1, limit);
        let ne = run_at(b, ns, limit, C_TOKEN);
        if ne == ns {
            return fail_at(ns, "parameter name");
        }
        let q = sws_at(b, ne, limit);
        if q < limit && b[q] == b'=' {
            let v = sws_at(b, q + 1, limit);
            if v < limit && b[v] == b'"' {
                let (after, close) = quoted_string_at(b, v, limit)?;
                each((ns, ne), Some((v + 1, close)));
                end = after;
            } else {
                let ve = run_at(b, v, limit, C_PARAM_VALUE);
                if ve == v {
                    return fail_at(v, "parameter value");
                }
                each((ns, ne), Some((v, ve)));
                end = ve;
            }
        } else {
            each((ns, ne), None);
            end = ne;
        }
    }
}

/// The first `%` in `b[k..e]` that does not start a `%HH` escape.
#[inline]
pub(crate) fn escape_error(b: &[u8], k: usize, e: usize) -> Option<usize> {
    let e = e.min(b.len());
    let mut p = k;
    while p < e {
        if b[p] == b'%' {
            if p + 2 >= e || !(b[p + 1].is_ascii_hexdigit() && b[p + 2].is_ascii_hexdigit()) {
                return Some(p);
            }
            p += 3;
        } else {
            p += 1;
        }
    }
    None
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
    let n = run(i, C_TOKEN);
    if n == 0 {
        fail(i, "token")
    } else {
        Ok((&i[n..], &i[..n]))
    }
}

pub(crate) fn word(i: &str) -> PResult<'_, &str> {
    let n = run(i, C_WORD);
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
#[cfg(test)]
pub(crate) fn number<'a>(i: &'a str, max: u64, expected: &'static str) -> PResult<'a, u64> {
    match number_at(i.as_bytes(), 0, i.len(), max, expected) {
        Ok((r, v)) => Ok((&i[r..], v)),
        Err(f) => Err(f.into_nom(i)),
    }
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
    match quoted_string_at(i.as_bytes(), 0, i.len()) {
        Ok((r, close)) => Ok((&i[r..], &i[1..close])),
        Err(f) => Err(f.into_nom(i)),
    }
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
    escape_error(s.as_bytes(), 0, s.len())
}

pub(crate) fn uri_param_run(i: &str) -> usize {
    run(i, C_URI_PARAM)
}
pub(crate) fn param_value_run(i: &str) -> usize {
    run(i, C_PARAM_VALUE)
}

/// `*( SEMI generic-param )`: returns the raw text of all parameters.
///
/// gen-value = token / host / quoted-string; a bare IPv6 address is allowed
/// because `received` carries one.
pub(crate) fn generic_params(i: &str) -> PResult<'_, &str> {
    match generic_params_at(i.as_bytes(), 0, i.len(), |_, _| {}) {
        Ok(end) => Ok((&i[end..], &i[..end])),
        Err(f) => Err(f.into_nom(i)),
    }
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
