//! Contact photos cached on disk, one file per content hash.

use std::{
    collections::HashSet,
    fs, io,
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use crate::model::PhotoRef;

/// Largest photo kept, in bytes; directories sometimes hold scans.
pub const MAX_PHOTO_BYTES: usize = 512 * 1024;

/// Why a photo was not cached.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PhotoError {
    /// Larger than the cache takes.
    #[error("photo of {size} bytes is larger than the limit of {limit} bytes")]
    TooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a JPEG, PNG, GIF or WebP image.
    #[error("photo is not a JPEG, PNG, GIF or WebP image (starts with {head:02x?})")]
    NotAnImage {
        /// Its first bytes.
        head: Vec<u8>,
    },
    /// The file could not be written or read.
    #[error("photo cache {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// A directory of photos named by the SHA-256 of their bytes, so the same
/// picture from two sources or two syncs is stored once.
#[derive(Debug, Clone)]
pub struct PhotoCache {
    dir: PathBuf,
}

impl PhotoCache {
    /// Uses (and creates) `dir`.
    ///
    /// # Errors
    ///
    /// [`PhotoError::Io`] when the directory cannot be created.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, PhotoError> {
        let dir = dir.into();
        crate::private_dir(&dir).map_err(|source| PhotoError::Io {
            path: dir.clone(),
            source,
        })?;
        Ok(Self { dir })
    }

    /// The directory.
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks `bytes` and returns the reference it would be stored under,
    /// without writing.
    ///
    /// # Errors
    ///
    /// [`PhotoError::TooLarge`], [`PhotoError::NotAnImage`].
    pub fn identify(bytes: &[u8]) -> Result<PhotoRef, PhotoError> {
        if bytes.len() > MAX_PHOTO_BYTES {
            return Err(PhotoError::TooLarge {
                size: bytes.len(),
                limit: MAX_PHOTO_BYTES,
            });
        }
        let media_type = sniff(bytes).ok_or_else(|| PhotoError::NotAnImage {
            head: bytes.iter().take(8).copied().collect(),
        })?;
        let digest = Sha256::digest(bytes);
        let sha256 = digest.iter().map(|b| format!("{b:02x}")).collect();
        Ok(PhotoRef {
            sha256,
            media_type: media_type.to_owned(),
        })
    }

    /// Stores `bytes` (once per content) and returns its reference.
    ///
    /// # Errors
    ///
    /// As [`PhotoCache::identify`], and [`PhotoError::Io`].
    pub fn store(&self, bytes: &[u8]) -> Result<PhotoRef, PhotoError> {
        let photo = Self::identify(bytes)?;
        let path = self.path(&photo);
        if !path.is_file() {
            // Write beside it and rename, so a reader never sees half a file.
            let tmp = self.dir.join(format!(".{}.tmp", photo.sha256));
            crate::write_private(&tmp, bytes).map_err(|source| PhotoError::Io {
                path: tmp.clone(),
                source,
            })?;
            fs::rename(&tmp, &path).map_err(|source| PhotoError::Io {
                path: path.clone(),
                source,
            })?;
        }
        Ok(photo)
    }

    /// Where a photo's file is (it exists once stored).
    #[must_use]
    pub fn path(&self, photo: &PhotoRef) -> PathBuf {
        let ext = match photo.media_type.as_str() {
            "image/png" => "png",
            "image/gif" => "gif",
            "image/webp" => "webp",
            _ => "jpg",
        };
        // The hash is hex made here or checked on load; never a path part.
        let name: String = photo
            .sha256
            .chars()
            .filter(char::is_ascii_hexdigit)
            .collect();
        self.dir.join(format!("{name}.{ext}"))
    }

    /// The photo's bytes, when cached.
    #[must_use]
    pub fn read(&self, photo: &PhotoRef) -> Option<Vec<u8>> {
        fs::read(self.path(photo)).ok()
    }

    /// Deletes every cached photo whose hash is not in `keep`; returns how
    /// many were deleted.
    ///
    /// # Errors
    ///
    /// [`PhotoError::Io`] when the directory cannot be listed.
    pub fn retain(&self, keep: &HashSet<String>) -> Result<usize, PhotoError> {
        let entries = fs::read_dir(&self.dir).map_err(|source| PhotoError::Io {
            path: self.dir.clone(),
            source,
        })?;
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let stem = name.split('.').next().unwrap_or_default();
            if stem.len() == 64 && !keep.contains(stem) && fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        Ok(removed)
    }
}

fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        Some("image/webp")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const JPEG: &[u8] = &[
        0xFF, 0xD8, 0xFF, 0xE0, 0, 16, b'J', b'F', b'I', b'F', 0, 0xFF, 0xD9,
    ];

    #[test]
    fn same_bytes_are_stored_once_under_their_hash() {
        let dir = tempfile::tempdir().unwrap();
        let cache = PhotoCache::open(dir.path().join("photos")).unwrap();
        let a = cache.store(JPEG).unwrap();
        let b = cache.store(JPEG).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.media_type, "image/jpeg");
        assert_eq!(a.sha256.len(), 64);
        assert_eq!(cache.read(&a).unwrap(), JPEG);
        assert_eq!(fs::read_dir(cache.dir()).unwrap().count(), 1);
        assert_eq!(cache.retain(&HashSet::from([a.sha256.clone()])).unwrap(), 0);
        assert_eq!(cache.retain(&HashSet::new()).unwrap(), 1);
        assert!(cache.read(&a).is_none());
    }

    #[test]
    fn non_images_and_huge_photos_are_refused() {
        assert!(matches!(
            PhotoCache::identify(b"<html>"),
            Err(PhotoError::NotAnImage { .. })
        ));
        let mut huge = JPEG.to_vec();
        huge.resize(MAX_PHOTO_BYTES + 1, 0);
        assert!(matches!(
            PhotoCache::identify(&huge),
            Err(PhotoError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_hash_from_the_store_cannot_escape_the_directory() {
        let cache = PhotoCache::open(tempfile::tempdir().unwrap().path()).unwrap();
        let evil = PhotoRef {
            sha256: "../../etc/passwd".into(),
            media_type: "image/jpeg".into(),
        };
        assert_eq!(cache.path(&evil).parent(), Some(cache.dir()));
    }
}
