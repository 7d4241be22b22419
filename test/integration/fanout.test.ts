// A write for several listeners is stored once (issue 12, point 1; library schema 10): pubsub.notify()
// and the trigger functions store one row of pubsub.fanout naming the listeners, and a worker makes the
// listeners' rows of pubsub.notification from it (pubsub.fan_out(), its own transaction) before any
// listener runs. Each listener then has its own attempts, retries, dead letter and order, as before;
// these tests make each of those fail the way production would and check that nothing is lost,
// duplicated or stuck.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { Listen, drainOnce, getRegistry, listen, notifyMany, status, type NotificationContext, type Worker } from '../../src/index.js';
import { Registry } from '../../src/registry.js';
import { FANOUT_LOCK, WAKE_GATE, scrapeSql, createTriggerSql, triggerFunctionSql, type TriggerDefinition } from '../../src/sql.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

class Ev {
  n!: number;
  k?: string;
}

const seen: string[] = [];
const failFirst = new Map<number, number>();

class Three {
  @Listen('fo_three')
  async a(e: Ev, ctx: NotificationContext) {
    await ctx.tx!.query('insert into fo_seen (who, n, nid) values ($1, $2, $3)', ['a', e.n, ctx.id]);
  }
  @Listen('fo_three')
  async b(e: Ev, ctx: NotificationContext) {
    await ctx.tx!.query('insert into fo_seen (who, n) values ($1, $2)', ['b', e.n]);
  }
  @Listen('fo_three', { maxAttempts: 5, backoff: { baseMs: 20, maxMs: 40 } })
  async flaky(e: Ev, ctx: NotificationContext) {
    const left = failFirst.get(e.n) ?? 0;
    if (left > 0) {
      failFirst.set(e.n, left - 1);
      throw new Error(`flaky fails ${e.n}`);
    }
    await ctx.tx!.query('insert into fo_seen (who, n) values ($1, $2)', ['flaky', e.n]);
  }
}

class Killer {
  @Listen('fo_kill')
  async calm(e: Ev, ctx: NotificationContext) {
    await ctx.tx!.query('insert into fo_seen (who, n) values ($1, $2)', ['calm', e.n]);
  }
  @Listen('fo_kill', { maxAttempts: 3, backoff: { baseMs: 20, maxMs: 40 } })
  async killer(e: Ev, ctx: NotificationContext) {
    seen.push(`killer:${e.n}`);
    // Every attempt loses its transaction: its connection is cut by its own backend.
    await ctx.tx!.query('select pg_terminate_backend(pg_backend_pid())');
  }
}

class Split {
  @Listen('fo_split')
  async left(e: Ev, ctx: NotificationContext) {
    await ctx.tx!.query('insert into fo_seen (who, n) values ($1, $2)', ['left', e.n]);
  }
  @Listen('fo_split')
  async right(e: Ev, ctx: NotificationContext) {
    await ctx.tx!.query('insert into fo_seen (who, n) values ($1, $2)', ['right', e.n]);
  }
}

class Ordered {
  @Listen('fo_order', { ordered: true, orderKey: 'k' })
  async inOrder(e: Ev, ctx: NotificationContext) {
    await ctx.tx!.query('insert into fo_seen (who, n, k) values ($1, $2, $3)', ['ordered', e.n, e.k]);
  }
  @Listen('fo_order')
  async any(e: Ev, ctx: NotificationContext) {
    await ctx.tx!.query('insert into fo_seen (who, n, k) values ($1, $2, $3)', ['any', e.n, e.k]);
  }
}

let db: TestDatabase;
const workers: Worker[] = [];
const quiet = { info() {}, warn() {}, error() {} };
const errors: string[] = [];
const recording = { info() {}, warn() {}, error: (m: string) => void errors.push(m) };

before(async () => {
  assert.ok(Three && Killer && Split && Ordered);
  db = await createTestDatabase({ library: true, subscribe: true });
  await db.query('create table fo_seen (seq bigint generated always as identity, who text not null, n int not null, k text, nid text)');
});
after(async () => {
  for (const w of workers) await w.close();
  await db?.drop();
});

async function stopWorkers(): Promise<void> {
  for (const w of workers.splice(0)) await w.close();
}

