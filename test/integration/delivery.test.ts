// Delivery guarantees: per-listener fan-out, retries and dead letters, timeouts, ordering, batching,
// context, LISTEN fallback and the upgrade from library version 1.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import {
  Listen,
  applyMigrations,
  generateMigration,
  listDead,
  listen,
  notify,
  purgeDead,
  retryDead,
  setContext,
  withContext,
  type NotificationContext,
  type Worker,
} from '../../src/index.js';
import { LIBRARY_SCHEMA } from '../../src/sql.js';
import { ROOT, runCli } from '../helpers/cli.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

class Event {
  n!: number;
  key?: string;
  fail?: number;
  poison?: boolean;
  hang?: boolean;
}

const calls: Record<string, Array<{ n: number; attempt: number; context?: unknown }>> = {};
const log = (name: string, e: Event, ctx: NotificationContext) => (calls[name] ??= []).push({ n: e.n, attempt: ctx.attempt, context: ctx.context });
const count = (name: string, n?: number) => (calls[name] ?? []).filter((c) => n === undefined || c.n === n).length;
const failures = new Map<string, number>(); // `${listener}:${n}` -> failures left
const quiet = { info() {}, warn() {}, error() {} };

class FanOut {
  @Listen('fanout')
  async healthy(e: Event, ctx: NotificationContext) {
    await ctx.tx!.query('insert into effects (listener, n) values ($1, $2)', ['healthy', e.n]);
    log('healthy', e, ctx);
  }

  @Listen('fanout')
  async flaky(e: Event, ctx: NotificationContext) {
    await ctx.tx!.query('insert into effects (listener, n) values ($1, $2)', ['flaky', e.n]);
    if (ctx.attempt < (e.fail ?? 0)) throw new Error(`flaky fails attempt ${ctx.attempt + 1}`);
    log('flaky', e, ctx);
  }
}

class Poison {
  @Listen('poison', { maxAttempts: 2, backoff: { baseMs: 20, maxMs: 40 } })
  handle(e: Event, ctx: NotificationContext) {
    if (e.poison) throw new Error(`poison ${e.n}`);
    log('poison', e, ctx);
  }
}

class Slow {
  @Listen('timed', { timeoutMs: 300, backoff: { baseMs: 20, maxMs: 40 } })
  async handle(e: Event, ctx: NotificationContext) {
    await ctx.tx!.query('select 1');
    if (e.hang && ctx.attempt === 0) await new Promise(() => {}); // never settles
    log('timed', e, ctx);
  }
}

const sequence: number[] = [];
class Ordered {
  @Listen('ordered', { ordered: true, orderKey: (e: Event) => e.key!, backoff: { baseMs: 1000, maxMs: 1000 } })
  async handle(e: Event, ctx: NotificationContext) {
    const left = failures.get(`ordered:${e.n}`) ?? 0;
    if (left > 0) {
      failures.set(`ordered:${e.n}`, left - 1);
      throw new Error(`ordered ${e.n} fails`);
    }
    await new Promise((r) => setTimeout(r, 2));
    sequence.push(e.n);
    log(`ordered:${e.key}`, e, ctx);
  }
}

const batches: number[][] = [];
class Batched {
  @Listen('batched', { type: Event, batch: { size: 10, waitMs: 50 } })
  async handle(events: Event[], ctx: NotificationContext) {
    assert.ok(events.every((e) => e instanceof Event));
    batches.push(events.map((e) => e.n));
    await ctx.tx!.query('insert into effects (listener, n) select $1, unnest($2::int[])', ['batched', events.map((e) => e.n)]);
  }
}

class Tenanted {
  @Listen('tenanted')
  handle(e: Event, ctx: NotificationContext) {
    log('tenanted', e, ctx);
  }
}

let db: TestDatabase;
let worker: Worker;

before(async () => {
  assert.ok(FanOut && Poison && Slow && Ordered && Batched && Tenanted);
  db = await createTestDatabase({ library: true, subscribe: true });
  await db.query('create table effects (listener text not null, n int not null)');
  worker = await listen({ databaseUrl: db.url, pollIntervalMs: 50, channels: ['fanout', 'poison', 'timed', 'batched'], logger: quiet });
});

after(async () => {
  await worker?.close();
  await db?.drop();
});

const effects = async (listener: string) => (await db.query('select n from effects where listener = $1 order by n', [listener])).map((r) => r.n);
const stored = async (channel: string) => db.query('select id::text, attempts, last_error, dead_at, listener from pubsub.notification where channel = $1', [channel]);

test('each listener of a channel processes each notification once, independently: one failing neither re-runs nor rolls back the other', async () => {
  await notify('fanout', { n: 1, fail: 2 }, { client: db.pool });
  await waitFor(() => count('flaky', 1) === 1, 'the flaky listener to succeed on its third attempt', 15_000);
  assert.equal(count('healthy', 1), 1);
  assert.deepEqual(await effects('healthy'), [1], 'the healthy listener ran once');
  assert.deepEqual(await effects('flaky'), [1], 'the failed attempts left no writes');
  assert.equal(calls.flaky![0]!.attempt, 2);
  await waitFor(async () => (await stored('fanout')).length === 0, 'both rows to be deleted');
});

