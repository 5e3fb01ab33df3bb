//! The translation between a ZServer4D client and a zserver connection, without IO: bytes
//! from the client go in and come out as zserver frames for the connection; frames the
//! connection writes go in and come out as bytes for the client. The caller moves bytes
//! between sockets and these buffers and passes the time in, as with [`SeqLayer`].
//!
//! - Requests become calls (console, stream, direct); their results go back in the order
//!   the requests came (the original matches results by position).
//! - `__@CipherModel` is answered here ("no cipher"); `__@Wait` once the connection has
//!   taken every frame before it (a ping behind them comes back) and every transfer before
//!   it was handled.
//! - A BigStream or CompleteBuffer becomes a zserver stream (`StreamOpen`, `StreamData`…,
//!   `StreamEnd` with its BLAKE3), handed over only as the connection grants credit;
//!   `F6` (send the next chunk) goes out when a chunk is handed over and `F7` when the
//!   connection has answered, so the original's stop-and-wait becomes back-pressure.
//! - Direct commands from the server go to a client that makes no requests.

use std::collections::{HashMap, VecDeque};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use zs_wire::body::{parse_code_message, CallBody};
use zs_wire::bulk::{parse_credit, StreamCheck, StreamEnd, StreamMode, StreamOpen, INITIAL_WINDOW};
use zs_wire::encode;
use zs_wire::mux::{MuxCode, MuxFrame};
use zs_wire::window::SendCredit;
use zs_wire::{DataFrame, ErrorCode, Flags, Frame, FrameDecoder, FrameWriter, Kind, Limits, WireError};

use crate::compress::{self, ParallelInflater};
use crate::dfe::{Dfe, Element};
use crate::frame::{self, Body, CompatLimits, Decoded, FrameKind};
use crate::handshake::{self, CipherModel};
use crate::seq::{self, SeqConfig, SeqLayer};
use crate::{CompatError, HashKind};

/// Input held while the connection has not taken it (a BigStream waiting for credit):
/// beyond this no more is wanted from the client.
pub const READ_AHEAD: usize = 2 << 20;
/// Bytes per stream data frame handed to the connection.
const DATA_FRAME: usize = 64 << 10;

/// What the translations of one server share.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Size limits.
    pub limits: CompatLimits,
    /// The sequence-packet layer.
    pub seq: SeqConfig,
    /// Most requests a client may send before reading their results.
    pub max_pipelined: usize,
    /// Idle timeout announced in the handshake, in ms.
    pub idle_ms: u64,
    /// When the server started: `__@Wait` answers with the milliseconds since.
    pub started: Instant,
    /// Sent in the handshake as the original does (MD5 of the start time).
    pub started_md5: [u8; 16],
}

/// Something the caller may want to log or count; the translation goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A request failed in its handler; the client got an empty result.
    RequestFailed(String),
    /// A transfer failed in its handler (the client still got its signals).
    TransferFailed {
        /// The zserver error code.
        code: u16,
        /// Why.
        why: String,
    },
    /// A direct command from the server was not sent.
    DirectNotSent {
        /// The command.
        command: String,
        /// Why.
        why: String,
    },
}

/// Which framing the client uses: found from its first byte.
enum Framing {
    Unknown,
    /// Sequence packets (the original's default).
    Sequenced(Box<SeqLayer>),
    /// Frames straight on the link (`SequencePacketActivted := False`).
    Bare,
}

/// A request waiting for its result, in arrival order.
enum Pending {
    /// A call to the router: its result comes back from the connection.
    Call { id: u32, console: bool, result: Option<Vec<u8>> },
    /// Answered by the translation itself (the handshake).
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
    /// A compressed buffer or chunk being inflated, a piece at a time as credit allows.
    inflating: Option<Box<ParallelInflater>>,
    /// A chunk was taken: send F6 once it is handed over.
    signal_due: bool,
    /// Bytes the connection lets us send.
    credit: SendCredit,
    /// The connection refused the stream (no such command, too large...): the rest of it
    /// is read and dropped, and the client still gets its signals.
    refused: bool,
    sent: u64,
    /// XXH3-128, the stream's declared check (the connection is in plaintext: what the
    /// check catches is a translation bug, not an attacker).
    hasher: Box<twox_hash::XxHash3_128>,
}

