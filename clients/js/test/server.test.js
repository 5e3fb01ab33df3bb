// Against a real `zs serve` over TCP: Noise (both ciphers, pinning), plaintext, calls,
// DataFrames, compression, records, errors, login and pushes.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { connect, I8, I16, I32, I64, U8, U16, U32, U64, F32, F64, Typed } from '../src/index.js';
import { writeFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPair, fingerprint } from '../src/noise.js';
import { startServer, ADMIN_PASSWORD, waitFor } from './helpers.js';

const T = { timeout: 120000 };

/** One value of every DataFrame type, as typed wrappers (so the reply can be compared). */
function everyType() {
  return [
    true, false,
    I8(-128), I16(-32768), I32(-2147483648), I64(-(2n ** 63n)),
    U8(255), U16(65535), U32(4294967295), U64(2n ** 64n - 1n),
    F32(1.5), F64(-0.1),
    'hello, 世界', '', 'x'.repeat(70000),
    new Uint8Array([0, 1, 2, 255]), new Uint8Array(0), new Uint8Array(300).fill(7),
    null,
    [I32(1), 'two', [null, [U8(3)]]],
    new Map([['k', I64(1n)], [I32(2), 'v'], ['nested', new Map([['a', [true]]])]]),
  ];
}

describe('Noise over TCP', () => {
  let srv;
  before(async () => { srv = await startServer(); });
  after(async () => { await srv?.stop(); });

  for (const cipher of ['aes-256-gcm', 'chacha20-poly1305']) {
    test(`console and stream calls with ${cipher}`, T, async () => {
      const c = await connect(srv.url, { fingerprint: srv.fingerprint, cipher });
      try {
        assert.equal(c.serverFingerprint, srv.fingerprint);
        assert.equal(await c.callConsole('echo', 'hi'), 'hi');
        assert.equal(await c.callConsole('ECHO', 'unicode ✓'), 'unicode ✓');
        assert.deepEqual(await c.callStream('echo_stream', ['a', I32(5)]), ['a', 5]);
        assert.ok((await c.ping()) >= 0);
      } finally {
        c.close();
      }
    });
  }

  test('a wrong pin is refused before msg3', T, async () => {
    const wrong = `${srv.fingerprint.slice(0, -2)}${srv.fingerprint.endsWith('AA') ? 'AB' : 'AA'}`;
    await assert.rejects(connect(srv.url, { fingerprint: wrong }), (e) => {
      assert.equal(e.kind, 'handshake');
      assert.match(e.message, /is not the pinned/);
      return true;
    });
    await assert.rejects(connect(srv.url, {}), /no fingerprint/);
  });

  test('a plaintext client gets GoAway EncryptionRequired', T, async () => {
    const c = await connect(srv.url, { plaintext: true });
    await assert.rejects(c.callConsole('echo', 'x'), (e) => {
      assert.equal(e.kind, 'goaway');
      assert.equal(e.code, 7);
      assert.equal(e.codeName, 'EncryptionRequired');
      return true;
    });
  });

  test('every DataFrame type through echo_stream', T, async () => {
    const c = await connect(srv.url, { fingerprint: srv.fingerprint });
    try {
      const values = everyType();
      const typed = await c.callStream('echo_stream', values, { typed: true });
      assert.deepEqual(typed, values);
      assert.ok(typed[2] instanceof Typed && typed[2].type === 'i8');
      // plain JS values: integers go as i64 (bigint back), floats as f64, objects as maps
      const plain = await c.callStream('echo_stream', [7, -1.25, 2n ** 63n, { a: 'b', n: [1] }]);
      assert.deepEqual(plain, [7n, -1.25, 2n ** 63n, { a: 'b', n: [1n] }]);
    } finally {
      c.close();
    }
  });

  test('many calls in flight at once', T, async () => {
    const c = await connect(srv.url, { fingerprint: srv.fingerprint, maxInFlight: 64 });
    try {
      const n = 500;
      const replies = await Promise.all(Array.from({ length: n }, (_, i) => (i % 2
        ? c.callConsole('echo', `call ${i}`)
        : c.callStream('echo_stream', [U32(i)]))));
      replies.forEach((r, i) => assert.deepEqual(r, i % 2 ? `call ${i}` : [i]));
    } finally {
      c.close();
    }
  });

  test('a large compressible reply arrives compressed', T, async () => {
    const c = await connect(srv.url, { fingerprint: srv.fingerprint });
    try {
      const text = 'zserver '.repeat(256 * 1024); // 2 MiB
      const before = c.stats.compressedIn;
      assert.equal(await c.callConsole('echo', text), text);
      assert.ok(c.stats.compressedIn > before, 'the reply was not compressed');
    } finally {
      c.close();
    }
  });

  test('a reply spanning many Noise records', T, async () => {
    const c = await connect(srv.url, { fingerprint: srv.fingerprint });
    try {
      const bytes = new Uint8Array(randomBytes(300000));
      const r0 = c.recordStats.recordsIn;
      const [echoed] = await c.callStream('echo_stream', [bytes]);
      assert.deepEqual(echoed, bytes);
      assert.ok(c.recordStats.recordsIn - r0 >= 5, `only ${c.recordStats.recordsIn - r0} records`);
    } finally {
      c.close();
    }
  });

  test('rekeying the sending direction keeps the channel working', T, async () => {
    const c = await connect(srv.url, { fingerprint: srv.fingerprint, rekeyAfterBytes: 100000 });
    try {
      for (let i = 0; i < 4; i++) {
        const text = randomBytes(60000).toString('base64');
        assert.equal(await c.callConsole('echo', text), text);
      }
      assert.ok(c.recordStats.rekeysOut >= 2, `rekeys: ${c.recordStats.rekeysOut}`);
      // (the server's `rekeys` stat counts its own sending rekeys only; that the echoes after
      // each rekey arrive shows the server rolled its receiving key with ours)
    } finally {
      c.close();
    }
  });

  test('one-way sends reach the server', T, async () => {
    const c = await connect(srv.url, { fingerprint: srv.fingerprint });
    try {
      const before = JSON.parse(await c.callConsole('stats', ''));
      await c.send('echo', 'one way');
      await c.send('echo_stream', ['one way', I32(1)]);
      // one-way handlers run beside later calls: ask again until they counted (or 60 s)
      const deadline = Date.now() + 60000;
      let after;
      do {
        after = JSON.parse(await c.callConsole('stats', ''));
      } while ((after.direct_console_in === before.direct_console_in
        || after.direct_stream_in === before.direct_stream_in) && Date.now() < deadline);
      assert.equal(after.direct_console_in - before.direct_console_in, 1);
      assert.equal(after.direct_stream_in - before.direct_stream_in, 1);
    } finally {
      c.close();
    }
  });

  test('an unknown command is error code 1', T, async () => {
    const c = await connect(srv.url, { fingerprint: srv.fingerprint });
    try {
      await assert.rejects(c.callConsole('no.such.command', ''), (e) => {
        assert.equal(e.kind, 'error');
        assert.equal(e.code, 1);
        assert.equal(e.codeName, 'UnknownCommand');
        assert.match(e.message, /no\.such\.command/);
        return true;
      });
      assert.equal(await c.callConsole('echo', 'still alive'), 'still alive');
    } finally {
      c.close();
    }
  });

  test('login right and wrong, whoami, logout', T, async () => {
    const c = await connect(srv.url, { fingerprint: srv.fingerprint });
    try {
      await assert.rejects(c.whoami(), (e) => e.code === 12 && e.codeName === 'NotLoggedIn');
      await assert.rejects(c.login({ user: 'admin', password: 'wrong-password' }),
        (e) => e.code === 15 && e.codeName === 'AuthFailed');
      const me = await c.login({ user: 'admin', password: ADMIN_PASSWORD, issueToken: true });
      assert.equal(me.user, 'admin');
      assert.ok(me.roles.includes('admin'));
      assert.match(me.token, /^zst_/);
      assert.equal((await c.whoami()).user, 'admin');
      await c.logout();
      await assert.rejects(c.whoami(), (e) => e.code === 12);
      const c2 = await connect(srv.url, { fingerprint: srv.fingerprint });
      try {
        assert.equal((await c2.login({ token: me.token })).user, 'admin');
      } finally {
        c2.close();
      }
    } finally {
      c.close();
    }
  });

  test('a push from admin reaches a logged-in user; topics', T, async () => {
    const admin = await connect(srv.url, { fingerprint: srv.fingerprint });
    const user = await connect(srv.url, { fingerprint: srv.fingerprint });
    try {
      await admin.login({ user: 'admin', password: ADMIN_PASSWORD });
      await admin.callJson('account.add', { user: 'alice', password: 'alice-password-1' });
      await user.login({ user: 'alice', password: 'alice-password-1' });
      const got = waitFor('the push', 60000, (done) => user.on('Chat.Message', (text, info) => done({ text, info })));
      const r = await admin.pushSend({ user: 'alice', command: 'chat.message', text: 'hello alice' });
      assert.equal(r.live, 1);
      const { text, info } = await got;
      assert.equal(text, 'hello alice');
      assert.equal(info.command.toLowerCase(), 'chat.message');

      assert.equal((await user.subscribe('news')).topic, 'news');
      const news = waitFor('the publication', 60000, (done) => user.on('news.item', done));
      const p = await admin.publish('news', 'news.item', 'x'.repeat(5000));
      assert.equal(p.delivered, 1);
      assert.equal(await news, 'x'.repeat(5000));

      // offline: stored in the inbox, listed and acknowledged
      user.close();
      // wait until the server has seen the connection go (asking, not sleeping; 60 s at most)
      const deadline = Date.now() + 60000;
      while ((await admin.pushOnline(['alice'])).users.alice > 0 && Date.now() < deadline);
      const s = await admin.pushSend({ user: 'alice', command: 'chat.message', text: 'later', id: 'm1' });
      assert.ok(s.stored > 0);
      const again = await connect(srv.url, { fingerprint: srv.fingerprint });
      try {
        await again.login({ user: 'alice', password: 'alice-password-1' });
        const list = await again.inboxList();
        assert.equal(list.messages.length, 1);
        assert.equal(list.messages[0].text, 'later');
        assert.equal((await again.inboxAck([list.messages[0].seq])).removed, 1);
        assert.equal((await again.inboxList()).messages.length, 0);
      } finally {
        again.close();
      }
    } finally {
      admin.close();
      user.close();
    }
  });
});

