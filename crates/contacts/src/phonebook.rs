//! [`Contacts`]: the store, the in-memory index and the photo cache of one
//! profile, behind the API a softphone calls.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::{
    error::{StoreError, SyncError},
    exchange::ExchangeSource,
    google::GoogleSource,
    ldap::{LdapError, LdapSource, SkippedEntry},
    model::{Contact, ContactId, PhotoRef, Source},
    number::Region,
    oauth::{Changes, CloudHttp, OAuthSession},
    photo::{MAX_PHOTO_BYTES, PhotoCache, PhotoError},
    search::{IndexEntry, IndexHit, MatchKind, SearchIndex},
    store::{Store, SyncCounts, SyncState},
};

/// The database file inside a profile directory.
pub const DATABASE_FILE: &str = "contacts.sqlite3";
/// The photo directory inside a profile directory.
pub const PHOTO_DIR: &str = "photos";

/// One search result: a contact, how it matched, and the contacts of other
/// sources merged into it (their numbers and e-mails are added to it).
///
/// Serialises as the contact's fields plus `"match"` and, when there are
/// any, `"merged_from"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SearchHit {
    /// The contact (with merged numbers and e-mails).
    #[serde(flatten)]
    pub contact: Contact,
    /// How well it matched.
    #[serde(rename = "match")]
    pub kind: MatchKind,
    /// The duplicates merged into it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<MergedContact>,
}

/// A contact merged into a [`SearchHit`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MergedContact {
    /// Its id (`None` for a live directory result).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<ContactId>,
    /// Its source.
    pub source: Source,
    /// Its id at the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<String>,
}

/// What [`Contacts::search_with_directory`] found.
#[derive(Debug)]
pub struct DirectorySearch {
    /// The stored hits, then the directory's.
    pub hits: Vec<SearchHit>,
    /// Why the directory added nothing, when it could not be searched
    /// (unreachable, too slow, an error): the stored hits stand.
    pub directory_error: Option<LdapError>,
}

/// What a directory sync did.
#[derive(Debug, Clone, Serialize)]
pub struct SyncReport {
    /// The source synced.
    pub source: Source,
    /// Entries read from the directory.
    pub fetched: usize,
    /// What changed in the store.
    pub counts: SyncCounts,
    /// Entries that could not be read (kept as they were in the store, if
    /// they were there).
    #[serde(skip)]
    pub skipped: Vec<SkippedEntry>,
    /// Photos that were dropped (too large, not an image).
    pub photos_rejected: usize,
}

/// The contacts of one profile: a SQLite store (`contacts.sqlite3`), a
/// photo cache (`photos/`) and an in-memory search index, all in the
/// profile directory.
///
/// Searches and lookups are synchronous and fast; directory operations are
/// `async` (tokio). Methods that wait on the network take `&mut self`, so
/// their futures are `Send`.
#[derive(Debug)]
pub struct Contacts {
    store: Store,
    index: SearchIndex,
    photos: PhotoCache,
    default_region: Option<Region>,
    profile_dir: PathBuf,
}

impl Contacts {
    /// Opens the contacts of a profile directory (created if needed) and
    /// loads the search index.
    ///
    /// # Errors
    ///
    /// [`StoreError::ProfileDir`], and as [`Store::open`].
    pub fn open(profile_dir: impl AsRef<Path>) -> Result<Self, StoreError> {
        let dir = profile_dir.as_ref().to_path_buf();
        crate::private_dir(&dir).map_err(|source| StoreError::ProfileDir {
            path: dir.clone(),
            source,
        })?;
        let store = Store::open(&dir.join(DATABASE_FILE))?;
        let photos = PhotoCache::open(dir.join(PHOTO_DIR))?;
        let index = SearchIndex::from_entries(store.index_entries()?);
        Ok(Self {
            store,
            index,
            photos,
            default_region: None,
            profile_dir: dir,
        })
    }

