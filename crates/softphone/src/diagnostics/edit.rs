//! Replacements collected over one scan of a text, applied at the end, and
//! the byte classes the scanners share.

use std::borrow::Cow;

/// Non-overlapping replacements of byte ranges; where two overlap, the one
/// that starts first (or, at the same start, the longer) wins.
#[derive(Debug, Default)]
pub(crate) struct Edits {
    list: Vec<(usize, usize, String)>,
}

impl Edits {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Replaces `start..end` (ASCII or char boundaries) with `with`.
    pub(crate) fn push(&mut self, start: usize, end: usize, with: impl Into<String>) {
        if start < end {
            self.list.push((start, end, with.into()));
        }
    }

    pub(crate) fn apply(mut self, text: &str) -> Cow<'_, str> {
        if self.list.is_empty() {
            return Cow::Borrowed(text);
        }
        self.list
            .sort_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)));
        let mut out = String::with_capacity(text.len());
        let mut at = 0;
        for (start, end, with) in &self.list {
            if *start < at || *end > text.len() {
                continue;
            }
            // Ranges come from ASCII delimiters; a range that is not on char
            // boundaries is skipped rather than risk a panic.
            let (Some(before), true) = (text.get(at..*start), text.is_char_boundary(*end)) else {
                continue;
            };
            out.push_str(before);
            out.push_str(with);
            at = *end;
        }
        out.push_str(text.get(at..).unwrap_or_default());
        Cow::Owned(out)
    }
}

/// `[A-Za-z0-9_-]`: names of headers, parameters and fields.
pub(crate) fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

pub(crate) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The identifier ending right before `end`.
pub(crate) fn ident_before(text: &str, end: usize) -> &str {
    let bytes = text.as_bytes();
    let mut start = end;
    while start > 0 && is_ident(bytes[start - 1]) {
        start -= 1;
    }
    &text[start..end]
}

pub(crate) fn skip_spaces(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && (bytes[at] == b' ' || bytes[at] == b'\t') {
        at += 1;
    }
    at
}

/// The end of the line holding `from`: a CR or LF, or an escaped `\r` or
/// `\n` as `Debug` prints a multi-line string.
pub(crate) fn line_end(bytes: &[u8], from: usize) -> usize {
    let mut at = from;
    while at < bytes.len() {
        match bytes[at] {
            b'\r' | b'\n' => return at,
            b'\\' if matches!(bytes.get(at + 1), Some(b'r' | b'n')) => return at,
            _ => at += 1,
        }
    }
    at
}

/// After a field or parameter name ending at `at`: an optional closing
/// quote of a quoted key, then `=` or `:`, then spaces and an optional
/// `Some(` (a `Debug` printed `Option`). Returns where the value starts.
pub(crate) fn after_separator(bytes: &[u8], mut at: usize) -> Option<usize> {
    if bytes.get(at) == Some(&b'\\') && bytes.get(at + 1) == Some(&b'"') {
        at += 2;
    } else if matches!(bytes.get(at), Some(b'"' | b'\'')) {
        at += 1;
    }
    at = skip_spaces(bytes, at);
    match bytes.get(at) {
        Some(b'=' | b':') => Some(skip_option(bytes, skip_spaces(bytes, at + 1))),
        _ => None,
    }
}

/// Past `Some(`, if the text at `at` starts with it.
pub(crate) fn skip_option(bytes: &[u8], at: usize) -> usize {
    if bytes.get(at..at + 5) == Some(b"Some(") {
        at + 5
    } else {
        at
    }
}

/// The value starting at `at`: a quoted string (`"..."`, `'...'` or the
/// escaped `\"...\"`) without its quotes, else a run up to a delimiter.
pub(crate) fn value_span(bytes: &[u8], at: usize) -> Option<(usize, usize)> {
    let (start, end) = if bytes.get(at) == Some(&b'\\') && bytes.get(at + 1) == Some(&b'"') {
        let start = at + 2;
        let mut end = start;
        while end < bytes.len() && !(bytes[end] == b'\\' && bytes.get(end + 1) == Some(&b'"')) {
            if matches!(bytes[end], b'\r' | b'\n') {
                break;
            }
            end += 1;
        }
        (start, end)
    } else if let Some(&quote @ (b'"' | b'\'')) = bytes.get(at) {
        let start = at + 1;
        let mut end = start;
        while end < bytes.len() && bytes[end] != quote && !matches!(bytes[end], b'\r' | b'\n') {
            end += if bytes[end] == b'\\' { 2 } else { 1 };
        }
        (start, end.min(bytes.len()))
    } else {
        let mut end = at;
        while end < bytes.len() && !is_value_delimiter(bytes[end]) {
            end += 1;
        }
        (at, end)
    };
    (end > start).then_some((start, end))
}

fn is_value_delimiter(b: u8) -> bool {
    b.is_ascii_whitespace()
        || matches!(
            b,
            b',' | b';' | b'&' | b')' | b']' | b'}' | b'>' | b'<' | b'"' | b'\'' | b'\\'
        )
}