describe('plaintext server', () => {
  let srv;
  before(async () => { srv = await startServer({ plaintext: true }); });
  after(async () => { await srv?.stop(); });

  test('calls in plaintext', T, async () => {
    const c = await connect(srv.url, { plaintext: true });
    try {
      assert.equal(c.recordStats, null);
      assert.equal(await c.callConsole('echo', 'plain'), 'plain');
      assert.deepEqual(await c.callStream('echo_stream', everyType(), { typed: true }), everyType());
      const big = 'abc'.repeat(500000);
      assert.equal(await c.callConsole('echo', big), big);
      assert.ok(c.stats.compressedIn >= 1);
    } finally {
      c.close();
    }
  });

  test('a Noise client is told the server speaks plaintext', T, async () => {
    await assert.rejects(connect(srv.url, { fingerprint: 'x'.repeat(43) }), (e) => {
      assert.ok(e.kind === 'handshake' || e.kind === 'goaway', `${e.kind}: ${e.message}`);
      return true;
    });
  });
});

describe('idle timeout', () => {
  let srv;
  before(async () => { srv = await startServer({ args: ['--idle-timeout', '1'] }); });
  after(async () => { await srv?.stop(); });

  test('GoAway IdleTimeout closes the connection with its code', T, async () => {
    const c = await connect(srv.url, { fingerprint: srv.fingerprint, keepAliveMs: 0 });
    const err = await c.closed;
    assert.equal(err.kind, 'goaway');
    assert.equal(err.code, 3);
    assert.equal(err.codeName, 'IdleTimeout');
    await assert.rejects(c.callConsole('echo', 'x'), (e) => e.code === 3);
  });
});

