//! The SQLite store: contacts, a number index, FTS5 tables and sync
//! bookkeeping.
//!
//! One database file in WAL mode. The full contact is kept as JSON in
//! `contacts.data`; the other tables are derived from it on every write and
//! serve the queries: `numbers` (exact E.164 and trailing-digit lookups),
//! `contact_fts` (names, organisation, number digits; diacritics removed)
//! and `number_grams` (trigrams of number digits, for digits found
//! anywhere). Schema changes are numbered migrations recorded in
//! `PRAGMA user_version`.

use std::{
    collections::{HashMap, HashSet},
    path::Path,
    time::{SystemTime, UNIX_EPOCH},
};

use std::os::unix::fs::OpenOptionsExt;

use rusqlite::{Connection, OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};

use crate::{
    error::StoreError,
    fold::{self, Term},
    model::{Contact, ContactId, Source},
    number::{self, Region},
    search::{self, IndexEntry, IndexHit, MatchKind},
};

/// Migrations, in order; entry `i` takes the schema from version `i` to
/// `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 1: contacts, numbers, full-text tables, sync bookkeeping.
    r"
    CREATE TABLE contacts (
        id           INTEGER PRIMARY KEY,
        source       TEXT NOT NULL,
        source_id    TEXT,
        display_name TEXT NOT NULL,
        sort_key     TEXT NOT NULL,
        favourite    INTEGER NOT NULL DEFAULT 0,
        fingerprint  TEXT NOT NULL,
        data         TEXT NOT NULL,
        words        TEXT NOT NULL,
        number_forms TEXT NOT NULL,
        merge_keys   TEXT NOT NULL,
        updated_at   INTEGER NOT NULL
    );
    CREATE UNIQUE INDEX contacts_by_source_id ON contacts(source, source_id);
    CREATE TABLE numbers (
        contact_id   INTEGER NOT NULL REFERENCES contacts(id) ON DELETE CASCADE,
        e164         TEXT,
        match_digits TEXT NOT NULL,
        tail         TEXT NOT NULL
    );
    CREATE INDEX numbers_by_e164 ON numbers(e164) WHERE e164 IS NOT NULL;
    CREATE INDEX numbers_by_tail ON numbers(tail);
    CREATE INDEX numbers_by_contact ON numbers(contact_id);
    CREATE VIRTUAL TABLE contact_fts USING fts5(
        names, organization, numbers,
        content = '', contentless_delete = 1,
        tokenize = 'unicode61 remove_diacritics 2', prefix = '1 2 3'
    );
    CREATE VIRTUAL TABLE number_grams USING fts5(
        forms, content = '', contentless_delete = 1, tokenize = 'trigram'
    );
    CREATE TABLE sync_state (
        source     TEXT PRIMARY KEY,
        token      TEXT,
        synced_at  INTEGER NOT NULL,
        contacts   INTEGER NOT NULL
    );
    CREATE TABLE deletions (
        source     TEXT NOT NULL,
        source_id  TEXT NOT NULL,
        deleted_at INTEGER NOT NULL
    );
    CREATE INDEX deletions_by_source ON deletions(source, deleted_at);
    ",
    // 2: the extension of an indexed number: a caller from a company's
    // main number is none of the people reached at its extensions. The
    // rows are written again from the contacts after this (see `setup`).
    r"
    ALTER TABLE numbers ADD COLUMN extension TEXT;
    ",
];

/// The schema version whose migration needs the contacts' index rows
/// written again: number rows then carry their extension.
const REINDEX_AT: u32 = 2;

/// The schema version this library writes.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// What a sync changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncCounts {
    /// New contacts.
    pub added: usize,
    /// Contacts whose data changed.
    pub updated: usize,
    /// Contacts deleted at the source and removed here.
    pub removed: usize,
    /// Contacts that were already up to date.
    pub unchanged: usize,
}

/// The bookkeeping of a source's last completed sync.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SyncState {
    /// The source.
    pub source: Source,
    /// The source's sync token (for incremental syncs), if it has one.
    pub token: Option<String>,
    /// When the sync completed, seconds since the Unix epoch.
    pub synced_at: i64,
    /// How many contacts the source had then.
    pub contacts: usize,
}

/// A contact deleted at its source or locally.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Deletion {
    /// Its id at the source (the store id for local contacts).
    pub source_id: String,
    /// When, seconds since the Unix epoch.
    pub deleted_at: i64,
}

/// The contact store.
#[derive(Debug)]
pub struct Store {
    conn: Connection,
}

