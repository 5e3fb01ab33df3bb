//! Encoding of rpc frames into an output buffer.

use bytes::{Bytes, BytesMut};
use zs_wire::body::{put_code_message, CallBody};
use zs_wire::{ErrorCode, Flags, FrameWriter, GoAwayCode, Kind, WireError, HEADER_LEN};

use super::Payload;
use crate::config::ConnectionConfig;
use crate::error::HandlerError;

/// Writes a payload into the frame body, lz4-compressed when enabled and worth it. The
/// limit applies to the uncompressed payload, which is what the receiver must hold.
fn put_payload(w: &mut FrameWriter<'_>, p: &Payload, config: &ConnectionConfig) -> Result<(), WireError> {
    let start = w.body().len();
    p.encode(w.body());
    let len = w.body().len() - start;
    let max = config.limits.max_frame_len;
    if len > max as usize {
        return Err(WireError::FrameTooLarge { len: len as u64, max });
    }
    if config.compress_frames && len >= zs_wire::compress::MIN_LEN {
        if let Some(c) = zs_wire::compress::lz4(&w.body()[start..]) {
            w.body().truncate(start);
            w.body().extend_from_slice(&c);
            w.add_flags(Flags::COMPRESSED);
        }
    }
    Ok(())
}

/// Appends a `Call` (or `Send`, with request 0) frame.
pub(crate) fn call(
    out: &mut BytesMut,
    kind: Kind,
    request: u32,
    name: &str,
    payload: &Payload,
    config: &ConnectionConfig,
) -> Result<(), WireError> {
    let mut w = FrameWriter::begin(out, kind, payload.form().flags(), 0, request);
    if let Err(e) = CallBody::put_name(w.body(), name) {
        let start = w.start();
        w.body().truncate(start);
        return Err(e);
    }
    let frame_start = w.start();
    match put_payload(&mut w, payload, config) {
        Ok(()) => w.finish(config.limits.max_frame_len),
        Err(e) => {
            w.body().truncate(frame_start);
            Err(e)
        }
    }
}

/// A `Call` or `Send` frame as shareable bytes.
pub(crate) fn call_bytes(
    kind: Kind,
    request: u32,
    name: &str,
    payload: &Payload,
    config: &ConnectionConfig,
) -> Result<Bytes, WireError> {
    let mut out = BytesMut::with_capacity(HEADER_LEN + 1 + name.len() + payload.size_hint());
    call(&mut out, kind, request, name, payload, config)?;
    Ok(out.freeze())
}

/// Appends an `Error` frame.
pub(crate) fn error(out: &mut BytesMut, request: u32, code: ErrorCode, message: &str) {
    frame(out, Kind::Error, request, |b| put_code_message(b, code.code(), message));
}

/// Appends the reply to a call: a `Reply`, or an `Error` for a handler error or a reply
/// over the frame size limit.
pub(crate) fn result(
    out: &mut BytesMut,
    request: u32,
    result: &Result<Payload, HandlerError>,
    config: &ConnectionConfig,
) {
    match result {
        Ok(p) => {
            let mut w = FrameWriter::begin(out, Kind::Reply, p.form().flags(), 0, request);
            let start = w.start();
            let written = put_payload(&mut w, p, config).and_then(|()| w.finish(config.limits.max_frame_len));
            if let Err(e) = written {
                out.truncate(start);
                error(out, request, ErrorCode::ReplyTooLarge, &e.to_string());
            }
        }
        Err(e) => error(out, request, e.code, &e.message),
    }
}

/// The reply to a call as shareable bytes.
pub(crate) fn result_bytes(
    request: u32,
    r: &Result<Payload, HandlerError>,
    config: &ConnectionConfig,
) -> Bytes {
    let hint = r.as_ref().map_or(64, Payload::size_hint);
    let mut out = BytesMut::with_capacity(HEADER_LEN + hint);
    result(&mut out, request, r, config);
    out.freeze()
}

/// Appends a `GoAway` frame.
pub(crate) fn goaway(out: &mut BytesMut, code: GoAwayCode, message: &str) {
    frame(out, Kind::GoAway, 0, |b| put_code_message(b, code.code(), message));
}

/// Appends an empty control frame (`Ping`, `Pong`).
pub(crate) fn control(out: &mut BytesMut, kind: Kind, request: u32) {
    frame(out, kind, request, |_| {});
}

/// Appends a `StreamResult` frame: code 0 for success, else an error code and message.
pub(crate) fn stream_result(out: &mut BytesMut, stream: u32, code: u16, message: &str) {
    frame(out, Kind::StreamResult, stream, |b| put_code_message(b, code, message));
}

/// Appends a control frame (no flags, channel 0) whose body `body` writes. Control bodies
/// are small; one over the limit would be dropped by `finish`.
pub(crate) fn frame(out: &mut BytesMut, kind: Kind, request: u32, body: impl FnOnce(&mut BytesMut)) {
    let mut w = FrameWriter::begin(out, kind, Flags::NONE, 0, request);
    body(w.body());
    let _ = w.finish(u32::MAX);
}

/// A control frame (see [`frame`]) as shareable bytes.
pub(crate) fn frame_bytes(kind: Kind, request: u32, body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::new();
    frame(&mut out, kind, request, body);
    out.freeze()
}
