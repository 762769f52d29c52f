//! The profile directory: the last good configuration, the installation id
//! and the HTTP cache. Every file is replaced atomically (temporary file,
//! fsync, rename, fsync of the directory), so a crash or a failed check
//! leaves either the old file or the new one, never a mix.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use config_export::{Config, Export, Import};
use sha2::{Digest as _, Sha256};

use crate::error::ProvisionError;

/// File name of the stored configuration in the profile directory.
pub const CONFIG_FILE: &str = "provisioned.xml";
/// File name of the installation id in the profile directory.
pub const INSTALLATION_ID_FILE: &str = "installation-id";
/// Directory of cached documents in the profile directory.
pub const CACHE_DIR: &str = "provisioning-cache";

/// A profile directory.
///
/// `provisioned.xml` holds the configuration of the last successful check
/// as a plaintext document (secrets in clear, so the file is created
/// readable by its owner only); `installation-id` a random id made once;
/// `provisioning-cache/` one file per fetched URL with its `ETag` and
/// `Last-Modified`.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

/// A cached document and its validators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CachedDocument {
    pub(crate) etag: Option<String>,
    pub(crate) last_modified: Option<String>,
    pub(crate) body: Vec<u8>,
}

impl Store {
    /// Opens (and creates if needed) the profile directory `dir`.
    ///
    /// # Errors
    ///
    /// [`ProvisionError::Store`] when the directory cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ProvisionError> {
        let dir = dir.into();
        create_private_dir(&dir)?;
        Ok(Self { dir })
    }

    /// The profile directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file holding the stored configuration.
    #[must_use]
    pub fn config_path(&self) -> PathBuf {
        self.dir.join(CONFIG_FILE)
    }

    /// The stored configuration, if a check ever succeeded.
    ///
    /// # Errors
    ///
    /// [`ProvisionError::Store`] when the file cannot be read,
    /// [`ProvisionError::Stored`] when it does not hold a valid document.
    pub fn load(&self) -> Result<Option<Config>, ProvisionError> {
        let path = self.config_path();
        let Some(bytes) = read_if_exists(&path)? else {
            return Ok(None);
        };
        match Import::new().import(&bytes) {
            Ok(config) => Ok(Some(config)),
            Err(config_export::ImportError::Invalid(source)) => Err(ProvisionError::Stored {
                path,
                source: Box::new(source),
            }),
            Err(other) => Err(ProvisionError::store(
                path,
                io::Error::new(io::ErrorKind::InvalidData, other.to_string()),
            )),
        }
    }

    /// This installation's id: 32 hex digits made from the operating
    /// system's random source the first time and kept in the profile.
    ///
    /// # Errors
    ///
    /// [`ProvisionError::Store`] when the file cannot be read or written.
    pub fn installation_id(&self) -> Result<String, ProvisionError> {
        let path = self.dir.join(INSTALLATION_ID_FILE);
        if let Some(bytes) = read_if_exists(&path)? {
            let id = String::from_utf8_lossy(&bytes).trim().to_owned();
            if !id.is_empty() && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(id);
            }
        }
        let id = format!("{:032x}", rand::random::<u128>());
        write_atomic(&path, id.as_bytes())?;
        Ok(id)
    }

    /// The stored document's bytes, if any.
    pub(crate) fn stored_bytes(&self) -> Result<Option<Vec<u8>>, ProvisionError> {
        read_if_exists(&self.config_path())
    }

    /// Replaces the stored configuration with `config`, atomically. Returns
    /// whether the file changed.
    ///
    /// # Errors
    ///
    /// [`ProvisionError::Stored`] when `config` does not validate, and
    /// [`ProvisionError::Store`] when the file cannot be written; the stored
    /// configuration is then unchanged.
    pub fn save(&self, config: &Config) -> Result<bool, ProvisionError> {
        let document = Export::new(config)
            .plaintext()
            .map_err(|e| match e {
                config_export::ExportError::Invalid(source) => ProvisionError::Stored {
                    path: self.config_path(),
                    source: Box::new(source),
                },
                other => {
                    ProvisionError::store(self.config_path(), io::Error::other(other.to_string()))
                }
            })?
            .document;
        if self.stored_bytes()?.as_deref() == Some(document.as_bytes()) {
            return Ok(false);
        }
        write_atomic(&self.config_path(), document.as_bytes())?;
        Ok(true)
    }

    fn cache_path(&self, url: &str) -> PathBuf {
        let digest = Sha256::digest(url.as_bytes());
        let name = digest[..16].iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        self.dir.join(CACHE_DIR).join(format!("{name}.cache"))
    }

    /// The cached copy of `url`, if any and readable.
    pub(crate) fn cached(&self, url: &str) -> Option<CachedDocument> {
        let bytes = fs::read(self.cache_path(url)).ok()?;
        let split = bytes.windows(2).position(|w| w == b"\n\n")?;
        let head = std::str::from_utf8(&bytes[..split]).ok()?;
        let mut entry = CachedDocument {
            etag: None,
            last_modified: None,
            body: bytes[split + 2..].to_vec(),
        };
        let mut stored_url = None;
        for line in head.lines() {
            let (name, value) = line.split_once(": ")?;
            match name {
                "url" => stored_url = Some(value),
                "etag" => entry.etag = Some(value.to_owned()),
                "last-modified" => entry.last_modified = Some(value.to_owned()),
                _ => {}
            }
        }
        // A hash collision or a damaged file is a miss.
        (stored_url == Some(url)).then_some(entry)
    }

    /// Caches `entry` for `url`, or forgets `url` when the entry has no
    /// validator.
    pub(crate) fn save_cached(
        &self,
        url: &str,
        entry: &CachedDocument,
    ) -> Result<(), ProvisionError> {
        let path = self.cache_path(url);
        let clean = |v: &Option<String>| {
            v.as_deref()
                .filter(|v| !v.contains(['\r', '\n']) && !v.is_empty())
                .map(str::to_owned)
        };
        let (etag, last_modified) = (clean(&entry.etag), clean(&entry.last_modified));
        if etag.is_none() && last_modified.is_none() {
            return match fs::remove_file(&path) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => {
                    Err(ProvisionError::store(path, e))
                }
                _ => Ok(()),
            };
        }
        create_private_dir(&self.dir.join(CACHE_DIR))?;
        let mut out = format!("url: {url}\n");
        if let Some(etag) = etag {
            let _ = writeln!(out, "etag: {etag}");
        }
        if let Some(date) = last_modified {
            let _ = writeln!(out, "last-modified: {date}");
        }
        out.push('\n');
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&entry.body);
        write_atomic(&path, &bytes)
    }
}

