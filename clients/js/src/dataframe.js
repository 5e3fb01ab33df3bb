// DataFrame codec (PROTOCOL.md §6): one MessagePack array whose integers keep their width.
//
// Why not @msgpack/msgpack here: it always writes the shortest integer form and does not say
// which marker it read, and a DataFrame must write (and report) i8/i16/.../u64 as such.
// The tests cross-check this codec's output with @msgpack/msgpack.
import { WireError } from './errors.js';
import { decodeUtf8, encodeUtf8 } from './frame.js';

export const DEFAULT_LIMITS = Object.freeze({ maxDepth: 32, maxElements: 1_048_576 });

/** A value with an explicit DataFrame type: integers of a given width, f32/f64. */
export class Typed {
  constructor(type, value) {
    this.type = type;
    this.value = value;
  }

  valueOf() {
    return this.value;
  }

  toJSON() {
    return typeof this.value === 'bigint' ? this.value.toString() : this.value;
  }
}

const RANGES = {
  i8: [-128n, 127n],
  i16: [-32768n, 32767n],
  i32: [-2147483648n, 2147483647n],
  i64: [-(2n ** 63n), 2n ** 63n - 1n],
  u8: [0n, 255n],
  u16: [0n, 65535n],
  u32: [0n, 4294967295n],
  u64: [0n, 2n ** 64n - 1n],
};

function int(type) {
  const [lo, hi] = RANGES[type];
  const wide = type === 'i64' || type === 'u64';
  return (v) => {
    let b;
    if (typeof v === 'bigint') b = v;
    else if (typeof v === 'number' && Number.isInteger(v)) b = BigInt(v);
    else if (typeof v === 'string' && /^-?\d+$/.test(v)) b = BigInt(v);
    else throw new RangeError(`${type}: not an integer: ${v}`);
    if (b < lo || b > hi) throw new RangeError(`${type}: ${v} out of range`);
    return new Typed(type, wide ? b : Number(b));
  };
}

/** Typed constructors. 64-bit ones hold a bigint (they accept a number or decimal string). */
export const I8 = int('i8');
export const I16 = int('i16');
export const I32 = int('i32');
export const I64 = int('i64');
export const U8 = int('u8');
export const U16 = int('u16');
export const U32 = int('u32');
export const U64 = int('u64');
export const F32 = (v) => new Typed('f32', Number(v));
export const F64 = (v) => new Typed('f64', Number(v));

class Writer {
  constructor() {
    this.buf = new Uint8Array(256);
    this.dv = new DataView(this.buf.buffer);
    this.len = 0;
  }

  reserve(n) {
    if (this.len + n <= this.buf.length) return;
    let cap = this.buf.length * 2;
    while (cap < this.len + n) cap *= 2;
    const b = new Uint8Array(cap);
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
    this.dv = new DataView(b.buffer);
  }

  u8(x) {
    this.reserve(1);
    this.buf[this.len++] = x;
  }

  marker(m, setter, size, x) {
    this.reserve(1 + size);
    this.buf[this.len] = m;
    this.dv[setter](this.len + 1, x, false);
    this.len += 1 + size;
  }

  bytes(b) {
    this.reserve(b.length);
    this.buf.set(b, this.len);
    this.len += b.length;
  }

  result() {
    return this.buf.slice(0, this.len);
  }
}

function writeLen(w, n, fix, fixMax, m8, m16, m32) {
  if (fix !== null && n <= fixMax) w.u8(fix | n);
  else if (m8 !== null && n <= 0xff) w.marker(m8, 'setUint8', 1, n);
  else if (n <= 0xffff) w.marker(m16, 'setUint16', 2, n);
  else if (n <= 0xffffffff) w.marker(m32, 'setUint32', 4, n);
  else throw new RangeError('DataFrame: length over 2^32-1');
}

function writeTyped(w, t) {
  const v = t.value;
  switch (t.type) {
    case 'i8': return w.marker(0xd0, 'setInt8', 1, v);
    case 'i16': return w.marker(0xd1, 'setInt16', 2, v);
    case 'i32': return w.marker(0xd2, 'setInt32', 4, v);
    case 'i64': return w.marker(0xd3, 'setBigInt64', 8, BigInt(v));
    case 'u8': return w.marker(0xcc, 'setUint8', 1, v);
    case 'u16': return w.marker(0xcd, 'setUint16', 2, v);
    case 'u32': return w.marker(0xce, 'setUint32', 4, v);
    case 'u64': return w.marker(0xcf, 'setBigUint64', 8, BigInt(v));
    case 'f32': return w.marker(0xca, 'setFloat32', 4, v);
    case 'f64': return w.marker(0xcb, 'setFloat64', 8, v);
    default: throw new TypeError(`DataFrame: unknown type ${t.type}`);
  }
}

