/** Bytes received in chunks, taken off the front in pieces of any size. */
export class ByteQueue {
  constructor() {
    this.chunks = [];
    this.size = 0;
  }

  /** Appends a chunk (kept as it is, not copied). */
  push(bytes) {
    if (bytes.length) {
      this.chunks.push(bytes);
      this.size += bytes.length;
    }
  }

  /** The first `n` bytes (n <= size), without taking them. */
  peek(n) {
    const c = this.chunks[0];
    if (c.length >= n) return c.subarray(0, n);
    return this.copy(n, false);
  }

  /** Takes the first `n` bytes (n <= size). */
  take(n) {
    return this.copy(n, true);
  }

  copy(n, consume) {
    const out = new Uint8Array(n);
    let off = 0;
    let i = 0;
    while (off < n) {
      const c = this.chunks[i];
      const k = Math.min(c.length, n - off);
      out.set(c.subarray(0, k), off);
      off += k;
      if (!consume) i += 1;
      else if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    if (consume) this.size -= n;
    return out;
  }
}
