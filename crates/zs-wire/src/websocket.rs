//! WebSocket (RFC 6455), sans IO: the opening handshake (a server reading the client's
//! upgrade request, a client reading the server's answer) and the frame layer under
//! zserver's byte stream. Binary messages carry the connection's bytes in any split; text
//! messages, extensions and unmasked client frames are refused. `docs/PROTOCOL.md` §16.

use base64::Engine as _;
use bytes::{Buf, BufMut, BytesMut};
use sha1::{Digest, Sha1};

/// The subprotocol a zserver WebSocket client asks for and the server answers with.
pub const SUBPROTOCOL: &str = "zserver.v1";
/// Longest upgrade request or answer read (headers included).
pub const MAX_HANDSHAKE: usize = 8 << 10;
/// Default largest message a receiver takes (the sum of its fragments).
pub const DEFAULT_MAX_MESSAGE: usize = 1 << 20;
/// Longest frame header: 2 bytes, 8 of extended length, 4 of mask.
pub const MAX_HEADER: usize = 14;
/// Most payload in a control frame (ping, pong, close).
const MAX_CONTROL: u64 = 125;
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// Close codes this side sends.
pub mod close {
    /// Normal closure.
    pub const NORMAL: u16 = 1000;
    /// A protocol error (bad frame, unmasked client frame, bad control frame).
    pub const PROTOCOL: u16 = 1002;
    /// A text message: only binary is accepted.
    pub const UNSUPPORTED: u16 = 1003;
    /// A message over the size limit.
    pub const TOO_BIG: u16 = 1009;
}

/// Why a WebSocket handshake or frame was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{why}")]
pub struct WsError {
    /// The HTTP status a server answers a bad request with (0 once the socket is a
    /// WebSocket: then `close` applies).
    pub status: u16,
    /// The close code to send, once open.
    pub close: u16,
    /// What was wrong, for people.
    pub why: String,
}

impl WsError {
    fn http(status: u16, why: impl Into<String>) -> WsError {
        WsError { status, close: 0, why: why.into() }
    }

    fn frame(close: u16, why: impl Into<String>) -> WsError {
        WsError { status: 0, close, why: why.into() }
    }
}

/// The `Sec-WebSocket-Accept` value for a request's `Sec-WebSocket-Key`.
pub fn accept_key(key: &str) -> String {
    let digest = Sha1::new().chain_update(key.as_bytes()).chain_update(GUID.as_bytes()).finalize();
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// Which browser origins a server lets in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Origins {
    /// Requests with no `Origin` (not a browser) or one whose host is the request's `Host`.
    #[default]
    SameOrigin,
    /// Those, and these origins (`scheme://host[:port]`, compared without case).
    These(Vec<String>),
    /// Any origin.
    Any,
}

impl Origins {
    /// Whether a request with `origin` to `host` may upgrade.
    pub fn allow(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else { return true };
        let same = host.is_some_and(|h| {
            origin
                .split_once("://")
                .is_some_and(|(_, rest)| rest.trim_end_matches('/').eq_ignore_ascii_case(h))
        });
        match self {
            Origins::Any => true,
            Origins::SameOrigin => same,
            Origins::These(list) => {
                same || list.iter().any(|o| o.trim_end_matches('/').eq_ignore_ascii_case(origin))
            }
        }
    }
}

/// A client's upgrade request, accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    /// The answer to write (101 Switching Protocols).
    pub response: Vec<u8>,
    /// Bytes of the request buffer used by the request (what follows are frames).
    pub used: usize,
}

/// The value of header `name` (any case), if present and UTF-8.
fn header<'a>(headers: &[httparse::Header<'a>], name: &str) -> Option<&'a str> {
    headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).and_then(|h| std::str::from_utf8(h.value).ok())
}

