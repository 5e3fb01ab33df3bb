//! Request and reply encodings the load driver speaks: ours and the floor's.

use bytes::{Buf, BufMut, BytesMut};
use zs_wire::body::CallBody;
use zs_wire::{Flags, FrameDecoder, FrameWriter, Kind};

/// How the driver encodes an echo request and recognises its reply.
pub trait BenchCodec: Send + 'static {
    /// Appends one request carrying `payload`.
    fn encode_request(&mut self, out: &mut BytesMut, id: u32, payload: &[u8]);
    /// Takes one whole reply off the front of `buf`: `Ok(Some(id))`, or `Ok(None)` if
    /// more bytes are needed (the floor has no ids and answers 0).
    fn decode_reply(&mut self, buf: &mut BytesMut) -> Result<Option<u32>, String>;
}

/// Our protocol: a `Call` of the console command `echo`.
#[derive(Debug, Default)]
pub struct OursCodec {
    decoder: FrameDecoder,
}

impl BenchCodec for OursCodec {
    fn encode_request(&mut self, out: &mut BytesMut, id: u32, payload: &[u8]) {
        let mut w = FrameWriter::begin(out, Kind::Call, Flags::NONE, 0, id);
        CallBody::put_name(w.body(), "echo").expect("valid name");
        w.body().put_slice(payload);
        w.finish(u32::MAX).expect("small frame");
    }

    fn decode_reply(&mut self, buf: &mut BytesMut) -> Result<Option<u32>, String> {
        loop {
            match self.decoder.decode(buf).map_err(|e| e.to_string())? {
                None => return Ok(None),
                Some(f) if f.header.kind == Kind::Reply => return Ok(Some(f.header.request)),
                // A keepalive that came first (a connection long in a loaded server's queue).
                Some(f) if f.header.kind == Kind::Ping => continue,
                Some(f) => return Err(format!("unexpected {} frame: {:?}", f.header.kind.name(), f.body)),
            }
        }
    }
}

/// The floor: `u32` little-endian length, then the payload, echoed back as is.
#[derive(Debug, Default)]
pub struct FloorCodec;

impl BenchCodec for FloorCodec {
    fn encode_request(&mut self, out: &mut BytesMut, _id: u32, payload: &[u8]) {
        out.put_u32_le(payload.len() as u32);
        out.put_slice(payload);
    }

    fn decode_reply(&mut self, buf: &mut BytesMut) -> Result<Option<u32>, String> {
        let Some(head) = buf.get(..4) else { return Ok(None) };
        let len = u32::from_le_bytes(head.try_into().expect("4 bytes")) as usize;
        if buf.len() < 4 + len {
            return Ok(None);
        }
        buf.advance(4 + len);
        Ok(Some(0))
    }
}
