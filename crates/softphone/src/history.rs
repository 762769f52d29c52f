//! Call history in SQLite: one row per call, written when the call ends.
//!
//! The schema is versioned with SQLite's `user_version`; each migration runs
//! in a transaction, so a database is either at the old version or the new.
//! Times are Unix milliseconds (UTC).

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use thiserror::Error;

/// Why the history could not be read or written.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// SQLite failed (open, migrate, read or write); the path is the database's.
    #[error("call history {path}: {source}")]
    Database {
        /// The database file, or `:memory:`.
        path: String,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The database file could not be created.
    #[error("call history {path}: creating it: {source}")]
    Create {
        /// The database file.
        path: String,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// The database was written by a newer version of this crate.
    #[error("call history {path}: schema version {found} is newer than this program's {known}")]
    TooNew {
        /// The database file.
        path: String,
        /// Its schema version.
        found: u32,
        /// The newest this crate knows.
        known: u32,
    },
}

/// Who placed the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallDirection {
    /// We called.
    Outgoing,
    /// We were called.
    Incoming,
}

impl CallDirection {
    fn as_str(self) -> &'static str {
        match self {
            CallDirection::Outgoing => "outgoing",
            CallDirection::Incoming => "incoming",
        }
    }

    fn parse(s: &str) -> CallDirection {
        if s == "incoming" {
            CallDirection::Incoming
        } else {
            CallDirection::Outgoing
        }
    }
}

/// One finished call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    /// Row id (0 before the record is stored).
    pub id: i64,
    /// Outgoing or incoming.
    pub direction: CallDirection,
    /// The account the call used.
    pub account: String,
    /// Our address of record.
    pub local_identity: String,
    /// The peer's address.
    pub remote_identity: String,
    /// The peer's display name, from the call or the contacts.
    pub remote_name: Option<String>,
    /// When the call started (INVITE sent or received).
    pub started: SystemTime,
    /// When it was answered, if it was.
    pub answered: Option<SystemTime>,
    /// When it ended.
    pub ended: SystemTime,
    /// Why it ended, e.g. `local hangup`, `remote hangup`, `busy`, `cancelled`.
    pub end_reason: String,
    /// The codec used, if media flowed.
    pub codec: Option<String>,
    /// The SRTP suite, if media was encrypted.
    pub srtp: Option<String>,
    /// The estimated mean opinion score (1 to 4.5), if media flowed.
    pub mos: Option<f64>,
}

impl CallRecord {
    /// Talk time: from answer to end, zero for calls never answered.
    pub fn duration(&self) -> Duration {
        self.answered
            .and_then(|a| self.ended.duration_since(a).ok())
            .unwrap_or_default()
    }
}

/// Migrations, in order; `user_version` counts how many ran.
const MIGRATIONS: &[&str] = &["CREATE TABLE calls (
        id INTEGER PRIMARY KEY,
        direction TEXT NOT NULL,
        account TEXT NOT NULL,
        local_identity TEXT NOT NULL,
        remote_identity TEXT NOT NULL,
        remote_name TEXT,
        started_ms INTEGER NOT NULL,
        answered_ms INTEGER,
        ended_ms INTEGER NOT NULL,
        duration_ms INTEGER NOT NULL,
        end_reason TEXT NOT NULL,
        codec TEXT,
        srtp TEXT,
        mos REAL
    );
    CREATE INDEX calls_started ON calls(started_ms);"];

/// The call history store.
#[derive(Debug)]
pub struct History {
    conn: Connection,
    path: String,
}