test('a poison notification is dead-lettered after maxAttempts, never blocks the others, and can be listed, retried and purged', async () => {
  const client = await db.pool.connect();
  await client.query('begin');
  await notify('poison', { n: 1, poison: true }, { client });
  for (let n = 2; n <= 4; n++) await notify('poison', { n }, { client });
  await client.query('commit');
  client.release();
  await waitFor(() => count('poison') === 3, 'the healthy notifications');
  const [dead] = await waitFor(async () => {
    const rows = await stored('poison');
    return rows.length === 1 && rows[0].dead_at && rows;
  }, 'the poison notification to be dead-lettered');
  assert.equal(dead.attempts, 2);
  assert.match(dead.last_error, /poison 1/);
  assert.equal(dead.listener, 'Poison.handle');
  await new Promise((r) => setTimeout(r, 300));
  assert.equal((await stored('poison'))[0].attempts, 2, 'a dead notification is not retried on its own');

  const listed = await runCli(['dead', 'list', '--channel', 'poison'], { DATABASE_URL: db.url });
  assert.equal(listed.code, 0, listed.output);
  assert.match(listed.output, new RegExp(`^${dead.id}\\tpoison\\tPoison.handle\\t2 attempts\\tdead since .*Error: poison 1`, 'm'));
  const shown = await runCli(['dead', 'show', dead.id], { DATABASE_URL: db.url });
  assert.deepEqual(JSON.parse(shown.output).payload, { n: 1, poison: true });
  assert.equal((await runCli(['dead', 'retry'], { DATABASE_URL: db.url })).code, 1, 'retry needs an id or --all');

  assert.equal(await retryDead(db.url, { channel: 'poison' }), 1);
  await waitFor(async () => (await stored('poison'))[0]?.dead_at, 'the retried notification to die again');
  assert.equal((await listDead(db.url, { listener: 'Poison.handle' })).length, 1);
  const purged = await runCli(['dead', 'purge', '--all', '--channel', 'poison'], { DATABASE_URL: db.url });
  assert.match(purged.output, /1 notification\(s\) deleted/);
  assert.equal((await stored('poison')).length, 0);
  assert.equal(await purgeDead(db.url), 0);
});

test('a hung listener is cut off by its timeout, the attempt counts as failed, and the retry succeeds', async () => {
  await notify('timed', { n: 1, hang: true }, { client: db.pool });
  await waitFor(() => count('timed', 1) === 1, 'the retry after the timeout', 10_000);
  assert.equal(calls.timed![0]!.attempt, 1);
  await notify('timed', { n: 2 }, { client: db.pool });
  await waitFor(() => count('timed', 2) === 1, 'the next notification');
  await waitFor(async () => (await stored('timed')).length === 0, 'the rows to be deleted');
});

test('a batch listener gets arrays of at most batch.size, each notification exactly once', async () => {
  const client = await db.pool.connect();
  await client.query('begin');
  for (let n = 1; n <= 25; n++) await notify('batched', { n }, { client });
  await client.query('commit');
  client.release();
  await waitFor(async () => (await effects('batched')).length === 25, 'all 25 items');
  assert.ok(batches.every((b) => b.length >= 1 && b.length <= 10), JSON.stringify(batches));
  assert.ok(batches.length <= 4, `few calls, not one per item: ${JSON.stringify(batches)}`);
  assert.deepEqual(batches.flat().sort((a, b) => a - b), Array.from({ length: 25 }, (_, i) => i + 1));
});

test('ordered listeners process each key strictly in order across workers; a failure holds back only its own key', async () => {
  const second = await listen({ databaseUrl: db.url, pollIntervalMs: 50, channels: ['ordered'], logger: quiet });
  const third = await listen({ databaseUrl: db.url, pollIntervalMs: 50, channels: ['ordered'], logger: quiet });
  try {
    failures.set('ordered:4', 1); // n = 1, 4, 7, … are key a: its second notification fails once
    const client = await db.pool.connect();
    await client.query('begin');
    let n = 0;
    for (let i = 0; i < 10; i++) for (const key of ['a', 'b', 'c']) await notify('ordered', { n: ++n, key }, { client });
    await client.query('commit');
    client.release();
    await waitFor(() => sequence.length === 30, 'all 30', 15_000);
    for (const key of ['a', 'b', 'c']) {
      const seen = calls[`ordered:${key}`]!.map((c) => c.n);
      assert.deepEqual(seen, [...seen].sort((x, y) => x - y), `key ${key} in order: ${seen}`);
      assert.equal(new Set(seen).size, 10);
    }
    // Key a waited at least 0.5 s for the retry of n = 4; keys b and c did not wait for it.
    const retried = sequence.indexOf(4);
    assert.deepEqual(sequence.slice(0, retried).filter((x) => x % 3 === 1), [1], 'nothing of key a overtook n = 4');
    assert.equal(sequence.slice(0, retried).filter((x) => x % 3 !== 1).length, 20, `b and c went on: ${sequence}`);
  } finally {
    await second.close();
    await third.close();
  }
});