describe('keepalive', () => {
  let srv;
  before(async () => { srv = await startServer({ args: ['--idle-timeout', '1'] }); });
  after(async () => { await srv?.stop(); });

  test('Pings keep a quiet connection past the idle timeout', T, async () => {
    const c = await connect(srv.url, { fingerprint: srv.fingerprint, keepAliveMs: 250 });
    let timer;
    try {
      const closed = c.closed.then((e) => `closed: ${e?.message}`);
      // a dozen keepalive Pings take about 3 s, three times the server's idle timeout
      const alive = new Promise((r) => {
        timer = setInterval(() => c.stats.framesOut >= 12 && r('alive'), 50);
      });
      assert.equal(await Promise.race([alive, closed]), 'alive');
      assert.equal(await c.callConsole('echo', 'still here'), 'still here');
    } finally {
      clearInterval(timer);
      c.close();
    }
  });
});

describe('allowed client keys', () => {
  let srv;
  let dir;
  const key = generateKeyPair();
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'zs-js-keys-'));
    const file = join(dir, 'allowed');
    writeFileSync(file, `${fingerprint(key.publicKey)}\n`);
    srv = await startServer({ args: ['--allowed-clients', file] });
  });
  after(async () => {
    await srv?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test('a listed static key gets in; the anonymous one gets GoAway NotAuthorized', T, async () => {
    const c = await connect(srv.url, { fingerprint: srv.fingerprint, staticKey: key.secretKey });
    try {
      assert.equal(await c.callConsole('echo', 'known'), 'known');
    } finally {
      c.close();
    }
    const stranger = await connect(srv.url, { fingerprint: srv.fingerprint });
    const err = await stranger.callConsole('echo', 'x').then(() => null, (e) => e);
    assert.ok(err, 'an unlisted key was served');
    assert.equal(err.kind, 'goaway', err.message);
    assert.equal(err.code, 8);
    assert.equal(err.codeName, 'NotAuthorized');
  });
});
