//! # config-export
//!
//! The configuration of a softphone and its one XML document. The same
//! schema (`<softphone-config version="1">`, described element by element in
//! `docs/provisioning.md`) serves the file a provisioning server hands out
//! and the file a user exports to move an install.
//!
//! What this crate is:
//!
//! - a typed [`Config`]: [`Account`]s, [`Tls`] trust, [`Media`], contact
//!   sources ([`Contacts`]), [`Relay`], [`Push`], [`Privacy`], the
//!   [`Provisioning`] re-check interval and the URLs of included documents;
//! - a reader, [`Config::from_xml`], that checks the whole document before
//!   returning anything and answers bad input with a [`ConfigError`] naming
//!   the element path, line and column;
//! - a lossless round trip: elements and attributes this version does not
//!   know are kept in each level's [`Extra`] and written back, and elements an
//!   administrator marked `locked="true"` are listed in [`Config::locked`];
//! - [`Secret`], the type of every password and token, which prints `***`;
//! - export files ([`Export`]): encrypted with a passphrase in the age format
//!   unless plaintext is asked for by name, or redacted for support; and
//!   [`Import`], which tells an age file from plain XML.
//!
//! What it is not: it fetches nothing (the `provisioning` crate does), reads
//! no clock, opens no file. Input and output are strings and bytes.
//!
//! ```
//! use config_export::{Config, Export, Import, Secret, SrtpPolicy};
//!
//! let document = r#"<?xml version="1.0"?>
//! <softphone-config version="1">
//!   <account id="alice">
//!     <user>alice</user>
//!     <password>s3cret</password>
//!     <registrar>sips:pbx.example.com</registrar>
//!     <transport>tls</transport>
//!   </account>
//!   <media locked="true"><srtp>mandatory</srtp></media>
//!   <x-vendor-tuning level="2"/>
//! </softphone-config>"#;
//!
//! let config = Config::from_xml(document)?;
//! assert_eq!(config.media.srtp, SrtpPolicy::Mandatory);
//! assert!(config.is_locked("softphone-config/media/srtp"));
//! assert_eq!(config.extra.elements, ["<x-vendor-tuning level=\"2\"/>"]);
//! assert_eq!(format!("{:?}", config.accounts[0].password), "Some(***)");
//!
//! // Encrypted by default; a low work factor keeps this example fast.
//! let passphrase = Secret::new("correct horse battery staple");
//! let file = Export::new(&config).with_work_factor(8).encrypt(&passphrase)?;
//! let back = Import::new().with_passphrase(&passphrase).import(file.as_bytes())?;
//! assert_eq!(back, config);
//!
//! // A redacted export hides every secret and cannot be imported.
//! let support = Export::new(&config).redacted()?;
//! assert!(!support.contains("s3cret"));
//! assert!(Import::new().import(support.as_bytes()).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Time and randomness
//!
//! Nothing here reads a clock. Encryption takes its salt and file key from
//! the operating system's random source (through age). The scrypt work
//! factor is explicit: [`DEFAULT_WORK_FACTOR`] on export, at most
//! [`DEFAULT_MAX_WORK_FACTOR`] accepted on import.
//!
//! ## Limits
//!
//! Documents are at most [`MAX_DOCUMENT_BYTES`] long and nest at most
//! [`MAX_DEPTH`] elements deep. Document type declarations and entities other
//! than the five predefined ones are refused. Comments and processing
//! instructions are not kept.
//!
//! ## Feature flags
//!
//! | flag | default | effect |
//! |------|---------|--------|
//! | none | | |

mod document;
mod error;
mod export;
mod model;
mod secret;
mod xml;

pub use document::{REDACTED, VERSION, redact_uri};
pub use error::{ConfigError, ErrorKind, ExportError, ImportError, Position};
pub use export::{
    DEFAULT_MAX_WORK_FACTOR, DEFAULT_WORK_FACTOR, Export, Import, PLAINTEXT_WARNING,
    PlaintextExport,
};
pub use model::{
    Account, Config, ContactSource, Contacts, DtmfMode, Extra, LdapSource, MAX_CHECK_INTERVAL,
    MIN_CHECK_INTERVAL, Media, OAuthSource, Privacy, Provisioning, Push, Relay, SrtpPolicy, Tls,
    Transport, TrustAnchor, Turn, UnknownKeyword,
};
pub use secret::Secret;
pub use xml::{MAX_DEPTH, MAX_DOCUMENT_BYTES};
