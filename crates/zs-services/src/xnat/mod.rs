//! XNat: expose a TCP service inside a private network through a public server. The agent
//! inside connects out to the server (Noise with a pinned key by default) and registers the
//! services it serves, proving a per-service token without sending it, or by its own
//! Noise key; the server listens on each service's public address and carries each visitor
//! to the least loaded agent of that service over one of the agent's pooled data
//! connections (rathole's design), or a virtual channel of the agent's link (the
//! original's) when none is ready; the agent connects it to the local address.
//!
//! [`XnatServer`] and [`run_agent`] are the two sides; `zs xnat server|agent --config FILE`
//! reads their TOML files ([`ServerFile`], [`AgentFile`]).

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

mod agent;
mod carry;
mod config;
mod pool;
mod server;
mod udp;

pub use agent::{run_agent, AgentHandle, AgentService, Target};
pub use config::{AgentFile, LocalService, MoreServer, Protocol, PublicService, ServerFile};
pub use pool::{DEFAULT_POOL, MAX_POOL};
pub use server::{ServiceStats, XnatServer};
pub use udp::UDP_IDLE;

/// The virtual channel name a service's visitors arrive on at the agent.
pub fn channel_name(service: &str) -> String {
    format!("xnat/{service}")
}

/// The proof of a service token: BLAKE3 keyed with the token's hash, over the service
/// name, the server's nonce and the connection's channel binding (zeros in plaintext), so
/// the token never crosses the link and a proof is good for one connection only.
pub fn token_proof(token: &str, service: &str, nonce: &[u8; 32], binding: Option<[u8; 32]>) -> [u8; 32] {
    let key = blake3::hash(token.as_bytes());
    let mut h = blake3::Hasher::new_keyed(key.as_bytes());
    h.update(b"zserver xnat token proof v1\0");
    h.update(&(service.len() as u64).to_le_bytes());
    h.update(service.as_bytes());
    h.update(nonce);
    h.update(&binding.unwrap_or([0; 32]));
    *h.finalize().as_bytes()
}

/// The visitor's address, written by the server first on a visit's carrier (after the
/// start byte of a pooled connection): its length (1 byte), then its text (`ip:port`).
pub(crate) async fn write_visitor<W: AsyncWrite + Unpin>(w: &mut W, from: SocketAddr) -> std::io::Result<()> {
    let text = from.to_string();
    let mut header = Vec::with_capacity(1 + text.len());
    header.push(text.len() as u8);
    header.extend_from_slice(text.as_bytes());
    w.write_all(&header).await?;
    w.flush().await
}

/// Reads the visitor's address [`write_visitor`] wrote.
pub(crate) async fn read_visitor<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<SocketAddr> {
    let mut len = [0u8; 1];
    r.read_exact(&mut len).await?;
    let mut text = vec![0u8; usize::from(len[0])];
    r.read_exact(&mut text).await?;
    parse_visitor(&text)
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidData, "a bad visitor address"))
}

/// A visitor address's text, as [`read_visitor`] takes it.
fn parse_visitor(text: &[u8]) -> Option<SocketAddr> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// Whether `name` can name a service: 1 to 64 letters, digits, `-` or `_`.
pub fn valid_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Decodes `text` as each thing an XNat end reads from outside: the two TOML files, an
/// agent's register request, and a UDP session's framed datagrams (the fuzz target's body).
pub fn decode_any(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = ServerFile::parse(&text);
    let _ = AgentFile::parse(&text);
    server::decode_request(&text);
    let _ = udp::decode_frames(data);
    let _ = parse_visitor(data);
}
