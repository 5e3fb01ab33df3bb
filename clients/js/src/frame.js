// Frames (PROTOCOL.md §1-§3): 16-byte header, call bodies, lz4 payloads. No IO.
import lz4 from 'lz4js';
import { ByteQueue } from './bytequeue.js';
import { WireError } from './errors.js';

export const MAGIC = 0x5a;
export const VERSION = 1;
export const HEADER_LEN = 16;
/** Default `max_frame_len`: 16 MiB. */
export const MAX_FRAME_LEN = 16 * 1024 * 1024;

export const Kind = Object.freeze({
  Call: 0x01,
  Send: 0x02,
  Reply: 0x03,
  Error: 0x04,
  Ping: 0x05,
  Pong: 0x06,
  GoAway: 0x07,
  SessionAck: 0x08,
  StreamOpen: 0x10,
  StreamData: 0x11,
  StreamEnd: 0x12,
  StreamCredit: 0x13,
  StreamResult: 0x14,
  StreamCancel: 0x15,
  BatchClear: 0x16,
  MuxOpen: 0x30,
  MuxAccept: 0x31,
  MuxRefuse: 0x32,
  MuxData: 0x33,
  MuxCredit: 0x34,
  MuxClose: 0x35,
  MuxReset: 0x36,
  MuxGoAway: 0x37,
});

const KNOWN_KINDS = new Set(Object.values(Kind));

export const Flags = Object.freeze({ NONE: 0, DATAFRAME: 0x01, COMPRESSED: 0x02 });

function allowedFlags(kind) {
  if (kind === Kind.Call || kind === Kind.Send || kind === Kind.Reply) return 0x03;
  if (kind === Kind.StreamData) return 0x02;
  return 0;
}

function isMuxKind(kind) {
  return kind >= 0x30 && kind <= 0x37;
}

const utf8 = new TextEncoder();
const utf8Strict = new TextDecoder('utf-8', { fatal: true });

export function encodeUtf8(s) {
  return utf8.encode(s);
}

/** Decodes UTF-8, throwing WireError InvalidUtf8 on bad bytes. */
export function decodeUtf8(bytes, what = 'text') {
  try {
    return utf8Strict.decode(bytes);
  } catch {
    throw new WireError('InvalidUtf8', `${what} is not valid UTF-8`);
  }
}

/** Encodes a whole frame: header + body. */
export function encodeFrame(kind, flags, channel, request, body = new Uint8Array(0)) {
  const out = new Uint8Array(HEADER_LEN + body.length);
  const dv = new DataView(out.buffer);
  out[0] = MAGIC;
  out[1] = VERSION;
  out[2] = kind;
  out[3] = flags;
  dv.setUint32(4, channel >>> 0, true);
  dv.setUint32(8, request >>> 0, true);
  dv.setUint32(12, body.length, true);
  out.set(body, HEADER_LEN);
  return out;
}

/** Decodes and validates a 16-byte header (§1's checks, in its order). */
export function decodeHeader(b, maxFrameLen = MAX_FRAME_LEN) {
  if (b.length < HEADER_LEN) throw new WireError('Malformed', 'header shorter than 16 bytes');
  if (b[0] !== MAGIC) throw new WireError('BadMagic', `bad magic byte 0x${hex2(b[0])}: not a zserver peer`);
  if (b[1] !== VERSION) throw new WireError('UnsupportedVersion', `unsupported protocol version ${b[1]}`);
  const kind = b[2];
  if (!KNOWN_KINDS.has(kind)) throw new WireError('UnknownKind', `unknown frame kind 0x${hex2(kind)}`);
  const flags = b[3];
  if (flags & ~allowedFlags(kind)) {
    throw new WireError('InvalidFlags', `invalid flags 0x${hex2(flags)} for kind 0x${hex2(kind)}`);
  }
  const dv = new DataView(b.buffer, b.byteOffset, HEADER_LEN);
  const channel = dv.getUint32(4, true);
  const request = dv.getUint32(8, true);
  const length = dv.getUint32(12, true);
  if (length > maxFrameLen) {
    throw new WireError('FrameTooLarge', `frame of ${length} bytes exceeds the limit of ${maxFrameLen} bytes`);
  }
  if (channel !== 0 && !isMuxKind(kind)) {
    throw new WireError('UnexpectedChannel', `frame for channel ${channel} but no multiplexer is active`);
  }
  return { kind, flags, channel, request, length };
}

