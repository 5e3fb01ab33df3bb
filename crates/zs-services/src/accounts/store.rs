//! The account store: an embedded redb database in the server's data directory. Every
//! write is one transaction committed durably (fsynced) before it is acknowledged, so an
//! acknowledged registration survives a crash, and a crash mid-write leaves the previous
//! state whole.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

/// Accounts by (normalised) name; values are JSON [`User`] records.
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
/// Login tokens by their BLAKE3 hash (the token itself is never stored); JSON [`Token`].
const TOKENS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tokens");
/// Noise client keys (fingerprints) mapped to account names.
const KEYS: TableDefinition<&str, &str> = TableDefinition::new("keys");

/// An account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// The name (NFC-normalised).
    pub name: String,
    /// A random id: what tokens and the data directory are bound to, so an account deleted
    /// and made again under the same name is another account.
    pub id: String,
    /// The argon2id hash of the password, in PHC form (salt and parameters included).
    pub hash: String,
    /// Roles (`user`, `admin`, ...).
    pub roles: Vec<String>,
    /// A disabled account cannot log in.
    pub disabled: bool,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// Seconds since the Unix epoch, of the last login.
    pub last_login: Option<u64>,
}

/// A login token's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// The account name.
    pub user: String,
    /// The account's id when the token was made: a token outlives neither its account
    /// nor a new account of the same name.
    pub user_id: String,
    /// Seconds since the Unix epoch after which it is refused.
    pub expires: u64,
}

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An account of that name exists.
    #[error("an account named {0} exists already")]
    Exists(String),
    /// No account of that name.
    #[error("no account named {0}")]
    NotFound(String),
    /// The database failed (disk, corruption, lock held by another process).
    #[error("account store: {0}")]
    Db(String),
}

fn err<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Db(e.to_string())
}

/// Seconds since the Unix epoch now.
pub(crate) fn now_s() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// The account store of a data directory.
pub struct Store {
    db: Database,
    dir: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("dir", &self.dir).finish()
    }
}

impl Store {
    /// Opens (or creates) the store in `data_dir` (`accounts.redb`, and `users/` for the
    /// accounts' own directories). Fails if another process has it open.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(err)?;
        let path = data_dir.join("accounts.redb");
        let db = Database::create(&path).map_err(|e| StoreError::Db(format!("{}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(err)?;
        {
            txn.open_table(USERS).map_err(err)?;
            txn.open_table(TOKENS).map_err(err)?;
            txn.open_table(KEYS).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        Ok(Store { db, dir: data_dir.to_owned() })
    }

    /// The account named `name`.
    pub fn get(&self, name: &str) -> Result<Option<User>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(USERS).map_err(err)?;
        let Some(v) = table.get(name).map_err(err)? else { return Ok(None) };
        serde_json::from_slice(v.value()).map(Some).map_err(err)
    }

    /// Every account, by name.
    pub fn list(&self) -> Result<Vec<User>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(USERS).map_err(err)?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(err)? {
            let (_, v) = entry.map_err(err)?;
            out.push(serde_json::from_slice(v.value()).map_err(err)?);
        }
        Ok(out)
    }

    /// How many accounts there are.
    pub fn count(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        txn.open_table(USERS).map_err(err)?.len().map_err(err)
    }

    /// Makes an account (durably), and its directory.
    pub fn create(&self, name: &str, hash: String, roles: Vec<String>) -> Result<User, StoreError> {
        let user = User {
            name: name.to_owned(),
            id: random_hex(16),
            hash,
            roles,
            disabled: false,
            created: now_s(),
            last_login: None,
        };
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(USERS).map_err(err)?;
            if table.get(name).map_err(err)?.is_some() {
                return Err(StoreError::Exists(name.to_owned()));
            }
            let v = serde_json::to_vec(&user).map_err(err)?;
            table.insert(name, v.as_slice()).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        self.user_dir(&user)?;
        Ok(user)
    }

    /// Changes an account (durably) and returns it as it is now.
    pub fn update(&self, name: &str, change: impl FnOnce(&mut User)) -> Result<User, StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        let user = {
            let mut table = txn.open_table(USERS).map_err(err)?;
            let mut user: User = match table.get(name).map_err(err)? {
                Some(v) => serde_json::from_slice(v.value()).map_err(err)?,
                None => return Err(StoreError::NotFound(name.to_owned())),
            };
            change(&mut user);
            let v = serde_json::to_vec(&user).map_err(err)?;
            table.insert(name, v.as_slice()).map_err(err)?;
            user
        };
        txn.commit().map_err(err)?;
        Ok(user)
    }

    /// Records a login's time. Not fsynced: a crash may lose it, which costs nothing.
    pub fn touch_login(&self, name: &str) -> Result<(), StoreError> {
        let mut txn = self.db.begin_write().map_err(err)?;
        // Persisted with the next durable commit, or lost: it is only a date.
        txn.set_durability(redb::Durability::None).map_err(err)?;
        {
            let mut table = txn.open_table(USERS).map_err(err)?;
            let user: Option<User> = match table.get(name).map_err(err)? {
                Some(v) => serde_json::from_slice(v.value()).ok(),
                None => None,
            };
            if let Some(mut user) = user {
                user.last_login = Some(now_s());
                let v = serde_json::to_vec(&user).map_err(err)?;
                table.insert(name, v.as_slice()).map_err(err)?;
            }
        }
        txn.commit().map_err(err)
    }