impl History {
    /// Opens (creating and migrating) the history at `path`.
    pub fn open(path: &Path) -> Result<History, HistoryError> {
        let label = path.display().to_string();
        // The owner's only (who called whom, and when); SQLite gives its
        // journal files the same mode. Created only when missing.
        let created = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path);
        match created {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(HistoryError::Create {
                    path: label,
                    source,
                });
            }
        }
        let conn = Connection::open(path).map_err(|source| HistoryError::Database {
            path: label.clone(),
            source,
        })?;
        History::init(conn, label)
    }

    /// A history kept in memory only (lost when dropped).
    pub fn in_memory() -> Result<History, HistoryError> {
        let label = ":memory:".to_owned();
        let conn = Connection::open_in_memory().map_err(|source| HistoryError::Database {
            path: label.clone(),
            source,
        })?;
        History::init(conn, label)
    }

    fn init(mut conn: Connection, path: String) -> Result<History, HistoryError> {
        let db = |source| HistoryError::Database {
            path: path.clone(),
            source,
        };
        // WAL keeps readers (an export) from blocking the writer; secure_delete
        // overwrites erased rows.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "secure_delete", "ON")
            .map_err(db)?;
        let version: u32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(db)?;
        let known = MIGRATIONS.len() as u32;
        if version > known {
            return Err(HistoryError::TooNew {
                path,
                found: version,
                known,
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
            let tx = conn.transaction().map_err(db)?;
            tx.execute_batch(sql).map_err(db)?;
            tx.pragma_update(None, "user_version", i as u32 + 1)
                .map_err(db)?;
            tx.commit().map_err(db)?;
        }
        Ok(History { conn, path })
    }

    fn err(&self, source: rusqlite::Error) -> HistoryError {
        HistoryError::Database {
            path: self.path.clone(),
            source,
        }
    }

    /// Stores a finished call; returns its row id.
    pub fn record(&self, call: &CallRecord) -> Result<i64, HistoryError> {
        self.conn
            .execute(
                "INSERT INTO calls (direction, account, local_identity, remote_identity,
                    remote_name, started_ms, answered_ms, ended_ms, duration_ms, end_reason,
                    codec, srtp, mos)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    call.direction.as_str(),
                    call.account,
                    call.local_identity,
                    call.remote_identity,
                    call.remote_name,
                    unix_ms(call.started),
                    call.answered.map(unix_ms),
                    unix_ms(call.ended),
                    call.duration().as_millis() as i64,
                    call.end_reason,
                    call.codec,
                    call.srtp,
                    call.mos,
                ],
            )
            .map_err(|e| self.err(e))?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The most recent calls first, at most `limit`.
    pub fn recent(&self, limit: usize) -> Result<Vec<CallRecord>, HistoryError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT id, direction, account, local_identity, remote_identity, remote_name,
                    started_ms, answered_ms, ended_ms, end_reason, codec, srtp, mos
                 FROM calls ORDER BY started_ms DESC, id DESC LIMIT ?1",
            )
            .map_err(|e| self.err(e))?;
        let rows = stmt
            .query_map([limit as i64], |r| {
                Ok(CallRecord {
                    id: r.get(0)?,
                    direction: CallDirection::parse(&r.get::<_, String>(1)?),
                    account: r.get(2)?,
                    local_identity: r.get(3)?,
                    remote_identity: r.get(4)?,
                    remote_name: r.get(5)?,
                    started: from_unix_ms(r.get(6)?),
                    answered: r.get::<_, Option<i64>>(7)?.map(from_unix_ms),
                    ended: from_unix_ms(r.get(8)?),
                    end_reason: r.get(9)?,
                    codec: r.get(10)?,
                    srtp: r.get(11)?,
                    mos: r.get(12)?,
                })
            })
            .map_err(|e| self.err(e))?;
        rows.collect::<Result<Vec<_>, _>>().map_err(|e| self.err(e))
    }

    /// How many calls are stored.
    pub fn len(&self) -> Result<usize, HistoryError> {
        let n: i64 = self
            .conn
            .query_row("SELECT COUNT(*) FROM calls", [], |r| r.get(0))
            .map_err(|e| self.err(e))?;
        Ok(n as usize)
    }

    /// Whether no call is stored.
    pub fn is_empty(&self) -> Result<bool, HistoryError> {
        Ok(self.len()? == 0)
    }

    /// Deletes calls that started before `cutoff`; returns how many.
    pub fn purge_before(&self, cutoff: SystemTime) -> Result<usize, HistoryError> {
        let n = self
            .conn
            .execute("DELETE FROM calls WHERE started_ms < ?1", [unix_ms(cutoff)])
            .map_err(|e| self.err(e))?;
        if n > 0 {
            // The deleted rows' pages stay in the write-ahead log until a
            // checkpoint: out of it at once, as with erase.
            self.conn
                .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
                .map_err(|e| self.err(e))?;
        }
        Ok(n)
    }

    /// Deletes every call and compacts the file so nothing is recoverable.
    pub fn erase(&self) -> Result<usize, HistoryError> {
        let n = self
            .conn
            .execute("DELETE FROM calls", [])
            .map_err(|e| self.err(e))?;
        self.conn
            .execute_batch("VACUUM; PRAGMA wal_checkpoint(TRUNCATE);")
            .map_err(|e| self.err(e))?;
        Ok(n)
    }

    /// The newest call, if any.
    pub fn last(&self) -> Result<Option<CallRecord>, HistoryError> {
        Ok(self.recent(1)?.into_iter().next())
    }

    /// Whether a call with this row id exists.
    pub fn contains(&self, id: i64) -> Result<bool, HistoryError> {
        self.conn
            .query_row("SELECT 1 FROM calls WHERE id = ?1", [id], |_| Ok(()))
            .optional()
            .map(|r| r.is_some())
            .map_err(|e| self.err(e))
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_millis() as i64,
        Err(e) => -(e.duration().as_millis() as i64),
    }
}

