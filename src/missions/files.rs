//! The file store: mission content and data packages by SHA-256, as TAK's enterprise sync
//! keeps them. Bytes live on disk beside the SQLite store (`files/<2 hex>/<hash>`), written
//! to a temporary name, synced and renamed, so a crash leaves a whole file or none; the
//! metadata row is written after the bytes, so a row always has its bytes. The hash is
//! always computed from the bytes; a sender's claimed hash that differs is refused.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::store::{now_ms, FileMeta, Store, StoreError};

/// TAK's default limit for one federation message (`maxMessageSizeBytes`), and ours for a file.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("file of {size} bytes is over the limit of {max} bytes ([missions] max_file_bytes)")]
    TooLarge { size: u64, max: u64 },
    #[error("the sender says SHA-256 {claimed} but the bytes hash to {actual}: refused")]
    Mismatch { claimed: String, actual: String },
    #[error("{0:?} is not a SHA-256 (64 hex digits)")]
    BadHash(String),
    #[error("file store {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The hash in its stored form (lowercase), or None when it is not 64 hex digits (so a
/// hash from the network can never name a path).
pub fn normalize_hash(h: &str) -> Option<String> {
    let h = h.trim();
    (h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit())).then(|| h.to_ascii_lowercase())
}

/// SHA-256 of `bytes`, lowercase hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

pub struct FileStore {
    dir: PathBuf,
    pub max_bytes: u64,
    store: Arc<Store>,
}

impl std::fmt::Debug for FileStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStore").field("dir", &self.dir).finish()
    }
}

impl FileStore {
    pub fn new(dir: PathBuf, max_bytes: u64, store: Arc<Store>) -> FileStore {
        FileStore { dir, max_bytes, store }
    }

    /// Where the files of the store at `store_path` live: `files/` beside it; for a store
    /// in memory, a directory of this process under the temporary directory.
    pub fn dir_for(store_path: Option<&str>, node_id: &str) -> PathBuf {
        match store_path.map(Path::new).and_then(|p| p.parent()) {
            Some(d) if !d.as_os_str().is_empty() => d.join("files"),
            Some(_) => PathBuf::from("files"),
            None => std::env::temp_dir().join(format!("takgate-{node_id}-{}", std::process::id())).join("files"),
        }
    }

    fn path(&self, hash: &str) -> PathBuf {
        self.dir.join(&hash[..2]).join(hash)
    }

    fn io(&self, path: &Path) -> impl FnOnce(std::io::Error) -> FileError + '_ {
        let path = path.to_owned();
        move |source| FileError::Io { path, source }
    }

    /// Stores `bytes` under their SHA-256 with `meta` (whose `hash`, when set, must match);
    /// the stored metadata, and whether the file was new. Blocking: large files take a
    /// while, call it from a blocking task.
    pub fn put(&self, bytes: &[u8], mut meta: FileMeta) -> Result<(FileMeta, bool), FileError> {
        let size = bytes.len() as u64;
        if size > self.max_bytes {
            return Err(FileError::TooLarge { size, max: self.max_bytes });
        }
        let actual = sha256_hex(bytes);
        if !meta.hash.is_empty() && !meta.hash.eq_ignore_ascii_case(&actual) {
            return Err(FileError::Mismatch { claimed: meta.hash, actual });
        }
        if let Some(held) = self.store.file(&actual)? {
            if self.path(&actual).is_file() {
                return Ok((held, false));
            }
        }
        let path = self.path(&actual);
        let dir = path.parent().unwrap_or(&self.dir).to_owned();
        std::fs::create_dir_all(&dir).map_err(self.io(&dir))?;
        let tmp = dir.join(format!(".{actual}.{:016x}.part", fastrand::u64(..)));
        let written = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(self.io(&path)(e));
        }
        meta.hash = actual.clone();
        meta.size = size as i64;
        if meta.uid.is_empty() {
            meta.uid = actual.clone();
        }
        if meta.submitted_ms == 0 {
            meta.submitted_ms = now_ms();
        }
        if meta.tool.is_empty() {
            meta.tool = "public".into();
        }
        let new = self.store.insert_file(&meta)?;
        let kept = if new { meta } else { self.store.file(&actual)?.unwrap_or(meta) };
        Ok((kept, new))
    }

    /// A file's metadata, if it is held (row and bytes).
    pub fn meta(&self, hash: &str) -> Result<Option<FileMeta>, FileError> {
        let Some(h) = normalize_hash(hash) else { return Ok(None) };
        Ok(self.store.file(&h)?.filter(|_| self.path(&h).is_file()))
    }

    /// A held file's path on disk (to stream it), with its metadata.
    pub fn open(&self, hash: &str) -> Result<Option<(FileMeta, PathBuf)>, FileError> {
        Ok(self.meta(hash)?.map(|m| {
            let p = self.path(&m.hash);
            (m, p)
        }))
    }

    /// A held file's bytes.
    pub fn read(&self, hash: &str) -> Result<Option<(FileMeta, Vec<u8>)>, FileError> {
        let Some((m, p)) = self.open(hash)? else { return Ok(None) };
        match std::fs::read(&p) {
            Ok(b) => Ok(Some((m, b))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(&p)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs() -> (FileStore, PathBuf) {
        let dir = std::env::temp_dir().join(format!("takgate-files-{}", fastrand::u64(..)));
        (FileStore::new(dir.clone(), 1024, Arc::new(Store::open(":memory:").unwrap())), dir)
    }

    #[test]
    fn stored_by_their_hash_and_read_back() {
        let (f, dir) = fs();
        let (m, new) = f.put(b"hello", FileMeta { name: "a.txt".into(), ..Default::default() }).unwrap();
        assert!(new);
        assert_eq!(m.hash, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824");
        assert_eq!((m.size, m.uid.as_str(), m.tool.as_str()), (5, m.hash.as_str(), "public"));
        let (_, again) = f.put(b"hello", FileMeta { hash: m.hash.to_uppercase(), ..Default::default() }).unwrap();
        assert!(!again, "the same bytes twice are one file");
        assert_eq!(f.read(&m.hash).unwrap().unwrap().1, b"hello");
        assert_eq!(f.meta(&m.hash.to_uppercase()).unwrap().unwrap().name, "a.txt");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn refuses_a_wrong_hash_an_oversized_file_and_paths() {
        let (f, dir) = fs();
        let e = f.put(b"hello", FileMeta { hash: "00".repeat(32), ..Default::default() }).unwrap_err();
        assert!(matches!(e, FileError::Mismatch { .. }), "{e}");
        assert!(f.meta(&"00".repeat(32)).unwrap().is_none(), "nothing kept");
        assert!(matches!(f.put(&[0u8; 1025], FileMeta::default()).unwrap_err(), FileError::TooLarge { size: 1025, max: 1024 }));
        assert_eq!(normalize_hash("../../etc/passwd"), None);
        assert!(f.read("../x").unwrap().is_none());
        let _ = std::fs::remove_dir_all(dir);
    }
}
