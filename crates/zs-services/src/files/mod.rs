//! The file service: a public area, a private area per user and shared folders, with
//! resumable uploads and downloads, byte ranges and their hashes, multi-connection
//! downloads, instant uploads by content hash (after a proof of possession), quotas, and a
//! sandbox that keeps every path inside its area (PROTOCOL §13).
//!
//! Mount [`Files`] beside [`Accounts`](crate::accounts::Accounts): it takes the caller's
//! identity from the login. Clients use [`client`].

pub mod client;
mod commands;
pub(crate) use commands::decode_any;
pub use commands::proof;
mod index;
mod io;
pub mod paths;
mod upload;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use zs::wire::ErrorCode;
use zs::{HandlerError, Identity, Peer, Router};

use crate::json::err;
use crate::live::Live;
use paths::{resolve, user_dir_name, Area, AreaPath};

/// The name the service mounts under.
pub const NAME: &str = "files";

/// Who may read the public area.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PublicRead {
    /// Logged-in users (the default).
    #[default]
    LoggedIn,
    /// Everyone, logged in or not.
    Everyone,
}

/// A shared folder and who may use it: user names, `role:NAME`, or `*` for every
/// logged-in user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedFolder {
    /// Its name (`shared/NAME/...`).
    pub name: String,
    /// Who may read it.
    pub readers: Vec<String>,
    /// Who may read and write it.
    pub writers: Vec<String>,
}

/// Settings of the file service.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    /// Where the areas, partial uploads and the index live.
    pub root: PathBuf,
    /// Who may read the public area (default: logged-in users). Admins write it.
    pub public_read: PublicRead,
    /// Shared folders (default none).
    pub shared: Vec<SharedFolder>,
    /// Bytes a user may keep in their private area, partial uploads included (default 10 GiB).
    pub quota_bytes: u64,
    /// Files a user may keep in their private area (default 100,000).
    pub quota_files: u64,
    /// How long an abandoned partial upload is kept (default 24 h).
    pub partial_ttl: Duration,
    /// Transfers (uploads and downloads) one connection may run at once (default 16).
    pub transfers_per_connection: usize,
    /// Transfers the whole server runs at once (default 2,048): with the buffers each holds
    /// (about 128 KiB under load), a client with many sockets cannot make it hold more than
    /// about 256 MiB.
    pub max_transfers: usize,
    /// Entries one `file.list` answer holds at most (default 1,000).
    pub list_page: usize,
}

impl FilesConfig {
    /// Defaults, in `root`.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        FilesConfig {
            root: root.into(),
            public_read: PublicRead::LoggedIn,
            shared: Vec::new(),
            quota_bytes: 10 << 30,
            quota_files: 100_000,
            partial_ttl: Duration::from_secs(24 * 3600),
            transfers_per_connection: 16,
            max_transfers: 2048,
            list_page: 1000,
        }
    }
}

/// Transfers at once (server-wide) past which each download is sent in 64 KiB chunks
/// instead of 256 KiB.
pub const BUSY_TRANSFERS: usize = 64;

/// Where a server whose data directory is `data_dir` keeps its files.
pub fn files_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("files")
}

/// The file service. Mount it on a router (`router.mount(files)`).
#[derive(Clone)]
pub struct Files {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: FilesConfig,
    pub(crate) index: index::Index,
    /// Uploads being written, by the file they will become: a second writer is refused.
    pub(crate) writing: Mutex<HashMap<PathBuf, u64>>,
    /// Transfers running, server-wide: at most `max_transfers`; past [`BUSY_TRANSFERS`]
    /// downloads go in smaller chunks, so that many at once hold little each.
    pub(crate) transfers: Arc<AtomicUsize>,
    /// Whole-file and range hashes computed at once, one per core: a thousand `file.hash`
    /// requests for big ranges wait here instead of filling the blocking pool that logins
    /// and file IO share.
    pub(crate) hashing: tokio::sync::Semaphore,
    /// The service's root as the file system names it (symbolic links resolved).
    pub(crate) real_root: PathBuf,
    /// When partial uploads were last swept for expired ones (seconds since the epoch).
    pub(crate) swept: std::sync::atomic::AtomicU64,
    /// `config.public_read` and `config.quota_bytes` as set now.
    pub(crate) public_read: Live<PublicRead>,
    pub(crate) quota_bytes: Live<u64>,
}

/// Transfers running on one connection (kept in the peer's state).
#[derive(Default)]
pub(crate) struct Running(Arc<AtomicUsize>);

pub(crate) use crate::limits::Counted;

/// What may be done with a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    Read,
    Write,
}