    /// Sets the region that numbers in national form are read in, for
    /// [`Contacts::add`], [`Contacts::update`] and [`Contacts::lookup`]
    /// without a region.
    #[must_use]
    pub fn with_default_region(mut self, region: Option<Region>) -> Self {
        self.default_region = region;
        self
    }

    /// The default region.
    #[must_use]
    pub fn default_region(&self) -> Option<Region> {
        self.default_region
    }

    /// The profile directory.
    #[must_use]
    pub fn profile_dir(&self) -> &Path {
        &self.profile_dir
    }

    /// The store, for sync bookkeeping and the FTS5 search path.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The in-memory search index.
    #[must_use]
    pub fn index(&self) -> &SearchIndex {
        &self.index
    }

    /// The photo cache.
    #[must_use]
    pub fn photos(&self) -> &PhotoCache {
        &self.photos
    }

    /// How many contacts there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Search as you type: every word of `query` must be the start of a
    /// name or organisation word, case and accents ignored; digits are found
    /// anywhere in a number. Favourites first, then exact before prefix
    /// before infix matches, then by name; duplicates across sources merged.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when a matched contact cannot be read.
    pub fn search(&self, query: &str, limit: usize) -> Result<Vec<SearchHit>, StoreError> {
        let hits = self.index.search(query, limit);
        self.load_hits(&hits)
    }

    /// [`Contacts::search`], completed by a live directory search when the
    /// store has fewer than `limit` results (for example before the first
    /// sync, or for a directory too large to sync). Directory results that
    /// are already stored, or duplicate a stored result of another source
    /// (as [`Contacts::search`] merges: at most one contact per source in a
    /// hit), are left out. A directory that cannot be searched within its
    /// live time limit ([`LdapSource::with_live_time_limit`]) leaves the
    /// stored hits, with the reason.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when a stored contact cannot be read.
    pub async fn search_with_directory(
        &mut self,
        query: &str,
        limit: usize,
        directory: &LdapSource,
    ) -> Result<DirectorySearch, StoreError> {
        let mut hits = self.search(query, limit)?;
        if hits.len() >= limit {
            return Ok(DirectorySearch {
                hits,
                directory_error: None,
            });
        }
        let live = match directory.search(query, limit).await {
            Ok(live) => live,
            Err(e) => {
                return Ok(DirectorySearch {
                    hits,
                    directory_error: Some(e),
                });
            }
        };
        let source = directory.source();
        // The stored hits a directory contact may merge into: those with no
        // contact of the directory in them yet, by their merge keys.
        let mergeable: Vec<Vec<String>> = hits
            .iter()
            .filter(|h| {
                h.contact.source != source && h.merged_from.iter().all(|m| m.source != source)
            })
            .map(|h| h.contact.merge_keys())
            .collect();
        for contact in live {
            if hits.len() >= limit {
                break;
            }
            let stored = hits.iter().any(|h| {
                h.contact.source == source && h.contact.source_id == contact.source_id
                    || h.merged_from
                        .iter()
                        .any(|m| m.source == source && m.source_id == contact.source_id)
            });
            let contact_keys = contact.merge_keys();
            let duplicate = mergeable
                .iter()
                .any(|keys| contact_keys.iter().any(|k| keys.contains(k)));
            if stored || duplicate {
                continue;
            }
            let kind = crate::search::classify_all(
                &crate::fold::query_terms(query),
                &IndexEntry::from_contact(ContactId(0), &contact),
            )
            .unwrap_or(MatchKind::Infix);
            hits.push(SearchHit {
                contact,
                kind,
                merged_from: Vec::new(),
            });
        }
        Ok(DirectorySearch {
            hits,
            directory_error: None,
        })
    }