const notifyAll = (channel: string, events: Ev[]) =>
  db.query(`select pubsub.notify($1, e::jsonb) from unnest($2::text[]) with ordinality u(e, i) order by i`, [channel, events.map((e) => JSON.stringify(e))]);

async function seenBy(who: string): Promise<number[]> {
  return (await db.query('select n from fo_seen where who = $1 order by seq', [who])).map((r) => r.n);
}

const empty = (channel: string) =>
  waitFor(async () => {
    const [r] = await db.query(`select (select count(*) from pubsub.notification where channel = $1 and dead_at is null)::int
      + (select count(*) from pubsub.fanout where channel = $1)::int as n`, [channel]);
    return r.n === 0;
  }, `every ${channel} write processed`, 30_000);

test('a write for three listeners is stored once; each listener gets it once, and one that fails retries alone', async () => {
  const ids = (await notifyAll('fo_three', [{ n: 1 }, { n: 2 }, { n: 3 }])).map((r) => String(r.notify));
  const [stored] = await db.query(`select (select count(*) from pubsub.fanout where channel = 'fo_three')::int as fanout,
    (select count(*) from pubsub.notification where channel = 'fo_three')::int as rows,
    (select listeners from pubsub.fanout where channel = 'fo_three' limit 1) as listeners`);
  assert.deepEqual(stored, { fanout: 3, rows: 0, listeners: ['Three.a', 'Three.b', 'Three.flaky'] });
  // Waiting writes count as pending for each of their listeners.
  const report = await status({ databaseUrl: db.url });
  for (const l of ['Three.a', 'Three.b', 'Three.flaky']) assert.equal(report.listeners.find((s) => s.listener === l)?.pending, 3, l);
  const [{ backlog }] = await db.query(scrapeSql, [['fo_three']]); // the metrics' backlog gauges
  assert.deepEqual(backlog.map((b: { listener: string; pending: number; dead: number }) => [b.listener, b.pending, b.dead]).sort(), [['Three.a', 3, 0], ['Three.b', 3, 0], ['Three.flaky', 3, 0]]);
  failFirst.set(2, 2);
  workers.push(await listen({ databaseUrl: db.url, channels: ['fo_three'], pollIntervalMs: 100, logger: quiet })); // retries are found by the poll
  await empty('fo_three');
  assert.deepEqual(await seenBy('a'), [1, 2, 3]);
  const nids = (await db.query(`select nid from fo_seen where who = 'a' order by n`)).map((r) => r.nid);
  assert.deepEqual(nids, ids, 'notify() returned the id the first listener sees as ctx.id');
  assert.deepEqual(await seenBy('b'), [1, 2, 3]);
  assert.deepEqual((await seenBy('flaky')).sort(), [1, 2, 3], 'flaky: each once, 2 after two failures');
  assert.equal(failFirst.get(2), 0);
  await stopWorkers();
});

test('a listener that cuts its connection on a fanned-out write: attempts counted (its row was committed before it ran), dead-lettered after maxAttempts, the other listener once', async () => {
  await notifyAll('fo_kill', [{ n: 7 }]);
  workers.push(await listen({ databaseUrl: db.url, channels: ['fo_kill'], pollIntervalMs: 100, logger: quiet }));
  await waitFor(async () => (await db.query(`select count(*)::int as n from pubsub.notification where listener = 'Killer.killer' and dead_at is not null`))[0].n === 1, 'the killer row dead', 30_000);
  // Its neighbour's claim was lost with it: counted once, retried after its own backoff, then done once.
  await waitFor(async () => (await seenBy('calm')).length > 0, 'calm done', 10_000);
  assert.deepEqual(await seenBy('calm'), [7]);
  assert.equal(seen.filter((s) => s === 'killer:7').length, 3, 'attempted maxAttempts times, no more');
  const [left] = await db.query(`select (select count(*) from pubsub.fanout)::int as fanout, (select count(*) from pubsub.notification where channel = 'fo_kill' and dead_at is null)::int as live`);
  assert.deepEqual(left, { fanout: 0, live: 0 });
  await stopWorkers();
});

