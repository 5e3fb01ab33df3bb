//! Encoding of frames into a connection's output: calls and replies with their payloads
//! (lz4 when it pays); the control frames come from `zs_wire::encode`.

use bytes::{Bytes, BytesMut};
use zs_wire::body::CallBody;
pub(crate) use zs_wire::encode::{control, error, frame_bytes, goaway, stream_result};
use zs_wire::{ErrorCode, Flags, FrameWriter, Kind, WireError, HEADER_LEN};

use super::Payload;
use crate::error::HandlerError;

/// How calls and replies are encoded: the frame size limit and whether payloads are
/// compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Encoding {
    /// Largest frame body.
    pub(crate) max_frame_len: u32,
    /// lz4 for payloads of 1 KiB or more when it saves a tenth.
    pub(crate) compress: bool,
}

/// Writes a payload into the frame body, lz4-compressed when enabled and worth it. The
/// limit applies to the uncompressed payload, which is what the receiver must hold.
fn put_payload(w: &mut FrameWriter<'_>, p: &Payload, enc: Encoding) -> Result<(), WireError> {
    let start = w.body().len();
    p.encode(w.body());
    let len = w.body().len() - start;
    let max = enc.max_frame_len;
    if len > max as usize {
        return Err(WireError::FrameTooLarge { len: len as u64, max });
    }
    if enc.compress && len >= zs_wire::compress::MIN_LEN {
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
    enc: Encoding,
) -> Result<(), WireError> {
    let mut w = FrameWriter::begin(out, kind, payload.form().flags(), 0, request);
    if let Err(e) = CallBody::put_name(w.body(), name) {
        let start = w.start();
        w.body().truncate(start);
        return Err(e);
    }
    let frame_start = w.start();
    match put_payload(&mut w, payload, enc) {
        Ok(()) => w.finish(enc.max_frame_len),
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
    enc: Encoding,
) -> Result<Bytes, WireError> {
    let size = HEADER_LEN + 1 + name.len() + payload.size_hint();
    super::spare::encode(size, |out| call(out, kind, request, name, payload, enc))
}

/// Appends the reply to a call: a `Reply`, or an `Error` for a handler error or a reply
/// over the frame size limit.
pub(crate) fn result(
    out: &mut BytesMut,
    request: u32,
    result: &Result<Payload, HandlerError>,
    enc: Encoding,
) {
    match result {
        Ok(p) => {
            let mut w = FrameWriter::begin(out, Kind::Reply, p.form().flags(), 0, request);
            let start = w.start();
            let written = put_payload(&mut w, p, enc).and_then(|()| w.finish(enc.max_frame_len));
            if let Err(e) = written {
                out.truncate(start);
                error(out, request, ErrorCode::ReplyTooLarge, &e.to_string());
            }
        }
        Err(e) => error(out, request, e.code, &e.message),
    }
}

/// The reply to a call as shareable bytes.
pub(crate) fn result_bytes(request: u32, r: &Result<Payload, HandlerError>, enc: Encoding) -> Bytes {
    let hint = r.as_ref().map_or(64, Payload::size_hint);
    let mut out = BytesMut::with_capacity(HEADER_LEN + hint);
    result(&mut out, request, r, enc);
    out.freeze()
}
