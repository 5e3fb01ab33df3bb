// The connection: opening (Noise or plaintext), calls, pushes, pings, GoAway.
import { Rows, Watch } from './db.js';
import { ZsError, WireError } from './errors.js';
import {
  Kind, Flags, MAX_FRAME_LEN, FrameReader, encodeFrame, encodeCallBody, decodeCallBody,
  decodeCodeMessage, encodeCodeMessage, encodeUtf8, decodeUtf8, unlz4, decodeFrame, HEADER_LEN,
} from './frame.js';
import { encodeDataFrame, decodeDataFrame } from './dataframe.js';
import {
  XXInitiator, NoiseRecords, preamble, cipherCode, generateKeyPair, keyPairFromSecret,
  fingerprint as keyFingerprint, REKEY_AFTER_BYTES, REKEY_INTERVAL_MS,
} from './noise.js';
import { openTransport, withTimeout } from './transport.js';

let processKey = null;
/** The anonymous Noise key of this process (made on first use). */
export function anonymousKeyPair() {
  if (!processKey) processKey = generateKeyPair();
  return processKey;
}

/** Reads length-prefixed handshake messages (u16 BE) from a transport. */
class HandshakeReader {
  constructor(transport) {
    this.buf = new Uint8Array(0);
    this.waiter = null;
    this.error = null;
    transport.onData((b) => {
      if (this.buf.length + b.length > 2 + 65535 + 65536) {
        this.error = ZsError.local('handshake', 'the server sent more than a handshake message');
        this.wake();
        return;
      }
      const n = new Uint8Array(this.buf.length + b.length);
      n.set(this.buf);
      n.set(b, this.buf.length);
      this.buf = n;
      this.wake();
    });
    transport.onClose((reason) => {
      this.error = reason ?? ZsError.local('closed', 'the server closed the connection during the handshake');
      this.wake();
    });
  }

  wake() {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }

  async until(pred) {
    for (;;) {
      const r = pred(this.buf);
      if (r !== undefined) return r;
      if (this.error) throw this.error;
      await new Promise((resolve) => { this.waiter = resolve; });
    }
  }

  /** The next handshake message; a plaintext GoAway (§9.5) is turned into its error. */
  async message() {
    const first = await this.until((b) => (b.length >= 1 ? b[0] : undefined));
    if (first === 0x5a) {
      const frame = await this.until((b) => {
        if (b.length < HEADER_LEN) return undefined;
        const len = new DataView(b.buffer, b.byteOffset).getUint32(12, true);
        if (len > 65536) throw ZsError.local('handshake', 'the server answered with a plaintext frame too large to be a GoAway');
        return b.length >= HEADER_LEN + len ? b.subarray(0, HEADER_LEN + len) : undefined;
      });
      const f = decodeFrame(frame);
      if (f.kind === Kind.GoAway) {
        const { code, message } = decodeCodeMessage(f.body, 'GoAway');
        throw ZsError.fromGoAway(code, message);
      }
      throw ZsError.local('handshake', 'the server speaks plaintext (connect with plaintext: true)');
    }
    if (first === 0x15 || first === 0x16) throw ZsError.local('handshake', 'the server speaks TLS');
    const msg = await this.until((b) => {
      if (b.length < 2) return undefined;
      const n = (b[0] << 8) | b[1];
      return b.length >= 2 + n ? b.slice(2, 2 + n) : undefined;
    });
    this.buf = this.buf.slice(2 + msg.length);
    return msg;
  }
}

function lengthPrefixed(msg) {
  const out = new Uint8Array(2 + msg.length);
  out[0] = msg.length >> 8;
  out[1] = msg.length & 0xff;
  out.set(msg, 2);
  return out;
}

