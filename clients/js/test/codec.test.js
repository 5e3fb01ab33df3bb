// Codec unit tests: DataFrame forms and limits, frame reader, lz4 payloads, Noise records.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decode as msgpackDecode } from '@msgpack/msgpack';
import {
  encodeDataFrame, decodeDataFrame, I8, I16, I32, I64, U8, U16, U32, U64, F32, F64, Typed,
  FrameReader, encodeFrame, unlz4, WireError, decodeCallBody, encodeCallBody,
} from '../src/index.js';
import { CipherState, NoiseRecords, XXInitiator, fingerprint, generateKeyPair, CIPHER_AESGCM, CIPHER_CHACHAPOLY } from '../src/noise.js';

const hex = (b) => Buffer.from(b).toString('hex');

test('integers keep their width; plain numbers are i64 and f64', () => {
  assert.equal(hex(encodeDataFrame([I8(1), I16(1), I32(1), I64(1), U8(1), U16(1), U32(1), U64(1)])),
    '98d001d10001d200000001d30000000000000001cc01cd0001ce00000001cf0000000000000001');
  assert.equal(hex(encodeDataFrame([5, 0.5, -1n, 2n ** 64n - 1n])),
    '94d30000000000000005cb3fe0000000000000d3ffffffffffffffffcfffffffffffffffff');
  assert.equal(hex(encodeDataFrame([F32(1.5), F64(1.5)])), '92ca3fc00000cb3ff8000000000000');
  assert.throws(() => I8(128), RangeError);
  assert.throws(() => U64(-1), RangeError);
  assert.throws(() => encodeDataFrame([2n ** 64n]), RangeError);
  assert.throws(() => encodeDataFrame([() => 1]), TypeError);
});

test('strings, bytes, arrays and maps choose the MessagePack length forms', () => {
  const values = ['a'.repeat(31), 'b'.repeat(32), 'c'.repeat(256), 'd'.repeat(70000),
    new Uint8Array(255), new Uint8Array(256), new Uint8Array(70000),
    Array(15).fill(null), Array(16).fill(null), Array(70000).fill(true),
    { a: 1 }, new Map(Array.from({ length: 16 }, (_, i) => [I32(i), 'v']))];
  const bytes = encodeDataFrame(values);
  const back = decodeDataFrame(bytes, { typed: true });
  assert.equal(back.length, values.length);
  assert.equal(back[3], 'd'.repeat(70000));
  assert.equal(back[6].length, 70000);
  assert.equal(back[9].length, 70000);
  assert.deepEqual(back[10], new Map([['a', I64(1)]]));
  // an independent MessagePack reader agrees
  const other = msgpackDecode(bytes, { useBigInt64: true });
  assert.equal(other[0], 'a'.repeat(31));
  assert.equal(other[8].length, 16);
  assert.deepEqual(other[10], { a: 1n });
  assert.equal(other[11].size ?? Object.keys(other[11]).length, 16);
});

test('plain decoding: numbers, bigint for 64 bits, objects for string-keyed maps', () => {
  const b = encodeDataFrame([I32(-3), U64(7), F32(0.5), { x: [U8(1)] }, new Map([[I8(1), 'one']])]);
  const v = decodeDataFrame(b);
  assert.deepEqual(v.slice(0, 4), [-3, 7n, 0.5, { x: [1] }]);
  assert.ok(v[4] instanceof Map);
  assert.equal(v[4].get(1), 'one');
  const proto = decodeDataFrame(encodeDataFrame([{ ['__proto__']: 'x' }]))[0];
  assert.equal(Object.getPrototypeOf(proto), Object.prototype);
});

test('decoding limits: depth, element count, lengths past the end', () => {
  let nested = [];
  for (let i = 0; i < 31; i++) nested = [nested];
  // the DataFrame's own array, then 32 levels inside it: allowed (max_depth 32); 33: refused
  decodeDataFrame(encodeDataFrame([nested]));
  assert.throws(() => decodeDataFrame(encodeDataFrame([[nested]])), (e) => e.kind === 'TooDeep');
  assert.throws(() => decodeDataFrame(Uint8Array.of(0xdd, 0xff, 0xff, 0xff, 0xff)), (e) => e.kind === 'TooManyElements');
  assert.throws(() => decodeDataFrame(Uint8Array.of(0x91, 0xc6, 0xff, 0xff, 0xff, 0x00)), (e) => e.kind === 'Malformed');
  assert.throws(() => decodeDataFrame(encodeDataFrame([1, 2, 3]), { limits: { maxDepth: 32, maxElements: 2 } }),
    (e) => e.kind === 'TooManyElements');
  assert.throws(() => decodeDataFrame(new Uint8Array(0)), (e) => e.kind === 'Malformed');
});

test('frame reader: any split of the stream gives the same frames', () => {
  const frames = [encodeFrame(1, 0, 0, 1, encodeCallBody('echo', new Uint8Array(100))),
    encodeFrame(5, 0, 0, 2), encodeFrame(3, 1, 0, 1, encodeDataFrame(['x'.repeat(1000)]))];
  const all = new Uint8Array(frames.reduce((a, f) => a + f.length, 0));
  let o = 0;
  for (const f of frames) { all.set(f, o); o += f.length; }
  for (const step of [1, 7, 16, 17, 1000, all.length]) {
    const r = new FrameReader();
    const got = [];
    for (let i = 0; i < all.length; i += step) got.push(...r.push(all.subarray(i, i + step)));
    assert.deepEqual(got.map((f) => [f.kind, f.request, f.body.length]), [[1, 1, 105], [5, 2, 0], [3, 1, 1004]]);
    assert.equal(decodeCallBody(got[0].body).name, 'echo');
  }
  const r = new FrameReader(100);
  assert.throws(() => r.push(encodeFrame(3, 0, 0, 1, new Uint8Array(101)).subarray(0, 16)), (e) => e.kind === 'FrameTooLarge');
});

