#![warn(missing_docs)]
//! zserver benchmarks: a load generator that drives our server and, in the same run, the
//! floor (a plain tokio server doing the least work possible) so that figures are ratios
//! measured side by side on one machine.

pub mod best_copy;
pub mod bulk;
pub mod churn;
pub mod cluster;
pub mod codec;
pub mod compat;
pub mod db;
mod driver;
pub mod fanout;
pub mod fault_proxy;
pub mod files;
pub mod floor;
mod harness;
pub mod idle;
pub mod login;
pub mod mux;
pub mod nats;
mod procmem;
pub mod push;
pub mod report;
pub mod resume;
pub mod rpc;
pub mod source;
mod stats;
pub mod tarpc_peer;
pub mod xnat;

pub use harness::{builtin_router, Secure, Via};
pub use stats::Figures;

/// Raises this process's open-file limit to its hard limit; returns the new soft limit.
pub fn raise_fd_limit() -> u64 {
    rlimit::increase_nofile_limit(u64::MAX).unwrap_or(1024)
}

/// A part of a scenario, run alone to profile it (`--only`): the others report zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Ours.
    Ours,
    /// The floor it is compared with.
    Floor,
}

impl std::str::FromStr for Part {
    type Err = String;
    fn from_str(s: &str) -> Result<Part, String> {
        match s {
            "ours" => Ok(Part::Ours),
            "floor" => Ok(Part::Floor),
            _ => Err(format!("`{s}` is not a part (ours, floor)")),
        }
    }
}