fn from_unix_ms(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(started_s: u64, answered: bool, reason: &str) -> CallRecord {
        let started = UNIX_EPOCH + Duration::from_secs(started_s);
        CallRecord {
            id: 0,
            direction: CallDirection::Outgoing,
            account: "office".into(),
            local_identity: "sip:alice@example.com".into(),
            remote_identity: "sip:bob@example.com".into(),
            remote_name: Some("Bob".into()),
            started,
            answered: answered.then(|| started + Duration::from_secs(2)),
            ended: started + Duration::from_secs(62),
            end_reason: reason.into(),
            codec: Some("PCMU".into()),
            srtp: None,
            mos: Some(4.3),
        }
    }

    /// Call records are the owner's only, whatever the directory's mode.
    #[test]
    fn the_database_file_is_the_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.sqlite");
        let h = History::open(&path).unwrap();
        h.record(&record(1000, true, "x")).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    #[test]
    fn stores_and_reads_back_newest_first() {
        let h = History::in_memory().unwrap();
        let a = h.record(&record(1000, true, "local hangup")).unwrap();
        let b = h.record(&record(2000, false, "busy")).unwrap();
        let recent = h.recent(10).unwrap();
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0].id, b);
        assert_eq!(recent[1].id, a);
        assert_eq!(recent[1].duration(), Duration::from_secs(60));
        assert_eq!(recent[0].duration(), Duration::ZERO);
        assert_eq!(recent[0].end_reason, "busy");
        let mut expected = record(1000, true, "local hangup");
        expected.id = a;
        assert_eq!(recent[1], expected);
    }

    #[test]
    fn purge_removes_only_older_calls() {
        let h = History::in_memory().unwrap();
        h.record(&record(1000, true, "x")).unwrap();
        let keep = h.record(&record(5000, true, "y")).unwrap();
        let removed = h
            .purge_before(UNIX_EPOCH + Duration::from_secs(3000))
            .unwrap();
        assert_eq!(removed, 1);
        assert_eq!(h.len().unwrap(), 1);
        assert!(h.contains(keep).unwrap());
    }

    #[test]
    fn reopening_a_file_keeps_calls_and_erase_empties_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.sqlite");
        {
            let h = History::open(&path).unwrap();
            h.record(&record(1000, true, "x")).unwrap();
        }
        let h = History::open(&path).unwrap();
        assert_eq!(h.len().unwrap(), 1);
        assert_eq!(h.erase().unwrap(), 1);
        assert!(h.is_empty().unwrap());
        drop(h);
        let bytes = std::fs::read(&path).unwrap();
        let needle = b"sip:bob@example.com";
        assert!(
            !bytes.windows(needle.len()).any(|w| w == needle),
            "an erased identity is still in the file"
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.sqlite");
        {
            let c = Connection::open(&path).unwrap();
            c.pragma_update(None, "user_version", 99).unwrap();
        }
        match History::open(&path) {
            Err(HistoryError::TooNew { found: 99, .. }) => {}
            other => panic!("expected TooNew, got {other:?}"),
        }
    }
}
