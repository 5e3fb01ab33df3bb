//! Identities: Noise key pairs, fingerprints, key files and the known-servers file.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// 32 bytes that name an identity: a Noise static public key, or the SHA-256 of a TLS
/// certificate. Shown as 43 characters of unpadded base64url.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The SHA-256 fingerprint of a DER certificate.
    pub fn of_certificate(der: &[u8]) -> Fingerprint {
        use sha2::Digest;
        Fingerprint(sha2::Sha256::digest(der).into())
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&URL_SAFE_NO_PAD.encode(self.0))
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

impl FromStr for Fingerprint {
    type Err = io::Error;
    fn from_str(s: &str) -> io::Result<Fingerprint> {
        let bytes = URL_SAFE_NO_PAD
            .decode(s.trim())
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| invalid(format!("{s:?} is not a fingerprint (43 characters of base64url)")))?;
        let mut out = [0; 32];
        out.copy_from_slice(&bytes);
        Ok(Fingerprint(out))
    }
}

/// A Noise static key pair (X25519).
#[derive(Clone)]
pub struct KeyPair {
    pub(crate) private: [u8; 32],
    public: Fingerprint,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair").field("public", &self.public).finish_non_exhaustive()
    }
}

const KEY_FILE_HEADER: &str = "zserver noise key v1";

impl KeyPair {
    /// A new random key pair.
    pub fn generate() -> KeyPair {
        let params = zs_wire::secure::NoiseCipher::default().protocol_name().parse().expect("valid name");
        let kp = snow::Builder::new(params).generate_keypair().expect("key generation");
        KeyPair::from_private(&kp.private).expect("32-byte key")
    }

    /// The key pair of a 32-byte private key.
    pub fn from_private(private: &[u8]) -> io::Result<KeyPair> {
        let private: [u8; 32] =
            private.try_into().map_err(|_| invalid("a private key is 32 bytes".into()))?;
        let public = curve25519_public(&private);
        Ok(KeyPair { private, public: Fingerprint(public) })
    }

    /// The public half, which is also the fingerprint peers pin.
    pub fn public(&self) -> Fingerprint {
        self.public
    }

    /// Reads a key file written by [`save`](Self::save); refuses one others may read.
    pub fn load(path: &Path) -> io::Result<KeyPair> {
        check_private_mode(path)?;
        let text = std::fs::read_to_string(path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot read key file {}: {e}", path.display())))?;
        let mut lines = text.lines();
        if lines.next() != Some(KEY_FILE_HEADER) {
            return Err(invalid(format!("{} is not a zserver key file", path.display())));
        }
        let key = lines.next().and_then(|l| URL_SAFE_NO_PAD.decode(l.trim()).ok()).unwrap_or_default();
        KeyPair::from_private(&key).map_err(|e| invalid(format!("{}: {e}", path.display())))
    }

    /// Writes the key pair to a new file readable by its owner only.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let text = format!("{KEY_FILE_HEADER}\n{}\n", URL_SAFE_NO_PAD.encode(self.private));
        write_private(path, text.as_bytes())
    }

    /// Loads the key at `path`, or creates and saves a new one if there is none; the flag
    /// tells whether it was created.
    pub fn load_or_create(path: &Path) -> io::Result<(KeyPair, bool)> {
        if path.exists() {
            return Ok((KeyPair::load(path)?, false));
        }
        let key = KeyPair::generate();
        key.save(path)?;
        Ok((key, true))
    }
}

fn curve25519_public(private: &[u8; 32]) -> [u8; 32] {
    use snow::resolvers::{CryptoResolver, DefaultResolver};
    let mut dh = DefaultResolver.resolve_dh(&snow::params::DHChoice::Curve25519).expect("X25519 is built in");
    dh.set(private);
    let mut out = [0; 32];
    out.copy_from_slice(dh.pubkey());
    out
}

/// Creates `path` (and its directory, owner-only) holding `bytes`, readable by its owner only.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_private_dir(dir)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", path.display())))?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Creates a directory readable by its owner only (an existing one is left as it is).
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())))
}