/// Reads a client's upgrade request from the front of `buf`: `Ok(None)` until it is whole;
/// an error carries the HTTP status to answer with ([`refusal`]).
pub fn parse_upgrade(buf: &[u8], origins: &Origins) -> Result<Option<Upgrade>, WsError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    let used = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HANDSHAKE => {
            return Err(WsError::http(431, "upgrade request too long"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(WsError::http(400, format!("not an HTTP request: {e}"))),
    };
    let header = |name: &str| header(req.headers, name);
    let has_token = |name: &str, token: &str| {
        req.headers
            .iter()
            .filter(|h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(h.value).ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    if req.method != Some("GET") || req.version != Some(1) {
        return Err(WsError::http(400, "a WebSocket upgrade is an HTTP/1.1 GET"));
    }
    if !has_token("upgrade", "websocket") || !has_token("connection", "upgrade") {
        return Err(WsError::http(426, "this address speaks WebSocket only (Upgrade: websocket)"));
    }
    if header("sec-websocket-version").map(str::trim) != Some("13") {
        return Err(WsError::http(426, "WebSocket version 13 only"));
    }
    let key = header("sec-websocket-key").map(str::trim).unwrap_or_default();
    let decoded = base64::engine::general_purpose::STANDARD.decode(key).unwrap_or_default();
    if decoded.len() != 16 {
        return Err(WsError::http(400, "Sec-WebSocket-Key is not 16 bytes in base64"));
    }
    if !has_token("sec-websocket-protocol", SUBPROTOCOL) {
        return Err(WsError::http(400, format!("the subprotocol {SUBPROTOCOL} is required")));
    }
    if !origins.allow(header("origin"), header("host")) {
        return Err(WsError::http(403, "this Origin may not connect (zs serve --ws-origin)"));
    }
    let response = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Accept: {}\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n",
        accept_key(key)
    );
    Ok(Some(Upgrade { response: response.into_bytes(), used }))
}

/// The HTTP answer to a refused upgrade request.
pub fn refusal(e: &WsError) -> Vec<u8> {
    let reason = match e.status {
        403 => "Forbidden",
        426 => "Upgrade Required",
        431 => "Request Header Fields Too Large",
        _ => "Bad Request",
    };
    let body = format!("{}\n", e.why);
    let mut out = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n",
        e.status,
        body.len()
    );
    if e.status == 426 {
        out.push_str("Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    }
    out.push_str("\r\n");
    out.push_str(&body);
    out.into_bytes()
}

/// A client's upgrade request for `path` on `host`, with its 16-byte `key` (random).
pub fn request(host: &str, path: &str, key: &[u8; 16]) -> (Vec<u8>, String) {
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
    );
    (req.into_bytes(), key)
}

/// Reads the server's answer to a request made with `key`: the bytes it used once whole
/// and accepted.
pub fn parse_answer(buf: &[u8], key: &str) -> Result<Option<usize>, WsError> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut res = httparse::Response::new(&mut headers);
    let used = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HANDSHAKE => {
            return Err(WsError::http(0, "the server's answer is too long"))
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(WsError::http(0, format!("the server did not answer in HTTP: {e}"))),
    };
    let header = |name: &str| header(res.headers, name);
    if res.code != Some(101) {
        let body = String::from_utf8_lossy(&buf[used..]);
        let why = format!(
            "the server refused the WebSocket: {} {} {}",
            res.code.unwrap_or(0),
            res.reason.unwrap_or(""),
            body.trim()
        );
        return Err(WsError::http(0, why.trim_end().to_owned()));
    }
    if header("sec-websocket-accept").map(str::trim) != Some(accept_key(key).as_str()) {
        return Err(WsError::http(0, "the server's Sec-WebSocket-Accept does not match"));
    }
    if header("sec-websocket-protocol").map(str::trim) != Some(SUBPROTOCOL) {
        return Err(WsError::http(0, format!("the server did not agree to the subprotocol {SUBPROTOCOL}")));
    }
    Ok(Some(used))
}

/// Frame opcodes.
mod op {
    pub const CONTINUATION: u8 = 0x0;
    pub const TEXT: u8 = 0x1;
    pub const BINARY: u8 = 0x2;
    pub const CLOSE: u8 = 0x8;
    pub const PING: u8 = 0x9;
    pub const PONG: u8 = 0xA;
}

/// Appends a frame header for `len` payload bytes of `opcode` (FIN set), masked with `mask`
/// if given (the payload must then be masked with [`apply_mask`]).
fn put_header(out: &mut BytesMut, opcode: u8, len: usize, mask: Option<[u8; 4]>) {
    out.put_u8(0x80 | opcode);
    let m = if mask.is_some() { 0x80 } else { 0 };
    match len {
        0..=125 => out.put_u8(m | len as u8),
        126..=0xFFFF => {
            out.put_u8(m | 126);
            out.put_u16(len as u16);
        }
        _ => {
            out.put_u8(m | 127);
            out.put_u64(len as u64);
        }
    }
    if let Some(mask) = mask {
        out.put_slice(&mask);
    }
}

/// XORs `data` with `mask`, starting at byte `offset` of the mask cycle.
pub fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(offset + i) & 3];
    }
}

/// Appends the header of a binary frame of `len` bytes (whose payload the caller appends,
/// masked with [`apply_mask`] if `mask` is given).
pub fn put_binary_header(out: &mut BytesMut, len: usize, mask: Option<[u8; 4]>) {
    put_header(out, op::BINARY, len, mask);
}

