//! `CompatLink`: a ZServer4D client's connection (a raw link), seen by the ordinary connection
//! driver as a link carrying zserver frames. Reading, it runs the sequence layer, answers
//! `__@CipherModel` and `__@Wait`, and turns requests, BigStreams and CompleteBuffers into
//! calls and streams; writing, it turns replies into result frames in the order the
//! requests came (the original matches results by position), credits into BigStream
//! signals, and direct commands into direct frames. The router, handlers, stats and
//! timeouts above are the ordinary ones.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::time::Sleep;
use zs_compat::dfe::{Dfe, Element};
use zs_compat::frame::{self, Body, Decoded, FrameKind};
use zs_compat::handshake::{self, CipherModel};
use zs_compat::seq::{self, SeqLayer};
use zs_compat::{compress, CompatError, HashKind};
use zs_wire::body::CallBody;
use zs_wire::bulk::{StreamEnd, StreamMode, StreamOpen, INITIAL_WINDOW};
use zs_wire::mux::{MuxCode, MuxFrame};
use zs_wire::window::SendCredit;
use zs_wire::{DataFrame, ErrorCode, Flags, Frame, FrameDecoder, FrameWriter, Kind, Limits};

use super::CompatShared;
use crate::connection::encode;
use crate::transport::{Link, RawLink};

/// Input held while the connection has not taken it (a BigStream waiting for credit):
/// beyond this the socket is not read.
const READ_AHEAD: usize = 2 << 20;
/// Output to the socket beyond which the connection's writes wait.
const MAX_OUT: usize = 4 << 20;
/// Bytes per stream data frame handed to the connection.
const DATA_FRAME: usize = 64 << 10;

/// Which framing the client uses: found from its first byte.
enum Framing {
    Unknown,
    /// Sequence packets (the original's default).
    Sequenced(Box<SeqLayer>),
    /// Frames straight on TCP (`SequencePacketActivted := False`).
    Bare,
}

/// A request waiting for its result, in arrival order.
enum Pending {
    /// A call to the router: its result comes back from the connection.
    Call { id: u32, console: bool, result: Option<Vec<u8>> },
    /// Answered by the link itself (the handshake).
    Ready(Vec<u8>),
    /// `__@Wait`: answered once the connection has taken every frame before it (it
    /// answered `ping`, which follows them) and every transfer before it was handled.
    Wait { ping: u32, ponged: bool, tick: Vec<u8> },
}

/// A BigStream or CompleteBuffer being handed to the connection as a stream.
struct Inbound {
    id: u32,
    /// A BigStream (chunks, F6 after each): else a CompleteBuffer (one body).
    big: bool,
    /// Raw bytes still to hand over.
    remaining: u64,
    /// Raw bytes of the current uncompressed chunk still in `plain`.
    chunk_left: u64,
    /// Compressed bytes to wait for before inflating (a compressed buffer or chunk).
    packed: Option<usize>,
    /// Inflated data not yet handed over.
    staged: Bytes,
    /// A chunk was taken: send F6 once it is handed over.
    signal_due: bool,
    /// Bytes the connection lets us send.
    credit: SendCredit,
    /// The connection refused the stream (no such command, too large...): the rest of it
    /// is read and dropped, and the client still gets its signals.
    refused: bool,
    sent: u64,
    hasher: blake3::Hasher,
}

