// Calls per second on one connection: `node bench/calls.mjs URL [--fingerprint FP | --plaintext]
// [--seconds S] [--depth D]`, D calls in flight (1 = one after another). Prints one JSON line.
import { connect } from '../src/index.js';

const args = process.argv.slice(2);
const url = args[0];
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const seconds = Number(opt('--seconds', '5'));
const depth = Number(opt('--depth', '1'));
const options = args.includes('--plaintext') ? { plaintext: true } : { fingerprint: opt('--fingerprint') };
const c = await connect(url, options);
const payload = 'x'.repeat(64);
let calls = 0;
const deadline = Date.now() + seconds * 1000;
const started = process.hrtime.bigint();
await Promise.all(
  Array.from({ length: depth }, async () => {
    while (Date.now() < deadline) {
      await c.callConsole('echo', payload);
      calls += 1;
    }
  }),
);
const elapsed = Number(process.hrtime.bigint() - started) / 1e9;
console.log(JSON.stringify({ client: 'js', url, depth, calls, seconds: elapsed, calls_per_s: calls / elapsed }));
c.close();
