// Noise_XX_25519_{AESGCM|ChaChaPoly}_BLAKE2s, initiator side, as zserver uses it
// (PROTOCOL.md §9.1-§9.2). The primitives come from @noble; this file is only the state
// machine of the Noise specification (revision 34): CipherState, SymmetricState, XX.
import { x25519 } from '@noble/curves/ed25519.js';
import { gcm } from '@noble/ciphers/aes.js';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { blake2s } from '@noble/hashes/blake2.js';
import { extract, expand } from '@noble/hashes/hkdf.js';
import { ByteQueue } from './bytequeue.js';

export const CIPHER_CHACHAPOLY = 0;
export const CIPHER_AESGCM = 1;
export const TAG_LEN = 16;
export const MAX_RECORD = 65535;
export const MAX_PLAINTEXT = MAX_RECORD - TAG_LEN;
/** Preamble: `zsn`, secure channel version 1, cipher byte. */
export function preamble(cipher) {
  return Uint8Array.of(0x7a, 0x73, 0x6e, 1, cipher);
}

export function cipherCode(name) {
  if (name === undefined || name === null || name === 'aes-256-gcm' || name === 'aesgcm' || name === 1) return CIPHER_AESGCM;
  if (name === 'chacha20-poly1305' || name === 'chachapoly' || name === 0) return CIPHER_CHACHAPOLY;
  throw new TypeError(`unknown cipher ${name} (aes-256-gcm or chacha20-poly1305)`);
}

const MAX_NONCE = 2n ** 64n - 1n;

function nonceBytes(cipher, n) {
  const out = new Uint8Array(12);
  const dv = new DataView(out.buffer);
  // AESGCM: 4 zero bytes + 64-bit big-endian counter; ChaChaPoly: 4 zero bytes + little-endian.
  dv.setBigUint64(4, n, cipher === CIPHER_CHACHAPOLY);
  return out;
}

function aead(cipher, key, n, ad) {
  const nonce = nonceBytes(cipher, n);
  return cipher === CIPHER_AESGCM ? gcm(key, nonce, ad) : chacha20poly1305(key, nonce, ad);
}

const EMPTY = new Uint8Array(0);

/** A Noise CipherState: key + 64-bit nonce counter. */
export class CipherState {
  constructor(cipher, key = null) {
    this.cipher = cipher;
    this.k = key;
    this.n = 0n;
  }

  hasKey() {
    return this.k !== null;
  }

  encrypt(ad, plaintext) {
    if (!this.k) return plaintext;
    if (this.n >= MAX_NONCE) throw new Error('noise: nonce exhausted');
    const out = aead(this.cipher, this.k, this.n, ad).encrypt(plaintext);
    this.n += 1n;
    return out;
  }

  decrypt(ad, ciphertext) {
    if (!this.k) return ciphertext;
    if (this.n >= MAX_NONCE) throw new Error('noise: nonce exhausted');
    const out = aead(this.cipher, this.k, this.n, ad).decrypt(ciphertext); // throws on a bad tag
    this.n += 1n;
    return out;
  }

  /** REKEY(): k = first 32 bytes of ENCRYPT(k, 2^64-1, empty, 32 zero bytes); n is kept. */
  rekey() {
    const out = aead(this.cipher, this.k, MAX_NONCE, EMPTY).encrypt(new Uint8Array(32));
    this.k = out.slice(0, 32);
  }
}

