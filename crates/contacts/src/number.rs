//! Phone number normalisation (E.164 through `phonenumber`) and the
//! trailing-digits rule for numbers that do not normalise.

use std::{fmt, str::FromStr};

use phonenumber::{country, metadata::DATABASE};

/// Longest input taken for a phone number; longer text is kept as written
/// but not parsed.
pub const MAX_NUMBER_LEN: usize = 64;

/// How many trailing digits two numbers must share when one of them could
/// not be normalised (the classic caller-ID rule).
pub const TRAILING_DIGITS: usize = 7;

/// A region (ISO 3166-1 alpha-2, such as `DE`), used to read numbers written
/// in national form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Region {
    id: country::Id,
    code: [u8; 2],
}

impl Region {
    /// The region's two-letter code, upper case.
    #[must_use]
    pub fn code(&self) -> &str {
        // Built from two ASCII upper-case letters in `from_str`.
        std::str::from_utf8(&self.code).unwrap_or("ZZ")
    }

    pub(crate) fn id(self) -> country::Id {
        self.id
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A region code that is not two letters known to the numbering metadata.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown region code {0:?} (expected ISO 3166-1 alpha-2, such as \"DE\")")]
pub struct UnknownRegion(pub String);

impl FromStr for Region {
    type Err = UnknownRegion;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        if upper.len() != 2 || !upper.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(UnknownRegion(s.to_owned()));
        }
        let id = country::Id::from_str(&upper).map_err(|_| UnknownRegion(s.to_owned()))?;
        let b = upper.as_bytes();
        Ok(Region {
            id,
            code: [b[0], b[1]],
        })
    }
}

/// A phone number as read from text, with what matching needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormalizedNumber {
    /// `+` and digits, when the number is a valid number for its region.
    pub e164: Option<String>,
    /// The extension, when one was written (`x12`, `ext. 12`, `;ext=12`).
    pub extension: Option<String>,
    /// The digits as written, extension excluded.
    pub digits: String,
    /// National form digits with the trunk prefix (`0301000042`), when
    /// normalised.
    pub national: Option<String>,
}

impl NormalizedNumber {
    /// The digits the trailing-digits rule compares: the E.164 digits when
    /// there are some, otherwise the digits as written.
    #[must_use]
    pub fn match_digits(&self) -> &str {
        match &self.e164 {
            Some(e164) => e164.trim_start_matches('+'),
            None => &self.digits,
        }
    }

    /// The digit strings a typed query is matched against: E.164 digits
    /// and national digits when normalised, otherwise the digits as written.
    #[must_use]
    pub fn search_forms(&self) -> Vec<String> {
        let mut forms: Vec<String> = Vec::with_capacity(2);
        let candidates = match &self.e164 {
            Some(e164) => [Some(e164.trim_start_matches('+')), self.national.as_deref()],
            None => [Some(self.digits.as_str()), None],
        };
        for form in candidates.into_iter().flatten() {
            if !form.is_empty() && !forms.iter().any(|f| f == form) {
                forms.push(form.to_owned());
            }
        }
        forms
    }
}

/// A number as written, before any parsing: `tel:` and the extension
/// taken off, its digits, and whether the parser would look at it at all.
struct Written<'a> {
    /// The trimmed text without `tel:`.
    text: &'a str,
    /// `text` without its extension.
    main: &'a str,
    extension: Option<String>,
    /// The ASCII digits of `main`.
    digits: String,
}

impl<'a> Written<'a> {
    fn new(raw: &'a str) -> Self {
        let text = raw.trim();
        let text = text
            .strip_prefix("tel:")
            .or_else(|| text.strip_prefix("TEL:"))
            .unwrap_or(text);
        let (main, extension) = split_extension(text);
        let digits = main.chars().filter(char::is_ascii_digit).collect();
        Written {
            text,
            main,
            extension,
            digits,
        }
    }

