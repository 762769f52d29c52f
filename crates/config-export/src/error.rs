//! Errors of parsing, validation, export and import.

use std::fmt;

/// A line and column in a document, both counted from 1; the column counts
/// characters, not bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1, in characters.
    pub column: usize,
}

impl Position {
    /// The position of byte `offset` in `text`.
    pub(crate) fn of_offset(text: &str, offset: usize) -> Self {
        let mut offset = offset.min(text.len());
        while !text.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let column = before[line_start..].chars().count() + 1;
        Self { line, column }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// A document or a [`Config`](crate::Config) that is not valid: what is wrong,
/// the element path (`softphone-config/account[alice]/registrar`) and, for a
/// parsed document, the line and column.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {kind}{}", .position.map(|p| format!(" ({p})")).unwrap_or_default())]
pub struct ConfigError {
    /// The element path; empty when the document has no root element yet.
    pub path: String,
    /// Where in the document, when the error comes from parsing one.
    pub position: Option<Position>,
    /// What is wrong.
    pub kind: ErrorKind,
}

impl ConfigError {
    pub(crate) fn new(
        path: impl Into<String>,
        position: Option<Position>,
        kind: ErrorKind,
    ) -> Self {
        Self {
            path: path.into(),
            position,
            kind,
        }
    }
}

/// What is wrong with a document or a configuration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The text is not well-formed XML.
    #[error("malformed xml: {0}")]
    Syntax(String),
    /// The document is larger than [`MAX_DOCUMENT_BYTES`](crate::MAX_DOCUMENT_BYTES).
    #[error("document of {size} bytes is larger than the limit of {limit}")]
    TooLarge {
        /// Size of the document.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Elements are nested deeper than [`MAX_DEPTH`](crate::MAX_DEPTH).
    #[error("elements nested deeper than {limit}")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// The root element is not `softphone-config`.
    #[error("root element is `{found}`, expected `softphone-config`")]
    WrongRoot {
        /// The root element found.
        found: String,
    },
    /// The `version` attribute is missing or names a version this crate does
    /// not read.
    #[error("unsupported document version `{found}`, this reader knows version 1")]
    UnsupportedVersion {
        /// The version found (empty when missing).
        found: String,
    },
    /// A required element is absent.
    #[error("missing element `{element}`")]
    Missing {
        /// The element's name.
        element: &'static str,
    },
    /// A required attribute is absent.
    #[error("missing attribute `{attribute}`")]
    MissingAttribute {
        /// The attribute's name.
        attribute: &'static str,
    },
    /// An element that may appear once appears again.
    #[error("element `{element}` appears more than once")]
    Duplicate {
        /// The element's name.
        element: String,
    },
    /// Two entries share an identifier that must be unique.
    #[error("identifier `{id}` is used twice")]
    DuplicateId {
        /// The identifier.
        id: String,
    },
    /// A value element holds child elements.
    #[error("element holds child elements where a value is expected")]
    NotAValue,
    /// A value does not have the expected form. The value itself is not
    /// repeated, since it may be a secret.
    #[error("invalid value, expected {expected}")]
    InvalidValue {
        /// A description of what is allowed.
        expected: &'static str,
    },
    /// The `locked` attribute is neither `true` nor `false`.
    #[error("attribute `locked` must be `true` or `false`")]
    InvalidLocked,
    /// A secret holds the redaction placeholder: the document is a redacted
    /// export, which cannot be imported as a configuration.
    #[error("secret was redacted; a redacted export cannot be imported")]
    RedactedSecret,
    /// [`Config::locked`](crate::Config::locked) names an element that the
    /// configuration does not contain.
    #[error("locked path names no element of this configuration")]
    UnknownLockedPath,
    /// A fragment in an `extra` field is not one well-formed element.
    #[error("extra fragment is not one well-formed element")]
    InvalidExtra,
}

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExportError {
    /// The configuration does not validate; nothing was written.
    #[error("invalid configuration: {0}")]
    Invalid(#[from] ConfigError),
    /// The passphrase is empty.
    #[error("empty passphrase")]
    EmptyPassphrase,
    /// The age encryption failed.
    #[error("encryption failed: {0}")]
    Encryption(String),
}

/// Why an import failed. An import that fails yields no configuration at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImportError {
    /// The input is neither an age file nor an XML document.
    #[error("input is neither an age-encrypted file nor an xml document")]
    UnknownFormat,
    /// The input is encrypted and no passphrase was given.
    #[error("the file is encrypted: a passphrase is required")]
    PassphraseRequired,
    /// The input is encrypted to keys, not to a passphrase.
    #[error("the file is not encrypted with a passphrase")]
    NotPassphraseEncrypted,
    /// The passphrase does not decrypt the file.
    #[error("wrong passphrase")]
    WrongPassphrase,
    /// The file asks for more scrypt work than the import accepts.
    #[error("the file needs scrypt work factor {required}, more than the accepted {limit}")]
    ExcessiveWork {
        /// The work factor (log2 N) the file needs.
        required: u8,
        /// The largest accepted.
        limit: u8,
    },
    /// The age file is damaged or truncated.
    #[error("damaged encrypted file: {0}")]
    Damaged(String),
    /// The document is not UTF-8.
    #[error("document is not utf-8")]
    NotUtf8,
    /// The document does not validate.
    #[error("invalid document: {0}")]
    Invalid(#[from] ConfigError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_counts_lines_and_characters() {
        let text = "ab\ncdé\nfg";
        assert_eq!(
            Position::of_offset(text, 0),
            Position { line: 1, column: 1 }
        );
        assert_eq!(
            Position::of_offset(text, 3),
            Position { line: 2, column: 1 }
        );
        // "cdé" is 4 bytes; offset 7 is the newline after it.
        assert_eq!(
            Position::of_offset(text, 7),
            Position { line: 2, column: 4 }
        );
        assert_eq!(
            Position::of_offset(text, 8),
            Position { line: 3, column: 1 }
        );
    }

    #[test]
    fn message_names_path_and_position() {
        let error = ConfigError::new(
            "softphone-config/account[a]",
            Some(Position { line: 3, column: 5 }),
            ErrorKind::Missing {
                element: "registrar",
            },
        );
        assert_eq!(
            error.to_string(),
            "softphone-config/account[a]: missing element `registrar` (line 3, column 5)"
        );
    }
}