function concat(...parts) {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function hkdf2(ck, ikm) {
  const prk = extract(blake2s, ikm, ck);
  const okm = expand(blake2s, prk, EMPTY, 64);
  return [okm.slice(0, 32), okm.slice(32, 64)];
}

/** SymmetricState of the Noise specification with BLAKE2s (HASHLEN 32). */
class SymmetricState {
  constructor(cipher, protocolName) {
    const name = new TextEncoder().encode(protocolName);
    this.h = new Uint8Array(32);
    if (name.length <= 32) this.h.set(name);
    else this.h = blake2s(name);
    this.ck = this.h.slice();
    this.cs = new CipherState(cipher);
    this.cipher = cipher;
  }

  mixHash(data) {
    this.h = blake2s(concat(this.h, data));
  }

  mixKey(ikm) {
    const [ck, k] = hkdf2(this.ck, ikm);
    this.ck = ck;
    this.cs = new CipherState(this.cipher, k);
  }

  encryptAndHash(pt) {
    const ct = this.cs.encrypt(this.h, pt);
    this.mixHash(ct);
    return ct;
  }

  decryptAndHash(ct) {
    const pt = this.cs.decrypt(this.h, ct);
    this.mixHash(ct);
    return pt;
  }

  split() {
    const [k1, k2] = hkdf2(this.ck, EMPTY);
    return [new CipherState(this.cipher, k1), new CipherState(this.cipher, k2)];
  }
}

/** Makes an X25519 key pair: { secretKey, publicKey } (32 bytes each). */
export function generateKeyPair() {
  const { secretKey, publicKey } = x25519.keygen();
  return { secretKey, publicKey };
}

/** A key pair from a 32-byte secret key. */
export function keyPairFromSecret(secretKey) {
  return { secretKey, publicKey: x25519.getPublicKey(secretKey) };
}

/** The fingerprint of a 32-byte Noise static key: base64url without padding (43 chars). */
export function fingerprint(publicKey) {
  let s = '';
  for (const b of publicKey) s += String.fromCharCode(b);
  return btoa(s).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

/**
 * XX initiator:
 *   writeMessage1()          -> e
 *   readMessage2(msg)        <- e, ee, s, es   (returns the server's static key)
 *   writeMessage3()          -> s, se          (then split() gives [send, receive])
 */
export class XXInitiator {
  constructor({ cipher = CIPHER_AESGCM, prologue, staticKeyPair, ephemeralKeyPair } = {}) {
    const name = cipher === CIPHER_AESGCM ? 'Noise_XX_25519_AESGCM_BLAKE2s' : 'Noise_XX_25519_ChaChaPoly_BLAKE2s';
    this.ss = new SymmetricState(cipher, name);
    this.ss.mixHash(prologue ?? EMPTY);
    this.s = staticKeyPair;
    this.e = ephemeralKeyPair ?? generateKeyPair();
    this.re = null;
    this.rs = null;
    this.step = 0;
  }

  writeMessage1(payload = EMPTY) {
    if (this.step !== 0) throw new Error('noise: out of order');
    this.step = 1;
    this.ss.mixHash(this.e.publicKey);
    return concat(this.e.publicKey, this.ss.encryptAndHash(payload));
  }

  readMessage2(msg) {
    if (this.step !== 1) throw new Error('noise: out of order');
    this.step = 2;
    if (msg.length < 32 + 48 + TAG_LEN) throw new Error('noise: handshake message 2 too short');
    this.re = msg.slice(0, 32);
    this.ss.mixHash(this.re);
    this.ss.mixKey(x25519.getSharedSecret(this.e.secretKey, this.re)); // ee
    this.rs = this.ss.decryptAndHash(msg.subarray(32, 80)); // s
    this.ss.mixKey(x25519.getSharedSecret(this.e.secretKey, this.rs)); // es
    const payload = this.ss.decryptAndHash(msg.subarray(80));
    return { remoteStatic: this.rs, payload };
  }

  writeMessage3(payload = EMPTY) {
    if (this.step !== 2) throw new Error('noise: out of order');
    this.step = 3;
    const s = this.ss.encryptAndHash(this.s.publicKey);
    this.ss.mixKey(x25519.getSharedSecret(this.s.secretKey, this.re)); // se
    const p = this.ss.encryptAndHash(payload);
    return concat(s, p);
  }

  /** [sending CipherState, receiving CipherState, handshake hash]. */
  split() {
    const [c1, c2] = this.ss.split();
    return [c1, c2, this.ss.h];
  }
}

/** Rekey the sending direction after this many plaintext bytes (PROTOCOL.md §9.2). */
export const REKEY_AFTER_BYTES = 1024 * 1024 * 1024;
/** ... or after this long, at the next record. */
export const REKEY_INTERVAL_MS = 10 * 60 * 1000;

/**
 * The record layer after the handshake: `seal(bytes)` returns the records to write,
 * `open(bytes)` takes received bytes and returns the plaintext now available.
 */
export class NoiseRecords {
  constructor(send, recv, { rekeyAfterBytes = REKEY_AFTER_BYTES, rekeyIntervalMs = REKEY_INTERVAL_MS } = {}) {
    this.send = send;
    this.recv = recv;
    this.rekeyAfterBytes = rekeyAfterBytes;
    this.rekeyIntervalMs = rekeyIntervalMs;
    this.lastRekey = Date.now();
    this.sentSinceRekey = 0;
    this.queue = new ByteQueue();
    this.recordsIn = 0;
    this.recordsOut = 0;
    this.rekeysIn = 0;
    this.rekeysOut = 0;
  }

  /** Encrypts plaintext into records (each: u16 BE length, ciphertext + tag). */
  seal(plain) {
    const out = [];
    for (let off = 0; off < plain.length; off += MAX_PLAINTEXT) {
      const part = plain.subarray(off, Math.min(plain.length, off + MAX_PLAINTEXT));
      out.push(this.record(part));
      this.sentSinceRekey += part.length;
      if (this.sentSinceRekey >= this.rekeyAfterBytes
        || (this.rekeyIntervalMs > 0 && Date.now() - this.lastRekey >= this.rekeyIntervalMs)) {
        out.push(this.rekeyRecord());
      }
    }
    return out.length === 1 ? out[0] : concat(...out);
  }

  /** An empty record, after which this end's sending key rolls. */
  rekeyRecord() {
    const r = this.record(EMPTY);
    this.send.rekey();
    this.rekeysOut += 1;
    this.sentSinceRekey = 0;
    this.lastRekey = Date.now();
    return r;
  }

  record(part) {
    const ct = this.send.encrypt(EMPTY, part);
    this.recordsOut += 1;
    const r = new Uint8Array(2 + ct.length);
    r[0] = ct.length >> 8;
    r[1] = ct.length & 0xff;
    r.set(ct, 2);
    return r;
  }

  /** Decrypts the whole records in the received bytes; throws if one fails to open. */
  open(bytes) {
    this.queue.push(bytes);
    const out = [];
    for (;;) {
      if (this.queue.size < 2) break;
      const head = this.queue.peek(2);
      const n = (head[0] << 8) | head[1];
      if (n < TAG_LEN) throw new Error(`noise: record of ${n} bytes is shorter than its tag`);
      if (this.queue.size < 2 + n) break;
      this.queue.take(2);
      const pt = this.recv.decrypt(EMPTY, this.queue.take(n));
      this.recordsIn += 1;
      if (pt.length === 0) {
        this.recv.rekey();
        this.rekeysIn += 1;
      }
      else out.push(pt);
    }
    if (out.length === 0) return EMPTY;
    return out.length === 1 ? out[0] : concat(...out);
  }
}
