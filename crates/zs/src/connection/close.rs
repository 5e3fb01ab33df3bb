//! Why a connection closed: what `Client::closed` and the disconnect hooks are told.

use std::fmt;

use zs_wire::GoAwayCode;

/// Why a connection closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The other end closed the socket.
    PeerClosed,
    /// The other end said goodbye with a reason.
    PeerGoAway {
        /// Its reason code.
        code: GoAwayCode,
        /// Its message.
        message: String,
    },
    /// This end closed it, telling the other end why.
    Local {
        /// The reason code sent.
        code: GoAwayCode,
        /// The message sent.
        message: String,
    },
    /// The socket failed.
    Io(String),
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed the connection"),
            CloseReason::PeerGoAway { code, message } => write!(f, "peer closed: {message} [{code}]"),
            CloseReason::Local { code, message } => write!(f, "closed: {message} [{code}]"),
            CloseReason::Io(e) => write!(f, "i/o error: {e}"),
        }
    }
}
