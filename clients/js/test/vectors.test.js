// spec/vectors.json: every vector encodes to its bytes and decodes back; bad ones throw.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  encodeDataFrame, decodeDataFrame, Typed, encodeFrame, decodeFrame, decodeHeader,
  encodeMessage, decodeMessage, WireError,
} from '../src/index.js';
import { REPO_ROOT } from './helpers.js';

const V = JSON.parse(readFileSync(join(REPO_ROOT, 'spec', 'vectors.json'), 'utf8'));

const hex = (h) => Uint8Array.from(Buffer.from(h, 'hex'));
const toHex = (b) => Buffer.from(b).toString('hex');
const utf8 = new TextEncoder();

/** A TYPED vector value as the value decodeDataFrame(.., {typed: true}) gives. */
function fromTyped(t) {
  switch (t.type) {
    case 'bool': return t.value;
    case 'nil': return null;
    case 'str': return t.value;
    case 'bytes': return hex(t.value);
    case 'i64': case 'u64': return new Typed(t.type, BigInt(t.value));
    case 'i8': case 'i16': case 'i32': case 'u8': case 'u16': case 'u32':
    case 'f32': case 'f64':
      return new Typed(t.type, Number(t.value));
    case 'array': return t.value.map(fromTyped);
    case 'map': return new Map(t.value.map(([k, v]) => [fromTyped(k), fromTyped(v)]));
    default: throw new Error(`unknown vector type ${t.type}`);
  }
}

test('vectors file version 1 with every section', () => {
  assert.equal(V.version, 1);
  for (const k of ['frames', 'dataframes', 'dataframe_reads', 'calls', 'bad']) assert.ok(V[k].length > 0, k);
});

for (const v of V.frames) {
  test(`frame: ${v.name}`, () => {
    const bytes = encodeFrame(v.kind, v.flags, v.channel, v.request, hex(v.body));
    assert.equal(toHex(bytes), v.bytes);
    const f = decodeFrame(hex(v.bytes));
    assert.deepEqual({ kind: f.kind, flags: f.flags, channel: f.channel, request: f.request, body: toHex(f.body) },
      { kind: v.kind, flags: v.flags, channel: v.channel, request: v.request, body: v.body });
  });
}

for (const v of V.dataframes) {
  test(`dataframe: ${v.name}`, () => {
    const values = v.values.map(fromTyped);
    assert.equal(toHex(encodeDataFrame(values)), v.bytes);
    assert.deepEqual(decodeDataFrame(hex(v.bytes), { typed: true }), values);
  });
}

for (const v of V.dataframe_reads) {
  test(`dataframe read: ${v.name}`, () => {
    assert.deepEqual(decodeDataFrame(hex(v.bytes), { typed: true }), v.values.map(fromTyped));
  });
}

for (const v of V.calls) {
  test(`${v.frame}: ${v.name}`, () => {
    const dataframe = v.values !== null;
    const payload = dataframe ? encodeDataFrame(v.values.map(fromTyped)) : utf8.encode(v.text);
    if (!v.compressed) {
      const bytes = encodeMessage({ frame: v.frame, request: v.request, command: v.command, payload, dataframe });
      assert.equal(toHex(bytes), v.bytes);
    }
    const m = decodeMessage(hex(v.bytes));
    assert.equal(m.frame, v.frame);
    assert.equal(m.request, v.request);
    assert.equal(m.command, v.command);
    assert.equal(m.compressed, v.compressed);
    assert.equal(m.dataframe, dataframe);
    if (dataframe) assert.deepEqual(decodeDataFrame(m.payload, { typed: true }), v.values.map(fromTyped));
    else assert.equal(new TextDecoder().decode(m.payload), v.text);
  });
}

for (const v of V.bad) {
  test(`bad ${v.what}: ${v.name}`, () => {
    const bytes = hex(v.bytes);
    const run = {
      header: () => decodeHeader(bytes),
      call: () => decodeMessage(bytes),
      dataframe: () => decodeDataFrame(bytes),
    }[v.what];
    assert.ok(run, `unknown 'what' ${v.what}`);
    assert.throws(run, (e) => {
      assert.ok(e instanceof WireError, `not a WireError: ${e}`);
      assert.equal(e.kind, v.error);
      return true;
    });
  });
}