    /// Deletes an account, its tokens and its key mappings (durably); its directory is kept
    /// (renamed `deleted-<id>`) for the operator to remove.
    pub fn delete(&self, name: &str) -> Result<User, StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        let user: User = {
            let mut users = txn.open_table(USERS).map_err(err)?;
            let user = match users.remove(name).map_err(err)? {
                Some(v) => serde_json::from_slice(v.value()).map_err(err)?,
                None => return Err(StoreError::NotFound(name.to_owned())),
            };
            let mut tokens = txn.open_table(TOKENS).map_err(err)?;
            tokens
                .retain(|_, v| serde_json::from_slice::<Token>(v).map_or(true, |t| t.user != name))
                .map_err(err)?;
            let mut keys = txn.open_table(KEYS).map_err(err)?;
            keys.retain(|_, user| user != name).map_err(err)?;
            user
        };
        txn.commit().map_err(err)?;
        let dir = self.dir.join("users").join(&user.id);
        let _ = std::fs::rename(&dir, self.dir.join("users").join(format!("deleted-{}", user.id)));
        Ok(user)
    }

    /// The account's own directory (owner-only), made if missing.
    pub fn user_dir(&self, user: &User) -> Result<PathBuf, StoreError> {
        let dir = self.dir.join("users").join(&user.id);
        std::fs::create_dir_all(&dir).map_err(err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        }
        Ok(dir)
    }

    /// Keeps a token under the hash of its secret (durably).
    pub fn put_token(&self, hash: &[u8; 32], token: &Token) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(TOKENS).map_err(err)?;
            // Expired tokens go while another is written: the table holds live ones only.
            let now = now_s();
            table
                .retain(|_, v| serde_json::from_slice::<Token>(v).is_ok_and(|t| t.expires > now))
                .map_err(err)?;
            let v = serde_json::to_vec(token).map_err(err)?;
            table.insert(hash.as_slice(), v.as_slice()).map_err(err)?;
        }
        txn.commit().map_err(err)
    }

    /// The token whose secret hashes to `hash`.
    pub fn token(&self, hash: &[u8; 32]) -> Result<Option<Token>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(TOKENS).map_err(err)?;
        let Some(v) = table.get(hash.as_slice()).map_err(err)? else { return Ok(None) };
        serde_json::from_slice(v.value()).map(Some).map_err(err)
    }

    /// Revokes one token (by hash), or every token of `user`; returns how many went.
    pub fn revoke_tokens(&self, hash: Option<&[u8; 32]>, user: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        let n = {
            let mut table = txn.open_table(TOKENS).map_err(err)?;
            let before = table.len().map_err(err)?;
            match hash {
                Some(h) => {
                    let owned = table
                        .get(h.as_slice())
                        .map_err(err)?
                        .and_then(|v| serde_json::from_slice::<Token>(v.value()).ok())
                        .is_some_and(|t| t.user == user);
                    if owned {
                        table.remove(h.as_slice()).map_err(err)?;
                    }
                }
                None => table
                    .retain(|_, v| serde_json::from_slice::<Token>(v).map_or(true, |t| t.user != user))
                    .map_err(err)?,
            }
            before - table.len().map_err(err)?
        };
        txn.commit().map_err(err)?;
        Ok(n)
    }

    /// Maps a Noise client key (its fingerprint) to an account, or removes the mapping.
    pub fn map_key(&self, fingerprint: &str, user: Option<&str>) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(KEYS).map_err(err)?;
            match user {
                Some(u) => table.insert(fingerprint, u).map(drop).map_err(err)?,
                None => table.remove(fingerprint).map(drop).map_err(err)?,
            }
        }
        txn.commit().map_err(err)
    }

    /// The account a Noise client key is mapped to.
    pub fn key_user(&self, fingerprint: &str) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read().map_err(err)?;
        let table = txn.open_table(KEYS).map_err(err)?;
        Ok(table.get(fingerprint).map_err(err)?.map(|v| v.value().to_owned()))
    }
}

/// `n` random bytes as hex.
pub(crate) fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b).expect("the operating system provides random bytes");
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accounts_tokens_and_keys_are_kept_and_gone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let alice = store.create("alice", "h".into(), vec!["user".into()]).unwrap();
        assert!(matches!(store.create("alice", "h".into(), vec![]), Err(StoreError::Exists(_))));
        assert_eq!(store.get("alice").unwrap().unwrap(), alice);
        let token = Token { user: "alice".into(), user_id: alice.id.clone(), expires: now_s() + 60 };
        store.put_token(&[1; 32], &token).unwrap();
        store.map_key("fp", Some("alice")).unwrap();
        assert_eq!(store.key_user("fp").unwrap().as_deref(), Some("alice"));
        let disabled = store.update("alice", |u| u.disabled = true).unwrap();
        assert!(disabled.disabled);
        drop(store);
        // Reopened, all of it is there.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.token(&[1; 32]).unwrap(), Some(token));
        assert_eq!(store.count().unwrap(), 1);
        store.delete("alice").unwrap();
        assert_eq!(store.token(&[1; 32]).unwrap(), None, "an account's tokens go with it");
        assert_eq!(store.key_user("fp").unwrap(), None);
        assert!(matches!(store.delete("alice"), Err(StoreError::NotFound(_))));
    }
}
