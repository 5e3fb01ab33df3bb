// Against a scripted plaintext peer (node:net): what a real server does not do on demand —
// Pings, compressed pushes, a silent peer, invalid frames, GoAway with calls in flight.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { connect, encodeFrame, encodeCallBody, FrameReader, Kind, Flags, decodeCallBody, encodeDataFrame, I32 } from '../src/index.js';
import { waitFor } from './helpers.js';

const T = { timeout: 60000 };
const utf8 = new TextEncoder();

/** A one-connection plaintext peer; `script(sock, frames)` is called with each frame read. */
async function fakeServer(onFrame) {
  let sock;
  const server = net.createServer((s) => {
    sock = s;
    const r = new FrameReader();
    s.on('data', (b) => {
      for (const f of r.push(new Uint8Array(b))) onFrame(s, f);
    });
    s.on('error', () => {});
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `tcp://127.0.0.1:${server.address().port}`,
    sock: () => sock,
    close: () => { sock?.destroy(); server.close(); },
  };
}

function codeMsg(code, text) {
  const m = utf8.encode(text);
  const out = new Uint8Array(2 + m.length);
  out[0] = code & 0xff;
  out[1] = code >> 8;
  out.set(m, 2);
  return out;
}

test('answers Ping with Pong; decodes compressed pushes; per-call timeout', T, async () => {
  const seen = [];
  let pongGot;
  const pong = new Promise((r) => { pongGot = r; });
  const srv = await fakeServer((s, f) => {
    seen.push(f.kind);
    if (f.kind === Kind.Pong) pongGot(f.request);
    if (f.kind === Kind.Call && decodeCallBody(f.body).name === 'go') {
      s.write(encodeFrame(Kind.Ping, 0, 0, 77));
      // a compressed push: "zserver " x 7 (lz4, size prepended) to command "News"
      const lz = Uint8Array.of(56, 0, 0, 0, 0x8f, ...utf8.encode('zserver '), 8, 0, 29);
      s.write(encodeFrame(Kind.Send, Flags.COMPRESSED, 0, 0, encodeCallBody('News', lz)));
      s.write(encodeFrame(Kind.Send, Flags.DATAFRAME, 0, 0, encodeCallBody('numbers', encodeDataFrame([I32(4)]))));
      s.write(encodeFrame(Kind.Reply, 0, 0, f.request, utf8.encode('went')));
    }
    // "silent" is never answered
  });
  const c = await connect(srv.url, { plaintext: true });
  try {
    const news = waitFor('the compressed push', 30000, (done) => c.on('news', done));
    const nums = waitFor('the DataFrame push', 30000, (done) => c.on('*', (v, info) => info.dataframe && done(v)));
    assert.equal(await c.callConsole('go', ''), 'went');
    assert.equal(await pong, 77);
    assert.equal(await news, 'zserver '.repeat(7));
    assert.deepEqual(await nums, [4]);
    await assert.rejects(c.callConsole('silent', '', { timeoutMs: 200 }), (e) => e.kind === 'timeout');
    assert.equal(c.pending.size, 0);
  } finally {
    c.close();
    srv.close();
  }
});

test('GoAway fails the calls in flight with its code', T, async () => {
  let calls = 0;
  const srv = await fakeServer((s, f) => {
    if (f.kind === Kind.Call && ++calls === 3) {
      s.write(encodeFrame(Kind.GoAway, 0, 0, 0, codeMsg(5, 'server shutting down')));
      s.end();
    }
  });
  const c = await connect(srv.url, { plaintext: true });
  try {
    const results = await Promise.allSettled([1, 2, 3].map((i) => c.callConsole('x', String(i))));
    for (const r of results) {
      assert.equal(r.status, 'rejected');
      assert.equal(r.reason.kind, 'goaway');
      assert.equal(r.reason.code, 5);
      assert.equal(r.reason.codeName, 'ShuttingDown');
    }
    assert.equal((await c.closed).code, 5);
  } finally {
    srv.close();
  }
});

test('an invalid frame from the server ends the connection with a protocol error', T, async () => {
  let goaway;
  const got = new Promise((r) => { goaway = r; });
  const srv = await fakeServer((s, f) => {
    if (f.kind === Kind.Call) s.write(Uint8Array.of(0x5a, 0x01, 0x09, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0));
    if (f.kind === Kind.GoAway) goaway(f.body[0] | (f.body[1] << 8));
  });
  const c = await connect(srv.url, { plaintext: true });
  try {
    await assert.rejects(c.callConsole('x', ''), (e) => e.kind === 'protocol' && /unknown frame kind/.test(e.message));
    assert.equal(await got, 1); // the client said ProtocolError before closing
  } finally {
    srv.close();
  }
});

test('a frame over the limit is refused from its header', T, async () => {
  const srv = await fakeServer((s, f) => {
    if (f.kind === Kind.Call) {
      const h = encodeFrame(Kind.Reply, 0, 0, f.request, new Uint8Array(0));
      new DataView(h.buffer).setUint32(12, 2000, true);
      s.write(h); // header only: the client must not wait for the body
    }
  });
  const c = await connect(srv.url, { plaintext: true, maxFrameLen: 1000 });
  try {
    await assert.rejects(c.callConsole('x', ''), (e) => e.kind === 'protocol' && /exceeds the limit/.test(e.message));
  } finally {
    srv.close();
  }
});

test('calls beyond maxInFlight wait for a slot', T, async () => {
  const held = [];
  const srv = await fakeServer((s, f) => {
    if (f.kind !== Kind.Call) return;
    held.push(f.request);
    if (held.length === 2) {
      // answer both only once two are in: a third must not have been sent yet
      for (const id of held.splice(0)) s.write(encodeFrame(Kind.Reply, 0, 0, id, utf8.encode(`r${id}`)));
    }
  });
  const c = await connect(srv.url, { plaintext: true, maxInFlight: 2 });
  try {
    const out = await Promise.all([1, 2, 3, 4].map((i) => c.callConsole('x', String(i))));
    assert.deepEqual(out, ['r1', 'r2', 'r3', 'r4']);
  } finally {
    c.close();
    srv.close();
  }
});