impl Files {
    /// Opens the service's directory (making the areas), and sweeps expired partial
    /// uploads.
    pub fn open(config: FilesConfig) -> Result<Files, String> {
        let root = &config.root;
        for dir in ["public", "private", "shared", upload::PARTIAL_DIR] {
            std::fs::create_dir_all(root.join(dir))
                .map_err(|e| format!("{}: {e}", root.join(dir).display()))?;
        }
        for folder in &config.shared {
            AreaPath::parse(&format!("shared/{}", folder.name))?;
            std::fs::create_dir_all(root.join("shared").join(&folder.name)).map_err(|e| e.to_string())?;
        }
        let index = index::Index::open(&root.join("index.redb"))?;
        let real_root = root.canonicalize().map_err(|e| format!("{}: {e}", root.display()))?;
        let inner = Arc::new(Inner {
            public_read: Live::new(config.public_read),
            quota_bytes: Live::new(config.quota_bytes),
            config,
            index,
            writing: Mutex::default(),
            transfers: Arc::default(),
            hashing: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())),
            real_root,
            swept: Default::default(),
        });
        upload::sweep(&inner);
        Ok(Files { inner })
    }

    /// Removes the partial uploads older than the configured time that nobody is writing
    /// (done on opening and, as uploads begin, at most once an hour).
    pub fn sweep(&self) {
        upload::sweep(&self.inner);
    }

    /// Changes who may read the public area (`FilesConfig::public_read`), from now on.
    pub fn set_public_read(&self, who: PublicRead) {
        self.inner.public_read.set(who);
    }

    /// Changes the bytes each user may keep (`FilesConfig::quota_bytes`), for the uploads
    /// that begin from now on.
    pub fn set_quota_bytes(&self, bytes: u64) {
        self.inner.quota_bytes.set(bytes);
    }

    /// The service's settings as it was opened with.
    pub fn config(&self) -> &FilesConfig {
        &self.inner.config
    }
}

impl zs::Service for Files {
    fn name(&self) -> &str {
        NAME
    }

    fn mount(self: Arc<Self>, router: &mut Router) {
        commands::register(self.inner.clone(), router);
    }
}

impl Inner {
    /// The directory of `area` for `who`, if `who` may `access` it.
    pub(crate) fn area_root(
        &self,
        who: Option<&Identity>,
        area: &Area,
        access: Access,
    ) -> Result<PathBuf, HandlerError> {
        let root = &self.config.root;
        let login = || who.ok_or_else(|| err(ErrorCode::NotLoggedIn, "log in to use this area"));
        match area {
            Area::Public => {
                match (access, who) {
                    (Access::Read, _) if self.public_read.get() == PublicRead::Everyone => {}
                    (Access::Read, _) => {
                        login()?;
                    }
                    (Access::Write, _) if login()?.roles.iter().any(|r| r == "admin") => {}
                    (Access::Write, _) => {
                        return Err(err(ErrorCode::Forbidden, "only admins write the public area"))
                    }
                }
                Ok(root.join("public"))
            }
            Area::Home => {
                let who = login()?;
                let dir = root.join("private").join(user_dir_name(&who.user));
                std::fs::create_dir_all(&dir).map_err(io_err)?;
                Ok(dir)
            }
            Area::Shared(name) => {
                let who = login()?;
                let folder = self.config.shared.iter().find(|f| &f.name == name).ok_or_else(|| {
                    err(ErrorCode::NotFound, format!("no shared folder `{}`", name.escape_debug()))
                })?;
                let granted = |list: &[String]| {
                    list.iter().any(|g| {
                        g == "*"
                            || *g == who.user
                            || g.strip_prefix("role:").is_some_and(|r| who.roles.iter().any(|x| x == r))
                    })
                };
                let ok = granted(&folder.writers) || (access == Access::Read && granted(&folder.readers));
                if !ok {
                    return Err(err(
                        ErrorCode::Forbidden,
                        format!("no {access:?} access to shared/{name}").to_lowercase(),
                    ));
                }
                Ok(root.join("shared").join(name))
            }
        }
    }

    /// Checks `raw` and the caller's access to it: the path as parsed and where it is on
    /// disk.
    pub(crate) fn locate(
        &self,
        peer: &Peer,
        raw: &str,
        access: Access,
    ) -> Result<(AreaPath, PathBuf), HandlerError> {
        let path = AreaPath::parse(raw).map_err(|e| err(ErrorCode::InvalidArgument, e))?;
        let who = peer.user();
        let root = self.area_root(who.as_deref(), &path.area, access)?;
        let full = resolve(&root, &path.parts).map_err(|e| err(ErrorCode::Forbidden, e))?;
        Ok((path, full))
    }