/// One ZServer4D client's translation.
pub struct Translator {
    settings: std::sync::Arc<Settings>,
    /// The connection's id, sent (wrapped to 32 bits) in the handshake.
    peer_id: u32,
    framing: Framing,
    /// From the client, not yet through the sequence layer.
    raw: BytesMut,
    /// ZServer4D frames not yet translated.
    plain: BytesMut,
    /// zserver frames for the connection (whole frames).
    to_conn: BytesMut,
    /// zserver bytes the connection wrote, not yet a whole frame.
    from_conn: BytesMut,
    decoder: FrameDecoder,
    /// Bytes for the client.
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
    failed: Option<String>,
    notices: Vec<Notice>,
    /// Protocol errors found (the caller counts them).
    protocol_errors: u32,
}

impl Translator {
    /// The translation of a new client's connection, whose id is `peer_id`.
    pub fn new(settings: std::sync::Arc<Settings>, peer_id: u64) -> Self {
        Translator {
            settings,
            peer_id: peer_id as u32,
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
            failed: None,
            notices: Vec::new(),
            protocol_errors: 0,
        }
    }

    /// The buffer the client's bytes are read into; call [`received`](Self::received) after.
    pub fn input(&mut self) -> &mut BytesMut {
        &mut self.raw
    }

    /// Translates what was read into [`input`](Self::input).
    pub fn received(&mut self, now: Instant) {
        self.heard = true;
        self.pump(now);
    }

    /// Whether more of the client's input is wanted now: not while a transfer waits for
    /// credit with [`READ_AHEAD`] bytes (or its compressed piece) held. Otherwise at most
    /// one partial frame waits here, which its frame's limit bounds.
    pub fn wants_input(&self) -> bool {
        match &self.inbound {
            Some(s) => {
                let packed = s.packed.unwrap_or(0);
                self.raw.len() + self.plain.len() < READ_AHEAD.max(packed + frame::CHUNK_HEAD_LEN)
            }
            None => true,
        }
    }

    /// Bytes the translation holds now (input not yet translated, frames not yet taken,
    /// output not yet written): what a server counts against its memory budget.
    pub fn held_bytes(&self) -> usize {
        let buffers = [&self.raw, &self.plain, &self.to_conn, &self.from_conn, &self.out];
        let inflating = self.inbound.as_ref().is_some_and(|s| s.inflating.is_some());
        buffers.iter().map(|b| b.capacity()).sum::<usize>() + if inflating { DATA_FRAME } else { 0 }
    }

    /// zserver frames for the connection: whole frames only, so the buffer can be handed
    /// over (swapped) as it is.
    pub fn to_connection(&mut self) -> &mut BytesMut {
        &mut self.to_conn
    }

    /// Takes zserver bytes the connection wrote and translates what they mean for the
    /// client. `Err` if they are not zserver frames (a bug of the caller, not the client).
    pub fn from_connection(&mut self, bytes: &[u8], now: Instant) -> Result<(), WireError> {
        self.from_conn.extend_from_slice(bytes);
        while let Some(f) = self.decoder.decode(&mut self.from_conn)? {
            self.on_native(f, now);
        }
        if self.inbound.is_some() {
            self.pump(now);
        }
        Ok(())
    }

    /// Whether bytes for the client wait to be written.
    pub fn has_output(&self) -> bool {
        !self.out.is_empty()
    }

    /// Bytes for the client: write them and advance the buffer.
    pub fn to_client(&mut self) -> &mut BytesMut {
        &mut self.out
    }

    /// Runs the sequence layer's timers (resends); returns when to call again.
    pub fn on_timer(&mut self, now: Instant) -> Option<Instant> {
        let Framing::Sequenced(layer) = &mut self.framing else { return None };
        layer.on_timer(now, &mut self.out)
    }

