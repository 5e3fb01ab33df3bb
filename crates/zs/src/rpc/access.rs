//! Who a connection is and what it may call: the identity a login gives a peer, what a
//! command requires of its caller, and guards that run before every handler.

use std::sync::Arc;

use zs_wire::ErrorCode;

use crate::error::HandlerError;
use crate::peer::Peer;

/// Who a connection is logged in as (set by a login service with [`Peer::set_user`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The account name.
    pub user: String,
    /// Its roles (`user`, `admin`, ...).
    pub roles: Vec<String>,
}

impl Identity {
    /// An identity with these roles.
    pub fn new(user: impl Into<String>, roles: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Identity { user: user.into(), roles: roles.into_iter().map(Into::into).collect() }
    }

    /// Whether it has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// What a command requires of its caller: a login, and perhaps a role.
#[derive(Debug, Clone, Default)]
pub(crate) struct Access {
    pub(crate) role: Option<Box<str>>,
}

impl Access {
    /// Refuses a caller that does not meet it, with `NotLoggedIn` or `Forbidden`.
    pub(crate) fn check(&self, peer: &Peer, command: &str) -> Result<(), HandlerError> {
        let Some(who) = peer.user() else {
            let msg = format!("command `{command}` needs a login");
            return Err(HandlerError::with_code(ErrorCode::NotLoggedIn, msg));
        };
        match &self.role {
            Some(role) if !who.has_role(role) => {
                let msg = format!("command `{command}` needs the role `{role}`");
                Err(HandlerError::with_code(ErrorCode::Forbidden, msg))
            }
            _ => Ok(()),
        }
    }
}

/// A check that runs before every handler of a router, given the peer and the command's
/// name: `Err` refuses the call with its code and message (`NotLoggedIn`, `Forbidden`,
/// `RateLimited`...), and the handler does not run.
pub(crate) type Guard = Arc<dyn Fn(&Peer, &str) -> Result<(), HandlerError> + Send + Sync>;