    /// `full`'s name in the index (relative to the service's root).
    pub(crate) fn rel(&self, full: &Path) -> String {
        full.strip_prefix(&self.real_root).unwrap_or(full).to_string_lossy().into_owned()
    }

    /// The BLAKE3 of the file at `full`, from the index or computed (and recorded).
    pub(crate) fn hash_file(&self, full: &Path) -> Result<[u8; 32], HandlerError> {
        let meta = std::fs::metadata(full).map_err(io_err)?;
        let rel = self.rel(full);
        let mtime = mtime_ns(&meta);
        if let Some(h) = self.index.hash_of(&rel, meta.len(), mtime).map_err(internal)? {
            return Ok(h);
        }
        let hash = hash_range(full, 0, meta.len())?;
        self.index.put(&rel, meta.len(), mtime, &hash).map_err(internal)?;
        Ok(hash)
    }

    /// `user`'s private area as the file system names it (symbolic links resolved): the
    /// form of the paths [`resolve`] gives, and so of every upload's destination.
    pub(crate) fn real_home(&self, user: &str) -> PathBuf {
        let dir = self.config.root.join("private").join(user_dir_name(user));
        dir.canonicalize().unwrap_or_else(|_| self.real_root.join("private").join(user_dir_name(user)))
    }

    /// Bytes and files in `who`'s private area, partial uploads included but for the
    /// upload `except` (one being resumed, whose own earlier part is not counted twice).
    pub(crate) fn usage(&self, who: &Identity, except: Option<&str>) -> (u64, u64) {
        let (bytes, files) = tree_usage(&self.real_home(&who.user));
        let (pb, pf) = upload::partial_usage(self, &who.user, except);
        (bytes.saturating_add(pb), files.saturating_add(pf))
    }
}

/// Bytes and files at `path`: a file (or link) alone, or every file below a folder.
pub(crate) fn tree_usage(path: &Path) -> (u64, u64) {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return (0, 0) };
    if !meta.is_dir() {
        return (meta.len(), 1);
    }
    let (mut bytes, mut files) = (0u64, 0u64);
    let mut stack = vec![path.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for e in entries.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(_) => {
                    files += 1;
                    bytes = bytes.saturating_add(e.metadata().map_or(0, |m| m.len()));
                }
                Err(_) => {}
            }
        }
    }
    (bytes, files)
}

/// Modification time in nanoseconds since the epoch.
pub(crate) fn mtime_ns(meta: &std::fs::Metadata) -> u64 {
    meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map_or(0, |d| d.as_nanos() as u64)
}

/// The BLAKE3 of at most `len` bytes of `path` from `offset`, and how many there were.
pub(crate) fn blake3_of(path: &Path, offset: u64, len: u64) -> std::io::Result<([u8; 32], u64)> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path)?;
    f.seek(SeekFrom::Start(offset))?;
    let mut hasher = blake3::Hasher::new();
    let read = std::io::copy(&mut f.take(len), &mut hasher)?;
    Ok((*hasher.finalize().as_bytes(), read))
}

/// The BLAKE3 of `len` bytes of `path` from `offset`.
pub(crate) fn hash_range(path: &Path, offset: u64, len: u64) -> Result<[u8; 32], HandlerError> {
    let (hash, read) = blake3_of(path, offset, len).map_err(io_err)?;
    if read != len {
        return Err(err(
            ErrorCode::InvalidArgument,
            format!("the range ends past the end of the file ({read} of {len} bytes)"),
        ));
    }
    Ok(hash)
}

/// An IO error as a handler error (not found, exists, or the server's fault).
pub(crate) fn io_err(e: std::io::Error) -> HandlerError {
    use std::io::ErrorKind::*;
    match e.kind() {
        NotFound => err(ErrorCode::NotFound, "no such file or directory"),
        AlreadyExists => err(ErrorCode::Conflict, "it exists already"),
        DirectoryNotEmpty => err(ErrorCode::Conflict, "the directory is not empty"),
        IsADirectory => err(ErrorCode::InvalidArgument, "it is a directory"),
        NotADirectory => err(ErrorCode::InvalidArgument, "a component of the path is a file"),
        _ => internal(e.to_string()),
    }
}

/// A failure of the server's own (logged, not shown to the caller in detail).
pub(crate) fn internal(why: String) -> HandlerError {
    tracing::error!(error = %why, "file service failed");
    err(ErrorCode::Application, "the file service failed; see the server's log")
}

/// Runs blocking file work off the connection's task.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, HandlerError> + Send + 'static,
) -> Result<T, HandlerError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| internal(e.to_string()))?
}
