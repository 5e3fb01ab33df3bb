//! TLS 1.3 (rustls with aws-lc-rs), preferring the hybrid post-quantum key exchange
//! X25519MLKEM768. Servers use certificate and key files or a self-signed certificate;
//! clients pin the certificate's fingerprint (or a known-servers file), or verify it
//! against CA certificates.

use std::io::{self, IoSlice, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::{Buf, BufMut, BytesMut};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{aws_lc_rs, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use super::keys::{Fingerprint, Trust};
use super::link::Records;

/// The crypto provider: aws-lc-rs, key exchange X25519MLKEM768 first, then X25519.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    let mut p = aws_lc_rs::default_provider();
    p.kx_groups = vec![aws_lc_rs::kx_group::X25519MLKEM768, aws_lc_rs::kx_group::X25519];
    Arc::new(p)
}

fn tls_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}"))
}

/// The ALPN protocol a TLS client names to open a resumable session (its first plaintext
/// is then a session hello).
pub(crate) const SESSION_ALPN: &[u8] = b"zs-session/1";

/// A TLS server identity: a certificate chain and its private key.
#[derive(Clone)]
pub struct TlsServer {
    pub(crate) config: Arc<rustls::ServerConfig>,
    fingerprint: Fingerprint,
}

impl std::fmt::Debug for TlsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsServer").field("fingerprint", &self.fingerprint).finish()
    }
}

impl TlsServer {
    /// A server identity from PEM text: the certificate chain (leaf first) and its key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> io::Result<TlsServer> {
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<_, _>>()
            .map_err(|e| tls_error(format!("certificate: {e}")))?;
        let leaf = chain.first().ok_or_else(|| tls_error("no certificate in the PEM text"))?;
        let fingerprint = Fingerprint::of_certificate(leaf);
        let key =
            PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| tls_error(format!("private key: {e}")))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .map_err(tls_error)?;
        // No session resumption: nothing needs tickets, and none wait to be sent.
        config.send_tls13_tickets = 0;
        config.alpn_protocols = vec![SESSION_ALPN.to_vec()];
        Ok(TlsServer { config: Arc::new(config), fingerprint })
    }

    /// Its configuration with `alpn` as the one application protocol (a `wss` listener's
    /// `http/1.1`, QUIC's own).
    pub(crate) fn config_with_alpn(&self, alpn: &[u8]) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::clone(&self.config);
        config.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(config)
    }

    /// A server identity from a certificate file and a key file (PEM); the key file must
    /// be readable by its owner only.
    pub fn from_pem_files(cert: &Path, key: &Path) -> io::Result<TlsServer> {
        super::keys::check_private_mode(key)?;
        let read = |p: &Path| {
            std::fs::read(p)
                .map_err(|e| io::Error::new(e.kind(), format!("cannot read {}: {e}", p.display())))
        };
        TlsServer::from_pem(&read(cert)?, &read(key)?)
    }

    /// Loads `cert.pem` and `key.pem` from `dir`, creating a self-signed pair for `names`
    /// if there is none; the flag tells whether it was created.
    pub fn load_or_create(dir: &Path, names: &[String]) -> io::Result<(TlsServer, bool)> {
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        if cert.exists() {
            return Ok((TlsServer::from_pem_files(&cert, &key)?, false));
        }
        let (cert_pem, key_pem) = self_signed(names)?;
        super::keys::write_private(&key, key_pem.as_bytes())?;
        std::fs::write(&cert, cert_pem.as_bytes())?;
        Ok((TlsServer::from_pem_files(&cert, &key)?, true))
    }

    /// The SHA-256 fingerprint of the leaf certificate, which clients pin.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }
}

/// A new self-signed certificate for `names` (DNS names or IP addresses): PEM text of the
/// certificate and of its private key.
pub fn self_signed(names: &[String]) -> io::Result<(String, String)> {
    let ck = rcgen::generate_simple_self_signed(names.to_vec()).map_err(tls_error)?;
    Ok((ck.cert.pem(), ck.signing_key.serialize_pem()))
}

/// How a TLS client checks the server.
#[derive(Debug, Clone, Default)]
pub struct TlsClient {
    /// Which certificate fingerprints are accepted (ignored when `ca_file` is set).
    pub trust: Trust,
    /// CA certificates (PEM) to verify the server's chain and name against, instead of
    /// pinning its fingerprint.
    pub ca_file: Option<PathBuf>,
    /// The name the server is asked for and, with `ca_file`, checked against (default:
    /// the IP address connected to).
    pub server_name: Option<String>,
}

impl TlsClient {
    /// A client that accepts exactly this certificate fingerprint.
    pub fn pinned(fingerprint: Fingerprint) -> TlsClient {
        TlsClient { trust: fingerprint.into(), ..TlsClient::default() }
    }

    /// The client configuration; `session` asks for a resumable session (by ALPN).
    pub(crate) fn config(&self, default_name: &str, session: bool) -> io::Result<Arc<rustls::ClientConfig>> {
        let builder = rustls::ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(tls_error)?;
        let mut config = match &self.ca_file {
            Some(file) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in CertificateDer::pem_file_iter(file)
                    .map_err(|e| tls_error(format!("{}: {e}", file.display())))?
                {
                    roots.add(cert.map_err(tls_error)?).map_err(tls_error)?;
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            None => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinVerifier {
                    trust: Some(self.trust.clone()),
                    name: default_name.to_owned(),
                    provider: provider(),
                }))
                .with_no_client_auth(),
        };
        if session {
            config.alpn_protocols = vec![SESSION_ALPN.to_vec()];
        }
        Ok(Arc::new(config))
    }

    pub(crate) fn server_name(&self, addr: std::net::IpAddr) -> io::Result<ServerName<'static>> {
        match &self.server_name {
            Some(n) => {
                ServerName::try_from(n.clone()).map_err(|e| tls_error(format!("server name {n:?}: {e}")))
            }
            None => Ok(ServerName::IpAddress(addr.into())),
        }
    }
}

