//! Body layouts of the rpc frame kinds (`Call`, `Send`, `Error`, `GoAway`).

use bytes::{BufMut, Bytes, BytesMut};

use crate::wire_enum;
use crate::WireError;

/// Longest command name in bytes.
pub const MAX_NAME_LEN: usize = 255;

/// The body of a `Call` or `Send`: `name_len u8 | name (UTF-8) | payload`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallBody {
    /// Command name, shared with the frame body.
    name: Bytes,
    /// Payload: UTF-8 text, or an encoded DataFrame when the frame has the DATAFRAME flag.
    pub payload: Bytes,
}

impl CallBody {
    /// Splits a call body without copying.
    pub fn parse(body: &Bytes) -> Result<CallBody, WireError> {
        let (name, at) = split_call(body)?;
        Ok(CallBody { name: body.slice(1..1 + name.len()), payload: body.slice(at..) })
    }

    /// The command name.
    pub fn name(&self) -> &str {
        // Checked in `parse`.
        utf8(&self.name).unwrap_or_default()
    }

    /// Writes the name prefix of a call body; the caller appends the payload.
    pub fn put_name(out: &mut BytesMut, name: &str) -> Result<(), WireError> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(WireError::Malformed { what: "command name", why: "must be 1 to 255 bytes" });
        }
        out.put_u8(name.len() as u8);
        out.put_slice(name.as_bytes());
        Ok(())
    }
}

/// Splits a call body into its command name (checked) and where its payload starts.
pub fn split_call(body: &[u8]) -> Result<(&str, usize), WireError> {
    let Some(&n) = body.first() else {
        return Err(WireError::Malformed { what: "call body", why: "empty" });
    };
    let n = n as usize;
    if n == 0 {
        return Err(WireError::Malformed { what: "call body", why: "empty command name" });
    }
    let Some(name) = body.get(1..1 + n) else {
        return Err(WireError::Malformed { what: "call body", why: "name runs past the end" });
    };
    let name = utf8(name).map_err(|_| WireError::InvalidUtf8("command name"))?;
    Ok((name, 1 + n))
}

/// `bytes` as UTF-8 text, checked; ASCII (most names and payloads) is checked a word at a
/// time, several times faster than the general check on short strings.
pub fn utf8(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    if bytes.is_ascii() {
        // SAFETY: ASCII is UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes)
    }
}

wire_enum! {
    /// Why a call failed, carried by an `Error` frame.
    pub enum ErrorCode: u16 {
        /// No handler is registered under the name.
        UnknownCommand = 1 => "unknown command",
        /// The handler panicked.
        HandlerPanicked = 2 => "handler panicked",
        /// The handler dropped its responder without answering.
        NoReply = 3 => "handler gave no reply",
        /// The payload is not what the command takes (text vs DataFrame, or undecodable).
        BadPayload = 4 => "bad payload",
        /// The receiver is over a limit (in-flight calls, queue space).
        Overloaded = 5 => "overloaded",
        /// The receiver is shutting down and takes no new calls.
        ShuttingDown = 6 => "shutting down",
        /// The handler returned an error.
        Application = 7 => "handler error",
        /// The reply would exceed the frame size limit.
        ReplyTooLarge = 8 => "reply too large",
        /// A stream's data does not match the hash (or byte count) its sender computed.
        ChecksumMismatch = 9 => "checksum mismatch",
        /// A transfer was cancelled by one of its ends.
        Cancelled = 10 => "cancelled",
        /// A complete buffer over the size limit, or a batch stream over the budget.
        TooLarge = 11 => "too large",
        /// The command needs a login and the caller has none.
        NotLoggedIn = 12 => "not logged in",
        /// The caller is logged in but may not do this (a role it lacks, a disabled account).
        Forbidden = 13 => "forbidden",
        /// The caller tried too often; the message says when it may try again.
        RateLimited = 14 => "rate limited",
        /// A login or proof was refused (it never says whether the account exists).
        AuthFailed = 15 => "authentication failed",
        /// An argument is malformed or out of range (a name, a password too short...).
        InvalidArgument = 16 => "invalid argument",
        /// What was to be created exists already.
        Conflict = 17 => "already exists",
        /// What was asked for does not exist.
        NotFound = 18 => "not found",
        /// A compare-and-set found another version than the one it expected.
        VersionMismatch = 19 => "version mismatch",
        /// A query used up its budget of rows or CPU time.
        OverBudget = 20 => "over budget",
        _ => Other,
    }
}