fn read_if_exists(path: &Path) -> Result<Option<Vec<u8>>, ProvisionError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ProvisionError::store(path, e)),
    }
}

fn create_private_dir(dir: &Path) -> Result<(), ProvisionError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| ProvisionError::store(dir, e))
}

/// Writes `bytes` to `path` through a temporary file in the same directory:
/// write, fsync, rename over `path`, fsync the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ProvisionError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&temp, path)?;
        // The rename itself is durable once the directory is synced.
        File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.map_err(|e| ProvisionError::store(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_entries_round_trip_and_misses_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("profile")).unwrap();
        let url = "https://p.example/a.xml";
        assert_eq!(store.cached(url), None);
        let entry = CachedDocument {
            etag: Some("\"v1\"".to_owned()),
            last_modified: Some("Tue, 01 Dec 2026 10:00:00 GMT".to_owned()),
            body: b"<softphone-config version=\"1\"/>\n\n".to_vec(),
        };
        store.save_cached(url, &entry).unwrap();
        assert_eq!(store.cached(url), Some(entry.clone()));
        assert_eq!(store.cached("https://p.example/b.xml"), None);
        let no_validators = CachedDocument {
            etag: None,
            last_modified: None,
            ..entry
        };
        store.save_cached(url, &no_validators).unwrap();
        assert_eq!(store.cached(url), None);
    }

    #[test]
    fn installation_id_is_made_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let id = store.installation_id().unwrap();
        assert_eq!(id.len(), 32);
        assert_eq!(store.installation_id().unwrap(), id);
        assert_eq!(
            Store::open(dir.path()).unwrap().installation_id().unwrap(),
            id
        );
    }

    #[cfg(unix)]
    #[test]
    fn stored_configuration_is_private_and_rewritten_only_on_change() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.load().unwrap(), None);
        let config = Config::default();
        assert!(store.save(&config).unwrap());
        assert!(!store.save(&config).unwrap());
        assert_eq!(store.load().unwrap(), Some(config));
        let mode = fs::metadata(store.config_path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty());
    }
}