    /// Why the client's connection cannot go on, once it cannot.
    pub fn failed(&self) -> Option<&str> {
        self.failed.as_deref()
    }

    /// What happened that the caller may log or count, since the last call.
    pub fn take_notices(&mut self) -> Vec<Notice> {
        std::mem::take(&mut self.notices)
    }

    /// Protocol errors the client made, since the last call.
    pub fn take_protocol_errors(&mut self) -> u32 {
        std::mem::take(&mut self.protocol_errors)
    }

    /// Drops empty buffers: the connection is going idle.
    pub fn release_idle(&mut self) {
        for b in [&mut self.raw, &mut self.plain, &mut self.to_conn, &mut self.from_conn, &mut self.out] {
            if b.is_empty() && b.capacity() > 0 {
                *b = BytesMut::new();
            }
        }
    }

    /// Ends the translation (the client's connection cannot go on) with a reason.
    pub fn fail(&mut self, why: String) {
        self.failed.get_or_insert(why);
    }

    fn id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Writes a ZServer4D frame to the client, through the sequence layer if it uses one.
    fn send(&mut self, frame: &[u8], now: Instant) {
        if let Framing::Sequenced(layer) = &mut self.framing {
            if let Err(e) = layer.send(frame, now, &mut self.out) {
                self.fail(format!("ZServer4D client: {e}"));
            }
        } else {
            self.out.extend_from_slice(frame);
        }
    }

    /// Tells a BigStream's sender to send its next chunk, or that all of it arrived.
    fn send_signal(&mut self, done: bool, now: Instant) {
        let mut f = Vec::with_capacity(9);
        frame::encode_signal(&mut f, done);
        self.send(&f, now);
    }

