// Test helpers: start a real `zs serve` and read what it prints.
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const here = dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = resolve(here, '..', '..', '..');
export const ZS_BIN = process.env.ZS_BIN || join(REPO_ROOT, 'target', 'debug', 'zs');
export const ADMIN_PASSWORD = 'admin-password-for-tests';
/** Generous: the machine running the tests may be loaded. */
export const STARTUP_MS = 60000;

let wsSupport = null;
/** Whether this zs build has `serve --ws-listen`. */
export function serverHasWs() {
  if (wsSupport === null) {
    const help = execFileSync(ZS_BIN, ['serve', '--help'], { encoding: 'utf8' });
    wsSupport = help.includes('--ws-listen');
  }
  return wsSupport;
}

/**
 * Starts `zs serve` on 127.0.0.1:0 with a fresh data dir; resolves with
 * { addr, url, fingerprint, wsAddr, wsUrl, lines, stop() } once it has printed its addresses.
 */
export async function startServer({ plaintext = false, ws = false, wss = false, args = [], env = {} } = {}) {
  if (!existsSync(ZS_BIN)) throw new Error(`no zs binary at ${ZS_BIN} (set ZS_BIN)`);
  const dataDir = mkdtempSync(join(tmpdir(), 'zs-js-test-'));
  const argv = ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir, '--insecure-fast-hashing'];
  if (plaintext) argv.push('--plaintext');
  if (ws) argv.push('--ws-listen', '127.0.0.1:0');
  if (wss) argv.push('--wss-listen', '127.0.0.1:0');
  argv.push(...args);
  const proc = spawn(ZS_BIN, argv, {
    env: { ...process.env, ZS_ADMIN_PASSWORD: ADMIN_PASSWORD, RUST_LOG: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (b) => { stderr += b; if (stderr.length > 100000) stderr = stderr.slice(-50000); });
  const exited = new Promise((r) => proc.once('exit', r));
  const lines = [];
  const info = { proc, dataDir, lines };
  const rl = createInterface({ input: proc.stdout });
  const ready = new Promise((resolveReady, reject) => {
    rl.on('line', (line) => {
      lines.push(line);
      let m;
      if ((m = /^listening on (\S+)/.exec(line))) {
        if (!info.addr) info.addr = m[1];
      }
      if ((m = /^server key: (\S+) \(Noise/.exec(line))) info.fingerprint = m[1];
      // "WebSocket clients on ws://127.0.0.1:PORT/ (Noise inside, as on TCP)"
      if (!info.wsAddr && (m = /\bws:\/\/([^\s/]+)/.exec(line))) info.wsAddr = m[1];
      if (!info.wssUrl && (m = /\bwss:\/\/\S+/.exec(line))) info.wssUrl = m[0];
      const done = info.addr && (plaintext || info.fingerprint) && (!ws || info.wsAddr) && (!wss || info.wssUrl);
      if (done) resolveReady();
    });
    exited.then((code) => reject(new Error(`zs serve exited (${code}) before it was ready; stdout: ${lines.join('\n')}; stderr: ${stderr}`)));
  });
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`zs serve not ready within ${STARTUP_MS} ms; stdout: ${lines.join(' | ')}`)), STARTUP_MS);
  });
  info.stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill('SIGKILL');
      await exited;
    }
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    await Promise.race([ready, timeout]);
  } catch (e) {
    await info.stop();
    throw e;
  } finally {
    clearTimeout(timer);
  }
  info.url = `tcp://${info.addr}`;
  if (info.wsAddr) info.wsUrl = `ws://${info.wsAddr}/`;
  info.stderr = () => stderr;
  return info;
}

/** Resolves with the first value `register(resolve)` delivers, or rejects after ms. */
export function waitFor(what, ms, register) {
  return new Promise((resolvePromise, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms);
    register((v) => {
      clearTimeout(timer);
      resolvePromise(v);
    });
  });
}

/**
 * A WebSocket-to-TCP relay behaving as the server's WebSocket side is specified: subprotocol
 * zserver.v1 required, binary messages carry the byte stream in any split, text closes.
 * Lets the WebSocket client run before (and besides) a zs with --ws-listen.
 */
export async function startWsRelay(tcpAddr) {
  const { WebSocketServer } = await import('ws');
  const net = await import('node:net');
  const [host, port] = [tcpAddr.slice(0, tcpAddr.lastIndexOf(':')), Number(tcpAddr.slice(tcpAddr.lastIndexOf(':') + 1))];
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    maxPayload: 1024 * 1024,
    handleProtocols: (protocols) => (protocols.has('zserver.v1') ? 'zserver.v1' : false),
  });
  const sockets = new Set();
  const seen = { maxMessage: 0, messages: 0, text: 0 };
  wss.on('connection', (ws) => {
    if (ws.protocol !== 'zserver.v1') {
      ws.close(1002);
      return;
    }
    const tcp = net.connect({ host, port });
    sockets.add(tcp);
    tcp.on('data', (b) => {
      // split differently from the frames on purpose: 1000-byte messages
      for (let i = 0; i < b.length; i += 1000) ws.send(b.subarray(i, i + 1000));
    });
    tcp.on('close', () => ws.close());
    tcp.on('error', () => ws.terminate());
    ws.on('message', (data, isBinary) => {
      seen.messages += 1;
      seen.maxMessage = Math.max(seen.maxMessage, data.length);
      if (!isBinary) {
        seen.text += 1;
        ws.close(1003);
        tcp.destroy();
        return;
      }
      tcp.write(data);
    });
    ws.on('close', () => tcp.end());
  });
  await new Promise((r) => wss.once('listening', r));
  return {
    url: `ws://127.0.0.1:${wss.address().port}/`,
    seen,
    close: () => {
      for (const s of sockets) s.destroy();
      for (const c of wss.clients) c.terminate();
      wss.close();
    },
  };
}