function writeValue(w, v, depth) {
  if (depth > 1000) throw new RangeError('DataFrame: nesting too deep to encode');
  if (v === null || v === undefined) return w.u8(0xc0);
  if (v === true) return w.u8(0xc3);
  if (v === false) return w.u8(0xc2);
  if (v instanceof Typed) return writeTyped(w, v);
  switch (typeof v) {
    case 'number':
      // Plain integers are i64 (the server's typed reads take any integer that fits), others f64.
      if (Number.isInteger(v)) return w.marker(0xd3, 'setBigInt64', 8, BigInt(v));
      return w.marker(0xcb, 'setFloat64', 8, v);
    case 'bigint':
      if (v >= RANGES.i64[0] && v <= RANGES.i64[1]) return w.marker(0xd3, 'setBigInt64', 8, v);
      if (v >= 0n && v <= RANGES.u64[1]) return w.marker(0xcf, 'setBigUint64', 8, v);
      throw new RangeError(`DataFrame: ${v} does not fit 64 bits`);
    case 'string': {
      const b = encodeUtf8(v);
      writeLen(w, b.length, 0xa0, 31, 0xd9, 0xda, 0xdb);
      return w.bytes(b);
    }
    default:
  }
  if (v instanceof Uint8Array || v instanceof ArrayBuffer || ArrayBuffer.isView(v)) {
    const b = v instanceof Uint8Array ? v
      : v instanceof ArrayBuffer ? new Uint8Array(v)
        : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
    writeLen(w, b.length, null, 0, 0xc4, 0xc5, 0xc6);
    return w.bytes(b);
  }
  if (Array.isArray(v)) {
    writeLen(w, v.length, 0x90, 15, null, 0xdc, 0xdd);
    for (const x of v) writeValue(w, x, depth + 1);
    return undefined;
  }
  if (v instanceof Map) {
    writeLen(w, v.size, 0x80, 15, null, 0xde, 0xdf);
    for (const [k, x] of v) {
      writeValue(w, k, depth + 1);
      writeValue(w, x, depth + 1);
    }
    return undefined;
  }
  if (typeof v === 'object') {
    const entries = Object.entries(v);
    writeLen(w, entries.length, 0x80, 15, null, 0xde, 0xdf);
    for (const [k, x] of entries) {
      writeValue(w, k, depth + 1);
      writeValue(w, x, depth + 1);
    }
    return undefined;
  }
  throw new TypeError(`DataFrame: cannot encode a ${typeof v}`);
}

/**
 * Encodes values as one DataFrame. Values: Typed (I8(..), U64(..), F32(..)...), plain
 * integers (i64), other numbers (f64), bigint (i64, or u64 above i64's range), strings,
 * Uint8Array/ArrayBuffer (bytes), null/undefined (nil), booleans, arrays, Map and plain
 * objects (maps).
 */
export function encodeDataFrame(values) {
  if (!Array.isArray(values)) throw new TypeError('DataFrame: values must be an array');
  const w = new Writer();
  writeValue(w, values, 0);
  return w.result();
}

class Reader {
  constructor(b, limits, typed) {
    this.b = b;
    this.dv = new DataView(b.buffer, b.byteOffset, b.byteLength);
    this.pos = 0;
    this.limits = limits;
    this.typed = typed;
    this.elements = 0;
  }

  need(n) {
    if (this.pos + n > this.b.length) throw new WireError('Malformed', 'DataFrame: value runs past the end');
    const p = this.pos;
    this.pos += n;
    return p;
  }

  get(getter, n) {
    const p = this.need(n);
    return this.dv[getter](p, false);
  }

  count(n) {
    const total = this.elements + n;
    if (total > this.limits.maxElements) {
      throw new WireError('TooManyElements', `more than ${this.limits.maxElements} values`);
    }
    this.elements = total;
  }

  int(type, v) {
    if (this.typed) return new Typed(type, v);
    return v;
  }

  float(type, v) {
    return this.typed ? new Typed(type, v) : v;
  }

