//! Errors of the store and of syncing.

use std::{io, path::PathBuf};

use crate::{
    ldap::LdapError,
    model::{ContactId, Source},
    oauth::CloudError,
    photo::PhotoError,
};

/// Why a store operation failed. Nothing stored is lost: a failed write
/// leaves the store as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The profile directory could not be created.
    #[error("creating the profile directory {path}: {source}")]
    ProfileDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The database file could not be created.
    #[error("creating the contact store {path}: {source}")]
    Create {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The database file could not be opened or set up.
    #[error("opening the contact store {path}: {source}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// The underlying error.
        source: rusqlite::Error,
    },
    /// A schema migration failed (the store keeps its previous version).
    #[error("migrating the contact store to schema version {version}: {source}")]
    Migration {
        /// The version being migrated to.
        version: u32,
        /// The underlying error.
        source: rusqlite::Error,
    },
    /// The database was written by a newer version of this library.
    #[error("the contact store has schema version {found}; this library knows up to {supported}")]
    TooNew {
        /// The version found.
        found: i64,
        /// The newest version known here.
        supported: u32,
    },
    /// An SQL statement failed.
    #[error("contact store: {operation}: {source}")]
    Sqlite {
        /// What was being done.
        operation: &'static str,
        /// The underlying error.
        source: rusqlite::Error,
    },
    /// A stored row could not be read back.
    #[error("stored contact {id} is unreadable: {source}")]
    Corrupt {
        /// Its id.
        id: ContactId,
        /// The underlying error.
        source: serde_json::Error,
    },
    /// No contact has this id.
    #[error("no contact with id {0}")]
    NotFound(ContactId),
    /// Contacts of other sources are changed by syncing, not locally.
    #[error("contact {id} comes from {origin} and can only be changed there")]
    NotLocal {
        /// Its id.
        id: ContactId,
        /// Its source.
        origin: Source,
    },
    /// The contact has nothing to show: no name, organisation, e-mail or
    /// number.
    #[error("a contact needs a name, an organisation, an e-mail address or a number")]
    Empty,
    /// A synced contact lacks its id at the source.
    #[error("contact {display_name:?} from {origin} has no source id")]
    MissingSourceId {
        /// Its source.
        origin: Source,
        /// Its name.
        display_name: String,
    },
    /// A contact for the local source was given to a sync, or the reverse.
    #[error("source {0} cannot be synced (local contacts are added one by one)")]
    NotSyncable(Source),
    /// The photo cache failed.
    #[error(transparent)]
    Photo(#[from] PhotoError),
}

impl StoreError {
    pub(crate) fn sql(operation: &'static str) -> impl FnOnce(rusqlite::Error) -> Self {
        move |source| Self::Sqlite { operation, source }
    }
}

/// Why a sync did not complete. The store keeps what it had before the
/// sync started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SyncError {
    /// The directory could not be read to the end.
    #[error("reading the directory failed: {0}")]
    Directory(#[from] LdapError),
    /// A cloud source (Google, Exchange) could not be read to the end.
    #[error("reading the cloud source failed: {0}")]
    Cloud(#[from] CloudError),
    /// Writing what was read failed.
    #[error("storing the synced contacts failed: {0}")]
    Store(#[from] StoreError),
}