test('split workers: one serving only "left" moves the writes; the worker serving only "right", asleep, is woken for them', async () => {
  const only = (id: string) => {
    const r = new Registry();
    for (const l of getRegistry().get('fo_split')!.listeners) if (l.id === id) r.register(l);
    return r;
  };
  // Polls far apart: only a wake-up can bring the rows in time.
  workers.push(await listen({ databaseUrl: db.url, registry: only('Split.right'), pollIntervalMs: 60_000, logger: quiet }));
  workers.push(await listen({ databaseUrl: db.url, registry: only('Split.left'), pollIntervalMs: 60_000, logger: quiet }));
  await new Promise((r) => setTimeout(r, 300)); // both asleep
  for (let i = 0; i < 20; i++) await notifyAll('fo_split', [{ n: i }]);
  await empty('fo_split');
  await waitFor(async () => (await seenBy('right')).length === 20, 'right has all 20', 5_000);
  assert.deepEqual(await seenBy('left'), Array.from({ length: 20 }, (_, i) => i));
  assert.deepEqual((await seenBy('right')).sort((a, b) => a - b), Array.from({ length: 20 }, (_, i) => i));
  await stopWorkers();
});

test('an ordered listener beside another: per-key order and each write once, with 4 concurrent writers and 2 workers', async () => {
  for (let i = 0; i < 2; i++) workers.push(await listen({ databaseUrl: db.url, channels: ['fo_order'], pollIntervalMs: 50, logger: quiet }));
  const writers = Array.from({ length: 4 }, (_, w) => (async () => {
    const c = new pg.Client(db.url);
    await c.connect();
    try {
      // Each writer owns its keys, so its writes' order is the order each key must keep.
      for (let i = 0; i < 150; i++) await c.query(`select pubsub.notify('fo_order', $1::jsonb)`, [JSON.stringify({ n: w * 1000 + i, k: `w${w}k${i % 3}` })]);
    } finally {
      await c.end();
    }
  })());
  await Promise.all(writers);
  await empty('fo_order');
  const rows = await db.query(`select who, n, k from fo_seen where who in ('ordered', 'any') order by seq`);
  for (const who of ['ordered', 'any']) assert.equal(new Set(rows.filter((r) => r.who === who).map((r) => r.n)).size, 600, `${who}: 600 distinct`);
  assert.equal(rows.length, 1200, 'no duplicates');
  const byKey = new Map<string, number[]>();
  for (const r of rows.filter((r) => r.who === 'ordered')) byKey.set(r.k, [...(byKey.get(r.k) ?? []), r.n]);
  for (const [k, ns] of byKey) assert.deepEqual(ns, [...ns].sort((a, b) => a - b), `key ${k} in write order`);
  await stopWorkers();
});