/// Appends one binary frame carrying `payload` (masked with `mask` if given: clients mask).
pub fn put_binary(out: &mut BytesMut, payload: &[u8], mask: Option<[u8; 4]>) {
    put_header(out, op::BINARY, payload.len(), mask);
    let start = out.len();
    out.put_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut out[start..], mask, 0);
    }
}

/// Appends a control frame (`payload` at most 125 bytes).
fn put_control(out: &mut BytesMut, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) {
    let payload = &payload[..payload.len().min(MAX_CONTROL as usize)];
    put_header(out, opcode, payload.len(), mask);
    let start = out.len();
    out.put_slice(payload);
    if let Some(mask) = mask {
        apply_mask(&mut out[start..], mask, 0);
    }
}

/// Appends a close frame with `code` and a reason (cut to fit).
pub fn put_close(out: &mut BytesMut, code: u16, reason: &str, mask: Option<[u8; 4]>) {
    let mut payload = code.to_be_bytes().to_vec();
    let mut cut = reason.len().min(MAX_CONTROL as usize - 2);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    put_control(out, op::CLOSE, &payload, mask);
}

/// What a [`FrameReader`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Bytes of the connection's stream were appended to the output.
    Data(usize),
    /// The peer pinged: answer with these bytes (a pong, already encoded).
    Reply(BytesMut),
    /// The peer closed, with this code (1005 if none): answer and stop reading.
    Closed(u16),
}

/// The frame being read.
#[derive(Debug, Clone, Copy)]
struct Current {
    opcode: u8,
    fin: bool,
    /// Payload bytes not yet read.
    left: u64,
    mask: Option<[u8; 4]>,
    /// Payload bytes read so far (the mask's phase).
    done: u64,
}

/// Decodes the frames of one direction: a server's reader expects masked frames, a client's
/// unmasked ones. Data frames' payloads go to the caller's buffer, unmasked; pings are
/// answered; the size of a message (the sum of its fragments) is bounded.
#[derive(Debug)]
pub struct FrameReader {
    /// Whether this end is the server (frames it reads must be masked).
    server: bool,
    max_message: usize,
    current: Option<Current>,
    /// Bytes of the message being read.
    message: usize,
    /// A fragmented message is under way.
    in_message: bool,
    /// A control frame's payload being gathered.
    control: BytesMut,
}

impl FrameReader {
    /// A reader for the server side (`server`) or the client side, taking messages of at
    /// most `max_message` bytes.
    pub fn new(server: bool, max_message: usize) -> FrameReader {
        FrameReader {
            server,
            max_message,
            current: None,
            message: 0,
            in_message: false,
            control: BytesMut::new(),
        }
    }

    /// Whether a frame is partly read.
    pub fn is_mid_frame(&self) -> bool {
        self.current.is_some()
    }

    /// Decodes what it can from the front of `input`, appending stream bytes to `out`, up
    /// to the first event; `Ok(None)` when `input` holds nothing more to decode. Consumed
    /// bytes are removed from `input`.
    pub fn read(&mut self, input: &mut BytesMut, out: &mut BytesMut) -> Result<Option<Event>, WsError> {
        loop {
            let Some(mut cur) = self.current else {
                match self.header(input)? {
                    Some(cur) => self.current = Some(cur),
                    None => return Ok(None),
                }
                continue;
            };
            let take = (cur.left.min(input.len() as u64)) as usize;
            let control = cur.opcode & 0x8 != 0;
            if control {
                self.control.extend_from_slice(&input[..take]);
                if let Some(mask) = cur.mask {
                    let at = self.control.len() - take;
                    apply_mask(&mut self.control[at..], mask, cur.done as usize);
                }
            } else if take > 0 {
                let at = out.len();
                out.extend_from_slice(&input[..take]);
                if let Some(mask) = cur.mask {
                    apply_mask(&mut out[at..], mask, cur.done as usize);
                }
            }
            input.advance(take);
            cur.left -= take as u64;
            cur.done += take as u64;
            if cur.left > 0 {
                self.current = Some(cur);
                return Ok((!control && take > 0).then_some(Event::Data(take)));
            }
            self.current = None;
            if !control {
                self.in_message = !cur.fin;
                if cur.fin {
                    self.message = 0;
                }
                if take > 0 {
                    return Ok(Some(Event::Data(take)));
                }
                continue;
            }
            let payload = std::mem::take(&mut self.control);
            let mask = (!self.server).then(rand_mask);
            match cur.opcode {
                op::PING => {
                    let mut reply = BytesMut::new();
                    put_control(&mut reply, op::PONG, &payload, mask);
                    return Ok(Some(Event::Reply(reply)));
                }
                op::CLOSE => {
                    let code = match payload.len() {
                        0 => 1005,
                        1 => return Err(WsError::frame(close::PROTOCOL, "a close frame of one byte")),
                        _ => u16::from_be_bytes([payload[0], payload[1]]),
                    };
                    return Ok(Some(Event::Closed(code)));
                }
                _ => {} // A pong: nothing to do.
            }
        }
    }

