//! Errors callers see.

use std::time::Duration;

use zs_wire::{ErrorCode, WireError};

/// Why a call, send or broadcast did not produce a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// No reply within the call's timeout.
    #[error("call timed out after {0:?}")]
    Timeout(Duration),
    /// The connection is gone (or went while the call was pending).
    #[error("connection closed: {0}")]
    Disconnected(String),
    /// The peer answered with an error.
    #[error("remote error: {message} [{code}]")]
    Remote {
        /// Error code.
        code: ErrorCode,
        /// The peer's message (for an unknown command it names the command).
        message: String,
    },
    /// The reply is not of the form the call expects (text vs DataFrame, or undecodable).
    #[error("bad reply: {0}")]
    BadReply(String),
    /// The request could not be encoded (name too long, frame over the size limit).
    #[error("cannot encode request: {0}")]
    Encode(#[from] WireError),
    /// The peer's outbound queue is full (broadcast to a slow consumer).
    #[error("outbound queue full")]
    QueueFull,
    /// This end cancelled the transfer.
    #[error("cancelled: {0}")]
    Cancelled(String),
    /// Reading the data to send failed, or it did not match its announced length.
    #[error("source: {0}")]
    Source(String),
}

impl CallError {
    /// The remote error code, if the peer answered with an error.
    pub fn remote_code(&self) -> Option<ErrorCode> {
        match self {
            CallError::Remote { code, .. } => Some(*code),
            _ => None,
        }
    }
}

/// An error a handler returns; the caller receives it as [`CallError::Remote`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct HandlerError {
    /// Error code sent to the caller.
    pub code: ErrorCode,
    /// Message sent to the caller.
    pub message: String,
}

impl HandlerError {
    /// An application error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        HandlerError { code: ErrorCode::Application, message: message.into() }
    }

    /// An error with a specific code.
    pub fn with_code(code: ErrorCode, message: impl Into<String>) -> Self {
        HandlerError { code, message: message.into() }
    }
}

impl From<String> for HandlerError {
    fn from(message: String) -> Self {
        HandlerError::new(message)
    }
}

impl From<&str> for HandlerError {
    fn from(message: &str) -> Self {
        HandlerError::new(message)
    }
}

impl From<std::io::Error> for HandlerError {
    fn from(e: std::io::Error) -> Self {
        HandlerError::new(e.to_string())
    }
}

/// A failed typed read of the request is the caller's fault: `BadPayload`.
impl From<zs_wire::ReadError> for HandlerError {
    fn from(e: zs_wire::ReadError) -> Self {
        HandlerError::with_code(ErrorCode::BadPayload, e.to_string())
    }
}

impl From<zs_wire::dataframe::SerdeError> for HandlerError {
    fn from(e: zs_wire::dataframe::SerdeError) -> Self {
        HandlerError::new(e.to_string())
    }
}

impl From<CallError> for HandlerError {
    fn from(e: CallError) -> Self {
        HandlerError::new(e.to_string())
    }
}