    /// Only digits, `+` and the usual separators.
    fn plain(&self) -> bool {
        self.main.chars().all(|c| {
            c.is_ascii_digit() || matches!(c, '+' | '-' | '(' | ')' | '/' | '.' | ' ' | '\u{a0}')
        })
    }

    /// Whether `normalize` hands this to the parser: short enough, 3 to 17
    /// digits, plain, and a `+` only at the start.
    fn parseable(&self) -> bool {
        self.text.len() <= MAX_NUMBER_LEN
            && (3..=17).contains(&self.digits.len())
            && self.plain()
            && self
                .main
                .rfind('+')
                .is_none_or(|i| self.main[..i].trim().is_empty())
    }
}

/// Reads a phone number written by a person or a directory.
///
/// `+49 30 1000042`, `030 1000042` (with region `DE`), `0049 30 1000042`,
/// `tel:+49-30-1000042` all give `+49301000042`. An extension after `x`,
/// `ext`, `ext.`, `;ext=` or `#` is kept apart. Text that is too long, has
/// letters outside an extension, or is not a valid number for its region
/// gets no E.164 form; its digits are still kept for the trailing-digits
/// rule. Never panics.
#[must_use]
pub fn normalize(raw: &str, region: Option<Region>) -> NormalizedNumber {
    let written = Written::new(raw);
    let parseable = written.parseable();
    let plus = written.main.trim_start().starts_with('+');
    let mut out = NormalizedNumber {
        e164: None,
        extension: written.extension,
        digits: written.digits,
        national: None,
    };
    if !parseable {
        return out;
    }
    // Rebuild the number from its digits and an optional leading `+`, so
    // the parser only ever sees a simple string.
    let cleaned = if plus {
        format!("+{}", out.digits)
    } else {
        out.digits.clone()
    };
    let Ok(parsed) = phonenumber::parse(region.map(Region::id), &cleaned) else {
        return out;
    };
    if !phonenumber::is_valid(&parsed) {
        return out;
    }
    // E.164 is `+`, country code, national significant number; the national
    // form puts the region's trunk prefix before the latter. Built by hand:
    // the library's formatter runs its format regexes for every call.
    let nsn = parsed.national().to_string();
    let trunk = parsed
        .metadata(&DATABASE)
        .and_then(|m| m.national_prefix())
        .unwrap_or_default();
    out.e164 = Some(format!("+{}{nsn}", parsed.code().value()));
    out.national = Some(format!("{trunk}{nsn}"));
    out
}

/// The E.164 forms a typed number can have, worked out without the full
/// parser, for an exact lookup: `+` and digits as written; in `region`,
/// digits after its international prefix (`00`), or its country code
/// before the digits after its trunk prefix (`0`) or before all digits. Only
/// useful against numbers already validated (the store's), since these
/// candidates are not checked.
#[must_use]
pub fn e164_candidates(raw: &str, region: Option<Region>) -> Vec<String> {
    let written = Written::new(raw);
    let (main, digits) = (written.main, &written.digits);
    if !written.plain() || digits.len() < 4 || digits.len() > 17 {
        return Vec::new();
    }
    let trimmed = main.trim_start();
    if let Some(after_plus) = trimmed.strip_prefix('+') {
        return if after_plus.contains('+') {
            Vec::new()
        } else {
            vec![format!("+{digits}")]
        };
    }
    if main.contains('+') {
        return Vec::new();
    }
    let Some(meta) = region.and_then(|r| DATABASE.by_id(r.code())) else {
        return Vec::new();
    };
    let code = meta.country_code();
    let mut out = Vec::with_capacity(2);
    let international = meta
        .preferred_international_prefix()
        .or_else(|| meta.international_prefix().map(|r| r.as_str()))
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    if let Some(rest) = international.and_then(|p| digits.strip_prefix(p))
        && !rest.is_empty()
    {
        out.push(format!("+{rest}"));
    }
    match meta.national_prefix().and_then(|p| digits.strip_prefix(p)) {
        Some(rest) if !rest.is_empty() => out.push(format!("+{code}{rest}")),
        Some(_) => {}
        None => out.push(format!("+{code}{digits}")),
    }
    out.dedup();
    out
}

