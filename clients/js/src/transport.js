// Byte-stream transports: WebSocket (browser global, or the `ws` package in Node) and, in
// Node, raw TCP. Each yields the same small interface:
//   write(bytes), close(), bufferedAmount(), waitWritable(), onData(cb), onClose(cb)
import { ZsError } from './errors.js';

export const WS_SUBPROTOCOL = 'zserver.v1';
/** Largest WebSocket message this client sends (the server refuses over 1 MiB). */
export const WS_MAX_MESSAGE = 64 * 1024;
/** Above this many bytes queued for the socket, writers wait (bounded buffers). */
export const HIGH_WATER = 4 * 1024 * 1024;

const isNode = typeof process !== 'undefined' && !!process.versions?.node
  && typeof window === 'undefined';

class Base {
  constructor() {
    this.dataCb = () => {};
    this.closeCb = () => {};
    this.closed = false;
    this.pendingData = [];
  }

  onData(cb) {
    this.dataCb = cb;
    const queued = this.pendingData ?? [];
    this.pendingData = null;
    for (const b of queued) cb(b);
  }

  /** Queues received bytes (after `first`) until the next onData. */
  holdData(first) {
    this.pendingData = first && first.length ? [first] : [];
  }

  emitData(b) {
    if (this.pendingData) this.pendingData.push(b);
    else this.dataCb(b);
  }

  onClose(cb) {
    this.closeCb = cb;
    if (this.closed) cb(this.closeReason);
  }

  emitClose(reason) {
    if (this.closed) return;
    this.closed = true;
    this.closeReason = reason;
    this.closeCb(reason);
  }
}

class TcpTransport extends Base {
  constructor(socket) {
    super();
    this.socket = socket;
    socket.setNoDelay(true);
    socket.on('data', (b) => this.emitData(new Uint8Array(b.buffer, b.byteOffset, b.length)));
    socket.on('error', (e) => this.emitClose(e));
    socket.on('close', () => this.emitClose(null));
  }

  write(bytes) {
    if (!this.closed) this.socket.write(bytes);
  }

  bufferedAmount() {
    return this.socket.writableLength;
  }

  waitWritable() {
    if (this.closed || this.socket.writableLength < HIGH_WATER) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
  }

  close() {
    this.socket.end();
    this.socket.destroySoon?.();
  }

  destroy() {
    this.socket.destroy();
  }
}

class WsTransport extends Base {
  constructor(ws) {
    super();
    this.ws = ws;
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (ev) => {
      if (typeof ev.data === 'string') {
        this.emitClose(ZsError.local('protocol', 'the server sent a text WebSocket message'));
        this.destroy();
        return;
      }
      this.emitData(new Uint8Array(ev.data));
    };
    ws.onclose = (ev) => this.emitClose(ev.code === 1000 || ev.code === 1005 ? null
      : ZsError.local('closed', `WebSocket closed (${ev.code}${ev.reason ? ` ${ev.reason}` : ''})`));
    ws.onerror = () => this.emitClose(ZsError.local('closed', 'WebSocket error'));
  }

  write(bytes) {
    if (this.closed || this.ws.readyState !== 1) return;
    for (let off = 0; off < bytes.length; off += WS_MAX_MESSAGE) {
      this.ws.send(bytes.subarray(off, Math.min(bytes.length, off + WS_MAX_MESSAGE)));
    }
  }

  bufferedAmount() {
    return this.ws.bufferedAmount;
  }

  async waitWritable() {
    // Browsers have no drain event for WebSocket: look at bufferedAmount again shortly.
    while (!this.closed && this.ws.bufferedAmount >= HIGH_WATER) {
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  close() {
    try {
      this.ws.close(1000);
    } catch {
      // already closing
    }
  }

  destroy() {
    try {
      if (typeof this.ws.terminate === 'function') this.ws.terminate();
      else this.ws.close();
    } catch {
      // already closed
    }
  }
}

function withTimeout(promise, ms, what, onTimeout) {
  let timer;
  const t = new Promise((_, reject) => {
    timer = setTimeout(() => {
      onTimeout?.();
      reject(ZsError.local('timeout', `${what} timed out after ${ms} ms`));
    }, ms);
  });
  return Promise.race([promise, t]).finally(() => clearTimeout(timer));
}

async function openTcp(host, port, timeoutMs) {
  if (!isNode) throw new TypeError('tcp:// needs Node; browsers connect with ws:// or wss://');
  const net = await import('node:net');
  const socket = net.connect({ host, port });
  await withTimeout(new Promise((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', (e) => reject(ZsError.local('closed', `cannot connect to ${host}:${port}: ${e.message}`)));
  }), timeoutMs, `connecting to ${host}:${port}`, () => socket.destroy());
  return new TcpTransport(socket);
}

async function openWs(url, timeoutMs, wsOptions) {
  let WS = globalThis.WebSocket;
  let ws;
  if (isNode) {
    WS = (await import('ws')).default;
    ws = new WS(url, WS_SUBPROTOCOL, { maxPayload: 16 * 1024 * 1024 + 65536, perMessageDeflate: false, ...wsOptions });
  } else {
    if (!WS) throw new TypeError('no WebSocket in this environment');
    ws = new WS(url, WS_SUBPROTOCOL);
  }
  const t = new WsTransport(ws);
  await withTimeout(new Promise((resolve, reject) => {
    ws.onopen = () => resolve();
    t.onClose((reason) => reject(reason ?? ZsError.local('closed', `WebSocket to ${url} closed before it opened`)));
  }), timeoutMs, `connecting to ${url}`, () => t.destroy());
  t.closeCb = () => {};
  if (ws.protocol !== WS_SUBPROTOCOL) {
    t.destroy();
    throw ZsError.local('handshake', `the server did not accept the WebSocket subprotocol ${WS_SUBPROTOCOL}`);
  }
  return t;
}

/** Opens a transport for a URL: ws://, wss://, tcp://host:port (Node). */
export async function openTransport(url, { timeoutMs = 10000, wsOptions } = {}) {
  const m = /^([a-z]+):\/\//i.exec(url);
  const scheme = m ? m[1].toLowerCase() : 'tcp';
  if (scheme === 'ws' || scheme === 'wss') return openWs(url, timeoutMs, wsOptions);
  if (scheme === 'tcp') {
    const rest = m ? url.slice(m[0].length) : url;
    const hp = /^\[?([^\]]+?)\]?:(\d+)\/?$/.exec(rest);
    if (!hp) throw new TypeError(`bad address ${url}: expected tcp://host:port`);
    return openTcp(hp[1], Number(hp[2]), timeoutMs);
  }
  throw new TypeError(`unsupported URL scheme ${scheme}: (use ws://, wss:// or tcp://)`);
}

export { withTimeout, isNode };