impl Store {
    /// Opens (or creates) the database at `path` and brings its schema up
    /// to date.
    ///
    /// # Errors
    ///
    /// [`StoreError::Open`], [`StoreError::Migration`],
    /// [`StoreError::TooNew`].
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        // The owner's only; SQLite gives its journal files the same mode.
        // Created only when missing, so an open store is never emptied.
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(StoreError::Create {
                    path: path.to_path_buf(),
                    source,
                });
            }
        }
        let conn = Connection::open(path).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        Self::setup(conn, path)
    }

    /// A store in memory (tests, benchmarks).
    ///
    /// # Errors
    ///
    /// As [`Store::open`].
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let conn = Connection::open_in_memory().map_err(|source| StoreError::Open {
            path: ":memory:".into(),
            source,
        })?;
        Self::setup(conn, Path::new(":memory:"))
    }

    fn setup(mut conn: Connection, path: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(open_err)?;
        conn.set_prepared_statement_cache_capacity(64);
        let found: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(open_err)?;
        if found > i64::from(SCHEMA_VERSION) {
            return Err(StoreError::TooNew {
                found,
                supported: SCHEMA_VERSION,
            });
        }
        for (from, sql) in MIGRATIONS
            .iter()
            .enumerate()
            .skip(usize::try_from(found).unwrap_or(0))
        {
            let version = from as u32 + 1;
            let migration = |source| StoreError::Migration { version, source };
            // Written at once, so that a second process opening the store
            // waits here and then finds the step done, not half done.
            let tx = conn
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(migration)?;
            let now_at: i64 = tx
                .pragma_query_value(None, "user_version", |row| row.get(0))
                .map_err(migration)?;
            if now_at > i64::from(SCHEMA_VERSION) {
                return Err(StoreError::TooNew {
                    found: now_at,
                    supported: SCHEMA_VERSION,
                });
            }
            if now_at >= i64::from(version) {
                continue;
            }
            tx.execute_batch(sql).map_err(migration)?;
            // Rows another process wrote are indexed too (costs nothing on
            // a new, empty store).
            if version == REINDEX_AT {
                reindex(&tx).map_err(|e| match e {
                    StoreError::Sqlite { source, .. } => migration(source),
                    other => other,
                })?;
            }
            tx.pragma_update(None, "user_version", version)
                .map_err(migration)?;
            tx.commit().map_err(migration)?;
        }
        Ok(Self { conn })
    }

    /// The schema version of the open database.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`].
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .map_err(StoreError::sql("reading the schema version"))
    }

    /// How many contacts are stored.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`].
    pub fn len(&self) -> Result<usize, StoreError> {
        let n: i64 = self
            .conn
            .query_row("SELECT count(*) FROM contacts", [], |row| row.get(0))
            .map_err(StoreError::sql("counting contacts"))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }

    /// Whether no contact is stored.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`].
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }

    /// Adds a local contact; returns its id. The display name is made from
    /// the other fields when empty.
    ///
    /// # Errors
    ///
    /// [`StoreError::Empty`], [`StoreError::Sqlite`].
    pub fn insert(&mut self, contact: &Contact) -> Result<ContactId, StoreError> {
        let contact = prepared(contact, Source::Local, None)?;
        let tx = self.transaction()?;
        let id = write_contact(&tx, None, &contact, contact.favourite)?;
        tx.commit()
            .map_err(StoreError::sql("committing an insert"))?;
        Ok(id)
    }

    /// Replaces a local contact's data.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], [`StoreError::NotLocal`],
    /// [`StoreError::Empty`], [`StoreError::Sqlite`].
    pub fn update(&mut self, id: ContactId, contact: &Contact) -> Result<(), StoreError> {
        self.ensure_local(id)?;
        let contact = prepared(contact, Source::Local, None)?;
        let tx = self.transaction()?;
        write_contact(&tx, Some(id), &contact, contact.favourite)?;
        tx.commit().map_err(StoreError::sql("committing an update"))
    }

    /// Deletes a local contact (and records the deletion). Returns the
    /// contact that was deleted.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], [`StoreError::NotLocal`],
    /// [`StoreError::Sqlite`].
    pub fn remove(&mut self, id: ContactId) -> Result<Contact, StoreError> {
        let contact = self.ensure_local(id)?;
        let tx = self.transaction()?;
        delete_contact(&tx, id)?;
        record_deletion(&tx, &Source::Local, &id.to_string())?;
        tx.commit()
            .map_err(StoreError::sql("committing a delete"))?;
        Ok(contact)
    }

    /// Marks or unmarks a contact of any source as a favourite. The mark
    /// survives syncs.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], [`StoreError::Sqlite`].
    pub fn set_favourite(&mut self, id: ContactId, favourite: bool) -> Result<(), StoreError> {
        let n = self
            .conn
            .execute(
                "UPDATE contacts SET favourite = ?2 WHERE id = ?1",
                params![id.0, favourite],
            )
            .map_err(StoreError::sql("setting a favourite"))?;
        if n == 0 {
            return Err(StoreError::NotFound(id));
        }
        Ok(())
    }

    /// One contact.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn get(&self, id: ContactId) -> Result<Option<Contact>, StoreError> {
        let row = self
            .conn
            .prepare_cached("SELECT data, favourite FROM contacts WHERE id = ?1")
            .and_then(|mut stmt| {
                stmt.query_row([id.0], |row| {
                    Ok((row.get::<_, String>(0)?, row.get::<_, bool>(1)?))
                })
                .optional()
            })
            .map_err(StoreError::sql("reading a contact"))?;
        row.map(|(data, favourite)| decode(id, &data, favourite))
            .transpose()
    }

    /// Several contacts in one query, by id; ids not stored are left out.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn get_many(&self, ids: &[ContactId]) -> Result<HashMap<ContactId, Contact>, StoreError> {
        let list = serde_json::to_string(&ids.iter().map(|id| id.0).collect::<Vec<i64>>())
            .unwrap_or_else(|_| "[]".to_owned());
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, data, favourite FROM contacts \
                 WHERE id IN (SELECT value FROM json_each(?1))",
            )
            .map_err(StoreError::sql("reading contacts"))?;
        let mut rows = stmt
            .query([list])
            .map_err(StoreError::sql("reading contacts"))?;
        let mut out = HashMap::with_capacity(ids.len());
        while let Some(row) = rows.next().map_err(StoreError::sql("reading contacts"))? {
            let id = ContactId(row.get(0).map_err(StoreError::sql("reading contacts"))?);
            let favourite: bool = row.get(2).map_err(StoreError::sql("reading contacts"))?;
            let data = row
                .get_ref(1)
                .and_then(|v| v.as_str().map_err(rusqlite::Error::from))
                .map_err(StoreError::sql("reading contacts"))?;
            out.insert(id, decode(id, data, favourite)?);
        }
        Ok(out)
    }

    /// Every contact of a source, by id.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn contacts_of(&self, source: &Source) -> Result<Vec<Contact>, StoreError> {
        let mut stmt = self
            .conn
            .prepare("SELECT id, data, favourite FROM contacts WHERE source = ?1 ORDER BY id")
            .map_err(StoreError::sql("listing contacts"))?;
        let rows = stmt
            .query_map([source.to_string()], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, bool>(2)?,
                ))
            })
            .map_err(StoreError::sql("listing contacts"))?;
        let mut out = Vec::new();
        for row in rows {
            let (id, data, favourite) = row.map_err(StoreError::sql("listing contacts"))?;
            out.push(decode(ContactId(id), &data, favourite)?);
        }
        Ok(out)
    }

    /// The search entries of every contact, for [`crate::SearchIndex`].
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`].
    pub fn index_entries(&self) -> Result<Vec<IndexEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, source, favourite, sort_key, words, number_forms, merge_keys \
                 FROM contacts",
            )
            .map_err(StoreError::sql("reading index entries"))?;
        let rows = stmt
            .query_map([], index_entry_from_row)
            .map_err(StoreError::sql("reading index entries"))?;
        rows.filter_map(|r| r.transpose())
            .collect::<Result<_, _>>()
            .map_err(StoreError::sql("reading index entries"))
    }

    /// Every source that has at least one contact here.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`].
    pub fn sources(&self) -> Result<Vec<Source>, StoreError> {
        // The (source, source_id) index answers this without reading rows.
        let mut stmt = self
            .conn
            .prepare("SELECT DISTINCT source FROM contacts ORDER BY source")
            .map_err(StoreError::sql("listing sources"))?;
        let rows = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(StoreError::sql("listing sources"))?;
        let mut out = Vec::new();
        for row in rows {
            // As in `index_entries`: a row of an unknown source is skipped.
            if let Ok(source) = row.map_err(StoreError::sql("listing sources"))?.parse() {
                out.push(source);
            }
        }
        Ok(out)
    }

    /// The photo hashes in use.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`].
    pub fn photo_hashes(&self) -> Result<HashSet<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT DISTINCT json_extract(data, '$.photo.sha256') FROM contacts \
                 WHERE json_extract(data, '$.photo.sha256') IS NOT NULL",
            )
            .map_err(StoreError::sql("listing photos"))?;
        let rows = stmt
            .query_map([], |row| row.get::<_, String>(0))
            .map_err(StoreError::sql("listing photos"))?;
        rows.collect::<Result<_, _>>()
            .map_err(StoreError::sql("listing photos"))
    }

    /// Makes the store hold exactly `contacts` for `source`, in one
    /// transaction: new ones are added, changed ones updated, the ones no
    /// longer there removed (and recorded as deletions). Contacts whose data
    /// did not change are not written, so running it twice changes nothing.
    /// Favourite marks are kept. On any error nothing is changed.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotSyncable`] for [`Source::Local`],
    /// [`StoreError::MissingSourceId`], [`StoreError::Empty`],
    /// [`StoreError::Sqlite`].
    pub fn replace_source(
        &mut self,
        source: &Source,
        contacts: &[Contact],
        token: Option<&str>,
    ) -> Result<SyncCounts, StoreError> {
        self.sync(source, contacts, SyncMode::Full(&[]), token)
    }

    /// Forgets `source`'s sync token, so that its next sync reads it whole
    /// (and, as a full sync, removes what it no longer has), as when its
    /// account was signed in to afresh. Its contacts stay until then.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`].
    pub fn forget_sync_token(&mut self, source: &Source) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE sync_state SET token = NULL WHERE source = ?1",
                [source.to_string()],
            )
            .map_err(StoreError::sql("forgetting a sync token"))?;
        Ok(())
    }

    /// [`Store::replace_source`], except that the contacts whose source ids
    /// are in `keep` stay as stored even though `contacts` lacks them (the
    /// source had them but they could not be read this time).
    ///
    /// # Errors
    ///
    /// As [`Store::replace_source`].
    pub fn replace_source_keeping(
        &mut self,
        source: &Source,
        contacts: &[Contact],
        keep: &[String],
        token: Option<&str>,
    ) -> Result<SyncCounts, StoreError> {
        self.sync(source, contacts, SyncMode::Full(keep), token)
    }

    /// Applies an incremental change set from `source` in one transaction:
    /// `changed` are added or updated, `deleted` (source ids) removed, and
    /// the sync token stored. On any error nothing is changed.
    ///
    /// # Errors
    ///
    /// As [`Store::replace_source`].
    pub fn apply_changes(
        &mut self,
        source: &Source,
        changed: &[Contact],
        deleted: &[String],
        token: Option<&str>,
    ) -> Result<SyncCounts, StoreError> {
        self.sync(source, changed, SyncMode::Delta(deleted), token)
    }

    fn sync(
        &mut self,
        source: &Source,
        contacts: &[Contact],
        mode: SyncMode<'_>,
        token: Option<&str>,
    ) -> Result<SyncCounts, StoreError> {
        if source.is_local() {
            return Err(StoreError::NotSyncable(source.clone()));
        }
        let source_text = source.to_string();
        let tx = self.transaction()?;
        let mut existing: HashMap<String, (ContactId, String, bool)> = HashMap::new();
        {
            let mut stmt = tx
                .prepare(
                    "SELECT id, source_id, fingerprint, favourite FROM contacts WHERE source = ?1",
                )
                .map_err(StoreError::sql("reading a source's contacts"))?;
            let rows = stmt
                .query_map([&source_text], |row| {
                    Ok((
                        row.get::<_, i64>(0)?,
                        row.get::<_, Option<String>>(1)?,
                        row.get::<_, String>(2)?,
                        row.get::<_, bool>(3)?,
                    ))
                })
                .map_err(StoreError::sql("reading a source's contacts"))?;
            for row in rows {
                let (id, source_id, fingerprint, favourite) =
                    row.map_err(StoreError::sql("reading a source's contacts"))?;
                if let Some(source_id) = source_id {
                    existing.insert(source_id, (ContactId(id), fingerprint, favourite));
                }
            }
        }
        let mut counts = SyncCounts::default();
        let mut seen: HashSet<&str> = HashSet::new();
        for contact in contacts {
            let Some(source_id) = contact.source_id.as_deref() else {
                return Err(StoreError::MissingSourceId {
                    origin: source.clone(),
                    display_name: contact.display_name.clone(),
                });
            };
            if !seen.insert(source_id) {
                continue;
            }
            let prepared = prepared(contact, source.clone(), Some(source_id))?;
            match existing.get(source_id) {
                Some((_, fingerprint, _)) if *fingerprint == fingerprint_of(&prepared) => {
                    counts.unchanged += 1;
                }
                Some(&(id, _, favourite)) => {
                    write_contact(&tx, Some(id), &prepared, favourite)?;
                    counts.updated += 1;
                }
                None => {
                    write_contact(&tx, None, &prepared, prepared.favourite)?;
                    counts.added += 1;
                }
            }
        }
        let gone: Vec<(&String, ContactId)> = match mode {
            SyncMode::Full(keep) => existing
                .iter()
                .filter(|(sid, _)| !seen.contains(sid.as_str()) && !keep.contains(sid))
                .map(|(sid, (id, _, _))| (sid, *id))
                .collect(),
            SyncMode::Delta(deleted) => deleted
                .iter()
                .filter_map(|sid| existing.get(sid).map(|(id, _, _)| (sid, *id)))
                .collect(),
        };
        for (source_id, id) in gone {
            delete_contact(&tx, id)?;
            record_deletion(&tx, source, source_id)?;
            counts.removed += 1;
        }
        let total: i64 = tx
            .query_row(
                "SELECT count(*) FROM contacts WHERE source = ?1",
                [&source_text],
                |row| row.get(0),
            )
            .map_err(StoreError::sql("counting a source's contacts"))?;
        tx.execute(
            "INSERT INTO sync_state (source, token, synced_at, contacts) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT(source) DO UPDATE SET token = ?2, synced_at = ?3, contacts = ?4",
            params![source_text, token, now(), total],
        )
        .map_err(StoreError::sql("recording the sync"))?;
        tx.commit().map_err(StoreError::sql("committing a sync"))?;
        Ok(counts)
    }

    /// The state of a source's last completed sync.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`].
    pub fn sync_state(&self, source: &Source) -> Result<Option<SyncState>, StoreError> {
        self.conn
            .query_row(
                "SELECT token, synced_at, contacts FROM sync_state WHERE source = ?1",
                [source.to_string()],
                |row| {
                    Ok(SyncState {
                        source: source.clone(),
                        token: row.get(0)?,
                        synced_at: row.get(1)?,
                        contacts: usize::try_from(row.get::<_, i64>(2)?).unwrap_or(0),
                    })
                },
            )
            .optional()
            .map_err(StoreError::sql("reading the sync state"))
    }

    /// The deletions recorded for a source, oldest first.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`].
    pub fn deletions(&self, source: &Source) -> Result<Vec<Deletion>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT source_id, deleted_at FROM deletions WHERE source = ?1 \
                 ORDER BY deleted_at, rowid",
            )
            .map_err(StoreError::sql("listing deletions"))?;
        let rows = stmt
            .query_map([source.to_string()], |row| {
                Ok(Deletion {
                    source_id: row.get(0)?,
                    deleted_at: row.get(1)?,
                })
            })
            .map_err(StoreError::sql("listing deletions"))?;
        rows.collect::<Result<_, _>>()
            .map_err(StoreError::sql("listing deletions"))
    }

    /// The contact a phone number belongs to (caller lookup).
    ///
    /// A number that normalises to E.164 (with `default_region` for
    /// national forms) is looked up exactly; when no contact has it, stored
    /// numbers that could not be normalised are compared by trailing digits
    /// ([`number::trailing_digits_match`]). A number that does not normalise
    /// (a national form without a region) is compared by trailing digits
    /// with every stored number: pass the user's region to narrow that. When several contacts match,
    /// favourites win, then local contacts, then the oldest. Text with
    /// letters in it ([`number::looks_like_number`]) matches nobody, nor
    /// does a number stored with an extension: a call from a company's
    /// main number is none of the people reached at its extensions.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`], [`StoreError::Corrupt`].
    pub fn lookup(
        &self,
        number: &str,
        default_region: Option<Region>,
    ) -> Result<Option<Contact>, StoreError> {
        // As a SIP user part may carry it: `%2B49...`.
        let decoded = number::percent_decoded(number);
        let number = decoded.as_str();
        if !number::looks_like_number(number) {
            return Ok(None);
        }
        // Stored numbers were validated when stored, so an exact match on a
        // candidate needs no parsing; the full parser runs only on a miss.
        let candidates = number::e164_candidates(number, default_region);
        for candidate in &candidates {
            if let Some(found) = self.exact_number(candidate)? {
                return Ok(Some(found));
            }
        }
        self.lookup_beyond(number, default_region, &candidates)
    }

    /// [`Store::lookup`] after no contact had any of `candidates`
    /// ([`number::e164_candidates`] of `number`).
    pub(crate) fn lookup_beyond(
        &self,
        number: &str,
        default_region: Option<Region>,
        candidates: &[String],
    ) -> Result<Option<Contact>, StoreError> {
        // A miss usually ends here, without the parser: no stored number
        // has a trailing-digit key the number's compared digits can have.
        if let Some(keys) = number::lookup_tail_keys(number, default_region)
            && !self.any_tail(&keys)?
        {
            return Ok(None);
        }
        let wanted = number::normalize(number, default_region);
        if let Some(e164) = &wanted.e164
            && !candidates.contains(e164)
            && let Some(found) = self.exact_number(e164)?
        {
            return Ok(Some(found));
        }
        let digits = wanted.match_digits();
        if digits.len() < 3 {
            return Ok(None);
        }
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT c.id, c.favourite, c.source = 'local', n.e164 IS NOT NULL, n.match_digits \
                 FROM numbers n JOIN contacts c ON c.id = n.contact_id \
                 WHERE n.tail = ?1 AND n.extension IS NULL",
            )
            .map_err(StoreError::sql("looking up a number"))?;
        let rows = stmt
            .query_map([number::tail_key(digits)], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, bool>(1)?,
                    row.get::<_, bool>(2)?,
                    row.get::<_, bool>(3)?,
                    row.get::<_, String>(4)?,
                ))
            })
            .map_err(StoreError::sql("looking up a number"))?;
        let mut best: Option<(bool, bool, i64)> = None;
        for row in rows {
            let (id, favourite, local, stored_e164, stored) =
                row.map_err(StoreError::sql("looking up a number"))?;
            // Two normalised numbers are equal only when their E.164 forms are.
            if wanted.e164.is_some() && stored_e164 {
                continue;
            }
            if !number::trailing_digits_match(digits, &stored) {
                continue;
            }
            let key = (favourite, local, -id);
            if best.is_none_or(|b| key > b) {
                best = Some(key);
            }
        }
        match best {
            Some((_, _, neg_id)) => self.get(ContactId(-neg_id)),
            None => Ok(None),
        }
    }

    /// Whether any stored number has one of `keys` as its trailing-digit
    /// key (one indexed query per six keys).
    fn any_tail(&self, keys: &[String]) -> Result<bool, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT EXISTS (SELECT 1 FROM numbers WHERE tail IN (?1, ?2, ?3, ?4, ?5, ?6))",
            )
            .map_err(StoreError::sql("looking up a number"))?;
        for chunk in keys.chunks(6) {
            let key = |i: usize| chunk.get(i).unwrap_or(&chunk[0]).as_str();
            let found: bool = stmt
                .query_row(
                    params![key(0), key(1), key(2), key(3), key(4), key(5)],
                    |row| row.get(0),
                )
                .map_err(StoreError::sql("looking up a number"))?;
            if found {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn exact_number(&self, e164: &str) -> Result<Option<Contact>, StoreError> {
        let found = self
            .conn
            .prepare_cached(
                "SELECT c.id, c.data, c.favourite FROM numbers n \
                 JOIN contacts c ON c.id = n.contact_id \
                 WHERE n.e164 = ?1 AND n.extension IS NULL \
                 ORDER BY c.favourite DESC, c.source = 'local' DESC, c.id LIMIT 1",
            )
            .and_then(|mut stmt| {
                stmt.query_row([e164], |row| {
                    Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, row.get(2)?))
                })
                .optional()
            })
            .map_err(StoreError::sql("looking up a number"))?;
        found
            .map(|(id, data, favourite)| decode(ContactId(id), &data, favourite))
            .transpose()
    }

    /// Search through the FTS5 tables: the same matching, ranking and
    /// merging as [`crate::SearchIndex::search`], without holding an index
    /// in memory. Slower for short queries that match many contacts.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`].
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<IndexHit>, StoreError> {
        let terms = fold::query_terms(query);
        if terms.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let mut candidates: Option<HashSet<i64>> = None;
        for term in &terms {
            let (sql, pattern) = match term {
                Term::Word(w) => (
                    "SELECT rowid FROM contact_fts WHERE contact_fts MATCH ?1",
                    format!("{{names organization}} : \"{w}\"*"),
                ),
                Term::Digits(d) if d.len() < 3 => (
                    "SELECT rowid FROM contact_fts WHERE contact_fts MATCH ?1",
                    format!("numbers : \"{d}\"*"),
                ),
                Term::Digits(d) => (
                    "SELECT rowid FROM number_grams WHERE number_grams MATCH ?1",
                    format!("\"{d}\""),
                ),
            };
            let mut stmt = self
                .conn
                .prepare_cached(sql)
                .map_err(StoreError::sql("searching"))?;
            let ids = stmt
                .query_map([pattern], |row| row.get::<_, i64>(0))
                .map_err(StoreError::sql("searching"))?
                .collect::<Result<HashSet<i64>, _>>()
                .map_err(StoreError::sql("searching"))?;
            candidates = Some(match candidates {
                None => ids,
                Some(previous) => previous.intersection(&ids).copied().collect(),
            });
        }
        let mut entries = Vec::new();
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT id, source, favourite, sort_key, words, number_forms, merge_keys \
                 FROM contacts WHERE id = ?1",
            )
            .map_err(StoreError::sql("searching"))?;
        for id in candidates.unwrap_or_default() {
            let entry = stmt
                .query_row([id], index_entry_from_row)
                .optional()
                .map_err(StoreError::sql("searching"))?
                .flatten();
            entries.extend(entry);
        }
        let mut ranked: Vec<(&IndexEntry, MatchKind)> = entries
            .iter()
            .filter_map(|e| search::classify_all(&terms, e).map(|k| (e, k)))
            .collect();
        ranked.sort_unstable_by(|a, b| search::rank(*a, *b));
        ranked.truncate(search::candidate_budget(limit));
        Ok(search::merge_duplicates(&ranked, limit))
    }

    fn transaction(&mut self) -> Result<Transaction<'_>, StoreError> {
        self.conn
            .transaction()
            .map_err(StoreError::sql("starting a transaction"))
    }

    fn ensure_local(&self, id: ContactId) -> Result<Contact, StoreError> {
        let contact = self.get(id)?.ok_or(StoreError::NotFound(id))?;
        if !contact.source.is_local() {
            return Err(StoreError::NotLocal {
                id,
                origin: contact.source,
            });
        }
        Ok(contact)
    }
}

