//! What the file service knows of its files' contents: each file's BLAKE3 (valid while its
//! size and modification time are those recorded), and a file per content hash, for
//! instant uploads. A cache of what is on disk: losing it costs only rehashing.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// Files by path (relative to the service's root): size, modification time (ns), BLAKE3.
const HASHES: TableDefinition<&str, &[u8]> = TableDefinition::new("hashes");
/// A path holding each content hash.
const CONTENT: TableDefinition<&[u8], &str> = TableDefinition::new("content");

/// The index (`index.redb` in the service's root).
pub(crate) struct Index {
    db: Database,
}

fn e<E: std::fmt::Display>(e: E) -> String {
    format!("file index: {e}")
}

/// Size, modification time and hash, as stored.
fn record(size: u64, mtime: u64, hash: &[u8; 32]) -> [u8; 48] {
    let mut out = [0u8; 48];
    out[..8].copy_from_slice(&size.to_le_bytes());
    out[8..16].copy_from_slice(&mtime.to_le_bytes());
    out[16..].copy_from_slice(hash);
    out
}

impl Index {
    pub(crate) fn open(path: &Path) -> Result<Index, String> {
        let db = Database::create(path).map_err(e)?;
        let txn = db.begin_write().map_err(e)?;
        txn.open_table(HASHES).map_err(e)?;
        txn.open_table(CONTENT).map_err(e)?;
        txn.commit().map_err(e)?;
        Ok(Index { db })
    }

    /// The hash of `rel` if it was recorded at this size and modification time.
    pub(crate) fn hash_of(&self, rel: &str, size: u64, mtime: u64) -> Result<Option<[u8; 32]>, String> {
        let txn = self.db.begin_read().map_err(e)?;
        let table = txn.open_table(HASHES).map_err(e)?;
        let Some(v) = table.get(rel).map_err(e)? else { return Ok(None) };
        let v = v.value();
        let fresh = v.len() == 48 && v[..8] == size.to_le_bytes() && v[8..16] == mtime.to_le_bytes();
        Ok(fresh.then(|| v[16..48].try_into().expect("32 bytes")))
    }

    /// Records `rel`'s hash (and that it holds this content).
    pub(crate) fn put(&self, rel: &str, size: u64, mtime: u64, hash: &[u8; 32]) -> Result<(), String> {
        let txn = self.db.begin_write().map_err(e)?;
        {
            txn.open_table(HASHES).map_err(e)?.insert(rel, &record(size, mtime, hash)[..]).map_err(e)?;
            txn.open_table(CONTENT).map_err(e)?.insert(&hash[..], rel).map_err(e)?;
        }
        txn.commit().map_err(e)
    }

    /// A path recorded as holding `hash` (it may have changed since: check it).
    pub(crate) fn holder(&self, hash: &[u8; 32]) -> Result<Option<String>, String> {
        let txn = self.db.begin_read().map_err(e)?;
        let table = txn.open_table(CONTENT).map_err(e)?;
        Ok(table.get(&hash[..]).map_err(e)?.map(|v| v.value().to_owned()))
    }

    /// Forgets `rel` and everything below it.
    pub(crate) fn forget(&self, rel: &str) -> Result<(), String> {
        let below = format!("{rel}/");
        let txn = self.db.begin_write().map_err(e)?;
        {
            let mut hashes = txn.open_table(HASHES).map_err(e)?;
            let mut gone = Vec::new();
            if let Some(v) = hashes.get(rel).map_err(e)? {
                gone.push((rel.to_owned(), v.value().to_vec()));
            }
            for entry in hashes.range(below.as_str()..).map_err(e)? {
                let (k, v) = entry.map_err(e)?;
                if !k.value().starts_with(&below) {
                    break;
                }
                gone.push((k.value().to_owned(), v.value().to_vec()));
            }
            let mut content = txn.open_table(CONTENT).map_err(e)?;
            for (k, v) in gone {
                hashes.remove(k.as_str()).map_err(e)?;
                if v.len() == 48 {
                    let held_here = content.get(&v[16..48]).map_err(e)?.is_some_and(|p| p.value() == k);
                    if held_here {
                        content.remove(&v[16..48]).map_err(e)?;
                    }
                }
            }
        }
        txn.commit().map_err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_fresh_only_at_their_size_and_time() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(&dir.path().join("index.redb")).unwrap();
        let h = [7u8; 32];
        index.put("public/a", 10, 99, &h).unwrap();
        index.put("public/ab", 10, 99, &[8u8; 32]).unwrap();
        index.put("public/a/b", 1, 1, &[9u8; 32]).unwrap();
        assert_eq!(index.hash_of("public/a", 10, 99).unwrap(), Some(h));
        assert_eq!(index.hash_of("public/a", 10, 100).unwrap(), None);
        assert_eq!(index.holder(&h).unwrap().as_deref(), Some("public/a"));
        index.forget("public/a").unwrap();
        assert_eq!(index.hash_of("public/a", 10, 99).unwrap(), None);
        assert_eq!(index.hash_of("public/a/b", 1, 1).unwrap(), None);
        assert_eq!(index.holder(&h).unwrap(), None);
        assert!(index.hash_of("public/ab", 10, 99).unwrap().is_some(), "a sibling is kept");
    }
}