/// Accepts the server certificate whose fingerprint the trust accepts (with no trust: any,
/// for a layer whose peer something inside authenticates); the handshake signature is still
/// verified, so the server must hold the certificate's key.
#[derive(Debug)]
pub(crate) struct PinVerifier {
    trust: Option<Trust>,
    name: String,
    provider: Arc<CryptoProvider>,
}

impl PinVerifier {
    /// Takes any certificate whose key signed the handshake (QUIC's TLS, whose peer the
    /// secure channel inside authenticates).
    pub(crate) fn any() -> PinVerifier {
        PinVerifier { trust: None, name: String::new(), provider: provider() }
    }
}

impl ServerCertVerifier for PinVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(trust) = &self.trust {
            let seen = Fingerprint::of_certificate(end_entity);
            trust.check(&seen, &self.name).map_err(|e| rustls::Error::General(e.to_string()))?;
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 is not offered".into()))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// TLS records of an established connection.
pub(crate) struct TlsRecords {
    conn: rustls::Connection,
}

impl TlsRecords {
    pub(crate) fn new(conn: impl Into<rustls::Connection>) -> Self {
        TlsRecords { conn: conn.into() }
    }

    /// A secret both ends derive from this connection's keys (RFC 5705 exporter).
    pub(crate) fn binding(&self) -> io::Result<[u8; 32]> {
        self.conn
            .export_keying_material([0u8; 32], b"EXPORTER-zserver-channel-binding", None)
            .map_err(tls_error)
    }

    /// The protocol, cipher suite and key exchange group the handshake settled on.
    pub(crate) fn describe(&self) -> String {
        let suite = self.conn.negotiated_cipher_suite().map(|s| format!("{:?}", s.suite()));
        let group = self.conn.negotiated_key_exchange_group().map(|g| format!("{:?}", g.name()));
        format!("TLS 1.3 {} {}", suite.unwrap_or_default(), group.unwrap_or_default())
    }

    fn drain(&mut self, out: &mut BytesMut) -> io::Result<()> {
        while self.conn.wants_write() {
            self.conn.write_tls(&mut out.writer())?;
        }
        Ok(())
    }
}

impl Records for TlsRecords {
    fn seal(&mut self, bufs: &[IoSlice<'_>], max: usize, out: &mut BytesMut) -> io::Result<usize> {
        let mut taken = 0;
        'bufs: for b in bufs {
            let want = b.len().min(max - taken);
            let mut done = 0;
            while done < want {
                let n = self.conn.writer().write(&b[done..want])?;
                self.drain(out)?;
                if n == 0 {
                    break 'bufs;
                }
                done += n;
            }
            taken += done;
            if taken == max {
                break;
            }
        }
        self.drain(out)?;
        Ok(taken)
    }

    fn open(&mut self, input: &mut BytesMut, plain: &mut BytesMut, out: &mut BytesMut) -> io::Result<usize> {
        let mut produced = 0;
        loop {
            let state = match self.conn.process_new_packets() {
                Ok(s) => s,
                Err(e) => {
                    // The alert that tells the peer why, if there is one.
                    let _ = self.drain(out);
                    return Err(tls_error(e));
                }
            };
            let ready = state.plaintext_bytes_to_read();
            if ready > 0 {
                let start = plain.len();
                plain.resize(start + ready, 0);
                self.conn.reader().read_exact(&mut plain[start..])?;
                produced += ready;
            }
            if input.is_empty() {
                break;
            }
            let n = self.conn.read_tls(&mut &input[..])?;
            input.advance(n);
            if n == 0 {
                break;
            }
        }
        self.drain(out)?;
        Ok(produced)
    }

    fn rekey(&mut self, out: &mut BytesMut) -> io::Result<()> {
        self.conn.refresh_traffic_keys().map_err(tls_error)?;
        self.drain(out)
    }

    fn close(&mut self, out: &mut BytesMut) {
        self.conn.send_close_notify();
        let _ = self.drain(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_certificate_and_key_input_is_refused_clearly() {
        let e = TlsServer::from_pem(b"not pem", b"not pem").unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        let (cert, key) = self_signed(&["localhost".to_string()]).unwrap();
        let e = TlsServer::from_pem(cert.as_bytes(), b"not pem").unwrap_err();
        assert!(e.to_string().contains("private key"), "{e}");
        let e = TlsServer::from_pem(key.as_bytes(), key.as_bytes()).unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        let ok = TlsServer::from_pem(cert.as_bytes(), key.as_bytes()).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let e = TlsServer::from_pem_files(&dir.path().join("c.pem"), &dir.path().join("k.pem")).unwrap_err();
        assert!(e.to_string().contains("k.pem"), "{e}");
        // A self-signed pair is made once, then loaded: the same fingerprint.
        let names = ["localhost".to_string()];
        let (made, created) = TlsServer::load_or_create(dir.path(), &names).unwrap();
        let (loaded, again) = TlsServer::load_or_create(dir.path(), &names).unwrap();
        assert!(created && !again);
        assert_eq!(made.fingerprint(), loaded.fingerprint());
        assert_ne!(made.fingerprint(), ok.fingerprint());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let key = dir.path().join("key.pem");
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
            let e = TlsServer::from_pem_files(&dir.path().join("cert.pem"), &key).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}");
        }
    }
}