/// Refuses a secret file that users other than its owner may read.
pub(crate) fn check_private_mode(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", path.display())))?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!(
                    "{} is accessible by others (mode {mode:o}); run: chmod 600 {}",
                    path.display(),
                    path.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Which server identities a client accepts.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Exactly these fingerprints (pinned keys or certificates).
    Pinned(Vec<Fingerprint>),
    /// The fingerprint recorded for the server in a known-servers file (lines of
    /// `NAME FINGERPRINT`). `name` defaults to the address connected to. With
    /// `first_use`, an unknown server's fingerprint is recorded and accepted (trust on
    /// first use); a changed one is always refused.
    KnownServers {
        /// The file.
        file: PathBuf,
        /// The server's name in it (default: the address connected to).
        name: Option<String>,
        /// Record and accept an unknown server.
        first_use: bool,
    },
    /// Any server: no protection against an active attacker. For development only.
    AnyServer,
}

impl Default for Trust {
    /// The known-servers file at its default place, without trust on first use.
    fn default() -> Self {
        Trust::KnownServers { file: default_known_servers(), name: None, first_use: false }
    }
}

impl From<Fingerprint> for Trust {
    fn from(f: Fingerprint) -> Trust {
        Trust::Pinned(vec![f])
    }
}

/// `$ZS_KNOWN_SERVERS`, else `$XDG_CONFIG_HOME/zserver/known_servers`, else
/// `~/.config/zserver/known_servers`.
pub fn default_known_servers() -> PathBuf {
    if let Some(p) = std::env::var_os("ZS_KNOWN_SERVERS") {
        return p.into();
    }
    let config = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    config.join("zserver").join("known_servers")
}

impl Trust {
    /// Accepts or refuses the fingerprint a server presented; the error says what to do.
    pub(crate) fn check(&self, seen: &Fingerprint, default_name: &str) -> io::Result<()> {
        let refuse = |why: String| Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
        match self {
            Trust::AnyServer => Ok(()),
            Trust::Pinned(keys) if keys.contains(seen) => Ok(()),
            Trust::Pinned(keys) if keys.is_empty() => refuse(format!(
                "server key {seen} is not trusted: no key is pinned (pin it with --server-key={seen})"
            )),
            Trust::Pinned(_) => refuse(format!(
                "server key {seen} does not match the pinned key: refusing (someone may be intercepting the connection)"
            )),
            Trust::KnownServers { file, name, first_use } => {
                let name = name.as_deref().unwrap_or(default_name);
                match known_server(file, name)? {
                    Some(known) if known == *seen => Ok(()),
                    Some(known) => refuse(format!(
                        "SERVER KEY CHANGED for {name}: {} records {known}, the server presented {seen}; refusing (if the change is expected, edit that file)",
                        file.display()
                    )),
                    None if *first_use => {
                        remember_server(file, name, seen)?;
                        tracing::warn!(server = name, key = %seen, file = %file.display(), "trusting a new server on first use");
                        Ok(())
                    }
                    None => refuse(format!(
                        "server {name} presented key {seen}, which is not in {}: pin it with --server-key={seen}, or trust it on first use",
                        file.display()
                    )),
                }
            }
        }
    }
}

/// The fingerprint a known-servers file records for `name`.
pub fn known_server(file: &Path, name: &str) -> io::Result<Option<Fingerprint>> {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io::Error::new(e.kind(), format!("cannot read {}: {e}", file.display()))),
    };
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut parts = line.split_whitespace();
        let (Some(who), Some(fp)) = (parts.next(), parts.next()) else {
            return Err(invalid(format!("{}:{}: expected NAME FINGERPRINT", file.display(), n + 1)));
        };
        if who == name {
            return fp.parse().map(Some).map_err(|e| invalid(format!("{}:{}: {e}", file.display(), n + 1)));
        }
    }
    Ok(None)
}