    /// Writes the results that are ready, in request order.
    fn send_results(&mut self, now: Instant) {
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
            self.send(&f, now);
        }
    }

    /// Runs input through the sequence layer and translates what is whole.
    fn pump(&mut self, now: Instant) {
        if let Err(e) = self.unpack(now).and_then(|()| self.translate(now)) {
            self.protocol_errors += 1;
            self.fail(format!("ZServer4D client: {e}"));
        }
    }

    fn unpack(&mut self, now: Instant) -> Result<(), CompatError> {
        if matches!(self.framing, Framing::Unknown) {
            match self.raw.first() {
                None => return Ok(()),
                Some(0xF0) => self.framing = Framing::Bare,
                Some(1..=6) => {
                    self.framing = Framing::Sequenced(Box::new(SeqLayer::new(self.settings.seq, now)))
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
                while let Some((p, n)) = seq::decode(&self.raw)? {
                    self.raw.advance(n);
                    layer.receive(p, now, &mut self.plain, &mut self.out)?;
                }
            }
            _ => self.plain.extend_from_slice(&self.raw.split()),
        }
        Ok(())
    }

    fn translate(&mut self, now: Instant) -> Result<(), CompatError> {
        loop {
            if self.inbound.is_some() {
                if !self.step_inbound(now)? {
                    return Ok(());
                }
                continue;
            }
            let Some((f, n)) = frame::decode(&self.plain, &self.settings.limits)? else { return Ok(()) };
            self.plain.advance(n);
            match f {
                Decoded::Request(r) => self.on_request(r.kind, &r.payload, now)?,
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

    fn on_request(&mut self, kind: FrameKind, payload: &[u8], now: Instant) -> Result<(), CompatError> {
        let limit = self.settings.limits.max_payload as u64;
        let (command, body) = frame::parse_request_payload(kind, payload, limit)?;
        let local = if command.eq_ignore_ascii_case(handshake::CIPHER_MODEL) {
            let c = &self.settings;
            let mut model =
                CipherModel::plain(self.peer_id, c.started_md5, c.idle_ms, c.limits.max_complete_buffer);
            model.flags[0] = true; // UsedParallelEncrypt, as the original's default profile says
            Some(Pending::Ready(model.to_dfe().encode()))
        } else if command.eq_ignore_ascii_case(handshake::WAIT) {
            if kind.is_direct() {
                return Ok(()); // a barrier nobody waits for
            }
            // 16 hex digits, as the original writes its tick.
            let tick = format!("{:016X}", now.saturating_duration_since(self.settings.started).as_millis());
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
                self.send_results(now);
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
            if self.pending.len() >= self.settings.max_pipelined {
                return Err(CompatError::TooLarge {
                    what: "requests sent without waiting for results",
                    size: self.pending.len() as u64 + 1,
                    limit: self.settings.max_pipelined as u64,
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
            check: StreamCheck::Xxh3,
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
            inflating: None,
            signal_due: false,
            credit: SendCredit::new(INITIAL_WINDOW.into()),
            refused: false,
            sent: 0,
            hasher: Box::default(),
        }));
    }

    /// Hands stream data to the connection as credit allows; `false` when it can go no
    /// further now (waiting for input or credit).
    fn step_inbound(&mut self, now: Instant) -> Result<bool, CompatError> {
        let limits = self.settings.limits;
        let s = self.inbound.as_mut().expect("an inbound stream");
        // Inflated data (a piece at a time), then raw chunk data, as credit allows.
        let available = match &s.inflating {
            Some(z) => z.remaining().min(DATA_FRAME as u64) as usize,
            None => s.chunk_left.min(self.plain.len() as u64) as usize,
        };
        let n = s.credit.take_up_to(available as u64) as usize;
        if n > 0 {
            let data = match s.inflating.as_mut() {
                Some(z) => {
                    let piece = z.next_piece(n)?.unwrap_or_default();
                    // What was not inflated (a strip ended) goes back to the credit.
                    s.credit.grant((n - piece.len()) as u64);
                    piece
                }
                None => {
                    s.chunk_left -= n as u64;
                    self.plain.split_to(n).freeze()
                }
            };
            let n = data.len();
            if s.inflating.as_ref().is_some_and(|z| z.remaining() == 0) {
                s.inflating = None;
            }
            if data.len() as u64 > s.remaining {
                return Err(CompatError::malformed("BigStream", "chunks run past the announced size"));
            }
            s.remaining -= n as u64;
            if s.refused {
                return Ok(true);
            }
            s.hasher.write(&data);
            s.sent += n as u64;
            let id = s.id;
            encode::frame(&mut self.to_conn, Kind::StreamData, id, |b| b.extend_from_slice(&data));
            return Ok(true);
        }
        if s.inflating.is_some() || s.chunk_left > 0 {
            return Ok(false); // credit or input to come
        }
        if s.signal_due && s.remaining > 0 {
            s.signal_due = false;
            self.send_signal(false, now);
            return Ok(true);
        }
        if let (Some(packed), true, false) = (s.packed, s.refused, s.big) {
            // A refused CompleteBuffer's compressed body is dropped as it comes, not kept
            // until it is whole: it is the whole buffer, so nothing remains after it.
            let n = packed.min(self.plain.len());
            self.plain.advance(n);
            s.packed = Some(packed - n).filter(|&left| left > 0);
            if s.packed.is_some() {
                return Ok(false);
            }
            s.remaining = 0;
            return Ok(true);
        }
        if let Some(packed) = s.packed {
            if self.plain.len() < packed {
                return Ok(false);
            }
            let data = self.plain.split_to(packed).freeze();
            let raw = if s.big { compress::parallel_len(&data)? } else { s.remaining };
            if raw > s.remaining {
                return Err(CompatError::malformed("BigStream", "a chunk runs past the announced size"));
            }
            let max = if s.big { limits.max_chunk } else { limits.max_complete_buffer } as u64;
            let inflater = ParallelInflater::new(data, raw, max)?;
            s.inflating = (inflater.remaining() > 0).then(|| Box::new(inflater));
            s.packed = None;
            s.signal_due = s.big;
            return Ok(true);
        }
        if s.remaining == 0 {
            let s = self.inbound.take().expect("an inbound stream");
            if s.refused {
                // Nothing to wait for: the connection answered already.
                if s.big {
                    self.send_signal(true, now);
                }
                self.send_results(now);
            } else {
                let hash = zs_wire::bulk::xxh3_end_hash(s.hasher.finish_128());
                let end = StreamEnd { bytes: s.sent, hash };
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

    fn on_native(&mut self, f: Frame, now: Instant) {
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
                    Err(parse_code_message(&f.body).map(|(_, m)| m.to_owned()).unwrap_or_default())
                } else {
                    uncompressed(&f, &f.body, self.settings.limits.max_payload).map_err(|e| e.to_string())
                };
                let translated = match payload {
                    Ok(p) if console => Some(p.to_vec()),
                    Ok(p) => DataFrame::decode(&p, &Limits::default())
                        .ok()
                        .map(|d| Dfe::from_dataframe(&d).encode()),
                    Err(why) => {
                        self.notices.push(Notice::RequestFailed(why));
                        None
                    }
                };
                // The original's answer to a failure: an empty result.
                let empty = || if console { Vec::new() } else { Dfe::new().encode() };
                if let Pending::Call { result, .. } = &mut self.pending[i] {
                    *result = Some(translated.unwrap_or_else(empty));
                }
                self.send_results(now);
            }
            Kind::Pong => {
                let wait = self.pending.iter_mut().find_map(|p| match p {
                    Pending::Wait { ping, ponged, .. } if *ping == h.request => Some(ponged),
                    _ => None,
                });
                if let Some(ponged) = wait {
                    *ponged = true;
                    self.send_results(now);
                }
            }
            // Answered only if the client was heard from since: a silent client times out.
            Kind::Ping if self.heard => {
                self.heard = false;
                encode::control(&mut self.to_conn, Kind::Pong, h.request);
            }
            Kind::StreamCredit => {
                if let (Some(s), Ok(n)) = (self.inbound.as_mut(), parse_credit(&f.body)) {
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
                if let Ok((code, why)) = parse_code_message(&f.body) {
                    if code != 0 {
                        self.notices.push(Notice::TransferFailed { code, why: why.to_owned() });
                    }
                }
                if self.answers_due.remove(&h.request) == Some(true) {
                    self.send_signal(true, now);
                }
                self.send_results(now);
            }
            Kind::Send => self.push_direct(&f, now),
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
    fn push_direct(&mut self, f: &Frame, now: Instant) {
        let Ok(call) = CallBody::parse(&f.body) else { return };
        if self.client_requests {
            let why = "this ZServer4D client makes requests on the connection".to_owned();
            return self.notices.push(Notice::DirectNotSent { command: call.name().to_owned(), why });
        }
        // A broadcast is encoded once for every peer, so it may come lz4-compressed.
        let payload = match uncompressed(f, &call.payload, self.settings.limits.max_payload) {
            Ok(p) => p,
            Err(e) => {
                let (command, why) = (call.name().to_owned(), e.to_string());
                return self.notices.push(Notice::DirectNotSent { command, why });
            }
        };
        let (kind, body) = if f.header.flags.contains(Flags::DATAFRAME) {
            let d = DataFrame::decode(&payload, &Limits::default()).unwrap_or_default();
            (FrameKind::DirectStream, Body::Frame(Dfe::from_dataframe(&d)))
        } else {
            (FrameKind::DirectConsole, Body::Text(String::from_utf8_lossy(&payload).into_owned()))
        };
        let mut out = Vec::new();
        frame::encode_request(&mut out, kind, &frame::request_payload(call.name(), &body), HashKind::None);
        self.send(&out, now);
    }
}

/// `payload` of frame `f`, inflated if the frame says it is lz4-compressed.
fn uncompressed(f: &Frame, payload: &Bytes, max: u32) -> Result<Bytes, WireError> {
    if f.header.flags.contains(Flags::COMPRESSED) {
        zs_wire::compress::unlz4(payload, max).map(Bytes::from)
    } else {
        Ok(payload.clone())
    }
}