/// A ZServer4D client's connection, as a [`Link`] carrying zserver frames.
pub(crate) struct CompatLink {
    socket: RawLink,
    shared: Arc<CompatShared>,
    /// The connection's id (its `Peer::id`).
    peer_id: u64,
    framing: Framing,
    /// From the socket, not yet through the sequence layer.
    raw: BytesMut,
    /// ZServer4D frames not yet translated.
    plain: BytesMut,
    /// zserver frames for the connection.
    to_conn: BytesMut,
    /// zserver bytes the connection wrote, not yet a whole frame.
    from_conn: BytesMut,
    decoder: FrameDecoder,
    /// Bytes for the socket.
    out: BytesMut,
    pending: VecDeque<Pending>,
    inbound: Option<Box<Inbound>>,
    /// Streams handed over and not yet answered: whether each is a BigStream (F7 due).
    answers_due: HashMap<u32, bool>,
    next_id: u32,
    /// The client has sent requests of its own: nothing may be pushed to it.
    client_requests: bool,
    /// Bytes came from the client since the connection's last keepalive.
    heard: bool,
    eof: bool,
    /// The connection took input and has not yet been told there is no more: it drops its
    /// read buffer only when told (as a socket does, with `WouldBlock`).
    owe_would_block: bool,
    failed: Option<String>,
    read_waker: Option<Waker>,
    timer: Option<Pin<Box<Sleep>>>,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl CompatLink {
    pub(crate) fn new(socket: RawLink, shared: Arc<CompatShared>, peer_id: u64) -> Self {
        CompatLink {
            socket,
            shared,
            peer_id,
            framing: Framing::Unknown,
            raw: BytesMut::new(),
            plain: BytesMut::new(),
            to_conn: BytesMut::new(),
            from_conn: BytesMut::new(),
            decoder: FrameDecoder::new(Limits { max_frame_len: u32::MAX, ..Limits::default() }),
            out: BytesMut::new(),
            pending: VecDeque::new(),
            inbound: None,
            answers_due: HashMap::new(),
            next_id: 1,
            client_requests: false,
            heard: true,
            eof: false,
            owe_would_block: false,
            failed: None,
            read_waker: None,
            timer: None,
        }
    }

    fn fail(&mut self, why: String) {
        if self.failed.is_none() {
            self.failed = Some(why);
        }
        self.wake_reader();
    }

    fn wake_reader(&mut self) {
        if let Some(w) = self.read_waker.take() {
            w.wake();
        }
    }

    fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Writes a ZServer4D frame to the client, through the sequence layer if it uses one.
    fn send(&mut self, frame: &[u8]) {
        if let Framing::Sequenced(layer) = &mut self.framing {
            if let Err(e) = layer.send(frame, Instant::now(), &mut self.out) {
                return self.fail(format!("ZServer4D client: {e}"));
            }
            self.rearm();
        } else {
            self.out.extend_from_slice(frame);
        }
    }

    /// Tells a BigStream's sender to send its next chunk, or that all of it arrived.
    fn send_signal(&mut self, done: bool) {
        let mut f = Vec::with_capacity(9);
        frame::encode_signal(&mut f, done);
        self.send(&f);
    }

    /// Writes the results that are ready, in request order.
    fn send_results(&mut self) {
        loop {
            let transfers_done = self.inbound.is_none() && self.answers_due.is_empty();
            let payload = match self.pending.front_mut() {
                Some(Pending::Ready(p)) => std::mem::take(p),
                Some(Pending::Wait { ponged: true, tick, .. }) if transfers_done => std::mem::take(tick),
                Some(Pending::Call { result: Some(p), .. }) => std::mem::take(p),
                _ => return,
            };
            self.pending.pop_front();
            let mut f = Vec::with_capacity(payload.len() + 32);
            frame::encode_reply(&mut f, &payload, HashKind::None);
            self.send(&f);
        }
    }

    /// Runs input through the sequence layer and translates what is whole.
    fn pump(&mut self) {
        if let Err(e) = self.unpack().and_then(|()| self.translate()) {
            self.shared.stats.bump(|s| &s.protocol_errors);
            self.fail(format!("ZServer4D client: {e}"));
        }
    }

    fn unpack(&mut self) -> Result<(), CompatError> {
        if matches!(self.framing, Framing::Unknown) {
            match self.raw.first() {
                None => return Ok(()),
                Some(0xF0) => self.framing = Framing::Bare,
                Some(1..=6) => {
                    self.framing =
                        Framing::Sequenced(Box::new(SeqLayer::new(self.shared.config.seq, Instant::now())))
                }
                Some(b) => {
                    return Err(CompatError::malformed(
                        "first byte",
                        format!("{b:#04x}: not a ZServer4D client"),
                    ))
                }
            }
        }
        match &mut self.framing {
            Framing::Sequenced(layer) => {
                let now = Instant::now();
                while let Some((p, n)) = seq::decode(&self.raw)? {
                    self.raw.advance(n);
                    layer.receive(p, now, &mut self.plain, &mut self.out)?;
                }
            }
            _ => self.plain.extend_from_slice(&self.raw.split()),
        }
        Ok(())
    }

    fn translate(&mut self) -> Result<(), CompatError> {
        loop {
            if self.inbound.is_some() {
                if !self.step_inbound()? {
                    return Ok(());
                }
                continue;
            }
            let Some((f, n)) = frame::decode(&self.plain, &self.shared.config.limits)? else { return Ok(()) };
            self.plain.advance(n);
            match f {
                Decoded::Request(r) => self.on_request(r.kind, &r.payload)?,
                Decoded::BigStreamHead { total, command } => {
                    self.open_inbound(true, total as u64, 0, &command)
                }
                Decoded::CompleteBufferHead { size, compressed, command } => {
                    self.open_inbound(false, size as u64, compressed, &command)
                }
                Decoded::FragmentSignal | Decoded::DoneSignal => {
                    return Err(CompatError::malformed("signal", "no BigStream is being sent to the client"))
                }
            }
        }
    }

    fn on_request(&mut self, kind: FrameKind, payload: &[u8]) -> Result<(), CompatError> {
        let limit = self.shared.config.limits.max_payload as u64;
        let (command, body) = frame::parse_request_payload(kind, payload, limit)?;
        let local = if command.eq_ignore_ascii_case(handshake::CIPHER_MODEL) {
            let c = &self.shared.config;
            // The handshake has a 32-bit id: the connection's, wrapped.
            let model = CipherModel::plain(
                self.peer_id as u32,
                self.shared.started_md5,
                c.idle_ms,
                c.limits.max_complete_buffer,
            );
            Some(Pending::Ready(model.to_dfe().encode()))
        } else if command.eq_ignore_ascii_case(handshake::WAIT) {
            if kind.is_direct() {
                return Ok(()); // a barrier nobody waits for
            }
            let tick = format!("{:X}", self.shared.started.elapsed().as_millis());
            let tick = if kind.is_console() {
                tick.into_bytes()
            } else {
                Dfe { elements: vec![Element::String(tick)] }.encode()
            };
            // A ping behind the frames before it: its pong says the connection took them.
            let ping = self.id();
            encode::control(&mut self.to_conn, Kind::Ping, ping);
            Some(Pending::Wait { ping, ponged: false, tick })
        } else {
            None
        };
        if let Some(result) = local {
            if !kind.is_direct() {
                self.pending.push_back(result);
                self.send_results();
            }
            return Ok(());
        }
        if command.is_empty() || command.len() > zs_wire::body::MAX_NAME_LEN {
            return Err(CompatError::malformed(
                "request",
                format!("command name of {} bytes", command.len()),
            ));
        }
        if !kind.is_direct() {
            if self.pending.len() >= self.shared.config.max_pipelined {
                return Err(CompatError::TooLarge {
                    what: "requests sent without waiting for results",
                    size: self.pending.len() as u64 + 1,
                    limit: self.shared.config.max_pipelined as u64,
                });
            }
            self.client_requests = true;
        }
        let id = if kind.is_direct() { 0 } else { self.id() };
        let native = if kind.is_direct() { Kind::Send } else { Kind::Call };
        let flags = if kind.is_console() { Flags::NONE } else { Flags::DATAFRAME };
        let mut w = FrameWriter::begin(&mut self.to_conn, native, flags, 0, id);
        CallBody::put_name(w.body(), &command).expect("name length checked");
        match &body {
            Body::Text(t) => w.body().extend_from_slice(t.as_bytes()),
            Body::Frame(d) => d.to_dataframe().encode(w.body()),
        }
        w.finish(u32::MAX).expect("no limit");
        if !kind.is_direct() {
            self.pending.push_back(Pending::Call { id, console: kind.is_console(), result: None });
        }
        Ok(())
    }

    fn open_inbound(&mut self, big: bool, total: u64, packed: u32, command: &str) {
        let id = self.id();
        let open = StreamOpen {
            mode: if big { StreamMode::Stream } else { StreamMode::Buffer },
            total,
            offset: 0,
            key: 0,
            name: command.chars().take(255).collect(),
        };
        encode::frame(&mut self.to_conn, Kind::StreamOpen, id, |b| {
            let _ = open.encode(b);
        });
        self.inbound = Some(Box::new(Inbound {
            id,
            big,
            remaining: total,
            chunk_left: if big || packed > 0 { 0 } else { total },
            packed: (packed > 0).then_some(packed as usize),
            staged: Bytes::new(),
            signal_due: false,
            credit: SendCredit::new(INITIAL_WINDOW.into()),
            refused: false,
            sent: 0,
            hasher: blake3::Hasher::new(),
        }));
    }

    /// Hands stream data to the connection as credit allows; `false` when it can go no
    /// further now (waiting for input or credit).
    fn step_inbound(&mut self) -> Result<bool, CompatError> {
        let limits = self.shared.config.limits;
        let s = self.inbound.as_mut().expect("an inbound stream");
        // Inflated data, then raw chunk data, as credit allows.
        let from_staged = !s.staged.is_empty();
        let available =
            if from_staged { s.staged.len() } else { s.chunk_left.min(self.plain.len() as u64) as usize };
        let n = s.credit.take_up_to(available.min(DATA_FRAME) as u64) as usize;
        if n > 0 {
            let data = if from_staged { s.staged.split_to(n) } else { self.plain.split_to(n).freeze() };
            if !from_staged {
                s.chunk_left -= n as u64;
            }
            if data.len() as u64 > s.remaining {
                return Err(CompatError::malformed("BigStream", "chunks run past the announced size"));
            }
            s.remaining -= n as u64;
            if s.refused {
                return Ok(true);
            }
            s.hasher.update(&data);
            s.sent += n as u64;
            let id = s.id;
            encode::frame(&mut self.to_conn, Kind::StreamData, id, |b| b.extend_from_slice(&data));
            return Ok(true);
        }
        if !s.staged.is_empty() || s.chunk_left > 0 {
            return Ok(false); // credit or input to come
        }
        if s.signal_due && s.remaining > 0 {
            s.signal_due = false;
            self.send_signal(false);
            return Ok(true);
        }
        if let Some(packed) = s.packed {
            if self.plain.len() < packed {
                return Ok(false);
            }
            let data = self.plain.split_to(packed);
            let raw = if s.big { compress::parallel_len(&data)? } else { s.remaining };
            s.staged = compress::parallel_decompress(
                &data,
                raw,
                limits.max_chunk.max(limits.max_complete_buffer) as u64,
            )?
            .into();
            s.packed = None;
            s.signal_due = s.big;
            return Ok(true);
        }
        if s.remaining == 0 {
            let s = self.inbound.take().expect("an inbound stream");
            if s.refused {
                // Nothing to wait for: the connection answered already.
                if s.big {
                    self.send_signal(true);
                }
                self.send_results();
            } else {
                let end = StreamEnd { bytes: s.sent, hash: *s.hasher.finalize().as_bytes() };
                encode::frame(&mut self.to_conn, Kind::StreamEnd, s.id, |b| end.encode(b));
                self.answers_due.insert(s.id, s.big);
            }
            return Ok(true);
        }
        // A BigStream's next chunk.
        let Some(head) = frame::decode_chunk_head(&self.plain, &limits)? else { return Ok(false) };
        self.plain.advance(frame::CHUNK_HEAD_LEN);
        if head.compressed {
            s.packed = Some(head.size as usize);
        } else {
            if head.size as u64 > s.remaining {
                return Err(CompatError::malformed("BigStream", "a chunk runs past the announced size"));
            }
            s.chunk_left = head.size as u64;
            s.signal_due = true;
        }
        Ok(true)
    }

    /// Input wanted before the socket is read again.
    fn read_room(&self) -> bool {
        let packed = self.inbound.as_ref().and_then(|s| s.packed).unwrap_or(0);
        self.raw.len() + self.plain.len() < READ_AHEAD.max(packed + frame::CHUNK_HEAD_LEN)
    }

    /// Takes zserver frames the connection wrote and sends what they mean to the client.
    fn absorb(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.from_conn.extend_from_slice(bytes);
        while let Some(f) = self.decoder.decode(&mut self.from_conn).map_err(invalid)? {
            self.on_native(f);
        }
        if self.inbound.is_some() {
            self.pump();
        }
        if !self.to_conn.is_empty() || self.failed.is_some() {
            self.wake_reader();
        }
        Ok(())
    }

    fn on_native(&mut self, f: Frame) {
        let h = f.header;
        match h.kind {
            Kind::Reply | Kind::Error => {
                let Some(i) = self
                    .pending
                    .iter()
                    .position(|p| matches!(p, Pending::Call { id, .. } if *id == h.request))
                else {
                    return;
                };
                let console = matches!(self.pending[i], Pending::Call { console: true, .. });
                let payload = if h.kind == Kind::Error {
                    let why = zs_wire::body::parse_code_message(&f.body).map(|(_, m)| m.to_owned());
                    Err(why.unwrap_or_default())
                } else {
                    uncompressed(&f, &f.body, self.shared.config.limits.max_payload)
                        .map_err(|e| e.to_string())
                };
                let translated = match payload {
                    Ok(p) if console => Some(p.to_vec()),
                    Ok(p) => DataFrame::decode(&p, &Limits::default())
                        .ok()
                        .map(|d| Dfe::from_dataframe(&d).encode()),
                    Err(why) => {
                        tracing::warn!(peer = self.peer_id, error = %why, "ZServer4D request failed: the client gets an empty result");
                        None
                    }
                };
                // The original's answer to a failure: an empty result.
                let empty = || if console { Vec::new() } else { Dfe::new().encode() };
                if let Pending::Call { result, .. } = &mut self.pending[i] {
                    *result = Some(translated.unwrap_or_else(empty));
                }
                self.send_results();
            }
            Kind::Pong => {
                let wait = self.pending.iter_mut().find_map(|p| match p {
                    Pending::Wait { ping, ponged, .. } if *ping == h.request => Some(ponged),
                    _ => None,
                });
                if let Some(ponged) = wait {
                    *ponged = true;
                    self.send_results();
                }
            }
            // Answered only if the client was heard from since: a silent client times out.
            Kind::Ping if self.heard => {
                self.heard = false;
                encode::control(&mut self.to_conn, Kind::Pong, h.request);
            }
            Kind::StreamCredit => {
                if let (Some(s), Ok(n)) = (self.inbound.as_mut(), zs_wire::bulk::parse_credit(&f.body)) {
                    if s.id == h.request {
                        s.credit.grant(n.into());
                    }
                }
            }
            Kind::StreamResult => {
                if let Some(s) = self.inbound.as_mut().filter(|s| s.id == h.request) {
                    // Refused before its end: drop the rest as it comes.
                    (s.refused, s.credit) = (true, SendCredit::new(u64::MAX));
                }
                let verdict = zs_wire::body::parse_code_message(&f.body).map(|(c, m)| (c, m.to_owned()));
                if let Ok((code, why)) =
                    verdict.as_ref().map_err(drop).and_then(|v| if v.0 != 0 { Ok(v) } else { Err(()) })
                {
                    tracing::warn!(peer = self.peer_id, code, error = %why, "ZServer4D transfer failed in its handler");
                }
                if self.answers_due.remove(&h.request) == Some(true) {
                    self.send_signal(true);
                }
                self.send_results();
            }
            Kind::Send => self.push_direct(&f),
            Kind::Call => {
                let why = "a ZServer4D client takes no calls (replies carry no ids); use direct commands on a connection it makes no requests on";
                encode::error(&mut self.to_conn, h.request, ErrorCode::Overloaded, why);
            }
            Kind::StreamOpen => {
                let why = "sending streams to a ZServer4D client is not supported";
                encode::stream_result(&mut self.to_conn, h.request, ErrorCode::Cancelled.code(), why);
            }
            Kind::MuxOpen => {
                if let Ok(MuxFrame::Open { channel, .. }) = MuxFrame::decode(&h, f.body.clone()) {
                    let reason = "a ZServer4D client has no virtual channels".to_owned();
                    let _ = MuxFrame::Refuse { channel, code: MuxCode::Refused, reason }
                        .encode(&mut self.to_conn);
                }
            }
            _ => {}
        }
    }

    /// A direct command from the server: sent unless the client makes requests on this
    /// connection (it would read it as the result it waits for).
    fn push_direct(&mut self, f: &Frame) {
        let Ok(call) = CallBody::parse(&f.body) else { return };
        if self.client_requests {
            self.shared.stats.bump(|s| &s.errors_out);
            return tracing::warn!(
                peer = self.peer_id,
                command = call.name(),
                "direct command not sent: this ZServer4D client makes requests on the connection"
            );
        }
        // A broadcast is encoded once for every peer, so it may come lz4-compressed.
        let payload = match uncompressed(f, &call.payload, self.shared.config.limits.max_payload) {
            Ok(p) => p,
            Err(e) => return tracing::warn!(peer = self.peer_id, error = %e, "direct command not sent"),
        };
        let (kind, body) = if f.header.flags.contains(Flags::DATAFRAME) {
            let d = DataFrame::decode(&payload, &Limits::default()).unwrap_or_default();
            (FrameKind::DirectStream, Body::Frame(Dfe::from_dataframe(&d)))
        } else {
            (FrameKind::DirectConsole, Body::Text(String::from_utf8_lossy(&payload).into_owned()))
        };
        let mut out = Vec::new();
        frame::encode_request(&mut out, kind, &frame::request_payload(call.name(), &body), HashKind::None);
        self.send(&out);
    }

    /// Sets the sequence layer's timer.
    fn rearm(&mut self) {
        let Framing::Sequenced(layer) = &mut self.framing else { return };
        let mut out = BytesMut::new();
        match layer.on_timer(Instant::now(), &mut out) {
            Some(at) => match self.timer.as_mut() {
                Some(t) => t.as_mut().reset(at.into()),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(at.into()))),
            },
            None => self.timer = None,
        }
        self.out.extend_from_slice(&out);
    }

    fn write_out(&mut self) -> io::Result<()> {
        while !self.out.is_empty() {
            match self.socket.try_write(&self.out) {
                Ok(n) => self.out.advance(n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// `payload` of frame `f`, inflated if the frame says it is lz4-compressed.
fn uncompressed(f: &Frame, payload: &Bytes, max: u32) -> Result<Bytes, zs_wire::WireError> {
    if f.header.flags.contains(Flags::COMPRESSED) {
        zs_wire::compress::unlz4(payload, max).map(Bytes::from)
    } else {
        Ok(payload.clone())
    }
}

impl Link for CompatLink {
    fn poll_read_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if !self.to_conn.is_empty() || self.failed.is_some() || self.eof || self.owe_would_block {
                return Poll::Ready(Ok(()));
            }
            if self.timer.as_mut().is_some_and(|t| t.as_mut().poll(cx).is_ready()) {
                self.rearm();
                let _ = self.write_out();
            }
            if !self.read_room() {
                self.read_waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
            match self.socket.poll_read_ready(cx) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {
                    // Going idle: an idle connection holds no buffer.
                    self.release_idle();
                    self.read_waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
            self.raw.reserve(16 << 10);
            match self.socket.try_read_buf(&mut self.raw) {
                Ok(0) => self.eof = true,
                Ok(_) => {
                    self.heard = true;
                    self.pump();
                    if let Err(e) = self.write_out() {
                        return Poll::Ready(Err(e));
                    }
                }
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted) => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    fn try_read_buf(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if !self.to_conn.is_empty() {
            let n = self.to_conn.len();
            if buf.is_empty() {
                // Whole frames only, so the connection's buffer is empty: hand ours over
                // (and take its room for the next ones) instead of copying.
                std::mem::swap(buf, &mut self.to_conn);
            } else {
                buf.extend_from_slice(&self.to_conn);
                self.to_conn.clear();
            }
            self.owe_would_block = true;
            return Ok(n);
        }
        if let Some(why) = self.failed.clone() {
            return Err(invalid(why));
        }
        if self.eof {
            return Ok(0);
        }
        self.owe_would_block = false;
        Err(io::ErrorKind::WouldBlock.into())
    }

    fn poll_write_ready(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.poll_write_ready(cx)
    }

    fn try_write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.try_write_vectored(&[io::IoSlice::new(buf)])
    }

    fn try_write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.write_out()?;
        if self.out.len() >= MAX_OUT {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let mut n = 0;
        for b in bufs {
            self.absorb(b)?;
            n += b.len();
        }
        self.write_out()?;
        Ok(n)
    }

    fn has_pending(&self) -> bool {
        !self.out.is_empty()
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()?;
        if self.out.is_empty() {
            Ok(())
        } else {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    fn release_idle(&mut self) {
        for b in [&mut self.raw, &mut self.plain, &mut self.to_conn, &mut self.from_conn, &mut self.out] {
            if b.is_empty() && b.capacity() > 0 {
                *b = BytesMut::new();
            }
        }
    }

    fn shutdown_write(&mut self) -> io::Result<()> {
        let _ = self.write_out();
        self.socket.shutdown_write()
    }

    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.socket.peer_addr()
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }
}
