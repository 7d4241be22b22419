// Draining once (issue 9, point 8): drainOnce() and `pubsub listen --once` run what is due and return,
// with progress on a terminal only; failures stay stored for later; a claim that keeps failing gives
// up with pubsub.drainFailed and loses nothing; SIGTERM mid-drain stops early without a duplicate.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { Listen, PubSubError, drainOnce, listDead, type NotificationContext } from '../../src/index.js';
import { ROOT, runCli, runInTerminal, startCli } from '../helpers/cli.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

const fixture = path.join(ROOT, 'dist/test/fixtures/listeners/drain.js');
const quiet = { info() {}, warn() {}, error() {} };

class Job {
  n!: number;
}
class OnceListeners {
  @Listen('once_jobs', { maxAttempts: 3, backoff: { baseMs: 60_000, maxMs: 60_000 } })
  async run(job: Job, ctx: NotificationContext) {
    if (job.n % 100 === 0) throw new Error(`job ${job.n} fails`);
    await ctx.tx!.query('insert into once_seen (n) values ($1)', [job.n]);
  }
}

let db: TestDatabase;
before(async () => {
  assert.ok(OnceListeners);
  db = await createTestDatabase({ library: true });
  await db.query('create table once_seen (n int not null)');
  await db.query('create table seen (n int not null, pid int not null)');
  await db.query(`insert into pubsub.subscription (channel, listener) values ('once_jobs', 'OnceListeners.run'), ('drain_jobs', 'DrainListeners.run')`);
});
after(() => db?.drop());

const store = (channel: string, listener: string, from: number, to: number, extra = '{}') =>
  db.query(`insert into pubsub.notification (channel, listener, payload) select $1, $2, jsonb_build_object('n', g) || $5::jsonb from generate_series($3::int, $4::int) g`, [channel, listener, from, to, extra]);
const one = async (sql: string) => (await db.query(sql))[0];

test('drainOnce() runs what is due once, keeps the failures for their retry, and reports progress up to the total', async () => {
  await store('once_jobs', 'OnceListeners.run', 1, 1000);
  const progress: Array<[number, number]> = [];
  const summary = await drainOnce({ databaseUrl: db.url, channels: ['once_jobs'], logger: quiet, onProgress: (done, total) => progress.push([done, total]) });
  assert.deepEqual(summary, { processed: 990, failed: 10, retried: 10, dead: 0, waiting: 10, stopped: false });
  assert.deepEqual(await one('select count(*)::int as rows, count(distinct n)::int as distinct_n from once_seen'), { rows: 990, distinct_n: 990 });
  assert.deepEqual(await one(`select count(*)::int as n, min(attempts) as min, max(attempts) as max from pubsub.notification where channel = 'once_jobs'`), { n: 10, min: 1, max: 1 });
  assert.deepEqual(progress[0], [0, 1000]);
  assert.deepEqual(progress.at(-1), [1000, 1000]);
  for (let i = 1; i < progress.length; i++) assert.ok(progress[i]![0] >= progress[i - 1]![0], 'progress only goes forward');

  const again = await drainOnce({ databaseUrl: db.url, channels: ['once_jobs'], logger: quiet });
  assert.deepEqual(again, { processed: 0, failed: 0, retried: 0, dead: 0, waiting: 10, stopped: false }, 'retries are not due yet: nothing runs');
  await db.query(`delete from pubsub.notification where channel = 'once_jobs'`);
});

test('a worker warns when autovacuum does not look after pubsub.notification (table option or server setting), and only then', async () => {
  const warningsOf = async () => {
    const warnings: string[] = [];
    await drainOnce({ databaseUrl: db.url, channels: ['once_jobs'], logger: { info() {}, error() {}, warn: (m: string) => warnings.push(m) } });
    return warnings.filter((w) => /autovacuum/.test(w));
  };
  const serverOn = (await one(`select current_setting('autovacuum')::boolean as on`)).on;
  await db.query('alter table pubsub.notification set (autovacuum_enabled = off)');
  try {
    const off = await warningsOf();
    assert.equal(off.length, 1);
    assert.match(off[0]!, /autovacuum is off for pubsub\.notification.*VACUUM pubsub\.notification/);
  } finally {
    await db.query('alter table pubsub.notification reset (autovacuum_enabled)');
  }
  assert.equal((await warningsOf()).length, serverOn ? 0 : 1, `server autovacuum ${serverOn}`);
});

