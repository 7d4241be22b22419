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
import { LIBRARY_SCHEMA, LIBRARY_SCHEMA_VERSION } from '../../src/sql.js';
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
  @Listen('ordered', { ordered: true, orderKey: (e: Event) => e.key!, backoff: { baseMs: 3000, maxMs: 3000 } })
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
  // Its count is taken inside the attempt, before the commit: read the writes once both rows are gone.
  await waitFor(async () => (await stored('fanout')).length === 0, 'both rows to be deleted');
  assert.equal(count('healthy', 1), 1);
  assert.deepEqual(await effects('healthy'), [1], 'the healthy listener ran once');
  assert.deepEqual(await effects('flaky'), [1], 'the failed attempts left no writes');
  assert.equal(calls.flaky![0]!.attempt, 2);
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
    // Key a waited at least 1.5 s (the backoff, jittered) for the retry of n = 4; keys b and c did not wait for it.
    const retried = sequence.indexOf(4);
    assert.deepEqual(sequence.slice(0, retried).filter((x) => x % 3 === 1), [1], 'nothing of key a overtook n = 4');
    assert.equal(sequence.slice(0, retried).filter((x) => x % 3 !== 1).length, 20, `b and c went on: ${sequence}`);
  } finally {
    await second.close();
    await third.close();
  }
});

test('a context set on a transaction or around notify() travels with the notification, never leaks to the next transaction, and can shard workers', async () => {
  const pool = new pg.Pool({ connectionString: db.url, max: 1 }); // one connection: any leak would show
  const acme = await listen({ databaseUrl: db.url, pollIntervalMs: 50, channels: ['tenanted'], context: { tenant: 'acme' }, logger: quiet });
  try {
    const client = await pool.connect();
    await client.query('begin');
    await setContext(client, { tenant: 'acme', requestId: 'r-1' });
    await notify('tenanted', { n: 1 }, { client });
    await client.query('commit');
    await notify('tenanted', { n: 2 }, { client }); // same connection, next transaction: no context
    client.release();
    await withContext({ tenant: 'globex' }, () => notify('tenanted', { n: 3 }, { client: pool }));
    await notify('tenanted', { n: 4 }, { client: pool, context: { tenant: 'acme', requestId: 'r-4' } });

    await waitFor(() => count('tenanted') === 2, 'the acme notifications');
    await new Promise((r) => setTimeout(r, 200));
    assert.deepEqual(
      calls.tenanted!.map((c) => [c.n, c.context]),
      [
        [1, { tenant: 'acme', requestId: 'r-1' }],
        [4, { tenant: 'acme', requestId: 'r-4' }],
      ],
      'the acme worker took only acme notifications',
    );
    const left = await db.query(`select payload->>'n' as n, context from pubsub.notification where channel = 'tenanted' order by id`);
    assert.deepEqual(left, [
      { n: '2', context: null },
      { n: '3', context: { tenant: 'globex' } },
    ]);
  } finally {
    await acme.close();
    await pool.end();
  }
  const everyone = await listen({ databaseUrl: db.url, pollIntervalMs: 50, channels: ['tenanted'], logger: quiet });
  await waitFor(() => count('tenanted') === 4, 'the rest, by a worker without a context filter');
  await everyone.close();
});

test('where notifications never arrive on LISTEN, the worker warns once and polls; --no-listen polls from the start', async () => {
  const other = await createTestDatabase(); // NOTIFY is per database: LISTEN there hears nothing from here
  const warnings: string[] = [];
  const polling = await listen({
    databaseUrl: db.url,
    listenUrl: other.url,
    pollIntervalMs: 100,
    channels: ['fanout'],
    logger: { ...quiet, warn: (m) => warnings.push(m) },
  });
  try {
    await waitFor(() => warnings.some((w) => /test NOTIFY did not arrive.*falling back to polling every 100 ms/.test(w)), 'the fallback warning', 10_000);
    await worker.close(); // leave the fan-out channel to the polling worker
    await notify('fanout', { n: 50 }, { client: db.pool });
    await waitFor(() => count('healthy', 50) === 1 && count('flaky', 50) === 1, 'delivery by polling');
    assert.equal(warnings.filter((w) => /falling back/.test(w)).length, 1, 'warned once');
  } finally {
    await polling.close();
    await other.drop();
  }
  worker = await listen({ databaseUrl: db.url, listen: false, pollIntervalMs: 100, channels: ['fanout'], logger: quiet });
  await notify('fanout', { n: 51 }, { client: db.pool });
  await waitFor(() => count('healthy', 51) === 1, 'delivery with LISTEN disabled');
});

