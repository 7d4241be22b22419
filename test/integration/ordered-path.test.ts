// Order keys stored by the writer (issue 12, point 3; library schema 8): an ordered listener whose
// orderKey is a payload field path gets each row's key from pubsub.notify() or its trigger function, so
// the worker no longer writes a second version of every row to key it. Rows that arrive without a key
// (stored before version 8, or by an older trigger function) are keyed by the worker in SQL, exactly
// as the writers would have keyed them, so a key's old and new rows stay in one order.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { Listen, listen, statusMonitor, type NotificationContext, type Worker } from '../../src/index.js';
import { subscriptionsSql, createTriggerSql, keyRowsSql, triggerFunctionSql, type TriggerDefinition } from '../../src/sql.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

const HOSTILE = `we"ird'.}{$pubsub$,x`;

class P {
  a?: unknown;
}

class Keys {
  @Listen('op_keys', { ordered: true, orderKey: 'a.b' })
  async byPath(_: P) {}
  @Listen('op_keys', { ordered: true })
  async oneKey(_: P) {}
  @Listen('op_keys', { ordered: true, orderKey: (p: P) => String((p.a as { b?: unknown } | undefined)?.b) })
  async byFunction(_: P) {}
  @Listen('op_keys')
  async unordered(_: P) {}
  @Listen('op_hostile', { ordered: true, orderKey: HOSTILE })
  async hostile(_: P) {}
}

class Ev {
  k!: string;
  n!: number;
}

class Mixed {
  @Listen('op_mixed', { ordered: true, orderKey: 'k' })
  async handle(e: Ev, ctx: NotificationContext) {
    await ctx.tx!.query('insert into op_seen (n, key) values ($1, $2)', [e.n, e.k]);
  }
}

let db: TestDatabase;
const workers: Worker[] = [];
const quiet = { info() {}, warn() {}, error() {} };

before(async () => {
  assert.ok(Keys && Mixed);
  db = await createTestDatabase({ library: true, subscribe: true });
  await db.query('create table op_seen (seq bigint generated always as identity, n int not null, key text not null)');
  await db.query('create table op_row (id int primary key, data jsonb)');
  const def: TriggerDefinition = {
    key: 'after_insert_op',
    channel: 'op_rows',
    durable: true,
    spec: { model: 'OpRow', when: 'AFTER', events: ['INSERT'] },
    model: {
      name: 'OpRow',
      table: 'op_row',
      fields: [
        { name: 'id', type: 'Int', kind: 'scalar', list: false, optional: false, column: 'id' },
        { name: 'data', type: 'Json', kind: 'scalar', list: false, optional: true, column: 'data' },
      ],
      primaryKey: ['id'],
    },
    listeners: ['Rows.byFunction', 'Rows.byPath', 'Rows.hostile', 'Rows.oneKey'],
    orderPaths: { 'Rows.byPath': ['new', 'data', 'a', 'b'], 'Rows.hostile': ['new', 'data', ...HOSTILE.split('.')], 'Rows.oneKey': [] },
  };
  await db.query(`${triggerFunctionSql(def)}\n${createTriggerSql(def)}`);
});
after(async () => {
  for (const w of workers) await w.close();
  await db?.drop();
});

/** The key the worker gives a copy of row `id` stored without one, for listener `listener` keyed by `path`. */
async function workerKey(id: string, listener: string, path: string[]): Promise<string> {
  const [copy] = await db.query(`insert into pubsub.notification (channel, listener, payload) select 'op_copy', $2, payload from pubsub.notification where id = $1 returning id::text`, [id, listener]);
  await db.query(keyRowsSql, [listener, path]);
  const [{ order_key }] = await db.query('delete from pubsub.notification where id = $1 returning order_key', [copy.id]);
  return order_key;
}

/** Any JSON value, a missing field (undefined), or the values whose text forms differ between JavaScript and PostgreSQL. */
const value = fc.oneof(
  fc.constant(undefined),
  fc.constant(null),
  fc.boolean(),
  fc.integer(),
  fc.double({ noNaN: true, noDefaultInfinity: true }),
  fc.constantFrom(1e21, 0.1, -0, 123456789012345680000, 5e-324),
  fc.string({ unit: 'grapheme' }),
  fc.string({ unit: 'binary' }).filter((s) => !s.includes('\0')), // jsonb cannot hold U+0000
  fc.jsonValue({ maxDepth: 3 }).filter((v) => !JSON.stringify(v).includes('\\u0000')),
);