#[derive(Debug, Clone, Copy)]
enum SyncMode<'a> {
    Full(&'a [String]),
    Delta(&'a [String]),
}

/// The contact as stored: source fixed, display name filled in, no id.
fn prepared(
    contact: &Contact,
    source: Source,
    source_id: Option<&str>,
) -> Result<Contact, StoreError> {
    let display_name = contact.derived_display_name().ok_or(StoreError::Empty)?;
    Ok(Contact {
        id: None,
        source,
        source_id: source_id.map(str::to_owned),
        display_name,
        ..contact.clone()
    })
}

/// What sync compares: the data without id and favourite mark.
fn fingerprint_of(contact: &Contact) -> String {
    let json = stored_json(contact);
    let digest = Sha256::digest(json.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn stored_json(contact: &Contact) -> String {
    let bare = Contact {
        id: None,
        favourite: false,
        ..contact.clone()
    };
    // A Contact is plain data (strings, vectors, booleans): it always
    // serialises.
    serde_json::to_string(&bare).unwrap_or_default()
}

/// Writes every contact's index rows again from its stored data, in a
/// migration that changed what they hold.
fn reindex(tx: &Transaction<'_>) -> Result<(), StoreError> {
    let rows: Vec<(i64, String, bool)> = tx
        .prepare("SELECT id, data, favourite FROM contacts")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
                .collect()
        })
        .map_err(StoreError::sql("reading contacts to index them again"))?;
    for (id, data, favourite) in rows {
        let id = ContactId(id);
        // A row that does not read back is left as it was (unreadable, as
        // before) rather than making every open of the store fail.
        match decode(id, &data, favourite) {
            Ok(contact) => {
                write_contact(tx, Some(id), &contact, favourite)?;
            }
            Err(error) => tracing::warn!(%error, "a contact not indexed again"),
        }
    }
    Ok(())
}

fn decode(id: ContactId, data: &str, favourite: bool) -> Result<Contact, StoreError> {
    let mut contact: Contact =
        serde_json::from_str(data).map_err(|source| StoreError::Corrupt { id, source })?;
    contact.id = Some(id);
    contact.favourite = favourite;
    Ok(contact)
}

fn index_entry_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<IndexEntry>> {
    let split = |s: String| -> Vec<String> {
        s.split(' ')
            .filter(|w| !w.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let source: String = row.get(1)?;
    let Ok(source) = source.parse::<Source>() else {
        return Ok(None);
    };
    Ok(Some(IndexEntry {
        id: ContactId(row.get(0)?),
        source,
        favourite: row.get(2)?,
        sort_key: row.get(3)?,
        words: split(row.get(4)?),
        number_forms: split(row.get(5)?),
        merge_keys: split(row.get(6)?),
    }))
}

fn write_contact(
    tx: &Transaction<'_>,
    id: Option<ContactId>,
    contact: &Contact,
    favourite: bool,
) -> Result<ContactId, StoreError> {
    let entry = IndexEntry::from_contact(id.unwrap_or(ContactId(0)), contact);
    let data = stored_json(contact);
    let fingerprint = fingerprint_of(contact);
    let words = entry.words.join(" ");
    let forms = entry.number_forms.join(" ");
    let keys = entry.merge_keys.join(" ");
    let source = contact.source.to_string();
    let id = match id {
        Some(id) => {
            tx.prepare_cached(
                "UPDATE contacts SET source = ?2, source_id = ?3, display_name = ?4, sort_key = ?5, \
                 favourite = ?6, fingerprint = ?7, data = ?8, words = ?9, number_forms = ?10, \
                 merge_keys = ?11, updated_at = ?12 WHERE id = ?1",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    id.0,
                    source,
                    contact.source_id,
                    contact.display_name,
                    entry.sort_key,
                    favourite,
                    fingerprint,
                    data,
                    words,
                    forms,
                    keys,
                    now()
                ])
            })
            .map_err(StoreError::sql("updating a contact"))?;
            for sql in [
                "DELETE FROM numbers WHERE contact_id = ?1",
                "DELETE FROM contact_fts WHERE rowid = ?1",
                "DELETE FROM number_grams WHERE rowid = ?1",
            ] {
                tx.prepare_cached(sql)
                    .and_then(|mut stmt| stmt.execute([id.0]))
                    .map_err(StoreError::sql("updating a contact's index rows"))?;
            }
            id
        }
        None => {
            tx.prepare_cached(
                "INSERT INTO contacts (source, source_id, display_name, sort_key, favourite, \
                 fingerprint, data, words, number_forms, merge_keys, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )
            .and_then(|mut stmt| {
                stmt.execute(params![
                    source,
                    contact.source_id,
                    contact.display_name,
                    entry.sort_key,
                    favourite,
                    fingerprint,
                    data,
                    words,
                    forms,
                    keys,
                    now()
                ])
            })
            .map_err(StoreError::sql("inserting a contact"))?;
            ContactId(tx.last_insert_rowid())
        }
    };
    {
        let mut stmt = tx
            .prepare_cached(
                "INSERT INTO numbers (contact_id, e164, match_digits, tail, extension) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(StoreError::sql("indexing numbers"))?;
        for n in &contact.numbers {
            let normalized = n.normalized();
            let digits = normalized.match_digits();
            if digits.is_empty() {
                continue;
            }
            stmt.execute(params![
                id.0,
                normalized.e164,
                digits,
                number::tail_key(digits),
                normalized.extension
            ])
            .map_err(StoreError::sql("indexing numbers"))?;
        }
    }
    let names = contact.name_words().join(" ");
    let organization = contact.organization_words().join(" ");
    tx.prepare_cached(
        "INSERT INTO contact_fts (rowid, names, organization, numbers) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut stmt| stmt.execute(params![id.0, names, organization, forms]))
    .map_err(StoreError::sql("indexing text"))?;
    if !forms.is_empty() {
        tx.prepare_cached("INSERT INTO number_grams (rowid, forms) VALUES (?1, ?2)")
            .and_then(|mut stmt| stmt.execute(params![id.0, forms]))
            .map_err(StoreError::sql("indexing number digits"))?;
    }
    Ok(id)
}

fn delete_contact(tx: &Transaction<'_>, id: ContactId) -> Result<(), StoreError> {
    for sql in [
        "DELETE FROM numbers WHERE contact_id = ?1",
        "DELETE FROM contact_fts WHERE rowid = ?1",
        "DELETE FROM number_grams WHERE rowid = ?1",
        "DELETE FROM contacts WHERE id = ?1",
    ] {
        tx.prepare_cached(sql)
            .and_then(|mut stmt| stmt.execute([id.0]))
            .map_err(StoreError::sql("deleting a contact"))?;
    }
    Ok(())
}

fn record_deletion(
    tx: &Transaction<'_>,
    source: &Source,
    source_id: &str,
) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO deletions (source, source_id, deleted_at) VALUES (?1, ?2, ?3)")
        .and_then(|mut stmt| stmt.execute(params![source.to_string(), source_id, now()]))
        .map_err(StoreError::sql("recording a deletion"))?;
    Ok(())
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::NumberKind;

    fn de() -> Option<Region> {
        "DE".parse().ok()
    }

    fn directory_contact(uid: &str, name: &str, number: &str) -> Contact {
        Contact {
            source_id: Some(format!("uid={uid},ou=people")),
            ..Contact::new(name).with_number(NumberKind::Work, number, de())
        }
    }

    #[test]
    fn migrations_run_once_and_reopening_keeps_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        let id = {
            let mut store = Store::open(&path).unwrap();
            assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
            store.insert(&Contact::new("Åsa Bråten")).unwrap()
        };
        let store = Store::open(&path).unwrap();
        assert_eq!(store.get(id).unwrap().unwrap().display_name, "Åsa Bråten");
        let mode: String = store
            .conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }

    #[test]
    fn get_many_reads_the_stored_ids_and_skips_the_others() {
        let mut store = Store::open_in_memory().unwrap();
        let a = store.insert(&Contact::new("Åsa Bråten")).unwrap();
        let b = store.insert(&Contact::new("Jörg Müller")).unwrap();
        store.set_favourite(b, true).unwrap();
        let found = store.get_many(&[b, ContactId(999), a]).unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[&a].display_name, "Åsa Bråten");
        assert!(found[&b].favourite);
        assert_eq!(found[&b].id, Some(b));
        assert!(store.get_many(&[]).unwrap().is_empty());
    }

    #[test]
    fn sources_lists_each_source_with_contacts_once() {
        let mut store = Store::open_in_memory().unwrap();
        assert!(store.sources().unwrap().is_empty());
        store.insert(&Contact::new("Åsa Bråten")).unwrap();
        let corp = Source::Ldap("corp".into());
        let batch = vec![
            directory_contact("a", "Anna Arnold", "+49 30 1000001"),
            directory_contact("b", "Bernd Bauer", "+49 30 1000002"),
        ];
        store.replace_source(&corp, &batch, None).unwrap();
        assert_eq!(store.sources().unwrap(), vec![corp.clone(), Source::Local]);
        // A source emptied by a sync is no longer listed.
        store.replace_source(&corp, &[], None).unwrap();
        assert_eq!(store.sources().unwrap(), vec![Source::Local]);
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite3");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", 99).unwrap();
        drop(conn);
        assert!(matches!(
            Store::open(&path),
            Err(StoreError::TooNew { found: 99, .. })
        ));
    }

    #[test]
    fn local_contacts_are_added_edited_and_deleted() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store
            .insert(&Contact::new("Jörg Müller").with_number(
                NumberKind::Mobile,
                "0170 2000042",
                de(),
            ))
            .unwrap();
        assert_eq!(
            store.lookup("+491702000042", None).unwrap().unwrap().id,
            Some(id)
        );
        let mut edited = store.get(id).unwrap().unwrap();
        edited.numbers = vec![crate::ContactNumber::new(
            NumberKind::Work,
            "030 555 1234",
            de(),
        )];
        store.update(id, &edited).unwrap();
        assert!(store.lookup("+491702000042", None).unwrap().is_none());
        assert_eq!(
            store.lookup("0305551234", de()).unwrap().unwrap().id,
            Some(id)
        );
        assert_eq!(store.search("jorg", 5).unwrap()[0].id, id);
        store.remove(id).unwrap();
        assert!(store.get(id).unwrap().is_none());
        assert!(store.search("jorg", 5).unwrap().is_empty());
        assert!(store.lookup("0305551234", de()).unwrap().is_none());
        assert_eq!(
            store.deletions(&Source::Local).unwrap()[0].source_id,
            id.to_string()
        );
        assert!(matches!(store.remove(id), Err(StoreError::NotFound(_))));
        assert!(matches!(
            store.insert(&Contact::default()),
            Err(StoreError::Empty)
        ));
    }

    #[test]
    fn full_sync_is_idempotent_and_removes_what_the_source_deleted() {
        let mut store = Store::open_in_memory().unwrap();
        let source = Source::Ldap("corp".into());
        let batch = vec![
            directory_contact("a", "Anna Arnold", "+49 30 1000001"),
            directory_contact("b", "Bernd Bauer", "+49 30 1000002"),
            directory_contact("c", "Clara Cruz", "+49 30 1000003"),
        ];
        let first = store.replace_source(&source, &batch, Some("t1")).unwrap();
        assert_eq!(
            (first.added, first.updated, first.removed, first.unchanged),
            (3, 0, 0, 0)
        );
        let again = store.replace_source(&source, &batch, Some("t1")).unwrap();
        assert_eq!(
            (again.added, again.updated, again.removed, again.unchanged),
            (0, 0, 0, 3)
        );

        let bernd = store.lookup("+49301000002", None).unwrap().unwrap();
        store.set_favourite(bernd.id.unwrap(), true).unwrap();
        let mut changed = batch.clone();
        changed[1].title = Some("CEO".into());
        changed.remove(2);
        let third = store.replace_source(&source, &changed, Some("t2")).unwrap();
        assert_eq!(
            (third.added, third.updated, third.removed, third.unchanged),
            (0, 1, 1, 1)
        );
        let bernd_after = store.lookup("+49301000002", None).unwrap().unwrap();
        assert_eq!(bernd_after.id, bernd.id, "ids are stable across syncs");
        assert!(bernd_after.favourite, "favourite marks survive syncs");
        assert_eq!(bernd_after.title.as_deref(), Some("CEO"));
        assert!(store.lookup("+49301000003", None).unwrap().is_none());
        assert_eq!(
            store.deletions(&source).unwrap()[0].source_id,
            "uid=c,ou=people"
        );
        let state = store.sync_state(&source).unwrap().unwrap();
        assert_eq!((state.token.as_deref(), state.contacts), (Some("t2"), 2));
        assert!(matches!(
            store.update(bernd.id.unwrap(), &bernd),
            Err(StoreError::NotLocal { .. })
        ));
    }

    #[test]
    fn a_failing_sync_changes_nothing() {
        let mut store = Store::open_in_memory().unwrap();
        let source = Source::Ldap("corp".into());
        let batch = vec![directory_contact("a", "Anna Arnold", "+49 30 1000001")];
        store.replace_source(&source, &batch, None).unwrap();
        let mut bad = vec![directory_contact("b", "Bernd Bauer", "+49 30 1000002")];
        bad.push(Contact::new("No Source Id"));
        assert!(matches!(
            store.replace_source(&source, &bad, None),
            Err(StoreError::MissingSourceId { .. })
        ));
        assert!(store.lookup("+49301000001", None).unwrap().is_some());
        assert!(store.lookup("+49301000002", None).unwrap().is_none());
        assert!(store.deletions(&source).unwrap().is_empty());
    }

    #[test]
    fn incremental_changes_apply_upserts_and_deletions() {
        let mut store = Store::open_in_memory().unwrap();
        let source = Source::Google("me".into());
        let batch = vec![
            directory_contact("a", "Anna Arnold", "+49 30 1000001"),
            directory_contact("b", "Bernd Bauer", "+49 30 1000002"),
        ];
        store.replace_source(&source, &batch, Some("t1")).unwrap();
        let counts = store
            .apply_changes(
                &source,
                &[directory_contact("c", "Clara Cruz", "+49 30 1000003")],
                &["uid=a,ou=people".to_owned(), "uid=unknown".to_owned()],
                Some("t2"),
            )
            .unwrap();
        assert_eq!((counts.added, counts.removed), (1, 1));
        assert_eq!(store.contacts_of(&source).unwrap().len(), 2);
        assert_eq!(
            store.sync_state(&source).unwrap().unwrap().token.as_deref(),
            Some("t2")
        );
        // Signed in afresh: the token goes, the contacts stay until the
        // next (full) sync replaces them.
        store.forget_sync_token(&source).unwrap();
        assert_eq!(store.sync_state(&source).unwrap().unwrap().token, None);
        assert_eq!(store.contacts_of(&source).unwrap().len(), 2);
        assert!(matches!(
            store.replace_source(&Source::Local, &batch, None),
            Err(StoreError::NotSyncable(_))
        ));
    }

    #[test]
    fn lookup_uses_trailing_digits_for_numbers_that_do_not_normalise() {
        let mut store = Store::open_in_memory().unwrap();
        let ext = store
            .insert(&Contact::new("Reception").with_number(NumberKind::Work, "4711", de()))
            .unwrap();
        let local_form = store
            .insert(&Contact::new("No Area Code").with_number(NumberKind::Work, "555 0123", None))
            .unwrap();
        let national = store
            .insert(&Contact::new("Stored Without Region").with_number(
                NumberKind::Work,
                "089 3000042",
                None,
            ))
            .unwrap();
        assert_eq!(store.lookup("4711", de()).unwrap().unwrap().id, Some(ext));
        assert!(store.lookup("+49 30 4711", de()).unwrap().is_none());
        assert_eq!(
            store.lookup("+49 30 5550123", de()).unwrap().unwrap().id,
            Some(local_form)
        );
        assert_eq!(
            store.lookup("+49 89 3000042", de()).unwrap().unwrap().id,
            Some(national)
        );
        assert!(store.lookup("+49 30 3000042", de()).unwrap().is_none());
        assert!(store.lookup("", de()).unwrap().is_none());
    }

    /// A directory lists people at a company's main number with their
    /// extensions: a call from the main number is none of them (it used to
    /// be named after whichever came first), the main line's own entry is
    /// found, and two people sharing the main number are not merged.
    #[test]
    fn a_caller_from_a_main_number_is_not_named_after_an_extension() {
        let mut store = Store::open_in_memory().unwrap();
        let ada = Contact::new("Ada Extension").with_number(
            NumberKind::Work,
            "+49 30 1234560 x123",
            de(),
        );
        let bob = Contact::new("Bob Extension").with_number(
            NumberKind::Work,
            "+49 30 1234560 ext. 124",
            de(),
        );
        assert_ne!(ada.merge_keys(), bob.merge_keys());
        store.insert(&ada).unwrap();
        store.insert(&bob).unwrap();
        assert!(store.lookup("+49301234560", de()).unwrap().is_none());
        assert!(store.lookup("030 1234560", de()).unwrap().is_none());
        let main = store
            .insert(&Contact::new("Example GmbH").with_number(
                NumberKind::Work,
                "+49 30 1234560",
                de(),
            ))
            .unwrap();
        assert_eq!(
            store.lookup("+49301234560", de()).unwrap().unwrap().id,
            Some(main)
        );
    }

    /// A store written before number rows held their extension is indexed
    /// again when it is opened: its extensions stop naming callers too.
    #[test]
    fn a_version_1_store_is_indexed_again_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("contacts.db");
        {
            let mut store = Store::open(&path).unwrap();
            store
                .insert(&Contact::new("Ada Extension").with_number(
                    NumberKind::Work,
                    "+49 30 1234560 x123",
                    de(),
                ))
                .unwrap();
        }
        {
            // As version 1 wrote it: no extension column, the main number indexed.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE numbers_v1 AS SELECT contact_id, e164, match_digits, tail FROM numbers;
                 DROP TABLE numbers;
                 ALTER TABLE numbers_v1 RENAME TO numbers;
                 PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert!(store.lookup("+49301234560", de()).unwrap().is_none());
        assert_eq!(store.search("Ada", 5).unwrap().len(), 1);
    }

    #[test]
    fn a_caller_with_letters_in_its_name_is_no_number() {
        let mut store = Store::open_in_memory().unwrap();
        let id = store
            .insert(&Contact::new("Berlin Office").with_number(
                NumberKind::Work,
                "+49 30 1000042",
                de(),
            ))
            .unwrap();
        // SIP user names with digits in them are names, not numbers.
        for user in [
            "max1000042",
            "user1000042x",
            "ext1000042",
            "sip1000042pbx",
            "用户1000042",
        ] {
            assert!(store.lookup(user, None).unwrap().is_none(), "{user}");
        }
        // Numbers, with an extension or as a tel URI, still are.
        for number in [
            "1000042",
            "+49301000042",
            "tel:+49-30-1000042",
            "+49 30 1000042 x12",
            "%2B49301000042",
        ] {
            assert_eq!(
                store.lookup(number, None).unwrap().and_then(|c| c.id),
                Some(id),
                "{number}"
            );
        }
    }

    #[test]
    fn favourites_and_local_contacts_win_a_shared_number() {
        let mut store = Store::open_in_memory().unwrap();
        let source = Source::Ldap("corp".into());
        store
            .replace_source(
                &source,
                &[directory_contact("a", "Switchboard", "+49 30 1000000")],
                None,
            )
            .unwrap();
        let local = store
            .insert(&Contact::new("My Note").with_number(NumberKind::Work, "030 1000000", de()))
            .unwrap();
        assert_eq!(
            store.lookup("+49301000000", None).unwrap().unwrap().id,
            Some(local)
        );
        let dir_id = store.contacts_of(&source).unwrap()[0].id.unwrap();
        store.set_favourite(dir_id, true).unwrap();
        assert_eq!(
            store.lookup("+49301000000", None).unwrap().unwrap().id,
            Some(dir_id)
        );
    }
}