    /// The contact a phone number belongs to, for naming a caller. See
    /// [`Store::lookup`]; `default_region` (or, when `None`, the contacts'
    /// default region) reads numbers in national form.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    pub fn lookup(
        &self,
        number: &str,
        default_region: Option<Region>,
    ) -> Result<Option<Contact>, StoreError> {
        // Exact E.164 matches come from the index (kept in step with the
        // store); the store reads the contact and does the rest.
        let decoded = crate::number::percent_decoded(number);
        let number = decoded.as_str();
        if !crate::number::looks_like_number(number) {
            return Ok(None);
        }
        let region = default_region.or(self.default_region);
        let candidates = crate::number::e164_candidates(number, region);
        for candidate in &candidates {
            if let Some(id) = self.index.by_number(candidate)
                && let Some(contact) = self.store.get(id)?
            {
                return Ok(Some(contact));
            }
        }
        self.store.lookup_beyond(number, region, &candidates)
    }

    /// One contact.
    ///
    /// # Errors
    ///
    /// [`StoreError`] when the store cannot be read.
    pub fn get(&self, id: ContactId) -> Result<Option<Contact>, StoreError> {
        self.store.get(id)
    }

    /// Adds a local contact. Numbers not yet in E.164 are normalised again
    /// with the default region.
    ///
    /// # Errors
    ///
    /// [`StoreError::Empty`], [`StoreError::Sqlite`].
    pub fn add(&mut self, contact: Contact) -> Result<ContactId, StoreError> {
        let contact = self.renormalized(contact);
        let id = self.store.insert(&contact)?;
        self.reindex(id)?;
        Ok(id)
    }

    /// Adds a local contact with a photo (JPEG, PNG, GIF or WebP).
    ///
    /// # Errors
    ///
    /// [`StoreError::Photo`], and as [`Contacts::add`].
    pub fn add_with_photo(
        &mut self,
        mut contact: Contact,
        photo: &[u8],
    ) -> Result<ContactId, StoreError> {
        contact.photo = Some(self.photos.store(photo)?);
        self.add(contact)
    }

    /// Replaces a local contact's data.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], [`StoreError::NotLocal`], and as
    /// [`Contacts::add`].
    pub fn update(&mut self, id: ContactId, contact: Contact) -> Result<(), StoreError> {
        let contact = self.renormalized(contact);
        self.store.update(id, &contact)?;
        self.reindex(id)
    }

    /// Deletes a local contact; returns it.
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], [`StoreError::NotLocal`],
    /// [`StoreError::Sqlite`].
    pub fn remove(&mut self, id: ContactId) -> Result<Contact, StoreError> {
        let removed = self.store.remove(id)?;
        self.index.remove(id);
        Ok(removed)
    }

    /// Marks or unmarks a favourite (any source; kept across syncs).
    ///
    /// # Errors
    ///
    /// [`StoreError::NotFound`], [`StoreError::Sqlite`].
    pub fn set_favourite(&mut self, id: ContactId, favourite: bool) -> Result<(), StoreError> {
        self.store.set_favourite(id, favourite)?;
        self.index.set_favourite(id, favourite);
        Ok(())
    }

    /// The cached photo file of a contact, when it has one.
    #[must_use]
    pub fn photo_path(&self, contact: &Contact) -> Option<PathBuf> {
        let photo = contact.photo.as_ref()?;
        let path = self.photos.path(photo);
        path.is_file().then_some(path)
    }

    /// The state of a source's last completed sync.
    ///
    /// # Errors
    ///
    /// [`StoreError::Sqlite`].
    pub fn sync_state(&self, source: &Source) -> Result<Option<SyncState>, StoreError> {
        self.store.sync_state(source)
    }

    /// Syncs a directory into the store: reads every entry (paged), then
    /// in one transaction adds, updates and removes contacts so the store
    /// holds what the directory holds. Idempotent. When reading fails part
    /// way, nothing is changed; entries that cannot be read are skipped and
    /// keep their stored version.
    ///
    /// # Errors
    ///
    /// [`SyncError::Directory`], [`SyncError::Store`].
    pub async fn sync_ldap(&mut self, directory: &LdapSource) -> Result<SyncReport, SyncError> {
        let fetched = directory.fetch().await?;
        let source = directory.source();
        let mut report = SyncReport {
            source: source.clone(),
            fetched: fetched.entries.len(),
            counts: SyncCounts::default(),
            skipped: fetched.skipped,
            photos_rejected: 0,
        };
        let mut contacts = Vec::with_capacity(fetched.entries.len());
        let mut keep = Vec::new();
        for entry in &fetched.entries {
            match entry.to_contact(directory.attributes(), &source, directory.default_region()) {
                Ok((mut contact, photo)) => {
                    if let Some(bytes) = photo {
                        match self.photos.store(&bytes) {
                            Ok(photo) => contact.photo = Some(photo),
                            Err(PhotoError::Io { path, source }) => {
                                return Err(
                                    StoreError::Photo(PhotoError::Io { path, source }).into()
                                );
                            }
                            Err(error) => {
                                tracing::debug!(%error, "directory photo dropped");
                                report.photos_rejected += 1;
                            }
                        }
                    }
                    contacts.push(contact);
                }
                Err(error) => {
                    // Kept by the id it is stored under, which is the DN
                    // only when the map names no id attribute.
                    keep.push(
                        entry
                            .source_id(directory.attributes())
                            .unwrap_or_else(|_| entry.dn.clone()),
                    );
                    report.skipped.push(SkippedEntry {
                        dn: Some(entry.dn.clone()),
                        error,
                    });
                }
            }
        }
        report.counts = self
            .store
            .replace_source_keeping(&source, &contacts, &keep, None)?;
        self.index = SearchIndex::from_entries(self.store.index_entries()?);
        let in_use = self.store.photo_hashes()?;
        self.photos.retain(&in_use).map_err(StoreError::from)?;
        Ok(report)
    }

    /// Syncs a Google account: the changes since the stored sync token, or
    /// everything (then contacts gone at Google are removed here) when there
    /// is none or it has expired. Every page is read before anything is
    /// written; a sync that fails part way changes nothing. A photo the
    /// photo host refuses (not found, too large, not an image) is dropped
    /// and counted; one it cannot serve now (a network error, 5xx) leaves
    /// the contact its old photo and the sync token where it was, so the
    /// next sync reads the change again.
    ///
    /// # Errors
    ///
    /// [`SyncError::Cloud`], [`SyncError::Store`].
    pub async fn sync_google(
        &mut self,
        source: &GoogleSource,
        http: &CloudHttp,
        session: &mut OAuthSession,
    ) -> Result<SyncReport, SyncError> {
        let origin = source.source();
        let token = self.store.sync_state(&origin)?.and_then(|s| s.token);
        let mut changes = source.fetch(http, session, token.as_deref()).await?;
        let mut rejected = 0;
        let by_source_id: std::collections::HashMap<String, usize> = changes
            .changed
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.source_id.clone().map(|id| (id, i)))
            .collect();
        // Photos the host could not give this time (a blip), by source id:
        // the contact keeps the photo it has, and the sync token stays, so
        // the next sync reads these changes again and fetches them.
        let mut missed: Vec<String> = Vec::new();
        for (source_id, url) in std::mem::take(&mut changes.photos) {
            let stored = match http.get_photo(&url, MAX_PHOTO_BYTES).await {
                Ok(bytes) => self.photos.store(&bytes).map_err(|e| e.to_string()),
                Err(e) if e.is_transient() => {
                    tracing::debug!(error = %e, "contact photo not fetched; tried again next sync");
                    missed.push(source_id);
                    continue;
                }
                Err(e) => Err(e.to_string()),
            };
            match stored {
                Ok(photo) => {
                    if let Some(&i) = by_source_id.get(&source_id) {
                        changes.changed[i].photo = Some(photo);
                    }
                }
                Err(error) => {
                    tracing::debug!(%error, "contact photo dropped");
                    rejected += 1;
                }
            }
        }
        if !missed.is_empty() {
            let kept: std::collections::HashMap<String, PhotoRef> = self
                .store
                .contacts_of(&origin)?
                .into_iter()
                .filter_map(|c| Some((c.source_id?, c.photo?)))
                .collect();
            for source_id in &missed {
                if let (Some(&i), Some(photo)) = (by_source_id.get(source_id), kept.get(source_id))
                {
                    changes.changed[i].photo = Some(photo.clone());
                }
            }
            changes.token = token;
        }
        let mut report = self.apply_cloud(origin, changes)?;
        report.photos_rejected = rejected;
        let in_use = self.store.photo_hashes()?;
        self.photos.retain(&in_use).map_err(StoreError::from)?;
        Ok(report)
    }

    /// Syncs an Exchange account through Microsoft Graph's delta query,
    /// as [`Contacts::sync_google`] does (the stored token is the delta
    /// link).
    ///
    /// # Errors
    ///
    /// [`SyncError::Cloud`], [`SyncError::Store`].
    pub async fn sync_exchange(
        &mut self,
        source: &ExchangeSource,
        http: &CloudHttp,
        session: &mut OAuthSession,
    ) -> Result<SyncReport, SyncError> {
        let origin = source.source();
        let token = self.store.sync_state(&origin)?.and_then(|s| s.token);
        let changes = source.fetch(http, session, token.as_deref()).await?;
        self.apply_cloud(origin, changes)
    }

    fn apply_cloud(&mut self, source: Source, changes: Changes) -> Result<SyncReport, SyncError> {
        let contacts: Vec<Contact> = changes
            .changed
            .into_iter()
            .map(|c| self.renormalized(c))
            .collect();
        let token = changes.token.as_deref();
        let counts = if changes.full {
            self.store.replace_source(&source, &contacts, token)?
        } else {
            self.store
                .apply_changes(&source, &contacts, &changes.deleted, token)?
        };
        self.index = SearchIndex::from_entries(self.store.index_entries()?);
        Ok(SyncReport {
            source,
            fetched: contacts.len() + changes.deleted.len(),
            counts,
            skipped: Vec::new(),
            photos_rejected: 0,
        })
    }

    fn renormalized(&self, mut contact: Contact) -> Contact {
        for n in &mut contact.numbers {
            if !n.e164 {
                *n = n.renormalized(self.default_region);
            }
        }
        contact
    }

    fn reindex(&mut self, id: ContactId) -> Result<(), StoreError> {
        match self.store.get(id)? {
            Some(contact) => self.index.insert(IndexEntry::from_contact(id, &contact)),
            None => {
                self.index.remove(id);
            }
        }
        Ok(())
    }

    fn load_hits(&self, hits: &[IndexHit]) -> Result<Vec<SearchHit>, StoreError> {
        // One query for every contact shown or merged.
        let ids: Vec<ContactId> = hits
            .iter()
            .flat_map(|h| std::iter::once(h.id).chain(h.merged.iter().copied()))
            .collect();
        let mut loaded = self.store.get_many(&ids)?;
        let mut out = Vec::with_capacity(hits.len());
        for hit in hits {
            let Some(mut contact) = loaded.remove(&hit.id) else {
                continue;
            };
            let mut merged_from = Vec::with_capacity(hit.merged.len());
            for other in &hit.merged {
                let Some(other) = loaded.remove(other) else {
                    continue;
                };
                for n in other.numbers {
                    if !contact.numbers.iter().any(|m| m.number == n.number) {
                        contact.numbers.push(n);
                    }
                }
                for e in other.emails {
                    if !contact.emails.iter().any(|m| m.eq_ignore_ascii_case(&e)) {
                        contact.emails.push(e);
                    }
                }
                if contact.photo.is_none() {
                    contact.photo = other.photo;
                }
                merged_from.push(MergedContact {
                    id: other.id,
                    source: other.source,
                    source_id: other.source_id,
                });
            }
            out.push(SearchHit {
                contact,
                kind: hit.kind,
                merged_from,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// Contacts are personal data: other users on the machine read none.
    #[test]
    fn the_store_and_its_photos_are_the_owners_only() {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profile");
        let _contacts = Contacts::open(&profile).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&profile), 0o700);
        assert_eq!(mode(&profile.join(DATABASE_FILE)), 0o600);
        assert_eq!(mode(&profile.join(PHOTO_DIR)), 0o700);
    }
}
