//! Files by SHA-256: the metadata rows (the bytes are on disk, [`crate::missions::files`]).

use rusqlite::{params, OptionalExtension};

use super::types::FileMeta;
use super::{Store, StoreError};

const COLS: &str = "hash, name, mime, size, submitter, creator_uid, uid, keywords, tool, submitted_ms, origin";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileMeta> {
    let keywords: String = r.get(7)?;
    Ok(FileMeta {
        hash: r.get(0)?,
        name: r.get(1)?,
        mime: r.get(2)?,
        size: r.get(3)?,
        submitter: r.get(4)?,
        creator_uid: r.get(5)?,
        uid: r.get(6)?,
        keywords: serde_json::from_str(&keywords).unwrap_or_default(),
        tool: r.get(8)?,
        submitted_ms: r.get(9)?,
        origin: r.get(10)?,
    })
}

impl Store {
    /// Records a file's metadata; true when the hash was new (the first metadata is kept).
    pub fn insert_file(&self, f: &FileMeta) -> Result<bool, StoreError> {
        let keywords = serde_json::to_string(&f.keywords).unwrap_or_else(|_| "[]".into());
        let tool = if f.tool.is_empty() { "public" } else { f.tool.as_str() };
        let n = self.db().execute(
            &format!("INSERT OR IGNORE INTO files ({COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"),
            params![f.hash, f.name, f.mime, f.size, f.submitter, f.creator_uid, f.uid, keywords, tool, f.submitted_ms, f.origin],
        )?;
        Ok(n > 0)
    }

    pub fn file(&self, hash: &str) -> Result<Option<FileMeta>, StoreError> {
        Ok(self.db().query_row(&format!("SELECT {COLS} FROM files WHERE hash = ?1"), [hash], row).optional()?)
    }

    /// Every file, newest first.
    pub fn files(&self) -> Result<Vec<FileMeta>, StoreError> {
        let db = self.db();
        let mut st = db.prepare(&format!("SELECT {COLS} FROM files ORDER BY submitted_ms DESC, hash"))?;
        let v = st.query_map([], row)?.collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }

    /// Sets a file's tool (TAK's `PUT /Marti/api/sync/metadata/{hash}/tool`); false: no such file.
    pub fn set_file_tool(&self, hash: &str, tool: &str) -> Result<bool, StoreError> {
        Ok(self.db().execute("UPDATE files SET tool = ?2 WHERE hash = ?1", [hash, tool])? > 0)
    }

    /// The files of a mission, in the order they were added.
    pub fn mission_files(&self, mission: &str) -> Result<Vec<(FileMeta, String)>, StoreError> {
        let db = self.db();
        let cols = COLS.split(", ").map(|c| format!("f.{c}")).collect::<Vec<_>>().join(", ");
        let mut st = db.prepare(&format!("SELECT {cols}, h.added_at FROM mission_hashes h JOIN files f ON f.hash = h.hash WHERE h.mission_name = ?1 ORDER BY h.added_at, h.hash"))?;
        let v = st.query_map([mission], |r| Ok((row(r)?, r.get(11)?)))?.collect::<Result<Vec<_>, _>>()?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_kept_once_and_listed_per_mission() {
        let s = Store::open(":memory:").unwrap();
        let f = FileMeta { hash: "ab".repeat(32), name: "map.kmz".into(), size: 3, keywords: vec!["k".into()], submitted_ms: 5, ..Default::default() };
        assert!(s.insert_file(&f).unwrap());
        assert!(!s.insert_file(&FileMeta { name: "other".into(), ..f.clone() }).unwrap(), "the first metadata stays");
        let back = s.file(&f.hash).unwrap().unwrap();
        assert_eq!((back.name.as_str(), back.tool.as_str(), back.keywords.as_slice()), ("map.kmz", "public", ["k".to_string()].as_slice()));
        assert!(s.set_file_tool(&f.hash, "vbm").unwrap() && !s.set_file_tool("none", "x").unwrap());
        s.add_hash("ops", &f.hash).unwrap();
        s.add_hash("ops", "unknown").unwrap();
        assert_eq!(s.mission_files("ops").unwrap().iter().map(|(f, _)| f.name.as_str()).collect::<Vec<_>>(), ["map.kmz"], "only files held");
        assert_eq!(s.files().unwrap().len(), 1);
    }
}
