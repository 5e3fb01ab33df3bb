//! Encoders of whole control frames (no flags, channel 0): what every layer that answers a
//! peer writes, from the connection to a refusal before any connection exists.

use bytes::{Bytes, BytesMut};

use crate::body::put_code_message;
use crate::{ErrorCode, Flags, FrameWriter, GoAwayCode, Kind};

/// Appends a control frame whose body `body` writes. Control bodies are small; one over
/// the 4 GiB header limit would be dropped.
pub fn frame(out: &mut BytesMut, kind: Kind, request: u32, body: impl FnOnce(&mut BytesMut)) {
    let mut w = FrameWriter::begin(out, kind, Flags::NONE, 0, request);
    body(w.body());
    let _ = w.finish(u32::MAX);
}

/// A control frame (see [`frame`]) as shareable bytes.
pub fn frame_bytes(kind: Kind, request: u32, body: impl FnOnce(&mut BytesMut)) -> Bytes {
    let mut out = BytesMut::new();
    frame(&mut out, kind, request, body);
    out.freeze()
}

/// Appends an empty control frame (`Ping`, `Pong`).
pub fn control(out: &mut BytesMut, kind: Kind, request: u32) {
    frame(out, kind, request, |_| {});
}

/// Appends a `GoAway` frame.
pub fn goaway(out: &mut BytesMut, code: GoAwayCode, message: &str) {
    frame(out, Kind::GoAway, 0, |b| put_code_message(b, code.code(), message));
}

/// Appends an `Error` frame.
pub fn error(out: &mut BytesMut, request: u32, code: ErrorCode, message: &str) {
    frame(out, Kind::Error, request, |b| put_code_message(b, code.code(), message));
}

/// Appends a `StreamResult` frame: code 0 for success, else an error code and message.
pub fn stream_result(out: &mut BytesMut, stream: u32, code: u16, message: &str) {
    frame(out, Kind::StreamResult, stream, |b| put_code_message(b, code, message));
}