/// The trailing-digit keys ([`tail_key`]) that the digits a lookup
/// compares (`normalize(raw, region).match_digits()`) can have, worked out
/// without the full parser; `None` when that cannot be told cheaply.
///
/// The parser takes the country code from `+`, the region's international
/// prefix or the region, and then only strips prefixes from the rest, unless
/// the metadata has a national prefix transform rule (then `None`). So an
/// E.164 form is a country code before a suffix of the digits as written:
/// when the suffix has at least [`TRAILING_DIGITS`] digits its key is the
/// written digits' key, otherwise one of a few short forms. A number that
/// does not normalise compares its written digits. An empty list means the
/// lookup compares fewer than three digits and finds nothing.
#[must_use]
pub fn lookup_tail_keys(raw: &str, region: Option<Region>) -> Option<Vec<String>> {
    let written = Written::new(raw);
    let (main, digits) = (written.main, &written.digits);
    if digits.len() < 3 {
        return Some(Vec::new());
    }
    let mut keys = vec![tail_key(digits).to_owned()];
    // The cases where `normalize` gives up before parsing.
    if !written.parseable() {
        return Some(keys);
    }
    let plus = main.trim_start().starts_with('+');
    let region_meta = region.and_then(|r| DATABASE.by_id(r.code()));
    if !plus && region_meta.is_none() {
        // No country code to be found: the parser fails.
        return Some(keys);
    }
    // The international prefix is stripped as the parser does: matched at
    // the start, and not followed by a 0.
    // A prefix of plain digits (most regions' `00`) is matched without the
    // metadata's regex, which sits behind a shared lock and a small cache.
    let idd_end = region_meta
        .and_then(|m| m.international_prefix())
        .and_then(|re| {
            let source = re.as_str();
            if !source.is_empty() && source.bytes().all(|b| b.is_ascii_digit()) {
                digits.starts_with(source).then_some(source.len())
            } else {
                re.find(digits).filter(|m| m.start() == 0).map(|m| m.end())
            }
        });
    let after_idd = idd_end
        .map(|end| &digits[end..])
        .filter(|rest| !rest.starts_with('0'));
    let code = match (plus, after_idd, region_meta) {
        (false, None, Some(meta)) => meta.country_code(),
        (true, None, _) | (_, Some(_), _) => {
            let rest = after_idd.unwrap_or(digits);
            if rest.len() <= 2 || rest.starts_with('0') {
                return Some(keys);
            }
            let found = (1..=3.min(rest.len()))
                .filter_map(|len| rest[..len].parse::<u16>().ok())
                .find(|code| DATABASE.by_code(code).is_some());
            match found {
                Some(code) => code,
                None => return Some(keys),
            }
        }
        (false, None, None) => return Some(keys),
    };
    let transforms = match region_meta {
        Some(meta) => meta.national_prefix_transform_rule().is_some(),
        None => DATABASE.by_code(&code).is_none_or(|metas| {
            metas
                .iter()
                .any(|m| m.national_prefix_transform_rule().is_some())
        }),
    };
    if transforms {
        return None;
    }
    for len in 2..TRAILING_DIGITS.min(digits.len() + 1) {
        let short = format!("{code}{}", &digits[digits.len() - len..]);
        let key = tail_key(&short).to_owned();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }
    Some(keys)
}

/// Whether `raw` is written as a phone number: no letters outside a
/// `tel:` scheme, its parameters (`;phone-context=...`) and an extension
/// marker (`x`, `ext`). A SIP user name such as `max1000042` is not one,
/// whatever digits it holds.
#[must_use]
pub fn looks_like_number(raw: &str) -> bool {
    let decoded = percent_decoded(raw);
    let text = decoded.trim();
    let text = match text.get(..4) {
        Some(scheme) if scheme.eq_ignore_ascii_case("tel:") => &text[4..],
        _ => text,
    };
    let text = text.split(';').next().unwrap_or("");
    let (main, _) = split_extension(text);
    !main.chars().any(char::is_alphabetic)
}