    /// Reads and checks a frame header off `input`, if whole.
    fn header(&mut self, input: &mut BytesMut) -> Result<Option<Current>, WsError> {
        let [b0, b1, ..] = input[..] else { return Ok(None) };
        let masked = b1 & 0x80 != 0;
        let len_bytes = match b1 & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let need = 2 + len_bytes + if masked { 4 } else { 0 };
        if input.len() < need {
            return Ok(None);
        }
        let (fin, opcode) = (b0 & 0x80 != 0, b0 & 0x0f);
        if b0 & 0x70 != 0 {
            return Err(WsError::frame(close::PROTOCOL, "reserved bits set (no extension was agreed)"));
        }
        if masked != self.server {
            let why = if self.server { "a client frame that is not masked" } else { "a masked server frame" };
            return Err(WsError::frame(close::PROTOCOL, why));
        }
        let len = match len_bytes {
            2 => u64::from(u16::from_be_bytes([input[2], input[3]])),
            8 => u64::from_be_bytes(input[2..10].try_into().expect("8 bytes")),
            _ => u64::from(b1 & 0x7f),
        };
        let mask = masked.then(|| input[2 + len_bytes..need].try_into().expect("4 bytes"));
        match opcode {
            op::CLOSE | op::PING | op::PONG => {
                if !fin || len > MAX_CONTROL {
                    return Err(WsError::frame(close::PROTOCOL, "a fragmented or oversized control frame"));
                }
            }
            op::TEXT => {
                return Err(WsError::frame(close::UNSUPPORTED, "text messages are not accepted: send binary"))
            }
            op::BINARY if self.in_message => {
                return Err(WsError::frame(close::PROTOCOL, "a new message inside a fragmented one"))
            }
            op::CONTINUATION if !self.in_message => {
                return Err(WsError::frame(close::PROTOCOL, "a continuation with no message under way"))
            }
            op::BINARY | op::CONTINUATION => {
                let total = (self.message as u64).saturating_add(len);
                if total > self.max_message as u64 {
                    let why = format!("a message over {} bytes", self.max_message);
                    return Err(WsError::frame(close::TOO_BIG, why));
                }
                self.message = total as usize;
                self.in_message = true;
            }
            other => return Err(WsError::frame(close::PROTOCOL, format!("unknown opcode {other}"))),
        }
        input.advance(need);
        Ok(Some(Current { opcode, fin, left: len, mask, done: 0 }))
    }
}

/// A fresh `Sec-WebSocket-Key` (16 random bytes, before base64).
pub fn new_key() -> [u8; 16] {
    rand::random()
}

