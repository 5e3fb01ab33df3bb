//! Encoding of rpc frames into an output buffer.

use bytes::{Bytes, BytesMut};
use zs_wire::body::{put_code_message, CallBody};
use zs_wire::{ErrorCode, Flags, FrameWriter, GoAwayCode, Kind, WireError, HEADER_LEN};

use super::Payload;
use crate::error::HandlerError;

/// Appends a `Call` (or `Send`, with request 0) frame.
pub(crate) fn call(
    out: &mut BytesMut,
    kind: Kind,
    request: u32,
    name: &str,
    payload: &Payload,
    max: u32,
) -> Result<(), WireError> {
    let mut w = FrameWriter::begin(out, kind, payload.form().flags(), 0, request);
    let start = w.body().len();
    if let Err(e) = CallBody::put_name(w.body(), name) {
        w.body().truncate(start - HEADER_LEN);
        return Err(e);
    }
    payload.encode(w.body());
    w.finish(max)
}

/// A `Call` or `Send` frame as shareable bytes.
pub(crate) fn call_bytes(
    kind: Kind,
    request: u32,
    name: &str,
    payload: &Payload,
    max: u32,
) -> Result<Bytes, WireError> {
    let mut out = BytesMut::with_capacity(HEADER_LEN + 1 + name.len() + payload.size_hint());
    call(&mut out, kind, request, name, payload, max)?;
    Ok(out.freeze())
}

/// Appends an `Error` frame.
pub(crate) fn error(out: &mut BytesMut, request: u32, code: ErrorCode, message: &str) {
    let mut w = FrameWriter::begin(out, Kind::Error, Flags::NONE, 0, request);
    put_code_message(w.body(), code.code(), message);
    // Messages are short; should one exceed the limit, the frame is dropped by `finish`.
    let _ = w.finish(u32::MAX);
}

/// Appends the reply to a call: a `Reply`, or an `Error` for a handler error or a reply
/// over the frame size limit.
pub(crate) fn result(out: &mut BytesMut, request: u32, result: &Result<Payload, HandlerError>, max: u32) {
    match result {
        Ok(p) => {
            let mut w = FrameWriter::begin(out, Kind::Reply, p.form().flags(), 0, request);
            p.encode(w.body());
            if let Err(e) = w.finish(max) {
                error(out, request, ErrorCode::ReplyTooLarge, &e.to_string());
            }
        }
        Err(e) => error(out, request, e.code, &e.message),
    }
}

/// The reply to a call as shareable bytes.
pub(crate) fn result_bytes(request: u32, r: &Result<Payload, HandlerError>, max: u32) -> Bytes {
    let hint = r.as_ref().map_or(64, Payload::size_hint);
    let mut out = BytesMut::with_capacity(HEADER_LEN + hint);
    result(&mut out, request, r, max);
    out.freeze()
}

/// Appends a `GoAway` frame.
pub(crate) fn goaway(out: &mut BytesMut, code: GoAwayCode, message: &str) {
    let mut w = FrameWriter::begin(out, Kind::GoAway, Flags::NONE, 0, 0);
    put_code_message(w.body(), code.code(), message);
    let _ = w.finish(u32::MAX);
}

/// Appends an empty control frame (`Ping`, `Pong`).
pub(crate) fn control(out: &mut BytesMut, kind: Kind, request: u32) {
    let _ = FrameWriter::begin(out, kind, Flags::NONE, 0, request).finish(0);
}
