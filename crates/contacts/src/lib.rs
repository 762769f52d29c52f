//! # contacts
//!
//! The contacts of a softphone: a contact model, a SQLite store with
//! full-text search, E.164 number normalisation and caller lookup, and LDAP
//! and LDAPS directories that sync into the store or are searched live, and
//! Google People and Exchange (Microsoft Graph) address books synced
//! incrementally after an OAuth 2.0 login.
//!
//! ```no_run
//! use contacts::{Contact, Contacts, LdapSource, NumberKind};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let de = "DE".parse().ok();
//! let mut book = Contacts::open("/path/to/profile")?.with_default_region(de);
//! book.add(Contact::new("Jörg Müller").with_number(NumberKind::Mobile, "0170 2000042", de))?;
//!
//! let corp = LdapSource::new("corp", "ldaps://ldap.example.com", "ou=people,dc=example,dc=com")?;
//! let report = book.sync_ldap(&corp).await?; // one transaction; nothing changes on failure
//! println!("{} added, {} removed", report.counts.added, report.counts.removed);
//!
//! for hit in book.search("mull", 10)? {          // "mull" finds "Müller"
//!     println!("{}", serde_json::to_string(&hit)?);
//! }
//! if let Some(caller) = book.lookup("+49 170 2000042", de)? {
//!     println!("call from {}", caller.display_name);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Parts
//!
//! | part | what | I/O |
//! |---|---|---|
//! | [`Contact`] and friends | the model; serde JSON (`display_name`, `organization`, `numbers: [{type, number, raw}]`, `source`, ...) | none |
//! | [`normalize`], [`Region`] | E.164 through `phonenumber`, extensions kept, trailing-digits rule | none |
//! | [`fold`], [`SearchIndex`] | case and accent folding; search as you type in memory | none |
//! | [`Store`] | SQLite (WAL, numbered migrations), number index, FTS5 (diacritics removed), sync tokens and deletions | file |
//! | [`PhotoCache`] | photos on disk by SHA-256 | file |
//! | [`LdapSource`] | LDAP, LDAPS, StartTLS, anonymous or simple bind, paged results (RFC 2696), time and size limits, RFC 4515 escaping | network (tokio) |
//! | [`LoginFlow`], [`OAuthSession`], [`StoredLogin`] | OAuth 2.0 for installed apps: PKCE S256, loopback redirect, state check, refresh; the refresh token never printed ([`RefreshToken`]), kept in a 0600 file | network, file |
//! | [`GoogleSource`] | People API `connections.list`: pages, sync tokens, full resync when a token expires | network |
//! | [`ExchangeSource`] | Graph `/me/contacts/delta`: next and delta links, `@removed` | network |
//! | [`Contacts`] | all of the above for one profile directory | file, network |
//!
//! ## Search
//!
//! Every word of a query must be the start of a word of the name or the
//! organisation (`"mull"` finds "Müller", `"braten"` finds "Bråten",
//! `"anna mul"` needs both); digits are found anywhere in a number, in its
//! E.164, national or written form (`"0301000"`, `"+49 30"`, `"000042"`).
//! Results rank favourites first, then exact before prefix before infix
//! matches, then by name. A contact from one source that shares an E.164
//! number or an e-mail address with a better-ranked contact from another
//! source is merged into it. [`SearchIndex`] answers from memory;
//! [`Store::search`] gives the same answer through FTS5 without the index.
//!
//! ## Caller lookup
//!
//! [`Contacts::lookup`] normalises the number and finds it by exact E.164.
//! Stored numbers that could not be normalised (internal extensions, numbers
//! without area code) are compared by their trailing digits instead.
//!
//! ## Syncing
//!
//! A sync reads the whole directory first; only then, in one transaction,
//! does it add, update and remove contacts. A directory that fails part way
//! (connection lost, size or time limit exceeded) changes nothing; running
//! the same sync twice changes nothing the second time. Favourite marks and
//! contact ids survive syncs. Deletions are recorded ([`Store::deletions`]).
//!
//! ## Google and Exchange
//!
//! ```no_run
//! use std::time::Duration;
//! use contacts::{CloudHttp, Contacts, GoogleSource, LoginFlow, OAuthConfig, StoredLogin};
//!
//! # async fn run(book: &mut Contacts) -> Result<(), Box<dyn std::error::Error>> {
//! let http = CloudHttp::new()?;
//! let flow = LoginFlow::start(OAuthConfig::google("CLIENT_ID"), &http).await?;
//! println!("open {}", flow.authorize_url());     // the user signs in there
//! let mut session = flow.finish(&http, Duration::from_secs(300)).await?;
//! StoredLogin::new("me", &session).save("oauth-google.json".as_ref())?; // mode 0600
//! let report = book.sync_google(&GoogleSource::new("me"), &http, &mut session).await?;
//! # Ok(())
//! # }
//! ```
//!
//! The first sync reads every page and stores the sync token (Google's
//! `nextSyncToken`, Graph's `@odata.deltaLink`); later syncs read only the
//! changes and apply them with [`Store::apply_changes`]. An expired token
//! (410) gives a full sync, which keeps contact ids and favourites. A 401
//! refreshes the access token once; a 429 waits for `Retry-After` (up to
//! [`MAX_RETRY_AFTER`], three times). Every page is read before anything is
//! written, so a sync failing part way changes nothing. Endpoints are
//! `https` only; [`CloudHttp::dangerous_allow_plain_http`] exists for test
//! servers on loopback. Google photos are downloaded (placeholders
//! skipped, without the access token) into the photo cache; Exchange photos
//! are not fetched.