test('upgrading a version 1 database: make-migration writes the upgrade, and notifications stored before it are still processed', async () => {
  const old = await createTestDatabase();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-upgrade-'));
  try {
    // What version 1 of make-migration wrote, applied, with notifications stored by version 1.
    fs.mkdirSync(path.join(dir, '20240101000000_pubsub'));
    fs.writeFileSync(path.join(dir, '20240101000000_pubsub', 'migration.sql'), `${LIBRARY_SCHEMA[1]}\n\n-- pubsub:state {"library":1,"triggers":{}}\n`);
    await applyMigrations(old.url, dir);
    await old.query(`select pubsub.notify('fanout', '{"n": 100}'::jsonb)`);
    await assert.rejects(listen({ databaseUrl: old.url, channels: ['fanout'], logger: quiet }), new RegExp(`version 1; this pgpubsub needs version ${LIBRARY_SCHEMA_VERSION}.*make-migration`));

    const result = await generateMigration({ schema: path.join(ROOT, 'test/fixtures/prisma/schema.prisma'), migrationsDir: dir, name: 'upgrade' });
    assert.equal(result.summary[0], `upgrade the pubsub schema to version ${LIBRARY_SCHEMA_VERSION}`);
    assert.ok(result.summary.includes('subscribe FanOut.flaky to fanout') && result.summary.includes('subscribe FanOut.healthy to fanout'), result.summary.join('\n'));
    await applyMigrations(old.url, dir);
    await old.query(`select pubsub.notify('fanout', '{"n": 101}'::jsonb)`);
    // Two listeners: the write is stored once (version 10), naming both; a worker makes their rows.
    assert.deepEqual(await old.query(`select payload->>'n' as n, listener from pubsub.notification order by id`), [{ n: '100', listener: null }]);
    assert.deepEqual(await old.query(`select payload->>'n' as n, listeners from pubsub.fanout`), [{ n: '101', listeners: ['FanOut.flaky', 'FanOut.healthy'] }]);
    await old.query('create table effects (listener text not null, n int not null)');
    const upgraded = await listen({ databaseUrl: old.url, pollIntervalMs: 50, channels: ['fanout'], logger: quiet });
    await waitFor(() => count('healthy', 100) === 1 && count('flaky', 100) === 1 && count('healthy', 101) === 1 && count('flaky', 101) === 1, 'old and new notifications');
    await upgraded.close();
    assert.equal((await old.query('select (select count(*) from pubsub.notification)::int + (select count(*) from pubsub.fanout)::int as n'))[0].n, 0);
  } finally {
    await old.drop();
  }
});

test('no wake-up is lost: with polling off, bursts from concurrent writers around the worker falling asleep are all processed promptly', async () => {
  await worker.close();
  worker = await listen({ databaseUrl: db.url, pollIntervalMs: 60_000, channels: ['fanout'], logger: quiet });
  await new Promise((r) => setTimeout(r, 200));
  const before = count('healthy');
  const writers = Array.from({ length: 8 }, async (_, w) => {
    const client = await db.pool.connect();
    try {
      for (let i = 0; i < 75; i++) {
        await notify('fanout', { n: 1000 + w * 100 + i }, { client });
        // Bursts and gaps, so that the worker keeps falling asleep and being woken.
        if (i % 10 === 9) await new Promise((r) => setTimeout(r, Math.random() * 30));
      }
    } finally {
      client.release();
    }
  });
  await Promise.all(writers);
  await waitFor(() => count('healthy') - before === 600 && count('flaky') >= 600, 'all 600 without a poll', 15_000);
  await new Promise((r) => setTimeout(r, 300));
  // A single late notification to an idle (asleep) worker must still wake it.
  await notify('fanout', { n: 5000 }, { client: db.pool });
  await waitFor(() => count('healthy', 5000) === 1, 'a wake-up of the idle worker', 3000);
});

test('a notification committed late, with an id lower than ones already processed, is still processed without a poll', async () => {
  await worker.close();
  worker = await listen({ databaseUrl: db.url, pollIntervalMs: 60_000, batchSize: 10, channels: ['fanout'], logger: quiet });
  const late = await db.pool.connect();
  try {
    await late.query('begin');
    await notify('fanout', { n: 7000 }, { client: late }); // its ids are taken now, but invisible until commit
    const client = await db.pool.connect();
    await client.query('begin');
    for (let i = 1; i <= 95; i++) await notify('fanout', { n: 7000 + i }, { client });
    await client.query('commit');
    client.release();
    await waitFor(() => count('healthy', 7095) === 1, 'the later notifications');
    await late.query('commit');
  } finally {
    late.release();
  }
  await waitFor(() => count('healthy', 7000) === 1 && count('flaky', 7000) === 1, 'the late one', 5000);
});