/// A fresh masking key (clients mask every frame; the key need not be secret, only
/// unpredictable to scripts: RFC 6455 §10.3).
pub fn rand_mask() -> [u8; 4] {
    rand::random()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade_request(extra: &str) -> String {
        format!(
            "GET /zs HTTP/1.1\r\nHost: 127.0.0.1:9\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
        )
    }

    #[test]
    fn the_rfc_example_key_gives_the_rfc_accept_value() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn an_upgrade_needs_the_subprotocol_and_an_allowed_origin() {
        let ok = upgrade_request("Sec-WebSocket-Protocol: chat, zserver.v1\r\n");
        let up = parse_upgrade(ok.as_bytes(), &Origins::SameOrigin).unwrap().unwrap();
        assert_eq!(up.used, ok.len());
        assert!(String::from_utf8(up.response).unwrap().contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
        assert_eq!(parse_upgrade(&ok.as_bytes()[..20], &Origins::SameOrigin), Ok(None));
        let no_proto = upgrade_request("");
        assert_eq!(parse_upgrade(no_proto.as_bytes(), &Origins::Any).unwrap_err().status, 400);
        let foreign =
            upgrade_request("Sec-WebSocket-Protocol: zserver.v1\r\nOrigin: http://evil.example\r\n");
        assert_eq!(parse_upgrade(foreign.as_bytes(), &Origins::SameOrigin).unwrap_err().status, 403);
        assert!(parse_upgrade(foreign.as_bytes(), &Origins::Any).is_ok());
        let listed = Origins::These(vec!["http://evil.example".into()]);
        assert!(parse_upgrade(foreign.as_bytes(), &listed).is_ok());
        let same = upgrade_request("Sec-WebSocket-Protocol: zserver.v1\r\nOrigin: http://127.0.0.1:9\r\n");
        assert!(parse_upgrade(same.as_bytes(), &Origins::SameOrigin).is_ok());
        assert_eq!(parse_upgrade(b"POST / HTTP/1.1\r\n\r\n", &Origins::Any).unwrap_err().status, 400);
        let long = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HANDSHAKE));
        assert_eq!(parse_upgrade(long.as_bytes(), &Origins::Any).unwrap_err().status, 431);
    }

    #[test]
    fn a_client_and_a_server_agree_on_the_handshake() {
        let (req, key) = request("127.0.0.1:9", "/", &[7; 16]);
        let up = parse_upgrade(&req, &Origins::SameOrigin).unwrap().unwrap();
        assert_eq!(parse_answer(&up.response, &key), Ok(Some(up.response.len())));
        let refused = refusal(&WsError::http(403, "no"));
        assert!(parse_answer(&refused, &key).unwrap_err().why.contains("403"));
    }

    #[test]
    fn frames_in_any_split_give_back_the_stream_and_answer_pings() {
        let mut wire = BytesMut::new();
        put_binary(&mut wire, b"hello ", Some([1, 2, 3, 4]));
        put_control(&mut wire, op::PING, b"p", Some([9, 9, 9, 9]));
        put_binary(&mut wire, &vec![5u8; 70_000], Some([4, 3, 2, 1]));
        put_close(&mut wire, close::NORMAL, "bye", Some([0, 1, 0, 1]));
        for step in [1, 3, 7, 1000, wire.len()] {
            let mut reader = FrameReader::new(true, DEFAULT_MAX_MESSAGE);
            let (mut input, mut out, mut events) = (BytesMut::new(), BytesMut::new(), Vec::new());
            for chunk in wire.chunks(step) {
                input.extend_from_slice(chunk);
                while let Some(e) = reader.read(&mut input, &mut out).unwrap() {
                    events.push(e);
                }
            }
            assert_eq!(&out[..6], b"hello ");
            assert!(out[6..].iter().all(|&b| b == 5) && out.len() == 70_006);
            assert!(events.iter().any(|e| matches!(e, Event::Reply(r) if r[..] == [0x8a, 1, b'p'])));
            assert_eq!(events.last(), Some(&Event::Closed(close::NORMAL)));
        }
    }

    #[test]
    fn bad_frames_are_refused_with_their_close_code() {
        let refused = |bytes: &[u8], server: bool| {
            let mut r = FrameReader::new(server, 100);
            let mut input = BytesMut::from(bytes);
            loop {
                match r.read(&mut input, &mut BytesMut::new()) {
                    Err(e) => return e.close,
                    Ok(None) => panic!("accepted {bytes:?}"),
                    Ok(Some(_)) => {}
                }
            }
        };
        assert_eq!(refused(&[0x82, 0x01, b'x'], true), close::PROTOCOL, "unmasked client frame");
        assert_eq!(refused(&[0x82, 0x81, 0, 0, 0, 0, b'x'], false), close::PROTOCOL, "masked server frame");
        assert_eq!(refused(&[0x81, 0x80, 0, 0, 0, 0], true), close::UNSUPPORTED, "text");
        assert_eq!(refused(&[0xc2, 0x80, 0, 0, 0, 0], true), close::PROTOCOL, "reserved bit");
        assert_eq!(refused(&[0x82, 0xfe, 0, 101, 0, 0, 0, 0], true), close::TOO_BIG, "over the limit");
        let mut two = vec![0x02, 0x80 | 60, 0, 0, 0, 0];
        two.extend([0; 60]);
        two.extend([0x80, 0x80 | 60, 0, 0, 0, 0]);
        assert_eq!(refused(&two, true), close::TOO_BIG, "fragments over the limit");
        assert_eq!(refused(&[0x89, 0x80 | 126, 0, 200, 0, 0, 0, 0], true), close::PROTOCOL, "big ping");
        assert_eq!(refused(&[0x80, 0x80, 0, 0, 0, 0], true), close::PROTOCOL, "stray continuation");
        assert_eq!(refused(&[0x83, 0x80, 0, 0, 0, 0], true), close::PROTOCOL, "unknown opcode");
    }
}