/// `raw` with `%HH` escapes (as a SIP user part may hold them) decoded; an
/// escape that is not one stays as written.
pub fn percent_decoded(raw: &str) -> String {
    if !raw.contains('%') {
        return raw.to_owned();
    }
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The digits of a number as written, without its extension.
#[must_use]
pub fn written_digits(raw: &str) -> String {
    Written::new(raw).digits
}

/// Whether two digit strings denote the same number by their trailing
/// digits: equal, or, with leading zeros (trunk and international
/// prefixes) removed, the shorter one is the end of the longer one and has
/// at least [`TRAILING_DIGITS`] digits. So `0301000042` matches
/// `49301000042`, and `1000042` (written without area code) matches both.
#[must_use]
pub fn trailing_digits_match(a: &str, b: &str) -> bool {
    if a.is_empty() || b.is_empty() {
        return false;
    }
    if a == b {
        return true;
    }
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    let n = a.len().min(b.len());
    n >= TRAILING_DIGITS && a[a.len() - n..] == b[b.len() - n..]
}

/// The index key of the trailing-digits rule: the last [`TRAILING_DIGITS`]
/// digits (all of them when there are fewer).
#[must_use]
pub fn tail_key(digits: &str) -> &str {
    &digits[digits.len().saturating_sub(TRAILING_DIGITS)..]
}

fn split_extension(text: &str) -> (&str, Option<String>) {
    let lower = text.to_ascii_lowercase();
    let markers = [";ext=", "extension", "ext.", "ext", "x", "#"];
    for marker in markers {
        if let Some(at) = lower.find(marker) {
            let (main, rest) = (&text[..at], &text[at + marker.len()..]);
            let ext: String = rest.chars().filter(char::is_ascii_digit).collect();
            let rest_ok = rest
                .chars()
                .all(|c| c.is_ascii_digit() || c == ' ' || c == '.' || c == ':');
            if !ext.is_empty() && rest_ok && main.chars().any(|c| c.is_ascii_digit()) {
                return (main, Some(ext));
            }
        }
    }
    (text, None)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn de() -> Option<Region> {
        Some("de".parse().unwrap())
    }

    #[test]
    fn international_national_and_00_forms_agree() {
        for raw in [
            "+49 30 1000042",
            "030 1000042",
            "0049 30 1000042",
            "+49 (30) 100-0042",
            "tel:+49-30-1000042",
            "030/1000042",
        ] {
            let n = normalize(raw, de());
            assert_eq!(n.e164.as_deref(), Some("+49301000042"), "{raw}");
            assert_eq!(n.national.as_deref(), Some("0301000042"), "{raw}");
        }
    }

    #[test]
    fn extensions_are_kept_apart() {
        for raw in [
            "+49 30 1000042 x12",
            "+49 30 1000042 ext. 12",
            "+49301000042;ext=12",
        ] {
            let n = normalize(raw, de());
            assert_eq!(n.e164.as_deref(), Some("+49301000042"), "{raw}");
            assert_eq!(n.extension.as_deref(), Some("12"), "{raw}");
        }
    }

    #[test]
    fn national_form_needs_a_region() {
        let n = normalize("030 1000042", None);
        assert_eq!(n.e164, None);
        assert_eq!(n.digits, "0301000042");
        assert_eq!(
            normalize("+44 20 7946 0042", de()).e164.as_deref(),
            Some("+442079460042")
        );
    }

    #[test]
    fn short_and_odd_numbers_keep_their_digits() {
        let n = normalize("4711", de());
        assert_eq!((n.e164, n.digits.as_str()), (None, "4711"));
        let n = normalize("CALL-ME 123", de());
        assert_eq!(n.e164, None);
        assert_eq!(normalize("", de()).digits, "");
    }

    #[test]
    fn candidates_cover_the_written_forms() {
        assert_eq!(e164_candidates("+49 30 1000042", None), ["+49301000042"]);
        assert_eq!(e164_candidates("030 1000042", de()), ["+49301000042"]);
        assert_eq!(
            e164_candidates("0049 30 1000042", de()),
            ["+49301000042", "+49049301000042"]
        );
        assert_eq!(
            e164_candidates("(212) 555-1234", "US".parse().ok()),
            ["+12125551234"]
        );
        assert!(e164_candidates("030 1000042", None).is_empty());
        assert!(e164_candidates("12+3456", de()).is_empty());
        assert!(e164_candidates("call me", de()).is_empty());
        for raw in [
            "+49 30 1000042",
            "030 1000042",
            "0049 30 1000042",
            "0170 2000042",
        ] {
            let full = normalize(raw, de()).e164.unwrap();
            assert!(e164_candidates(raw, de()).contains(&full), "{raw}");
        }
    }

    #[test]
    fn regions_parse_case_insensitively() {
        assert_eq!("de".parse::<Region>().unwrap().code(), "DE");
        assert_eq!("GB".parse::<Region>().unwrap().to_string(), "GB");
        assert!("XX".parse::<Region>().is_err());
        assert!("DEU".parse::<Region>().is_err());
        assert!("".parse::<Region>().is_err());
    }

    #[test]
    fn trailing_digits_rule() {
        assert!(trailing_digits_match("49301000042", "1000042"));
        assert!(trailing_digits_match("4711", "4711"));
        assert!(!trailing_digits_match("49304711", "4711"));
        assert!(!trailing_digits_match("49301000042", "49301000043"));
        assert!(trailing_digits_match("0301000042", "49301000042"));
        assert!(!trailing_digits_match("0891000042", "49301000042"));
        assert!(!trailing_digits_match("", ""));
        assert_eq!(tail_key("49301000042"), "1000042");
        assert_eq!(tail_key("4711"), "4711");
    }

    /// The trailing-digit keys of `raw` include the one the parser's
    /// digits give (when there are keys and enough digits to compare).
    fn check_tail_keys(raw: &str, region: Option<Region>) -> Result<(), TestCaseError> {
        let n = normalize(raw, region);
        let digits = n.match_digits();
        if let Some(keys) = lookup_tail_keys(raw, region)
            && digits.len() >= 3
        {
            prop_assert!(
                keys.iter().any(|k| k == tail_key(digits)),
                "{raw:?} {region:?}: {digits} not in {keys:?}"
            );
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn normalize_never_panics(raw in ".{0,80}", region in prop::sample::select(vec!["DE", "US", "GB", "CH", "FR"])) {
            let n = normalize(&raw, region.parse().ok());
            if let Some(e164) = n.e164 {
                prop_assert!(e164.starts_with('+'));
            }
        }

        #[test]
        fn lookup_keys_cover_what_the_parser_compares(
            raw in "[+]?[0-9][0-9 ()/.-]{0,18}",
            region in prop::sample::select(vec!["", "DE", "US", "GB", "CH", "FR", "IT", "AR", "BR", "MX", "AT", "NZ"]),
        ) {
            check_tail_keys(&raw, region.parse().ok())?;
        }

        #[test]
        fn lookup_keys_cover_well_formed_numbers(
            prefix in prop::sample::select(vec!["+", "00", "0", "", "+0", "011", "0015", "+1 ", "+54 9 ", "015"]),
            body in "[1-9][0-9]{1,12}",
            region in prop::sample::select(vec!["", "DE", "US", "GB", "IT", "AR", "BR", "MX", "AU", "NZ"]),
        ) {
            let raw = format!("{prefix}{body}");
            check_tail_keys(&raw, region.parse().ok())?;
        }

        #[test]
        fn normalize_never_panics_on_phone_like_text(raw in "[0-9+ ()./x#-]{0,30}", region in prop::sample::select(vec!["DE", "US", "CH", "IT"])) {
            let _ = normalize(&raw, region.parse().ok());
        }
    }
}
