// WebSocket: Node over `ws`, and a page in headless Chromium. Needs a zs with --ws-listen.
import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { readFileSync, mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { connect, I32 } from '../src/index.js';
import { startServer, serverHasWs, ADMIN_PASSWORD, waitFor, startWsRelay } from './helpers.js';

const here = dirname(fileURLToPath(import.meta.url));
const T = { timeout: 180000 };
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const skip = serverHasWs() ? false : 'this zs has no --ws-listen';
// The project's test script (scripts/test-clients.sh) sets ZS_REQUIRE_ALL: there nothing may be skipped.
if (process.env.ZS_REQUIRE_ALL === '1' && (skip || !existsSync(CHROMIUM))) {
  throw new Error(`ZS_REQUIRE_ALL: ${skip || `no ${CHROMIUM}`}`);
}

// 'relay': a WebSocket-to-TCP relay in this process (test/helpers.js) in front of zs's TCP
// listener; 'zs': the server's own --ws-listen.
const MODES = [['relay', false], ['zs', skip]];

for (const [mode, modeSkip] of MODES) describe(`WebSocket from Node (${mode})`, { skip: modeSkip }, () => {
  let srv;
  let plain;
  const relays = [];
  before(async () => {
    srv = await startServer({ ws: mode === 'zs' });
    plain = await startServer({ ws: mode === 'zs', plaintext: true });
    if (mode === 'relay') {
      for (const s of [srv, plain]) {
        const r = await startWsRelay(s.addr);
        relays.push(r);
        s.wsUrl = r.url;
      }
    }
  });
  after(async () => {
    for (const r of relays) r.close();
    await srv?.stop();
    await plain?.stop();
  });

  test('Noise over WebSocket: calls, big replies, a push', T, async () => {
    const c = await connect(srv.wsUrl, { fingerprint: srv.fingerprint });
    const admin = await connect(srv.wsUrl, { fingerprint: srv.fingerprint, cipher: 'chacha20-poly1305' });
    try {
      assert.equal(await c.callConsole('echo', 'over ws'), 'over ws');
      assert.deepEqual(await c.callStream('echo_stream', [I32(3), 'x']), [3, 'x']);
      const big = 'websocket '.repeat(300000); // 3 MB: many 64 KiB messages each way
      assert.equal(await c.callConsole('echo', big), big);
      await admin.login({ user: 'admin', password: ADMIN_PASSWORD });
      await admin.callJson('account.add', { user: 'bob', password: 'bob-password-1' });
      await c.login({ user: 'bob', password: 'bob-password-1' });
      const got = waitFor('the push', 60000, (done) => c.on('ws.push', done));
      assert.equal((await admin.pushSend({ user: 'bob', command: 'WS.Push', text: 'hi bob' })).live, 1);
      assert.equal(await got, 'hi bob');
      if (mode === 'relay') {
        const { seen } = relays[0];
        assert.ok(seen.messages > 45, `${seen.messages} messages`);
        assert.ok(seen.maxMessage <= 65536, `a message of ${seen.maxMessage} bytes`);
        assert.equal(seen.text, 0);
      }
    } finally {
      c.close();
      admin.close();
    }
  });

  test('a wrong pin is refused over WebSocket too', T, async () => {
    await assert.rejects(connect(srv.wsUrl, { fingerprint: 'A'.repeat(43) }), (e) => e.kind === 'handshake');
  });

  test('plaintext over WebSocket', T, async () => {
    const c = await connect(plain.wsUrl, { plaintext: true });
    try {
      assert.equal(await c.callConsole('echo', 'plain ws'), 'plain ws');
    } finally {
      c.close();
    }
  });

  test('an origin the server does not allow is refused', { ...T, skip: mode !== 'zs' }, async () => {
    await assert.rejects(connect(srv.wsUrl, { fingerprint: srv.fingerprint, wsOptions: { origin: 'http://evil.example' } }));
  });

  test('wss: TLS under the WebSocket (the certificate trusted by its CA file), Noise inside', { ...T, skip: mode !== 'zs' }, async () => {
    const tls = await startServer({ wss: true });
    try {
      const url = tls.wssUrl;
      const ca = readFileSync(join(tls.dataDir, 'cert.pem'));
      const c = await connect(url, { fingerprint: tls.fingerprint, wsOptions: { ca } });
      try {
        assert.equal(await c.callConsole('echo', 'over wss'), 'over wss');
      } finally {
        c.close();
      }
      // Without the certificate's CA, Node refuses the self-signed certificate.
      await assert.rejects(connect(url, { fingerprint: tls.fingerprint }));
    } finally {
      await tls.stop?.();
    }
  });
});

async function bundle() {
  const esbuild = await import('esbuild');
  const out = await esbuild.build({
    entryPoints: [join(here, '..', 'src', 'index.js')],
    bundle: true,
    format: 'esm',
    platform: 'browser',
    external: ['ws', 'node:net'],
    write: false,
    logLevel: 'silent',
  });
  return out.outputFiles[0].contents;
}

for (const [mode, modeSkip] of MODES) describe(`WebSocket from a browser page (${mode})`, { skip: modeSkip || (!existsSync(CHROMIUM) && `no ${CHROMIUM}`) }, () => {
  let web;
  let srv;
  let browser;
  let profile;
  let relay;
  before(async () => {
    const js = await bundle();
    const html = readFileSync(join(here, 'browser', 'page.html'));
    web = http.createServer((req, res) => {
      const path = new URL(req.url, 'http://x').pathname;
      if (path === '/' || path === '/page.html') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' }).end(html);
      } else if (path === '/zserver.js') {
        res.writeHead(200, { 'content-type': 'text/javascript; charset=utf-8' }).end(js);
      } else {
        res.writeHead(404).end();
      }
    });
    await new Promise((r) => web.listen(0, '127.0.0.1', r));
    const origin = `http://127.0.0.1:${web.address().port}`;
    srv = await startServer({ ws: mode === 'zs', args: mode === 'zs' ? ['--ws-origin', origin] : [] });
    if (mode === 'relay') {
      relay = await startWsRelay(srv.addr);
      srv.wsUrl = relay.url;
    }
    const { chromium } = await import('playwright-core');
    profile = mkdtempSync(join(tmpdir(), 'zs-chromium-'));
    browser = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  });
  after(async () => {
    await browser?.close();
    relay?.close();
    await srv?.stop();
    web?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
  });

  test('the page connects with Noise, calls, logs in and receives a push', T, async () => {
    const admin = await connect(srv.url, { fingerprint: srv.fingerprint });
    try {
      await admin.login({ user: 'admin', password: ADMIN_PASSWORD });
      await admin.callJson('account.add', { user: 'carol', password: 'carol-password-1' });
      const page = await browser.newPage();
      const q = new URLSearchParams({ ws: srv.wsUrl, fp: srv.fingerprint, user: 'carol', password: 'carol-password-1' });
      await page.goto(`http://127.0.0.1:${web.address().port}/page.html?${q}`);
      await page.waitForFunction(() => window.zs && window.zs.state !== 'starting', null, { timeout: 120000 });
      const s = await page.evaluate(() => window.zs);
      assert.equal(s.state, 'ready', s.error);
      assert.equal(s.fingerprint, srv.fingerprint);
      assert.equal(s.echo, 'from the browser');
      assert.equal(s.chacha, 'chacha');
      assert.equal(s.stream, JSON.stringify([-5, '18446744073709551615', 'ü', [1, 2, 3]]));
      assert.equal(s.unknown, '1 UnknownCommand');
      assert.equal(s.bigOk, true);
      assert.equal(s.user, 'carol');
      const r = await admin.pushSend({ user: 'carol', command: 'browser.push', text: 'hello browser' });
      assert.equal(r.live, 1);
      await page.waitForFunction(() => window.zs.pushes.length > 0, null, { timeout: 60000 });
      assert.deepEqual(await page.evaluate(() => window.zs.pushes), ['hello browser']);
    } finally {
      admin.close();
    }
  });
});
