// The data store from JavaScript (PROTOCOL.md §18): records with versions, queries whose
// rows come under this end's credit, and watches. Rows arrive as `db.rows` / `db.change`
// pushes carrying a packed run: [id u64 LE][length u32 LE][record encoding]...

import { ZsError, errorCodeName } from './errors.js';

const utf8 = new TextDecoder('utf-8', { fatal: true });

function protocol(message) {
  return ZsError.local('protocol', message);
}

/** A u64 as a Number when it is exact, else a BigInt. */
function id64(v) {
  return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
}

/**
 * A stored record's encoding as an object: `{id, version, expiresAt, json | bytes | frame}`
 * (`expiresAt` milliseconds since the epoch or null; `frame` the DataFrame's bytes).
 */
export function decodeRecord(id, raw) {
  if (raw.length < 18) throw protocol(`record ${id}: ${raw.length} bytes, shorter than its head`);
  if (raw[0] !== 1) throw protocol(`record ${id}: unknown format ${raw[0]}`);
  const view = new DataView(raw.buffer, raw.byteOffset, raw.byteLength);
  const version = id64(view.getBigUint64(2, true));
  const expires = id64(view.getBigUint64(10, true));
  const body = raw.subarray(18);
  const r = { id, version, expiresAt: expires === 0 ? null : expires };
  switch (raw[1]) {
    case 1: r.json = JSON.parse(utf8.decode(body)); break;
    case 2: r.bytes = body; break;
    case 3: r.frame = body; break;
    default: throw protocol(`record ${id}: unknown kind ${raw[1]}`);
  }
  return r;
}

/** The records of a packed run of rows, decoded. */
export function unpackRows(packed) {
  const bytes = packed ?? new Uint8Array(0);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out = [];
  let at = 0;
  while (at < bytes.length) {
    if (at + 12 > bytes.length) throw protocol(`a row cut short: ${bytes.length - at} bytes of its 12-byte head`);
    const id = id64(view.getBigUint64(at, true));
    const len = view.getUint32(at + 8, true);
    if (at + 12 + len > bytes.length) throw protocol(`row ${id} cut short`);
    out.push(decodeRecord(id, bytes.subarray(at + 12, at + 12 + len)));
    at += 12 + len;
  }
  return out;
}

let nextId = 1;

/** Pushes for one query or watch id, read in order as an async iterator. */
class Feed {
  constructor(conn, command, id) {
    this.queue = [];
    this.wake = null;
    this.closed = null;
    this.off = conn.on(command, (values) => {
      if (!Array.isArray(values) || values[0] !== id) return;
      this.queue.push(values);
      this.notify();
    });
    conn.onClose((e) => {
      this.closed = e ?? protocol('the connection was closed');
      this.notify();
    });
  }

  notify() {
    if (this.wake) {
      const w = this.wake;
      this.wake = null;
      w();
    }
  }

  async next() {
    while (this.queue.length === 0) {
      if (this.closed) throw this.closed;
      await new Promise((r) => { this.wake = r; });
    }
    return this.queue.shift();
  }
}

/**
 * A running query: `for await (const record of rows)`. `token` starts it again after the
 * last batch read whole (`conn.dbQuery(db, '', {resume: token})`).
 */
export class Rows {
  constructor(conn, db, where, opts = {}) {
    this.conn = conn;
    this.id = `jsq${nextId++}`;
    this.window = opts.window ?? 1000;
    this.windowBytes = opts.windowBytes ?? 4 << 20;
    this.used = [0, 0];
    this.token = '';
    this.examined = 0;
    this.done = false;
    this.feed = new Feed(conn, 'db.rows', this.id);
    const req = { query: this.id, credit_rows: this.window, credit_bytes: this.windowBytes };
    if (opts.resume) req.resume = opts.resume;
    else Object.assign(req, { db, where, params: opts.params ?? {}, reverse: !!opts.reverse, limit: opts.limit ?? null });
    this.started = conn.callJson('db.query', req);
    this.started.catch(() => {});
  }

  /** The next batch of records, or null after the last. */
  async nextBatch() {
    if (this.done) return null;
    await this.started;
    const v = await this.feed.next();
    const [, kind, token, examined, code, message, packed] = v;
    this.examined = Number(examined);
    if (kind === 'error') {
      this.finish();
      this.token = token;
      const e = new ZsError('error', Number(code), errorCodeName(Number(code)), message);
      e.token = token;
      throw e;
    }
    const rows = unpackRows(packed);
    this.token = token;
    if (kind === 'end') {
      this.finish();
      return rows;
    }
    this.used[0] += rows.length;
    this.used[1] += packed.length;
    if (this.used[0] * 2 >= this.window || this.used[1] * 2 >= this.windowBytes) {
      const [r, b] = this.used;
      this.used = [0, 0];
      try {
        await this.conn.callJson('db.credit', { query: this.id, rows: r, bytes: b });
      } catch (e) {
        if (e.codeName !== 'NotFound') throw e; // ended meanwhile: its last push is coming
      }
    }
    return rows;
  }

  finish() {
    this.done = true;
    this.feed.off();
  }

  /** Ends the query on the server (rows already sent may still be read). */
  async stop() {
    if (!this.done) await this.conn.callJson('db.stop', { query: this.id });
  }

  async *[Symbol.asyncIterator]() {
    try {
      for (let batch = await this.nextBatch(); batch; batch = await this.nextBatch()) yield* batch;
    } finally {
      if (!this.done) {
        this.finish();
        this.conn.callJson('db.stop', { query: this.id }).catch(() => {});
      }
    }
  }

  /** Every row left. */
  async collect() {
    const out = [];
    for await (const r of this) out.push(r);
    return out;
  }
}

/**
 * A running watch: `for await (const {kind, record} of watch)`, kind one of 'snapshot',
 * 'synced' (no record), 'insert', 'update', 'delete'; an 'overflow' ends it with an error.
 */
export class Watch {
  constructor(conn, db, where, opts = {}) {
    this.conn = conn;
    this.id = `jsw${nextId++}`;
    this.feed = new Feed(conn, 'db.change', this.id);
    this.stopped = false;
    const req = { watch: this.id, db, where, params: opts.params ?? {}, snapshot: !!opts.snapshot };
    this.started = conn.callJson('db.watch', req);
    this.started.catch(() => {});
  }

  async *[Symbol.asyncIterator]() {
    await this.started;
    try {
      while (!this.stopped) {
        const [, kind, , packed, extra, message] = await this.feed.next();
        if (kind === 'overflow') throw protocol(`the watch fell behind by ${extra} changes: watch again`);
        if (kind === 'error') throw new ZsError('error', Number(extra), errorCodeName(Number(extra)), message);
        if (kind === 'synced') {
          yield { kind };
          continue;
        }
        for (const record of unpackRows(packed)) yield { kind, record };
      }
    } finally {
      this.stop().catch(() => {});
    }
  }

  /** Ends the watch. */
  async stop() {
    if (this.stopped) return;
    this.stopped = true;
    this.feed.off();
    await this.conn.callJson('db.unwatch', { watch: this.id });
  }
}
