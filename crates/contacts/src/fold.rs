//! Case and accent folding, and the words a contact is found by.
//!
//! Pure functions: the store, the in-memory index and queries all fold text
//! the same way, so "mull" finds "Müller" and "braten" finds "Bråten" on
//! every path.

use unicode_normalization::{UnicodeNormalization, char::is_combining_mark};

/// Folds `text` for matching: compatibility decomposition, combining marks
/// removed, lower case, and the Latin letters that do not decompose spelled
/// out (`ß` → `ss`, `ø` → `o`, `æ` → `ae`, `ł` → `l`, ...).
#[must_use]
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.nfkd() {
        if is_combining_mark(c) {
            continue;
        }
        match c {
            'ß' | 'ẞ' => out.push_str("ss"),
            'Æ' | 'æ' => out.push_str("ae"),
            'Œ' | 'œ' => out.push_str("oe"),
            'Þ' | 'þ' => out.push_str("th"),
            'Ø' | 'ø' => out.push('o'),
            'Ł' | 'ł' => out.push('l'),
            'Đ' | 'đ' | 'Ð' | 'ð' => out.push('d'),
            'ı' => out.push('i'),
            _ => out.extend(c.to_lowercase()),
        }
    }
    out
}

/// The folded words of `text` that a prefix query is matched against.
///
/// Every whitespace-separated token gives its letters and digits joined
/// ("O'Brien" → `obrien`, "Jean-Luc" → `jeanluc`) and, when punctuation split
/// it, each part on its own (`o`, `brien`; `jean`, `luc`). Duplicates are
/// removed; order is first occurrence.
#[must_use]
pub fn words(text: &str) -> Vec<String> {
    let folded = fold(text);
    let mut out: Vec<String> = Vec::new();
    let push = |w: String, out: &mut Vec<String>| {
        if !w.is_empty() && !out.contains(&w) {
            out.push(w);
        }
    };
    for token in folded.split_whitespace() {
        let joined: String = token.chars().filter(|c| c.is_alphanumeric()).collect();
        let parts: Vec<&str> = token
            .split(|c: char| !c.is_alphanumeric())
            .filter(|p| !p.is_empty())
            .collect();
        push(joined, &mut out);
        if parts.len() > 1 {
            for part in parts {
                push(part.to_owned(), &mut out);
            }
        }
    }
    out
}

/// One term of a search query, already folded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Term {
    /// Letters (and maybe digits): prefix of a name or organisation word.
    Word(String),
    /// Only digits: found anywhere in a phone number.
    Digits(String),
}

/// Splits a query typed by a user into terms; every term must match.
///
/// A query made only of digits and the punctuation people type in phone
/// numbers (`+ - ( ) / .` and spaces) is one [`Term::Digits`]: "+49 30 100"
/// looks for `4930100`. Otherwise each whitespace-separated token is a term,
/// a [`Term::Digits`] when it is all digits.
#[must_use]
pub fn query_terms(query: &str) -> Vec<Term> {
    let trimmed = query.trim();
    let phone_like = trimmed.chars().any(|c| c.is_ascii_digit())
        && trimmed
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '(' | ')' | '/' | '.' | ' '));
    if phone_like {
        let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
        return vec![Term::Digits(digits)];
    }
    let mut terms = Vec::new();
    for token in fold(trimmed).split_whitespace() {
        let joined: String = token.chars().filter(|c| c.is_alphanumeric()).collect();
        if joined.is_empty() {
            continue;
        }
        let term = if joined.chars().all(|c| c.is_ascii_digit()) {
            Term::Digits(joined)
        } else {
            Term::Word(joined)
        };
        if !terms.contains(&term) {
            terms.push(term);
        }
    }
    terms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_accents_case_and_special_letters() {
        assert_eq!(fold("Müller"), "muller");
        assert_eq!(fold("Bråten"), "braten");
        assert_eq!(fold("Øster"), "oster");
        assert_eq!(fold("Strauß"), "strauss");
        assert_eq!(fold("Łęcki"), "lecki");
        assert_eq!(fold("Dvořák"), "dvorak");
        assert_eq!(fold("Nguyễn"), "nguyen");
        assert_eq!(fold("ÆRØ"), "aero");
        assert_eq!(fold("Ｆｕｌｌｗｉｄｔｈ"), "fullwidth");
    }

    #[test]
    fn words_keep_joined_and_split_forms() {
        assert_eq!(words("Seán O'Brien"), ["sean", "obrien", "o", "brien"]);
        assert_eq!(
            words("Jean-Luc  Picard"),
            ["jeanluc", "jean", "luc", "picard"]
        );
        assert_eq!(words("  "), Vec::<String>::new());
        assert_eq!(words("Anna anna ANNA"), ["anna"]);
    }

    #[test]
    fn phone_like_queries_are_one_digit_term() {
        assert_eq!(
            query_terms("+49 (30) 100-42"),
            [Term::Digits("493010042".into())]
        );
        assert_eq!(
            query_terms("Müll 0170"),
            [Term::Word("mull".into()), Term::Digits("0170".into())]
        );
        assert_eq!(query_terms("o'bri"), [Term::Word("obri".into())]);
        assert!(query_terms(" - ").is_empty());
        assert!(query_terms("").is_empty());
    }
}
