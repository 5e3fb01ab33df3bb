//! XNat: expose a TCP service inside a private network through a public server. The agent
//! inside connects out to the server (Noise with a pinned key by default) and registers the
//! services it serves, proving a per-service token without sending it, or by its own
//! Noise key; the server listens on each service's public address and carries each visitor
//! to the least loaded agent of that service over a virtual channel of the agent's link
//! (the original's design), where the agent connects it to the local address.
//!
//! [`XnatServer`] and [`run_agent`] are the two sides; `zs xnat server|agent --config FILE`
//! reads their TOML files ([`ServerFile`], [`AgentFile`]).

mod agent;
mod carry;
mod config;
mod server;
mod udp;

pub use agent::{run_agent, AgentHandle, AgentService};
pub use config::{AgentFile, LocalService, MoreServer, Protocol, PublicService, ServerFile};
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
}