wire_enum! {
    /// Why a connection is being closed, carried by a `GoAway` frame.
    pub enum GoAwayCode: u16 {
        /// Orderly close.
        Normal = 0 => "normal close",
        /// The peer sent something that is not valid protocol.
        ProtocolError = 1 => "protocol error",
        /// The peer sent a frame over the size limit.
        FrameTooLarge = 2 => "frame too large",
        /// Nothing was received within the idle timeout.
        IdleTimeout = 3 => "idle timeout",
        /// The server is at its connection limit.
        ServerFull = 4 => "server full",
        /// The server is shutting down.
        ShuttingDown = 5 => "shutting down",
        /// The peer does not read fast enough; its queue is full.
        SlowConsumer = 6 => "slow consumer",
        /// This end accepts only encrypted connections and the peer spoke plaintext.
        EncryptionRequired = 7 => "encryption required",
        /// The peer's key is not on this end's list of allowed keys.
        NotAuthorized = 8 => "not authorized",
        /// The server's memory budget ran short and this connection held the most.
        MemoryBudget = 9 => "memory budget",
        /// An administrator or a newer login of the same account closed this one (or the
        /// account was disabled or deleted).
        Kicked = 10 => "kicked",
        /// The server is draining (leaving service): reconnect to another one.
        Draining = 11 => "draining",
        _ => Other,
    }
}

/// Writes a `code u16 LE | message UTF-8` body (used by `Error` and `GoAway`).
pub fn put_code_message(out: &mut BytesMut, code: u16, message: &str) {
    out.put_u16_le(code);
    out.put_slice(message.as_bytes());
}

/// Reads a `code u16 LE | message UTF-8` body.
pub fn parse_code_message(body: &[u8]) -> Result<(u16, &str), WireError> {
    if body.len() < 2 {
        return Err(WireError::Malformed { what: "error body", why: "shorter than its 2-byte code" });
    }
    let code = u16::from_le_bytes([body[0], body[1]]);
    let msg = utf8(&body[2..]).map_err(|_| WireError::InvalidUtf8("error message"))?;
    Ok((code, msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_checked_the_same_on_the_ascii_path_and_off_it() {
        for ok in ["", "tick", "a longer name of ascii words!", "caf\u{e9}", "\u{1f600} and ascii after"] {
            assert_eq!(utf8(ok.as_bytes()), Ok(ok));
        }
        for bad in [&[0xff][..], b"ascii then \xc3", b"\xed\xa0\x80", b"over\xf8long"] {
            assert_eq!(utf8(bad).is_err(), std::str::from_utf8(bad).is_err());
            assert!(utf8(bad).is_err(), "{bad:?}");
        }
        assert_eq!(split_call(b"\x04tickpayload"), Ok(("tick", 5)));
        assert_eq!(split_call(b"\x02\xc3\xa9"), Ok(("\u{e9}", 3)));
        assert_eq!(
            split_call(b"\x02\xc3"),
            Err(WireError::Malformed { what: "call body", why: "name runs past the end" })
        );
        assert_eq!(split_call(b"\x01\x80"), Err(WireError::InvalidUtf8("command name")));
    }

    #[test]
    fn call_body_round_trip_and_errors() {
        let mut out = BytesMut::new();
        CallBody::put_name(&mut out, "echo").unwrap();
        out.put_slice(b"hi");
        let b = CallBody::parse(&out.freeze()).unwrap();
        assert_eq!(b.name(), "echo");
        assert_eq!(&b.payload[..], b"hi");

        assert!(CallBody::parse(&Bytes::new()).is_err());
        assert!(CallBody::parse(&Bytes::from_static(&[0])).is_err());
        assert!(CallBody::parse(&Bytes::from_static(&[5, b'a'])).is_err());
        assert_eq!(
            CallBody::parse(&Bytes::from_static(&[1, 0xff])),
            Err(WireError::InvalidUtf8("command name"))
        );
        assert!(CallBody::put_name(&mut BytesMut::new(), "").is_err());
        assert!(CallBody::put_name(&mut BytesMut::new(), &"x".repeat(256)).is_err());
    }

    #[test]
    fn codes_round_trip() {
        for c in 0..20u16 {
            assert_eq!(ErrorCode::from_code(c).code(), c);
            assert_eq!(GoAwayCode::from_code(c).code(), c);
        }
        let mut out = BytesMut::new();
        put_code_message(&mut out, ErrorCode::UnknownCommand.code(), "no such command: x");
        assert_eq!(parse_code_message(&out).unwrap(), (1, "no such command: x"));
        assert!(parse_code_message(&[1]).is_err());
        assert!(parse_code_message(&[1, 0, 0xff]).is_err());
    }
}
