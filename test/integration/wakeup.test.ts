// The wake-up handshake with several workers and long writers: every idle worker is registered as
// asleep, so the exit of one never leaves writes waiting for a poll, and a writer that keeps its
// transaction open never makes the other writers wait behind a worker falling asleep.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Listen, listen, notify, type Worker } from '../../src/index.js';
import { WAKE_SLEEP } from '../../src/sql.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

class Ping {
  n!: number;
}
const seen: number[] = [];
class Pings {
  @Listen('pings')
  async ping(p: Ping) {
    if (p.n === 200) await new Promise((r) => setTimeout(r, 300)); // keeps the worker busy (awake)
    seen.push(p.n);
  }
}

let db: TestDatabase;
const quiet = { info() {}, warn() {}, error: console.error };
const sleepers = async () =>
  (await db.query(`select count(*)::int as n from pg_locks where locktype = 'advisory' and classid = $1 and objid = hashtext('pings')::oid and granted`, [WAKE_SLEEP]))[0].n;

before(async () => {
  assert.ok(Pings);
  db = await createTestDatabase({ library: true, subscribe: true });
});
after(() => db?.drop());

test('two idle workers are both registered as asleep; when one exits, the other is still woken at once (no poll)', async () => {
  const workers: Worker[] = [];
  try {
    for (let i = 0; i < 2; i++) workers.push(await listen({ databaseUrl: db.url, pollIntervalMs: 600_000, logger: quiet }));
    await notify('pings', { n: 1 }, { client: db.pool });
    await waitFor(() => seen.includes(1), 'the first ping');
    await waitFor(async () => (await sleepers()) === 2, 'both workers registered as asleep', 5000);
    await workers.shift()!.close();
    for (let n = 2; n <= 6; n++) {
      await notify('pings', { n }, { client: db.pool });
      await waitFor(() => seen.includes(n), `ping ${n} without a poll`, 3000);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    for (const w of workers) await w.close();
  }
});

test('a writer that keeps its transaction open does not make other writers wait while the worker falls asleep', async () => {
  const worker = await listen({ databaseUrl: db.url, pollIntervalMs: 600_000, logger: quiet });
  const long = await db.pool.connect();
  try {
    await long.query('begin');
    await notify('pings', { n: 100 }, { client: long }); // holds the wake-up gate (shared) until it commits
    const started = Date.now();
    for (let n = 101; n <= 120; n++) {
      await notify('pings', { n }, { client: db.pool });
      await new Promise((r) => setTimeout(r, 10)); // the worker tries to fall asleep in between
    }
    const took = Date.now() - started;
    await waitFor(() => [...Array(20).keys()].every((i) => seen.includes(101 + i)), 'the twenty short writers');
    assert.ok(took < 2000, `20 short writers took ${took} ms beside one open transaction`);
    await long.query('commit');
    await waitFor(() => seen.includes(100), 'the long writer once it committed', 5000);
  } finally {
    long.release();
    await worker.close();
  }
});

test('a notification committed while the worker is busy (so no NOTIFY is sent) is found by its last look, and the worker is registered as asleep again', async () => {
  const worker = await listen({ databaseUrl: db.url, pollIntervalMs: 600_000, logger: quiet });
  try {
    await waitFor(async () => (await sleepers()) === 1, 'the worker registered as asleep', 5000);
    await notify('pings', { n: 200 }, { client: db.pool }); // wakes it; its listener takes 300 ms
    await waitFor(async () => (await sleepers()) === 0, 'the worker awake', 5000);
    assert.ok(!seen.includes(200), 'the slow listener is still running');
    await notify('pings', { n: 201 }, { client: db.pool }); // nobody asleep: no NOTIFY
    await waitFor(() => seen.includes(201), 'the second ping, found by the last look (no poll)', 5000);
    await waitFor(async () => (await sleepers()) === 1, 'the worker registered as asleep again', 5000);
    await notify('pings', { n: 202 }, { client: db.pool });
    await waitFor(() => seen.includes(202), 'a ping after it, by NOTIFY', 3000);
  } finally {
    await worker.close();
  }
});