function hex2(n) {
  return n.toString(16).padStart(2, '0');
}

/** Decodes exactly one whole frame (header + body, nothing after). */
export function decodeFrame(bytes, maxFrameLen = MAX_FRAME_LEN) {
  const h = decodeHeader(bytes, maxFrameLen);
  if (bytes.length !== HEADER_LEN + h.length) {
    throw new WireError('Malformed', `frame of ${bytes.length} bytes, header says ${HEADER_LEN + h.length}`);
  }
  return { ...h, body: bytes.subarray(HEADER_LEN) };
}

/**
 * Incremental frame reader over a byte stream. `push(bytes)` returns the whole frames now
 * available. Validates each header as soon as its 16 bytes are in; holds at most one frame.
 */
export class FrameReader {
  constructor(maxFrameLen = MAX_FRAME_LEN) {
    this.maxFrameLen = maxFrameLen;
    this.queue = new ByteQueue();
    this.header = null;
  }

  /** Bytes received and not yet part of a whole frame. */
  get size() {
    return this.queue.size;
  }

  push(bytes) {
    this.queue.push(bytes);
    const frames = [];
    for (;;) {
      if (!this.header) {
        if (this.size < HEADER_LEN) break;
        this.header = decodeHeader(this.queue.take(HEADER_LEN), this.maxFrameLen);
      }
      if (this.size < this.header.length) break;
      const body = this.queue.take(this.header.length);
      frames.push({ ...this.header, body });
      this.header = null;
    }
    return frames;
  }
}

/** Builds a call body (§3): name_len, name, payload. */
export function encodeCallBody(name, payload) {
  const n = encodeUtf8(name);
  if (n.length < 1 || n.length > 255) throw new WireError('Malformed', 'command name must be 1 to 255 bytes');
  const out = new Uint8Array(1 + n.length + payload.length);
  out[0] = n.length;
  out.set(n, 1);
  out.set(payload, 1 + n.length);
  return out;
}

/** Splits a call body into { name, payload }. */
export function decodeCallBody(body) {
  if (body.length === 0) throw new WireError('Malformed', 'call body: empty');
  const n = body[0];
  if (n === 0) throw new WireError('Malformed', 'call body: empty command name');
  if (body.length < 1 + n) throw new WireError('Malformed', 'call body: name runs past the end');
  const name = decodeUtf8(body.subarray(1, 1 + n), 'command name');
  return { name, payload: body.subarray(1 + n) };
}

/** Body of Error and GoAway frames: code u16 LE + UTF-8 message. */
export function decodeCodeMessage(body, what) {
  if (body.length < 2) throw new WireError('Malformed', `${what}: shorter than its code`);
  const code = body[0] | (body[1] << 8);
  return { code, message: decodeUtf8(body.subarray(2), `${what} message`) };
}

export function encodeCodeMessage(code, message) {
  const m = encodeUtf8(message);
  const out = new Uint8Array(2 + m.length);
  out[0] = code & 0xff;
  out[1] = code >> 8;
  out.set(m, 2);
  return out;
}

/**
 * Walks an lz4 block's sequences without decoding them, so that a hostile block is refused
 * before lz4js runs: the output may not exceed `size`, and every match must point into the
 * output already written (lz4js would silently read zeros there). Bounds lz4js's work too.
 */