/// Appends `name fingerprint` to a known-servers file (created owner-only if missing).
pub fn remember_server(file: &Path, name: &str, key: &Fingerprint) -> io::Result<()> {
    if name.contains(char::is_whitespace) || name.is_empty() {
        return Err(invalid(format!("{name:?} cannot be a known-servers name")));
    }
    if !file.exists() {
        return write_private(file, format!("{name} {key}\n").as_bytes());
    }
    let mut f = std::fs::OpenOptions::new().append(true).open(file)?;
    writeln!(f, "{name} {key}")
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().unwrap()
    }

    #[test]
    fn fingerprints_parse_and_refuse_what_is_not_one() {
        let key = KeyPair::generate();
        let fp = key.public();
        assert_eq!(fp.to_string().parse::<Fingerprint>().unwrap(), fp);
        for bad in ["", "short", &"A".repeat(44), &"*".repeat(43), &format!("{fp}=")] {
            let e = bad.parse::<Fingerprint>().unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
            assert!(e.to_string().contains("not a fingerprint"), "{e}");
        }
        assert!(KeyPair::from_private(&[1; 31]).is_err());
    }

    #[test]
    fn key_files_round_trip_and_bad_ones_are_refused_clearly() {
        let d = dir();
        let path = d.path().join("sub/server.key");
        let (key, created) = KeyPair::load_or_create(&path).unwrap();
        assert!(created);
        let (again, created) = KeyPair::load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(again.public(), key.public());
        // Never overwritten.
        assert_eq!(KeyPair::generate().save(&path).unwrap_err().kind(), io::ErrorKind::AlreadyExists);

        let missing = KeyPair::load(&d.path().join("none.key")).unwrap_err();
        assert!(missing.to_string().contains("none.key"), "{missing}");

        let write = |name: &str, text: &str| {
            let p = d.path().join(name);
            write_private(&p, text.as_bytes()).unwrap();
            p
        };
        let e = KeyPair::load(&write("other.key", "something else\n")).unwrap_err();
        assert!(e.to_string().contains("not a zserver key file"), "{e}");
        let e = KeyPair::load(&write("short.key", &format!("{KEY_FILE_HEADER}\nAAAA\n"))).unwrap_err();
        assert!(e.to_string().contains("32 bytes"), "{e}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let e = KeyPair::load(&path).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
            assert!(e.to_string().contains("chmod 600"), "{e}");
        }
    }

    #[test]
    fn known_servers_files_are_read_strictly_and_appended_to() {
        let d = dir();
        let file = d.path().join("known_servers");
        assert_eq!(known_server(&file, "a").unwrap(), None, "a missing file knows nobody");
        let (a, b) = (KeyPair::generate().public(), KeyPair::generate().public());
        remember_server(&file, "a:1", &a).unwrap();
        remember_server(&file, "b:2", &b).unwrap();
        assert_eq!(known_server(&file, "a:1").unwrap(), Some(a));
        assert_eq!(known_server(&file, "b:2").unwrap(), Some(b));
        assert_eq!(known_server(&file, "c:3").unwrap(), None);
        assert!(remember_server(&file, "two words", &a).is_err());
        assert!(remember_server(&file, "", &a).is_err());

        std::fs::write(&file, format!("# comment\n\nz:9 {a}\nlonely\n")).unwrap();
        let e = known_server(&file, "y").unwrap_err();
        assert!(e.to_string().contains(":4: expected NAME FINGERPRINT"), "{e}");
        std::fs::write(&file, "z:9 not-a-key\n").unwrap();
        let e = known_server(&file, "z:9").unwrap_err();
        assert!(e.to_string().contains(":1:") && e.to_string().contains("not a fingerprint"), "{e}");
    }

    #[test]
    fn trust_says_what_to_do() {
        let (a, b) = (KeyPair::generate().public(), KeyPair::generate().public());
        let e = Trust::Pinned(vec![]).check(&a, "x").unwrap_err();
        assert!(e.to_string().contains(&format!("--server-key={a}")), "{e}");
        let e = Trust::Pinned(vec![b]).check(&a, "x").unwrap_err();
        assert!(e.to_string().contains("does not match"), "{e}");
        Trust::Pinned(vec![b, a]).check(&a, "x").unwrap();
        Trust::AnyServer.check(&a, "x").unwrap();
    }
}