test('property: the key pubsub.notify() stores, the key a trigger stores and the key the worker computes for an unkeyed row are the same, for any payload', async () => {
  let id = 0;
  await fc.assert(
    fc.asyncProperty(value, async (v) => {
      const payload = v === undefined ? { a: {} } : { a: { b: v } };
      const [{ id: stored }] = await db.query(`select pubsub.notify('op_keys', $1::jsonb)::text as id`, [JSON.stringify(payload)]);
      await db.query('select pubsub.fan_out(1000)'); // several listeners: stored once, made into their rows by a worker
      const rows = await db.query(`select id::text, listener, order_key from pubsub.notification where channel = 'op_keys' and id >= $1 order by listener`, [stored]);
      const keys = Object.fromEntries(rows.map((r) => [r.listener, r.order_key]));
      assert.equal(keys['Keys.oneKey'], '', 'one key: stored as the empty key');
      assert.equal(keys['Keys.byFunction'], null, 'a function key is left to the worker');
      assert.equal(keys['Keys.unordered'], null);
      const written = keys['Keys.byPath'];
      assert.equal(typeof written, 'string', 'a path key is stored by notify()');
      if (v === undefined || v === null) assert.equal(written, '', 'missing or null: the empty key');
      else if (typeof v === 'string') assert.equal(written, v, 'a string: itself');
      assert.equal(await workerKey(rows.find((r) => r.listener === 'Keys.byPath').id, 'Keys.byPath', ['a', 'b']), written, 'the worker computes the same key');
      // The same value in a row: the trigger function stores the same key.
      await db.query('insert into op_row (id, data) values ($1, $2::jsonb)', [++id, JSON.stringify(payload)]);
      await db.query('select pubsub.fan_out(1000)');
      const trig = Object.fromEntries((await db.query(`select listener, order_key from pubsub.notification where channel = 'op_rows' and (payload -> 'new' ->> 'id')::int = $1`, [id])).map((r) => [r.listener, r.order_key]));
      assert.equal(trig['Rows.byPath'], written, 'the trigger stores the same key');
      assert.equal(trig['Rows.oneKey'], '');
      assert.equal(trig['Rows.byFunction'], null);
      await db.query(`delete from pubsub.notification where channel in ('op_keys', 'op_rows')`);
    }),
    { numRuns: 150 },
  );
});

test('a hostile path (quotes, braces, a dollar-quote tag) is stored as its segments and keys rows by the field it names, in notify() and in a trigger', async () => {
  const [{ order_path }] = await db.query(`select order_path from pubsub.subscription where listener = 'Keys.hostile'`);
  assert.deepEqual(order_path, HOSTILE.split('.'));
  const payload = { [HOSTILE.split('.')[0]!]: { [HOSTILE.split('.')[1]!]: 'v1' } };
  await db.query(`select pubsub.notify('op_hostile', $1::jsonb)`, [JSON.stringify(payload)]);
  await db.query('select pubsub.fan_out(1000)');
  const [{ order_key }] = await db.query(`select order_key from pubsub.notification where listener = 'Keys.hostile'`);
  assert.equal(order_key, 'v1');
  await db.query('insert into op_row (id, data) values (-1, $1::jsonb)', [JSON.stringify(payload)]);
  await db.query('select pubsub.fan_out(1000)');
  const [trig] = await db.query(`select order_key from pubsub.notification where listener = 'Rows.hostile'`);
  assert.equal(trig.order_key, 'v1');
  await db.query(`delete from pubsub.notification where channel in ('op_hostile', 'op_rows')`);
});

/** Stores events of op_mixed: `keyed` through pubsub.notify() (key stored), else as a version 6 writer did (no key). */
async function store(events: Ev[], keyed: boolean): Promise<void> {
  const json = events.map((e) => JSON.stringify(e));
  if (keyed) await db.query(`select pubsub.notify('op_mixed', e::jsonb) from unnest($1::text[]) with ordinality u(e, i) order by i`, [json]);
  else await db.query(`insert into pubsub.notification (channel, listener, payload) select 'op_mixed', 'Mixed.handle', e::jsonb from unnest($1::text[]) with ordinality u(e, i) order by i`, [json]);
}

const settled = () => waitFor(async () => (await db.query(`select count(*)::int as n from pubsub.notification where channel = 'op_mixed'`))[0].n === 0, 'every op_mixed row processed', 60_000);

async function orderByKey(): Promise<Map<string, number[]>> {
  const byKey = new Map<string, number[]>();
  for (const r of await db.query('select key, n from op_seen order by seq')) byKey.set(r.key, [...(byKey.get(r.key) ?? []), r.n]);
  return byKey;
}