test('a worker whose move is cut (its backend killed while it waits) loses nothing: the writes stay and are moved on its next try', async () => {
  await db.query('truncate fo_seen');
  errors.length = 0;
  const hold = await db.pool.connect();
  try {
    await hold.query('begin');
    await hold.query(`select pg_advisory_xact_lock(${FANOUT_LOCK}, 0)`); // another mover, for as long as we like
    await notifyAll('fo_three', [{ n: 10 }, { n: 11 }]);
    workers.push(await listen({ databaseUrl: db.url, channels: ['fo_three'], pollIntervalMs: 100, logger: recording }));
    await waitFor(async () => (await db.query(`select count(*)::int as n from pg_stat_activity where datname = current_database() and query like '%fan_out%' and wait_event_type = 'Lock'`))[0].n > 0, 'the worker waits to move', 5_000);
    await db.query(`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and query like '%fan_out%' and wait_event_type = 'Lock'`);
    await waitFor(() => errors.some((e) => /could not be made into their listeners' rows/.test(e)), 'the cut move reported', 5_000);
    const [w] = await db.query(`select count(*)::int as n from pubsub.fanout where channel = 'fo_three'`);
    assert.equal(w.n, 2, 'both writes still stored');
    await hold.query('commit');
  } finally {
    hold.release();
  }
  await empty('fo_three');
  for (const who of ['a', 'b', 'flaky']) assert.deepEqual(await seenBy(who), [10, 11], who);
  await stopWorkers();
});

test('notifyMany() whose connection is cut mid-statement stores nothing; sent again, every payload is processed once by each listener', async () => {
  await db.query('truncate fo_seen');
  const events = Array.from({ length: 500 }, (_, i) => ({ n: 5000 + i }));
  const gate = await db.pool.connect();
  const c = new pg.Client(db.url);
  await c.connect();
  c.on('error', () => {});
  try {
    // A worker's gate held: the statement stores the first payload, then waits in its wake-up check.
    await gate.query('begin');
    await gate.query(`select pg_advisory_xact_lock(${WAKE_GATE}, hashtext('fo_split'))`);
    const sent = notifyMany('fo_split', events, { client: c });
    const pid: number = await waitFor(async () => (await db.query(`select pid from pg_stat_activity where query like '%pubsub.notify(%' and wait_event_type = 'Lock' and pid = $1`, [(c as unknown as { processID: number }).processID]))[0]?.pid, 'notifyMany waiting', 5_000);
    await db.query('select pg_terminate_backend($1)', [pid]);
    await assert.rejects(sent);
    await gate.query('commit');
  } finally {
    gate.release();
    await c.end().catch(() => {});
  }
  const [{ n }] = await db.query(`select (select count(*) from pubsub.fanout where (payload->>'n')::int >= 5000)::int + (select count(*) from pubsub.notification where (payload->>'n')::int >= 5000)::int as n`);
  assert.equal(n, 0, 'nothing of the cut statement is stored');
  const again = new pg.Client(db.url);
  await again.connect();
  try {
    assert.equal((await notifyMany('fo_split', events, { client: again })).length, 500);
  } finally {
    await again.end();
  }
  await drainOnce({ databaseUrl: db.url, channels: ['fo_split'], logger: quiet });
  for (const who of ['left', 'right']) assert.deepEqual(await seenBy(who), events.map((e) => e.n), `${who}: each once, in order`);
});

test('drainOnce() counts and processes writes waiting to be moved', async () => {
  await db.query('truncate fo_seen');
  await notifyAll('fo_split', [{ n: 1 }, { n: 2 }]);
  const summary = await drainOnce({ databaseUrl: db.url, channels: ['fo_split'], logger: quiet });
  assert.equal(summary.processed, 4);
  assert.deepEqual(await seenBy('left'), [1, 2]);
  assert.deepEqual(await seenBy('right'), [1, 2]);
});

test('a trigger for two listeners stores each row once; a role with only the documented worker grants moves it and cannot read it', async () => {
  await db.query('create table fo_row (id int primary key)');
  const def: TriggerDefinition = {
    key: 'after_insert_fo',
    channel: 'fo_split',
    durable: true,
    spec: { model: 'FoRow', when: 'AFTER', events: ['INSERT'] },
    model: { name: 'FoRow', table: 'fo_row', fields: [{ name: 'id', type: 'Int', kind: 'scalar', list: false, optional: false, column: 'id' }], primaryKey: ['id'] },
    listeners: ['Split.left', 'Split.right'],
  };
  await db.query(`${triggerFunctionSql(def)}\n${createTriggerSql(def)}`);
  await db.query('insert into fo_row select generate_series(1, 5)');
  const [stored] = await db.query(`select (select count(*) from pubsub.fanout where channel = 'fo_split')::int as fanout, (select count(*) from pubsub.notification where channel = 'fo_split')::int as rows`);
  assert.deepEqual(stored, { fanout: 5, rows: 0 });
  const role = `fo_worker_${Date.now()}`;
  await db.query(`create role ${role}; grant usage on schema pubsub to ${role}; grant select, insert, update, delete on pubsub.notification to ${role}`);
  const c = await db.pool.connect();
  try {
    await c.query(`set role ${role}`);
    assert.equal((await c.query('select pubsub.fanout_waiting() as w')).rows[0].w, true);
    await assert.rejects(c.query('select * from pubsub.fanout'), /permission denied/);
    assert.equal((await c.query('select pubsub.fan_out(1000) as moved')).rows[0].moved, 5);
    assert.equal((await c.query('select pubsub.fanout_waiting() as w')).rows[0].w, false);
    await c.query('reset role');
  } finally {
    c.release();
  }
  const rows = await db.query(`select listener, count(*)::int as n from pubsub.notification where channel = 'fo_split' group by 1 order by 1`);
  assert.deepEqual(rows, [{ listener: 'Split.left', n: 5 }, { listener: 'Split.right', n: 5 }]);
  await db.query(`delete from pubsub.notification where channel = 'fo_split'; drop owned by ${role}; drop role ${role}`);
});
