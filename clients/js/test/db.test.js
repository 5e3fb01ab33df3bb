// The data store from JavaScript against a real `zs serve`: records and compare-and-set,
// queries streamed under credit (small windows, resume tokens), counts, watches.
import { test, before, after, describe } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from '../src/index.js';
import { startServer, ADMIN_PASSWORD } from './helpers.js';

const T = { timeout: 120000 };

describe('data store', () => {
  let srv;
  let c;
  before(async () => {
    srv = await startServer({ plaintext: true, args: ['--services', 'accounts,db'] });
    c = await connect(srv.url, { plaintext: true });
    await c.login({ user: 'admin', password: ADMIN_PASSWORD });
    await c.dbCreate('people', { indexes: ['city'] });
    for (let i = 0; i < 60; i++) {
      await c.dbInsert('people', { name: `p${i}`, age: i, city: i % 2 ? 'Oslo' : 'Lima' });
    }
  });
  after(async () => {
    c?.close();
    await srv?.stop();
  });

  test('insert, get, compare-and-set, delete', T, async () => {
    const { id, version } = await c.dbInsert('people', { name: 'Ada', city: 'London' });
    assert.equal(version, 1);
    assert.deepEqual((await c.dbGet('people', id)).json, { name: 'Ada', city: 'London' });
    assert.equal((await c.dbUpdate('people', id, { name: 'Ada L.' }, { version: 1 })).version, 2);
    await assert.rejects(c.dbUpdate('people', id, { name: '?' }, { version: 1 }), (e) => {
      assert.equal(e.codeName, 'VersionMismatch');
      return true;
    });
    assert.deepEqual(await c.dbDelete('people', id), { deleted: true });
    await assert.rejects(c.dbGet('people', id), (e) => e.codeName === 'NotFound');
  });

  test('a query streams every matching row in order under a small window', T, async () => {
    const rows = await c.dbQuery('people', 'city == $c and age >= 10', { params: { c: 'Oslo' }, window: 3 }).collect();
    const expected = [];
    for (let i = 11; i < 60; i += 2) expected.push(`p${i}`);
    assert.deepEqual(rows.map((r) => r.json.name), expected);
    assert.equal(await c.dbCount('people', 'city == "Lima"'), 30);
    const last = await c.dbQuery('people', '', { reverse: true, limit: 2 }).collect();
    assert.equal(last.length, 2);
    assert.ok(last[0].id > last[1].id);
    await assert.rejects(c.dbQuery('people', 'age >').collect(), (e) => {
      assert.equal(e.codeName, 'InvalidArgument');
      assert.match(e.message, /at byte 5/);
      return true;
    });
  });

  test('a token resumes a query on another connection', T, async () => {
    const q = c.dbQuery('people', 'age < 40', { window: 4 });
    const first = [];
    while (first.length < 12) first.push(...(await q.nextBatch()));
    await q.stop();
    const c2 = await connect(srv.url, { plaintext: true });
    try {
      await c2.login({ user: 'admin', password: ADMIN_PASSWORD });
      const rest = await c2.dbQuery('people', '', { resume: q.token }).collect();
      assert.deepEqual([...first, ...rest].map((r) => r.json.age), [...Array(40).keys()]);
    } finally {
      c2.close();
    }
  });

  test('a watch sends its snapshot, then changes as they commit', T, async () => {
    const w = c.dbWatch('people', 'city == "Rome"', { snapshot: true });
    const it = w[Symbol.asyncIterator]();
    assert.deepEqual((await it.next()).value, { kind: 'synced' });
    const { id } = await c.dbInsert('people', { name: 'r', city: 'Rome' });
    await c.dbInsert('people', { name: 'x', city: 'Oslo' });
    await c.dbDelete('people', id);
    const a = (await it.next()).value;
    assert.equal(a.kind, 'insert');
    assert.equal(a.record.id, id);
    const b = (await it.next()).value;
    assert.deepEqual([b.kind, b.record.json.name], ['delete', 'r']);
    await w.stop();
  });
});
