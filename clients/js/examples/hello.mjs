// node examples/hello.mjs tcp://127.0.0.1:9818 FINGERPRINT
// node examples/hello.mjs ws://127.0.0.1:9819/ FINGERPRINT
// node examples/hello.mjs tcp://127.0.0.1:9818 --plaintext
// Optional: ZS_USER and ZS_PASSWORD to log in and wait for a push to this user.
import { connect, I32, U64 } from '../src/index.js';

const [url = 'tcp://127.0.0.1:9818', key] = process.argv.slice(2);
const opts = key === '--plaintext' ? { plaintext: true } : { fingerprint: key };
const c = await connect(url, opts);
console.log('connected', c.serverFingerprint ?? '(plaintext)');
console.log('echo ->', await c.callConsole('echo', 'hello'));
console.log('echo_stream ->', await c.callStream('echo_stream', ['hi', I32(-5), U64(2n ** 64n - 1n), 1.5, null]));
try {
  await c.callConsole('no.such.command');
} catch (e) {
  console.log('error ->', e.code, e.codeName, e.message);
}
if (process.env.ZS_USER) {
  console.log('login ->', await c.login({ user: process.env.ZS_USER, password: process.env.ZS_PASSWORD }));
  c.on('*', (payload, { command }) => console.log('push', command, payload));
  console.log('waiting for pushes (Ctrl-C to stop)');
  await c.closed;
} else {
  c.close();
}
