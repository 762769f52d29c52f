//! # provisioning
//!
//! Fetches a softphone's provisioning document over HTTPS, checks it with
//! [`config_export`], and stores the configuration in a profile directory,
//! atomically: a document that fails to fetch, parse or validate leaves the
//! stored configuration exactly as it was.
//!
//! What it does:
//!
//! - **HTTPS** with rustls (aws-lc-rs), certificates verified against the
//!   system's roots or only the CAs given ([`Settings::with_ca_file`]).
//!   Plain `http:` is refused unless asked for through
//!   [`Settings::dangerous`]`().allow_plain_http()`.
//! - **Authentication**: HTTP Basic and Digest (RFC 7616: SHA-256 and MD5,
//!   `qop=auth`), whichever the server asks for, Digest first. Credentials go
//!   only to the origin of the provisioning URL.
//! - **Limits**: redirects are followed by hand, at most
//!   [`Settings::with_max_redirects`], loops detected; the body is streamed
//!   and cut off at [`Settings::with_max_body_bytes`]; one time limit per
//!   exchange.
//! - **Caching**: `ETag` and `Last-Modified` are kept per URL; the next
//!   check sends `If-None-Match` / `If-Modified-Since`, and a 304 reuses the
//!   cached copy.
//! - **Placeholders** `{user}` and `{installation_id}` in URLs,
//!   percent-encoded.
//! - **Includes**: `<include>URL</include>` pulls in another document
//!   (relative URLs resolve against the including one); nesting is bounded
//!   ([`Settings::with_max_include_depth`]) and loops are errors. How
//!   documents combine is in `docs/provisioning.md`.
//! - **Locks and local overrides**: [`merge`] lays the user's
//!   [`LocalOverrides`] over the provisioned configuration, refusing (and
//!   reporting) overrides of fields the administrator locked.
//! - **Re-checks**: [`Provisioner::run_periodic`] checks on the document's
//!   `<check-interval>` with back-off on failure, and at once when a
//!   [`CheckTrigger`] fires (a SIP NOTIFY with `Event: check-sync`). The
//!   timing itself is the sans-IO [`Schedule`].
//!
//! ```no_run
//! use provisioning::{Credentials, Provisioner, Settings};
//!
//! # async fn run() -> Result<(), provisioning::ProvisionError> {
//! let settings = Settings::new("https://prov.example.com/{user}.xml")
//!     .with_credentials(Credentials::new("alice", "secret"));
//! let provisioner = Provisioner::new("/var/lib/softphone/alice", settings)?;
//! let outcome = provisioner.check_now().await?;
//! assert!(outcome.config.includes.is_empty());
//!
//! // Keep it fresh; the SIP stack calls trigger.check_sync() on check-sync.
//! let trigger = provisioner.trigger();
//! let task = tokio::spawn(async move {
//!     provisioner
//!         .run_periodic(|result| {
//!             if let Err(error) = result {
//!                 eprintln!("provisioning: {error}");
//!             }
//!         })
//!         .await;
//! });
//! trigger.check_sync();
//! # task.abort();
//! # Ok(())
//! # }
//! ```
//!
//! What it is not: it does not interpret the configuration (the
//! `softphone` crate does) and keeps no secrets out of the profile
//! directory: the stored document holds passwords in clear, in a file only
//! its owner may read.
//!
//! ## Time
//!
//! [`Schedule`] reads no clock: tests drive it with a virtual one.
//! [`Provisioner::run_periodic`] sleeps on tokio's clock. HTTP time limits
//! are tokio timers too.
//!
//! ## Feature flags
//!
//! | flag | default | effect |
//! |------|---------|--------|
//! | none | | |

mod auth;
mod error;
mod fetch;
mod layer;
mod overrides;
mod provisioner;
mod schedule;
mod settings;
mod store;
mod template;

pub use error::{ProvisionError, UnauthorizedReason};
pub use overrides::{LocalOverrides, Merged, Override, Refusal, RefusedOverride, merge};
pub use provisioner::{CheckTrigger, DocumentSource, Outcome, Provisioner, provision};
pub use schedule::{RetryPolicy, Schedule};
pub use settings::{
    Credentials, DEFAULT_CHECK_INTERVAL, DEFAULT_MAX_INCLUDE_DEPTH, DEFAULT_MAX_REDIRECTS,
    DEFAULT_TIMEOUT, DangerousSettings, MAX_DOCUMENTS, MIN_CHECK_INTERVAL, Settings, Trust,
};
pub use store::{CACHE_DIR, CONFIG_FILE, INSTALLATION_ID_FILE, Store};