function concat(a, b) {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

async function noiseHandshake(transport, opts) {
  const cipher = cipherCode(opts.cipher);
  const pre = preamble(cipher);
  const s = opts.staticKey ? keyPairFromSecret(opts.staticKey) : anonymousKeyPair();
  const hs = new XXInitiator({ cipher, prologue: pre, staticKeyPair: s });
  const reader = new HandshakeReader(transport);
  transport.write(concat(pre, lengthPrefixed(hs.writeMessage1())));
  const msg2 = await reader.message();
  let remote;
  try {
    remote = hs.readMessage2(msg2).remoteStatic;
  } catch (e) {
    throw ZsError.local('handshake', `Noise handshake failed: ${e.message}`);
  }
  const fp = keyFingerprint(remote);
  if (opts.fingerprint !== undefined && opts.fingerprint !== null) {
    if (fp !== opts.fingerprint) {
      throw ZsError.local('handshake', `the server's key ${fp} is not the pinned ${opts.fingerprint}`);
    }
  } else if (!opts.trustAnyServerKey) {
    throw ZsError.local('handshake', `no fingerprint to check the server's key ${fp} against (pass fingerprint)`);
  }
  transport.write(lengthPrefixed(hs.writeMessage3()));
  const [send, recv, h] = hs.split();
  const records = new NoiseRecords(send, recv, {
    rekeyAfterBytes: opts.rekeyAfterBytes ?? REKEY_AFTER_BYTES,
    rekeyIntervalMs: opts.rekeyIntervalMs ?? REKEY_INTERVAL_MS,
  });
  transport.holdData(reader.buf);
  return { records, serverFingerprint: fp, binding: h };
}

/**
 * Connects to a zserver. `url`: ws://host:port/path, wss://..., or tcp://host:port (Node).
 * Options:
 *   fingerprint       the server's Noise key (43 chars base64url) to pin (required for Noise
 *                     unless trustAnyServerKey)
 *   plaintext         speak plaintext frames (servers run with --plaintext)
 *   cipher            'aes-256-gcm' (default) or 'chacha20-poly1305'
 *   staticKey         32-byte X25519 secret key of this client (default: one per process)
 *   timeoutMs         connect + handshake timeout (default 10000)
 *   callTimeoutMs     default per-call timeout (default 30000)
 *   maxInFlight       calls in flight at once; more wait (default 1024)
 *   maxFrameLen       largest frame accepted or sent (default 16 MiB)
 *   keepAliveMs       send a Ping after this long without sending (default 20000; 0 = never)
 */
export async function connect(url, opts = {}) {
  const timeoutMs = opts.timeoutMs ?? 10000;
  const transport = await openTransport(url, { timeoutMs, wsOptions: opts.wsOptions });
  try {
    let secure = null;
    if (!opts.plaintext) {
      secure = await withTimeout(noiseHandshake(transport, opts), timeoutMs, 'the Noise handshake');
    }
    return new Connection(transport, secure, opts);
  } catch (e) {
    transport.destroy();
    throw e;
  }
}

function lower(name) {
  return name.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

export class Connection {
  constructor(transport, secure, opts) {
    this.transport = transport;
    this.records = secure?.records ?? null;
    this.serverFingerprint = secure?.serverFingerprint ?? null;
    this.channelBinding = secure?.binding ?? null;
    this.maxFrameLen = opts.maxFrameLen ?? MAX_FRAME_LEN;
    this.callTimeoutMs = opts.callTimeoutMs ?? 30000;
    this.maxInFlight = opts.maxInFlight ?? 1024;
    this.reader = new FrameReader(this.maxFrameLen);
    this.pending = new Map();
    this.slotWaiters = [];
    this.nextId = 1;
    this.handlers = new Map();
    this.closeHandlers = [];
    this.closedError = null;
    this.lastSent = Date.now();
    /** Counters: frames received, of which compressed; records received and rekeys (Noise). */
    this.stats = { framesIn: 0, compressedIn: 0, framesOut: 0 };
    this.closed = new Promise((resolve) => { this.resolveClosed = resolve; });

    transport.onData((b) => this.receive(b));
    transport.onClose((reason) => this.fail(reason ?? ZsError.local('closed', 'the connection closed')));

    const ka = opts.keepAliveMs ?? 20000;
    if (ka > 0) {
      this.keepAlive = setInterval(() => {
        if (Date.now() - this.lastSent >= ka) this.writeFrame(Kind.Ping, 0, 0, new Uint8Array(0));
      }, Math.max(50, Math.floor(ka / 2)));
      this.keepAlive.unref?.();
    }
  }

  // ---- sending ----

  writeRaw(bytes) {
    if (this.closedError) return;
    this.lastSent = Date.now();
    this.transport.write(this.records ? this.records.seal(bytes) : bytes);
  }

  writeFrame(kind, flags, request, body) {
    this.stats.framesOut += 1;
    this.writeRaw(encodeFrame(kind, flags, 0, request, body));
  }

  allocId() {
    for (;;) {
      const id = this.nextId;
      this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
      if (!this.pending.has(id)) return id;
    }
  }

  async slot() {
    while (this.pending.size >= this.maxInFlight && !this.closedError) {
      await new Promise((r) => this.slotWaiters.push(r));
    }
  }

  releaseSlot() {
    const w = this.slotWaiters.shift();
    w?.();
  }

  async call(command, flags, payload, { timeoutMs, typed } = {}) {
    const body = encodeCallBody(command, payload);
    if (body.length > this.maxFrameLen) {
      throw ZsError.local('tooLarge', `call of ${body.length} bytes exceeds the frame limit of ${this.maxFrameLen}`);
    }
    await this.slot();
    await this.transport.waitWritable();
    if (this.closedError) throw this.closedError;
    const id = this.allocId();
    const ms = timeoutMs ?? this.callTimeoutMs;
    return new Promise((resolve, reject) => {
      const entry = { resolve, reject, typed, command, timer: null };
      if (ms > 0) {
        entry.timer = setTimeout(() => {
          this.pending.delete(id);
          this.releaseSlot();
          reject(ZsError.local('timeout', `${command}: no reply within ${ms} ms`));
        }, ms);
      }
      this.pending.set(id, entry);
      this.writeFrame(Kind.Call, flags, id, body);
    });
  }

  /** A console call: text in, text out. */
  async callConsole(command, text = '', opts) {
    const r = await this.call(command, Flags.NONE, encodeUtf8(String(text)), opts);
    return r;
  }

  /**
   * A stream call: a DataFrame in (an array of values), the reply's values out (or its text
   * if the reply is text). `opts.typed`: decode integers and floats as Typed (see dataframe.js).
   */
  async callStream(command, values = [], opts) {
    return this.call(command, Flags.DATAFRAME, encodeDataFrame(values), opts);
  }

  /** One-way command: `payload` a string (console) or an array (DataFrame). */
  async send(command, payload = '') {
    const df = Array.isArray(payload);
    const body = encodeCallBody(command, df ? encodeDataFrame(payload) : encodeUtf8(String(payload)));
    if (body.length > this.maxFrameLen) throw ZsError.local('tooLarge', `send of ${body.length} bytes exceeds the frame limit`);
    await this.transport.waitWritable();
    if (this.closedError) throw this.closedError;
    this.writeFrame(Kind.Send, df ? Flags.DATAFRAME : Flags.NONE, 0, body);
  }

  /** Round trip: resolves with the milliseconds a Ping took. */
  async ping({ timeoutMs } = {}) {
    if (this.closedError) throw this.closedError;
    const id = this.allocId();
    const start = Date.now();
    const ms = timeoutMs ?? this.callTimeoutMs;
    await new Promise((resolve, reject) => {
      const entry = { resolve, reject, ping: true, timer: null };
      entry.timer = setTimeout(() => {
        this.pending.delete(id);
        reject(ZsError.local('timeout', `ping: no pong within ${ms} ms`));
      }, ms);
      this.pending.set(id, entry);
      this.writeFrame(Kind.Ping, 0, id, new Uint8Array(0));
    });
    return Date.now() - start;
  }

  /**
   * Handles pushes (one-way commands the server sends) named `command` (case-insensitive;
   * '*' for all). `handler(payload, {command, dataframe})`: payload is the text, or the
   * DataFrame's values. Returns a function that removes the handler.
   */
  on(command, handler) {
    const key = command === '*' ? '*' : lower(command);
    if (!this.handlers.has(key)) this.handlers.set(key, new Set());
    this.handlers.get(key).add(handler);
    return () => this.handlers.get(key)?.delete(handler);
  }

  /** `handler(error)` runs once when the connection ends (error null on a close by us). */
  onClose(handler) {
    if (this.closedError) queueMicrotask(() => handler(this.closedError));
    else this.closeHandlers.push(handler);
  }

  /** Closes the connection (GoAway Normal first); pending calls fail with kind 'closed'. */
  close() {
    if (this.closedError) return;
    this.writeFrame(Kind.GoAway, 0, 0, encodeCodeMessage(0, 'client closing'));
    this.fail(ZsError.local('closed', 'the connection was closed by this client'), true);
    this.transport.close();
  }

  // ---- receiving ----

  receive(bytes) {
    if (this.closedError) return;
    let frames;
    try {
      const plain = this.records ? this.records.open(bytes) : bytes;
      frames = this.reader.push(plain);
    } catch (e) {
      if (e instanceof WireError) {
        const code = e.kind === 'FrameTooLarge' ? 2 : 1;
        this.writeFrame(Kind.GoAway, 0, 0, encodeCodeMessage(code, e.message));
        this.fail(ZsError.local('protocol', `the server sent an invalid frame: ${e.message}`));
      } else {
        this.fail(ZsError.local('protocol', `the secure channel failed: ${e.message}`));
      }
      this.transport.destroy();
      return;
    }
    for (const f of frames) {
      this.stats.framesIn += 1;
      if (f.flags & Flags.COMPRESSED) this.stats.compressedIn += 1;
      try {
        this.dispatch(f);
      } catch (e) {
        const err = e instanceof WireError ? e : new WireError('Malformed', e.message);
        this.writeFrame(Kind.GoAway, 0, 0, encodeCodeMessage(1, err.message));
        this.fail(ZsError.local('protocol', `the server sent an invalid frame: ${err.message}`));
        this.transport.destroy();
        return;
      }
    }
  }

  payloadOf(f, payload) {
    const p = f.flags & Flags.COMPRESSED ? unlz4(payload, this.maxFrameLen) : payload;
    return f.flags & Flags.DATAFRAME ? { dataframe: true, bytes: p } : { dataframe: false, bytes: p };
  }

  dispatch(f) {
    switch (f.kind) {
      case Kind.Reply: {
        const entry = this.take(f.request);
        if (!entry || entry.ping) return;
        try {
          const p = this.payloadOf(f, f.body);
          entry.resolve(p.dataframe ? decodeDataFrame(p.bytes, { typed: !!entry.typed }) : decodeUtf8(p.bytes, 'reply'));
        } catch (e) {
          entry.reject(ZsError.local('protocol', `${entry.command}: undecodable reply: ${e.message}`));
        }
        return;
      }
      case Kind.Error: {
        const entry = this.take(f.request);
        const { code, message } = decodeCodeMessage(f.body, 'Error');
        if (entry) entry.reject(ZsError.fromErrorFrame(code, message));
        return;
      }
      case Kind.Ping:
        this.writeFrame(Kind.Pong, 0, f.request, new Uint8Array(0));
        return;
      case Kind.Pong: {
        const entry = this.pending.get(f.request);
        if (entry?.ping) {
          this.take(f.request);
          entry.resolve();
        }
        return;
      }
      case Kind.GoAway: {
        const { code, message } = decodeCodeMessage(f.body, 'GoAway');
        this.fail(ZsError.fromGoAway(code, message));
        this.transport.close();
        return;
      }
      case Kind.Send: {
        if (f.request !== 0) throw new WireError('Malformed', 'a send with a request id');
        const { name, payload } = decodeCallBody(f.body);
        this.push(f, name, payload);
        return;
      }
      case Kind.Call: {
        if (f.request === 0) throw new WireError('Malformed', 'a call with request id 0');
        const { name } = decodeCallBody(f.body);
        this.writeFrame(Kind.Error, 0, f.request, encodeCodeMessage(1, `unknown command: ${name}`));
        return;
      }
      default:
        // Session, stream and multiplexer frames: this client opens none of them.
        if (f.kind === Kind.StreamOpen) {
          this.writeFrame(Kind.StreamResult, 0, f.request, encodeCodeMessage(1, 'this client takes no streams'));
        }
    }
  }

  push(f, name, payload) {
    let value;
    let dataframe;
    try {
      const p = this.payloadOf(f, payload);
      dataframe = p.dataframe;
      value = dataframe ? decodeDataFrame(p.bytes) : decodeUtf8(p.bytes, 'push');
    } catch {
      return; // an undecodable push is dropped (a Send is never answered)
    }
    const info = { command: name, dataframe };
    const run = (set) => {
      for (const h of set ?? []) {
        try {
          h(value, info);
        } catch (e) {
          queueMicrotask(() => { throw e; });
        }
      }
    };
    run(this.handlers.get(lower(name)));
    run(this.handlers.get('*'));
  }

  take(id) {
    const entry = this.pending.get(id);
    if (!entry) return null;
    this.pending.delete(id);
    clearTimeout(entry.timer);
    if (!entry.ping) this.releaseSlot();
    return entry;
  }

  /** Record counters of the secure channel (null in plaintext). */
  get recordStats() {
    if (!this.records) return null;
    const r = this.records;
    return { recordsIn: r.recordsIn, recordsOut: r.recordsOut, rekeysIn: r.rekeysIn, rekeysOut: r.rekeysOut };
  }

  fail(error, byUs = false) {
    if (this.closedError) return;
    this.closedError = error;
    clearInterval(this.keepAlive);
    for (const [, entry] of this.pending) {
      clearTimeout(entry.timer);
      entry.reject(error);
    }
    this.pending.clear();
    for (const w of this.slotWaiters.splice(0)) w();
    for (const h of this.closeHandlers.splice(0)) {
      try {
        h(byUs ? null : error);
      } catch (e) {
        queueMicrotask(() => { throw e; });
      }
    }
    this.resolveClosed(byUs ? null : error);
  }

  // ---- services (PROTOCOL.md §12, §14): console commands with JSON text ----

  async callJson(command, request = {}, opts) {
    const text = await this.callConsole(command, JSON.stringify(request), opts);
    return text === '' ? null : JSON.parse(text);
  }

  /** `login({user, password})` or `login({token})`; `issueToken: true` asks for a token. */
  login({ user, password, token, issueToken, ...rest } = {}) {
    const req = token !== undefined ? { token } : { user, password };
    if (issueToken) req.issue_token = true;
    return this.callJson('account.login', { ...req, ...rest });
  }

  logout() {
    return this.callJson('account.logout', {});
  }

  whoami() {
    return this.callJson('account.whoami', {});
  }

  subscribe(topic, { presence } = {}) {
    return this.callJson('push.subscribe', presence === undefined ? { topic } : { topic, presence });
  }

  unsubscribe(topic) {
    return this.callJson('push.unsubscribe', { topic });
  }

  publish(topic, command, text) {
    return this.callJson('push.publish', { topic, command, text: String(text) });
  }

  /** `pushSend({user, command, text, id?, ttl?, store?})` (role admin or push). */
  pushSend({ user, command, text, ...rest }) {
    return this.callJson('push.send', { user, command, text: String(text), ...rest });
  }

  pushOnline(users) {
    return this.callJson('push.online', { users });
  }

  inboxList({ after, limit } = {}) {
    const req = {};
    if (after !== undefined) req.after = after;
    if (limit !== undefined) req.limit = limit;
    return this.callJson('inbox.list', req);
  }

  inboxAck(seqs) {
    return this.callJson('inbox.ack', { seqs });
  }

  // ---- the data store (PROTOCOL.md §18): JSON documents here; rows under credit ----

  /** `dbCreate(db, {readers?, writers?, indexes?})`. */
  dbCreate(db, { readers = [], writers = [], indexes = [] } = {}) {
    return this.callJson('db.create', { db, readers, writers, indexes });
  }

  dbDrop(db) {
    return this.callJson('db.drop', { db });
  }

  dbList() {
    return this.callJson('db.list', {});
  }

  /** Inserts a JSON document (`ttl` seconds); `{id, version}` once it is on disk. */
  dbInsert(db, json, { ttl } = {}) {
    return this.callJson('db.insert', ttl === undefined ? { db, json } : { db, json, ttl });
  }

  /** `{id, version, json | bytes | frame}`; rejects NotFound when there is none. */
  dbGet(db, id) {
    return this.callJson('db.get', { db, id });
  }

  /** Replaces record `id`'s document, if at `version` when given (else VersionMismatch). */
  dbUpdate(db, id, json, { version } = {}) {
    return this.callJson('db.update', version === undefined ? { db, id, json } : { db, id, version, json });
  }

  dbDelete(db, id, { version } = {}) {
    return this.callJson('db.delete', version === undefined ? { db, id } : { db, id, version });
  }

  /** How many records pass `where` (counted on the server). */
  async dbCount(db, where = '', params = {}) {
    return (await this.callJson('db.query', { db, where, params, count: true })).count;
  }

  /**
   * Runs a query: `for await (const r of c.dbQuery(db, 'age > $a', {params: {a: 3}}))`;
   * options `reverse`, `limit`, `window` (rows granted ahead), `resume` (a token).
   */
  dbQuery(db, where = '', opts = {}) {
    return new Rows(this, db, where, opts);
  }

  /** Watches records that pass `where` (`snapshot: true` for those there are first). */
  dbWatch(db, where = '', opts = {}) {
    return new Watch(this, db, where, opts);
  }
}