test('lz4 payloads: size checked first, corrupt blocks refused', () => {
  // "zserver " x 7 as lz4: 8 literals then a match of 48 (15 + 29 + 4) at offset 8
  const ok = Uint8Array.of(56, 0, 0, 0, 0x8f, ...new TextEncoder().encode('zserver '), 8, 0, 29);
  assert.equal(new TextDecoder().decode(unlz4(ok)), 'zserver '.repeat(7));
  const tooBig = Uint8Array.of(1, 0, 0, 1, 0);
  assert.throws(() => unlz4(tooBig), (e) => e instanceof WireError && e.kind === 'FrameTooLarge');
  assert.throws(() => unlz4(Uint8Array.of(0xff, 0xff, 0, 0, 0x10, 0x41)), (e) => e.kind === 'Malformed');
  assert.throws(() => unlz4(Uint8Array.of(10, 0, 0, 0, 0x10, 0x41)), (e) => e.kind === 'Malformed');
  assert.throws(() => unlz4(Uint8Array.of(1, 0)), (e) => e.kind === 'Malformed');
  // a match before the start of the output
  assert.throws(() => unlz4(Uint8Array.of(20, 0, 0, 0, 0x1f, 0x41, 9, 0, 0)), (e) => /offset/.test(e.message));
  // a match length that runs on far past the declared size is stopped early
  const long = new Uint8Array(4 + 1 + 1 + 2 + 100000).fill(255);
  long.set([100, 0, 0, 0, 0x1f, 0x41, 1, 0]);
  assert.throws(() => unlz4(long), (e) => /longer than declared/.test(e.message));
  // a zero offset
  assert.throws(() => unlz4(Uint8Array.of(20, 0, 0, 0, 0x1f, 0x41, 0, 0, 0)), (e) => /offset/.test(e.message));
});

for (const cipher of [CIPHER_AESGCM, CIPHER_CHACHAPOLY]) {
  test(`Noise records round trip with rekeying (cipher ${cipher})`, () => {
    const key = new Uint8Array(32).fill(9);
    const a = new NoiseRecords(new CipherState(cipher, key.slice()), new CipherState(cipher, key.slice()), { rekeyAfterBytes: 100000 });
    const b = new NoiseRecords(new CipherState(cipher, key.slice()), new CipherState(cipher, key.slice()));
    const msg = new Uint8Array(250000).map((_, i) => i * 7);
    const wire = a.seal(msg);
    assert.ok(a.rekeysOut >= 2);
    const parts = [];
    for (let i = 0; i < wire.length; i += 4093) parts.push(b.open(wire.subarray(i, i + 4093)));
    const got = Buffer.concat(parts.map((p) => Buffer.from(p)));
    assert.ok(got.equals(Buffer.from(msg)));
    assert.equal(b.rekeysIn, a.rekeysOut);
    // a flipped bit fails
    const c = new NoiseRecords(new CipherState(cipher, key.slice()), new CipherState(cipher, key.slice()));
    const bad = a.seal(Uint8Array.of(1, 2, 3));
    bad[5] ^= 1;
    assert.throws(() => c.open(bad));
  });
}

test('Noise records rekey by time at the next record', () => {
  const key = new Uint8Array(32).fill(3);
  const a = new NoiseRecords(new CipherState(CIPHER_AESGCM, key.slice()), new CipherState(CIPHER_AESGCM, key.slice()), { rekeyIntervalMs: 1000 });
  const b = new NoiseRecords(new CipherState(CIPHER_AESGCM, key.slice()), new CipherState(CIPHER_AESGCM, key.slice()));
  assert.equal(b.open(a.seal(Uint8Array.of(1))).length, 1);
  assert.equal(a.rekeysOut, 0);
  a.lastRekey -= 1000; // as if a second had passed
  assert.deepEqual([...b.open(a.seal(Uint8Array.of(2)))], [2]);
  assert.equal(a.rekeysOut, 1);
  assert.equal(b.rekeysIn, 1);
  assert.deepEqual([...b.open(a.seal(Uint8Array.of(3)))], [3]);
});

test('fingerprints are 43 characters of base64url', () => {
  const { publicKey } = generateKeyPair();
  assert.match(fingerprint(publicKey), /^[A-Za-z0-9_-]{43}$/);
  assert.equal(fingerprint(new Uint8Array(32).fill(0xff)), '_'.repeat(42) + '8');
  assert.ok(new XXInitiator({ staticKeyPair: generateKeyPair() }).writeMessage1().length === 32);
});

test('Typed values print their number', () => {
  assert.equal(JSON.stringify([U64(2n ** 64n - 1n), I32(3)]), '["18446744073709551615",3]');
  assert.equal(+I16(-5), -5);
  assert.ok(new Typed('u8', 1) instanceof Typed);
});