function checkLz4Block(src, start, size) {
  const bad = (why) => new WireError('Malformed', `compressed payload: corrupt lz4 block (${why})`);
  let i = start;
  let out = 0;
  const end = src.length;
  const length = (n) => {
    if (n !== 15) return n;
    for (;;) {
      if (i >= end) throw bad('length runs past the end');
      const b = src[i++];
      n += b;
      if (n > size) throw bad('longer than declared');
      if (b !== 255) return n;
    }
  };
  while (i < end) {
    const token = src[i++];
    const lit = length(token >> 4);
    if (i + lit > end) throw bad('literals run past the end');
    i += lit;
    out += lit;
    if (out > size) throw bad('longer than declared');
    if (i === end) break;
    if (i + 2 > end) throw bad('offset runs past the end');
    const offset = src[i] | (src[i + 1] << 8);
    i += 2;
    if (offset === 0 || offset > out) throw bad('match offset outside the output');
    out += length(token & 15) + 4;
    if (out > size) throw bad('longer than declared');
  }
  if (out !== size) throw new WireError('Malformed', 'compressed payload: decodes to another size than it declares');
}

/** lz4 ratio bound used by the server: no block expands more than this. */
const LZ4_MAX_RATIO = 255;

/**
 * Reverses the COMPRESSED payload form (§3.1): u32 LE uncompressed size + lz4 block. The
 * declared size is checked against `max` before anything is allocated.
 */
export function unlz4(data, max = MAX_FRAME_LEN) {
  if (data.length < 4) throw new WireError('Malformed', 'compressed payload: missing size prefix');
  const size = (data[0] | (data[1] << 8) | (data[2] << 16) | (data[3] << 24)) >>> 0;
  if (size > max) throw new WireError('FrameTooLarge', `compressed payload of ${size} bytes exceeds the limit of ${max} bytes`);
  if (size > (data.length - 4) * LZ4_MAX_RATIO + 64) {
    throw new WireError('Malformed', 'compressed payload: declared size impossible for its block');
  }
  checkLz4Block(data, 4, size);
  const out = new Uint8Array(size);
  let end;
  try {
    end = lz4.decompressBlock(data, out, 4, data.length - 4, 0);
  } catch {
    throw new WireError('Malformed', 'compressed payload: corrupt lz4 block');
  }
  if (end !== size) throw new WireError('Malformed', 'compressed payload: decodes to another size than it declares');
  return out;
}

const FRAME_NAMES = { [Kind.Call]: 'call', [Kind.Send]: 'send', [Kind.Reply]: 'reply' };
const FRAME_KINDS = { call: Kind.Call, send: Kind.Send, reply: Kind.Reply };

/**
 * Encodes a Call, Send or Reply frame (uncompressed): `payload` is the encoded payload,
 * `dataframe` whether it is a DataFrame.
 */
export function encodeMessage({ frame, request = 0, command = null, payload, dataframe = false }) {
  const kind = FRAME_KINDS[frame];
  if (!kind) throw new TypeError(`not a message frame: ${frame}`);
  const body = kind === Kind.Reply ? payload : encodeCallBody(command, payload);
  return encodeFrame(kind, dataframe ? Flags.DATAFRAME : 0, 0, request, body);
}

/**
 * Decodes one whole Call, Send or Reply frame into
 * { frame, request, command (null for a reply), dataframe, compressed, payload }
 * with the payload decompressed.
 */
export function decodeMessage(bytes, maxFrameLen = MAX_FRAME_LEN) {
  const f = decodeFrame(bytes, maxFrameLen);
  const frame = FRAME_NAMES[f.kind];
  if (!frame) throw new WireError('Malformed', `not a call, send or reply frame (kind 0x${f.kind.toString(16)})`);
  if (f.kind === Kind.Call && f.request === 0) throw new WireError('Malformed', 'a call with request id 0');
  if (f.kind === Kind.Send && f.request !== 0) throw new WireError('Malformed', 'a send with a request id');
  let command = null;
  let payload = f.body;
  if (f.kind !== Kind.Reply) ({ name: command, payload } = decodeCallBody(f.body));
  const compressed = !!(f.flags & Flags.COMPRESSED);
  if (compressed) payload = unlz4(payload, maxFrameLen);
  return { frame, request: f.request, command, dataframe: !!(f.flags & Flags.DATAFRAME), compressed, payload };
}