test('a backlog of rows stored before version 8 (no key) followed by rows with their key stored keeps per-key order', async () => {
  const events = (from: number, count: number) => Array.from({ length: count }, (_, i) => ({ k: `k${(from + i) % 7}`, n: from + i }));
  await store(events(0, 2500), false); // more than one catch-up batch of the function-key path (1,000)
  await store(events(2500, 1500), true);
  const [{ unkeyed }] = await db.query(`select count(*) filter (where order_key is null)::int as unkeyed from pubsub.notification where channel = 'op_mixed'`);
  assert.equal(unkeyed, 2500);
  // Claims as large as the backlog: one claim could take a key's stored-key rows past its unkeyed ones.
  for (let i = 0; i < 2; i++) workers.push(await listen({ databaseUrl: db.url, channels: ['op_mixed'], pollIntervalMs: 50, batchSize: 4000, logger: quiet }));
  await settled();
  const byKey = await orderByKey();
  assert.equal([...byKey.values()].flat().length, 4000, 'every row once');
  for (const [key, ns] of byKey) assert.deepEqual(ns, [...ns].sort((a, b) => a - b), `key ${key} in write order`);
});

test('a worker that finds another keying the old rows waits for it instead of claiming the newer keyed rows first', async () => {
  await db.query('truncate op_seen');
  for (const w of workers.splice(0)) await w.close();
  await store(Array.from({ length: 10 }, (_, i) => ({ k: 'a', n: i })), false); // stored before version 8: no key yet
  await store(Array.from({ length: 5 }, (_, i) => ({ k: 'a', n: 10 + i })), true);
  // Another worker keying them: its transaction holds the listener's keying lock.
  const other = await db.pool.connect();
  try {
    await other.query('begin');
    await other.query(`select pg_advisory_xact_lock(hashtext('pubsub.order:Mixed.handle'))`);
    workers.push(await listen({ databaseUrl: db.url, channels: ['op_mixed'], pollIntervalMs: 50, logger: quiet }));
    await new Promise((r) => setTimeout(r, 700));
    assert.deepEqual(await db.query('select n from op_seen'), [], 'nothing claimed while the older rows wait for their key');
    await other.query('commit');
  } finally {
    other.release();
  }
  await settled();
  assert.deepEqual((await orderByKey()).get('a'), Array.from({ length: 15 }, (_, i) => i));
});

test('changing the path with a backlog waiting: stored rows keep the key they were stored with; rows stored after the change get the new one', async () => {
  await db.query('truncate op_seen');
  for (const w of workers.splice(0)) await w.close();
  // The path was "n" (each row its own key) when these were stored; a migration then sets "k".
  await db.query(subscriptionsSql([], [], [{ channel: 'op_mixed', listener: 'Mixed.handle', path: ['n'] }]));
  await store([{ k: 'a', n: 1 }, { k: 'a', n: 2 }], true);
  await db.query(subscriptionsSql([], [], [{ channel: 'op_mixed', listener: 'Mixed.handle', path: ['k'] }]));
  await store([{ k: 'a', n: 3 }, { k: 'a', n: 4 }], true);
  const keys = (await db.query(`select order_key from pubsub.notification where channel = 'op_mixed' order by id`)).map((r) => r.order_key);
  assert.deepEqual(keys, ['1', '2', 'a', 'a'], 'keys are never rewritten: the old rows keep theirs');
  workers.push(await listen({ databaseUrl: db.url, channels: ['op_mixed'], pollIntervalMs: 50, logger: quiet }));
  await settled();
  const ns = (await orderByKey()).get('a')!;
  assert.deepEqual([...ns].sort(), [1, 2, 3, 4], 'every row once');
  assert.ok(ns.indexOf(3) < ns.indexOf(4), 'rows stored under one key keep their order');
});

test('pubsub status sees a subscription whose stored order key path is not the listener\'s', async () => {
  const monitor = statusMonitor({ databaseUrl: db.url });
  try {
    const drift = async () => (await monitor.read()).drift.subscriptions.orderKeys;
    await db.query(subscriptionsSql([], [], [{ channel: 'op_mixed', listener: 'Mixed.handle', path: ['k'] }]));
    assert.deepEqual(await drift(), [], 'as the migration wrote it');
    await db.query(`update pubsub.subscription set order_path = '{n}' where listener = 'Mixed.handle'`);
    await db.query(`update pubsub.subscription set order_path = null where listener = 'Keys.oneKey'`);
    assert.deepEqual(await drift(), [
      { channel: 'op_keys', listener: 'Keys.oneKey', expected: [], installed: null, detail: 'one key in the listeners, no key stored (the worker keys the rows) in the database' },
      { channel: 'op_mixed', listener: 'Mixed.handle', expected: ['k'], installed: ['n'], detail: 'field path "k" in the listeners, field path "n" in the database' },
    ]);
  } finally {
    await monitor.close();
  }
});