  str(n) {
    const p = this.need(n);
    return decodeUtf8(this.b.subarray(p, p + n), 'DataFrame string');
  }

  bin(n) {
    const p = this.need(n);
    return this.b.slice(p, p + n);
  }

  nested(depth) {
    if (depth >= this.limits.maxDepth) throw new WireError('TooDeep', `nesting deeper than ${this.limits.maxDepth} levels`);
    return depth + 1;
  }

  array(n, depth) {
    this.count(n);
    const out = [];
    for (let i = 0; i < n; i++) out.push(this.value(depth));
    return out;
  }

  map(n, depth) {
    this.count(n * 2);
    const entries = [];
    for (let i = 0; i < n; i++) {
      const k = this.value(depth);
      const x = this.value(depth);
      entries.push([k, x]);
    }
    if (!this.typed && entries.every(([k]) => typeof k === 'string')) {
      const o = {};
      for (const [k, x] of entries) {
        Object.defineProperty(o, k, { value: x, enumerable: true, writable: true, configurable: true });
      }
      return o;
    }
    return new Map(entries);
  }

  value(depth) {
    const m = this.b[this.need(1)];
    if (m <= 0x7f) return this.int('u8', m);
    if (m >= 0xe0) return this.int('i8', m - 256);
    if (m >= 0xa0 && m <= 0xbf) return this.str(m & 0x1f);
    if (m >= 0x90 && m <= 0x9f) return this.array(m & 0x0f, this.nested(depth));
    if (m >= 0x80 && m <= 0x8f) return this.map(m & 0x0f, this.nested(depth));
    switch (m) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xcc: return this.int('u8', this.get('getUint8', 1));
      case 0xcd: return this.int('u16', this.get('getUint16', 2));
      case 0xce: return this.int('u32', this.get('getUint32', 4));
      case 0xcf: return this.int('u64', this.get('getBigUint64', 8));
      case 0xd0: return this.int('i8', this.get('getInt8', 1));
      case 0xd1: return this.int('i16', this.get('getInt16', 2));
      case 0xd2: return this.int('i32', this.get('getInt32', 4));
      case 0xd3: return this.int('i64', this.get('getBigInt64', 8));
      case 0xca: return this.float('f32', this.get('getFloat32', 4));
      case 0xcb: return this.float('f64', this.get('getFloat64', 8));
      case 0xd9: return this.str(this.get('getUint8', 1));
      case 0xda: return this.str(this.get('getUint16', 2));
      case 0xdb: return this.str(this.get('getUint32', 4));
      case 0xc4: return this.bin(this.get('getUint8', 1));
      case 0xc5: return this.bin(this.get('getUint16', 2));
      case 0xc6: return this.bin(this.get('getUint32', 4));
      case 0xdc: { const n = this.get('getUint16', 2); return this.array(n, this.nested(depth)); }
      case 0xdd: { const n = this.get('getUint32', 4); return this.array(n, this.nested(depth)); }
      case 0xde: { const n = this.get('getUint16', 2); return this.map(n, this.nested(depth)); }
      case 0xdf: { const n = this.get('getUint32', 4); return this.map(n, this.nested(depth)); }
      default:
        throw new WireError('UnsupportedMarker', `unsupported MessagePack marker 0x${m.toString(16).padStart(2, '0')}`);
    }
  }
}

/**
 * Decodes a DataFrame into its list of values.
 * Default (plain) form: 8/16/32-bit integers and floats as numbers, 64-bit integers as
 * bigint, str as string, bin as Uint8Array, nil as null, arrays as arrays, maps as plain
 * objects when every key is a string (else Map).
 * With `{typed: true}`: every integer and float as a Typed (type + value, 64-bit as bigint)
 * and every map as a Map, so that encoding the result gives the same bytes back.
 */
export function decodeDataFrame(bytes, { typed = false, limits = DEFAULT_LIMITS } = {}) {
  const r = new Reader(bytes, limits, typed);
  const m = r.b[r.need(1)];
  let n;
  if (m >= 0x90 && m <= 0x9f) n = m & 0x0f;
  else if (m === 0xdc) n = r.get('getUint16', 2);
  else if (m === 0xdd) n = r.get('getUint32', 4);
  else throw new WireError('Malformed', 'DataFrame: does not start with an array');
  const values = r.array(n, 0);
  if (r.pos !== bytes.length) throw new WireError('Malformed', 'DataFrame: bytes after the value array');
  return values;
}
