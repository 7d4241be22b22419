// Ordered listeners claim runs (issue 12, point 3): a key's head with the rows behind it, many per
// transaction, instead of one row per transaction. Order per key holds across workers and failures; a
// row behind a failure in the same claim is put back untouched (no attempt counted) and runs after it.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { Listen, listen, type NotificationContext, type Worker } from '../../src/index.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

class Ev {
  n!: number;
  key!: string;
}

/** `${key}:${n}` → attempts that still fail. */
const failing = new Map<string, number>();
const attemptsSeen: Array<{ n: number; key: string; attempt: number }> = [];

class Runs {
  @Listen('ordered_runs', { ordered: true, orderKey: (e: Ev) => e.key, maxAttempts: 10, backoff: { baseMs: 10, maxMs: 20 } })
  async handle(e: Ev, ctx: NotificationContext) {
    attemptsSeen.push({ n: e.n, key: e.key, attempt: ctx.attempt });
    const left = failing.get(`${e.key}:${e.n}`) ?? 0;
    if (left > 0) {
      failing.set(`${e.key}:${e.n}`, left - 1);
      throw new Error(`${e.key}:${e.n} fails`);
    }
    await ctx.tx!.query('insert into ord_seen (n, key, xid, at) values ($1, $2, txid_current(), clock_timestamp())', [e.n, e.key]);
  }
}

let db: TestDatabase;
const workers: Worker[] = [];
const quiet = { info() {}, warn() {}, error() {} };

before(async () => {
  assert.ok(Runs);
  db = await createTestDatabase({ library: true, subscribe: true });
  await db.query('create table ord_seen (seq bigint generated always as identity, n int not null, key text not null, xid bigint not null, at timestamptz not null)');
  for (let i = 0; i < 2; i++) workers.push(await listen({ databaseUrl: db.url, channels: ['ordered_runs'], pollIntervalMs: 50, logger: quiet }));
});
after(async () => {
  for (const w of workers) await w.close();
  await db?.drop();
});

/** Stores `events` in one transaction, in this order (ids follow it). */
async function store(events: Ev[]): Promise<void> {
  await db.query(`insert into pubsub.notification (channel, listener, payload) select 'ordered_runs', 'Runs.handle', e from unnest($1::jsonb[]) with ordinality u(e, i) order by i`, [events.map((e) => JSON.stringify(e))]);
  await db.query(`select pg_notify('ordered_runs', '')`);
}

const settled = () => waitFor(async () => (await db.query(`select count(*)::int as n from pubsub.notification where channel = 'ordered_runs'`))[0].n === 0, 'every ordered row processed', 60_000);

/** Per key, the n in commit order of their effects (the order the listener committed them). */
async function orderByKey(): Promise<Map<string, number[]>> {
  const rows = await db.query('select key, n from ord_seen order by seq');
  const byKey = new Map<string, number[]>();
  for (const r of rows) byKey.set(r.key, [...(byKey.get(r.key) ?? []), r.n]);
  return byKey;
}

// Before runs this took one transaction per row; it also found keys given out of order past 1,000
// waiting rows (the key query sorted ids as text), which let row 10 of a key run before row 2.
test('a backlog of 3,000 rows in one key drains in runs of many rows per transaction, in order, each once', async () => {
  await store(Array.from({ length: 3000 }, (_, i) => ({ n: i + 1, key: 'solo' })));
  await settled();
  const byKey = await orderByKey();
  assert.deepEqual(byKey.get('solo'), Array.from({ length: 3000 }, (_, i) => i + 1), 'every row once, in id order');
  const [{ transactions }] = await db.query(`select count(distinct xid)::int as transactions from ord_seen where key = 'solo'`);
  // One row per transaction before runs (3,000 commits); a run holds up to 5× the batch size.
  assert.ok(transactions <= 60, `3,000 rows in ${transactions} transactions`);
  console.log(`3,000 rows of one key in ${transactions} transactions`);
});

test('a failure inside a run holds back the rest of its key untouched (no attempt counted); other keys in the same claim go on', async () => {
  await db.query('truncate ord_seen');
  attemptsSeen.length = 0;
  failing.set('a:4', 2);
  const events: Ev[] = [];
  for (let n = 1; n <= 10; n++) for (const key of ['a', 'b']) events.push({ n, key });
  await store(events);
  await settled();
  const byKey = await orderByKey();
  assert.deepEqual(byKey.get('a'), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  assert.deepEqual(byKey.get('b'), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  const of = (key: string, n: number) => attemptsSeen.filter((a) => a.key === key && a.n === n).map((a) => a.attempt);
  assert.deepEqual(of('a', 4), [0, 1, 2], 'the failing row: two failures, then success');
  for (let n = 5; n <= 10; n++) assert.deepEqual(of('a', n), [0], `a:${n} ran once, as its first attempt (held back, never counted)`);
  for (let n = 1; n <= 10; n++) assert.deepEqual(of('b', n), [0], `b:${n} ran once`);
  assert.equal((await db.query(`select count(*)::int as n from pubsub.notification where channel = 'ordered_runs'`))[0].n, 0);
});

test('property: any interleaving of keys and failing rows, three workers (one claiming 5 rows at a time): per key every row succeeds once, in id order', async () => {
  // A third worker claims 5 rows at a time: its claims cut runs, and the next claim of its round starts at the cut key.
  workers.push(await listen({ databaseUrl: db.url, channels: ['ordered_runs'], pollIntervalMs: 50, batchSize: 5, logger: quiet }));
  const plan = fc.array(fc.record({ key: fc.constantFrom('k1', 'k2', 'k3', 'k4'), fails: fc.oneof({ weight: 5, arbitrary: fc.constant(0) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 2 }) }) }), { minLength: 1, maxLength: 120 });
  await fc.assert(
    fc.asyncProperty(plan, async (rows) => {
      await db.query('truncate ord_seen');
      failing.clear();
      const events = rows.map((r, i) => ({ n: i + 1, key: r.key }));
      rows.forEach((r, i) => r.fails && failing.set(`${r.key}:${i + 1}`, r.fails));
      await store(events);
      await settled();
      const byKey = await orderByKey();
      for (const key of new Set(events.map((e) => e.key))) {
        assert.deepEqual(byKey.get(key), events.filter((e) => e.key === key).map((e) => e.n), `key ${key} in order, each once`);
      }
    }),
    { numRuns: 8, endOnFailure: true },
  );
});