test('drainOnce() gives up with pubsub.drainFailed when claims keep failing, and a later drain processes every row exactly once', async () => {
  await db.query('truncate once_seen');
  await store('once_jobs', 'OnceListeners.run', 1, 50);
  // Every claim first counts lost claims in pubsub.claim: with that table locked, each claim times out.
  const locker = new pg.Client(db.url);
  await locker.connect();
  try {
    await locker.query('begin');
    await locker.query('lock table pubsub.claim in access exclusive mode');
    await assert.rejects(
      drainOnce({ databaseUrl: db.url, channels: ['once_jobs'], logger: quiet, roundTripMs: 200 }),
      (error: unknown) => error instanceof PubSubError && error.code === 'pubsub.drainFailed' && /5 in a row/.test(error.message) && /still due/.test(error.message),
    );
    await locker.query('rollback');
  } finally {
    await locker.end();
  }
  assert.equal((await one(`select count(*)::int as n from pubsub.notification where channel = 'once_jobs' and attempts = 0`)).n, 50, 'nothing lost, no attempt counted');
  const summary = await drainOnce({ databaseUrl: db.url, channels: ['once_jobs'], logger: quiet });
  assert.equal(summary.processed, 50);
  assert.deepEqual(await one('select count(*)::int as rows, count(distinct n)::int as distinct_n from once_seen'), { rows: 50, distinct_n: 50 });
});

test('pubsub listen --once: drains and exits 0 with a summary; progress on a terminal, none in a pipe', async (t) => {
  await store('drain_jobs', 'DrainListeners.run', 1, 3000);
  const piped = await runCli(['listen', '--once', '--require', fixture], { DATABASE_URL: db.url });
  assert.equal(piped.code, 0, piped.output);
  assert.match(piped.output, /drained: 2,970 processed, 30 failed \(30 kept for a retry, 0 dead-lettered\); 30 stored but not due yet/);
  assert.doesNotMatch(piped.output, /\r|drained \d/, 'no progress line in a pipe');
  assert.deepEqual(await one('select count(*)::int as rows, count(distinct n)::int as distinct_n from seen'), { rows: 2970, distinct_n: 2970 });

  if (!fs.existsSync('/usr/bin/script')) return t.skip('util-linux `script` is not installed: the terminal half is not run');
  await db.query(`delete from pubsub.notification where channel = 'drain_jobs'`);
  await store('drain_jobs', 'DrainListeners.run', 3001, 5000);
  const tty = await runInTerminal(['listen', '--once', '--require', fixture], { DATABASE_URL: db.url });
  assert.match(tty, /drained 2,000 of 2,000 \(100%\)/, tty);
  assert.match(tty, /drained: 1,980 processed, 20 failed/);
  assert.equal((await one('select count(*)::int as n from seen')).n, 2970 + 1980);
});

test('pubsub listen --once stopped by SIGTERM finishes the running claim, exits 0, and leaves the rest for the next drain: none lost or run twice', async () => {
  await db.query('truncate seen');
  await db.query(`delete from pubsub.notification where channel = 'drain_jobs'`);
  await store('drain_jobs', 'DrainListeners.run', 1, 20, '{"sleepMs": 150}');
  const cli = startCli(['listen', '--once', '--batch-size', '2', '--require', fixture], { DATABASE_URL: db.url });
  await cli.waitForOutput(/started 3\b/);
  const code = await cli.stop('SIGTERM');
  assert.equal(code, 0, cli.output());
  assert.match(cli.output(), /SIGTERM: finishing running listeners/);
  const done = Number(/stopped early: (\d+) processed/.exec(cli.output())?.[1]);
  assert.ok(done >= 2 && done < 20, cli.output());
  assert.equal((await one('select count(*)::int as n from seen')).n, done);

  const rest = await runCli(['listen', '--once', '--require', fixture], { DATABASE_URL: db.url });
  assert.equal(rest.code, 0, rest.output);
  assert.deepEqual(await one('select count(*)::int as rows, count(distinct n)::int as distinct_n from seen'), { rows: 20, distinct_n: 20 }, 'every job ran exactly once');
});

test('pubsub listen --once refuses --processes and --http-port with a clear error', async () => {
  for (const flag of [['--processes', '2'], ['--http-port', '0']]) {
    const run = await runCli(['listen', '--once', ...flag, '--require', fixture], { DATABASE_URL: db.url });
    assert.equal(run.code, 1, run.output);
    assert.match(run.output, /--once drains in this process and exits/);
  }
});

test('dead list and the dashboard page sort ids as numbers, and the limit keeps the oldest (ids 5–16 cross a digit)', async () => {
  await db.query(`delete from pubsub.notification`);
  await db.query(`insert into pubsub.notification (id, channel, listener, payload, attempts, dead_at) overriding system value
    select g, 'dead_sort', 'X.y', '{}', 1, now() from generate_series(5, 16) g`);
  const ids = Array.from({ length: 12 }, (_, i) => String(i + 5));
  for (const payloads of [false, true]) {
    const listed = await listDead(db.url, { channel: 'dead_sort' }, 10, { payloads });
    assert.deepEqual(listed.map((d) => d.id), ids.slice(0, 10), `payloads: ${payloads}`);
  }
});
