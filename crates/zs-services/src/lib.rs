#![warn(missing_docs)]
//! zserver services: named bundles of commands, hooks and state that mount on a
//! [`zs::Router`] (`router.mount(service)`). A server is composed of services; `zs serve
//! --services accounts,...` picks the built-in ones.
//!
//! - [`accounts`]: registration, login (password, token, client key, service token),
//!   roles, per-account directories, admin commands, an async authenticator.
//! - [`files`]: public, private and shared areas; resumable, ranged, multi-connection
//!   transfers; instant upload by content hash with proof of possession; quotas.
//! - [`push`]: send to a user's connections or its durable offline inbox, topics,
//!   presence, through a [`push::Broker`] a cluster can replace.
//! - [`db`]: the data store: named databases of typed records, compare-and-set, indexes,
//!   queries streamed under the client's credit, watches, durable group commits.
//! - [`cluster`]: nodes joined through NATS: a registry with load, cross-node push,
//!   presence and a shared offline inbox, routing to services by load.
//! - [`xnat`]: expose TCP services behind NAT through a public server (`zs xnat`).

pub mod accounts;
pub mod cluster;
mod commit;
pub mod db;
pub mod files;
pub mod fuzzing;
mod json;
mod limits;
mod live;
pub mod push;
pub mod xnat;

pub use accounts::{Accounts, AccountsConfig};

/// The built-in services by name, as `zs serve --services` takes them (and mounts them, in
/// this order).
pub const BUILTIN: &[&str] = &[accounts::NAME, files::NAME, push::NAME, db::NAME];