mod error;
mod exchange;
pub mod fold;
mod google;
mod ldap;
mod model;
mod number;
mod oauth;
mod phonebook;
mod photo;
mod search;
mod store;

pub use error::{StoreError, SyncError};

/// Creates `dir` and its missing parents for the owner only (mode 0700):
/// contacts are personal data.
fn private_dir(dir: &std::path::Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Writes `bytes` to a new or truncated file readable by the owner only
/// (mode 0600 when it is created).
fn write_private(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(bytes)
}
pub use exchange::{ExchangeSource, SELECT as GRAPH_SELECT, graph_to_contact};
pub use google::{GoogleSource, PERSON_FIELDS, person_to_contact};
pub use ldap::{
    AttributeMap, DirectoryEntry, EntryError, Fetched, LdapBind, LdapError, LdapSource,
    MAX_ENTRIES, MAX_TEXT_LEN, MAX_VALUES, Password, SkippedEntry, TlsTrust, escape_filter_value,
};
pub use model::{
    Contact, ContactId, ContactNumber, ImAddress, NumberKind, PhotoRef, PostalAddress, Source,
    UnknownSource,
};
pub use number::{
    MAX_NUMBER_LEN, NormalizedNumber, Region, TRAILING_DIGITS, UnknownRegion, e164_candidates,
    looks_like_number, lookup_tail_keys, normalize, percent_decoded, tail_key,
    trailing_digits_match, written_digits,
};
pub use oauth::{
    Changes, CloudError, CloudHttp, LOGIN_TIMEOUT, LoginFlow, MAX_PAGES, MAX_RETRY_AFTER,
    OAuthConfig, OAuthSession, RefreshToken, StoredLogin, is_loopback_url,
};
pub use phonebook::{
    Contacts, DATABASE_FILE, DirectorySearch, MergedContact, PHOTO_DIR, SearchHit, SyncReport,
};
pub use photo::{MAX_PHOTO_BYTES, PhotoCache, PhotoError};
pub use search::{
    IndexEntry, IndexHit, MatchKind, SearchIndex, classify, classify_all, merge_duplicates, rank,
};
pub use store::{Deletion, SCHEMA_VERSION, Store, SyncCounts, SyncState};
