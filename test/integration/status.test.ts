// `pubsub status` through the real CLI against known states of a real database: pending, failing,
// dead, claimed by a real worker right now, a missing trigger, a drifted one, a missing subscription;
// throughput from two samples around a real worker; a read-only role; `dead retry --all` progress.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Listen, listen, notify, statusMonitor, type NotificationContext, type StatusReport } from '../../src/index.js';
import { Registry, getRegistry } from '../../src/registry.js';
import { ROOT, runCli, runInTerminal, startCli } from '../helpers/cli.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

const fixture = (f: string) => path.join(ROOT, 'dist/test/fixtures/listeners', f);
const schema = path.join(ROOT, 'test/fixtures/prisma/schema.prisma');
const modules = ['jobs.js', 'slow.js', 'articles.js'].flatMap((f) => ['--require', fixture(f)]);
let db: TestDatabase;

before(async () => {
  // The database exactly as a user's: the fixture's Prisma migration, then the generated pubsub migration, applied by the CLI.
  db = await createTestDatabase();
  const migrations = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-status-'));
  fs.cpSync(path.join(ROOT, 'test/fixtures/prisma/migrations'), migrations, { recursive: true });
  const made = await runCli(['make-migration', '--schema', schema, '--migrations-dir', migrations, ...modules]);
  assert.equal(made.code, 0, made.output);
  const applied = await runCli(['migrate', '--migrations-dir', migrations], { DATABASE_URL: db.url });
  assert.equal(applied.code, 0, applied.output);
  await db.query('create table seen (n int not null, pid int not null)');
});
after(() => db?.drop());

/** Runs in an empty folder unless told otherwise: the repository's own pubsub.config.json names the demo's listeners. */
const empty = () => fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-empty-'));
async function statusJson(args: string[] = modules): Promise<StatusReport> {
  const run = await runCli(['status', '--json', '--schema', schema, ...args], { DATABASE_URL: db.url }, empty());
  assert.equal(run.code, 0, run.output);
  return JSON.parse(run.output);
}
const row = (report: StatusReport, channel: string, listener: string | null) => {
  const found = report.listeners.find((l) => l.channel === channel && l.listener === listener);
  assert.ok(found, `${channel}/${listener} in ${JSON.stringify(report.listeners)}`);
  return found;
};

test('status --json: pending, failing, dead, running (a real worker mid-listener), oldest age, and a matching database', async () => {
  for (let n = 0; n < 5; n++) await notify('jobs', { n }, { client: db.pool });
  const ids = (await db.query(`select id from pubsub.notification where channel = 'jobs' order by id`)).map((r) => r.id);
  // As the worker leaves them: a failed attempt waiting for its retry, and a notification past maxAttempts.
  await db.query(`update pubsub.notification set attempts = 2, last_error = 'boom', run_at = now() + interval '1 hour' where id = $1`, [ids[0]]);
  await db.query(`update pubsub.notification set attempts = 10, last_error = 'boom', dead_at = now() where id = any($1)`, [ids.slice(1, 3)]);
  await db.query(`update pubsub.notification set created_at = now() - interval '90 seconds' where id = $1`, [ids[3]]);

  await notify('slow_jobs', { n: 1, firstMs: 60_000 }, { client: db.pool });
  await notify('slow_jobs', { n: 2 }, { client: db.pool });
  const worker = startCli(['listen', '--require', fixture('slow.js'), '--batch-size', '1'], { DATABASE_URL: db.url });
  try {
    await worker.waitForOutput(/started 1/);
    const report = await statusJson();
    const jobs = row(report, 'jobs', 'JobListeners.run');
    assert.deepEqual([jobs.pending, jobs.running, jobs.failing, jobs.dead], [2, 0, 1, 2]);
    assert.ok(jobs.oldestPendingSeconds! >= 90 && jobs.oldestPendingSeconds! < 120, `oldest ${jobs.oldestPendingSeconds}`);
    assert.equal(jobs.subscribed, true);
    assert.equal(jobs.loaded, true);
    const slow = row(report, 'slow_jobs', 'SlowListeners.run');
    assert.deepEqual([slow.pending, slow.running, slow.failing, slow.dead], [1, 1, 0, 0], 'the claimed row is running; its neighbour waits');
    assert.equal(report.workers.length, 1);
    assert.match(report.workers[0]!.worker, /:\d+$/);
    assert.equal(report.workers[0]!.rows, 1);
    assert.deepEqual(report.totals, { pending: 3, running: 1, failing: 1, dead: 2 });
    assert.equal(report.throughput.perMinute, null, 'one sample: no throughput, and it says why');
    assert.match(report.throughput.note, /keeps no count/);
    assert.equal(report.drift.ok, true, JSON.stringify(report.drift));
    assert.equal(report.drift.triggers.length, 1);
    assert.equal(report.drift.triggers[0]!.state, 'ok');
    assert.equal(report.library.installed, report.library.expected);
  } finally {
    assert.equal(await worker.stop('SIGKILL'), null);
  }
  // Loaded without the Article listener: its trigger and subscription are extra, and the report says to load every module.
  const partial = await statusJson(['--require', fixture('jobs.js'), '--require', fixture('slow.js')]);
  assert.equal(partial.drift.ok, false);
  assert.deepEqual(partial.drift.triggers.map((t) => [t.state, t.table]), [['extra', 'Article']]);
  assert.deepEqual(partial.drift.subscriptions.extra, [{ channel: 'model.Article', listener: 'ArticleListeners.created' }]);
  assert.match(partial.drift.notes.join(' '), /load every listener module/);
  // The killed worker's claim is over: its row is no longer running.
  const after = row(await statusJson(), 'slow_jobs', 'SlowListeners.run');
  assert.equal(after.running, 0);
  assert.equal(after.pending, 2);
});

test('status shows drift: a dropped trigger, a replaced trigger function, a disabled trigger, a missing subscription', async () => {
  const [{ tgname, proname }] = await db.query(`select t.tgname, p.proname from pg_trigger t join pg_proc p on p.oid = t.tgfoid where t.tgname like '\\_900\\_pubsub\\_%'`);
  const fn = `pubsub."${proname}"`;

  await db.query(`alter table "Article" disable trigger "${tgname}"`);
  let report = await statusJson();
  assert.equal(report.drift.ok, false);
  assert.equal(report.drift.triggers[0]!.state, 'disabled');
  await db.query(`alter table "Article" enable trigger "${tgname}"`);

  // Someone (or an older migration) left another body in place: it still fires, but stores something else.
  const [{ source }] = await db.query(`select prosrc as source from pg_proc where oid = $1::regprocedure`, [`${fn}()`]);
  await db.query(`create or replace function ${fn}() returns trigger language plpgsql as $x$${source.replace('ArticleListeners.created', 'Old.listener')}$x$`);
  report = await statusJson();
  assert.equal(report.drift.triggers[0]!.state, 'differs');
  assert.match(report.drift.triggers[0]!.detail!, /function body differs/);

  await db.query(`drop trigger "${tgname}" on "Article"`);
  report = await statusJson();
  assert.equal(report.drift.triggers[0]!.state, 'missing');
  assert.equal(report.drift.triggers[0]!.detail, 'its function exists, the trigger does not');
  assert.equal(report.drift.triggers[0]!.trigger, tgname);

  await db.query(`delete from pubsub.subscription where listener = 'JobListeners.run'`);
  report = await statusJson();
  assert.deepEqual(report.drift.subscriptions.missing, [{ channel: 'jobs', listener: 'JobListeners.run' }]);
  assert.equal(row(report, 'jobs', 'JobListeners.run').subscribed, false);

  // The table for terminals says the same, and how to fix it.
  const text = await runCli(['status', '--schema', schema, ...modules], { DATABASE_URL: db.url }, empty());
  assert.equal(text.code, 0, text.output);
  assert.match(text.output, /CHANNEL\s+LISTENER\s+PENDING\s+RUNNING\s+FAILING\s+DEAD\s+OLDEST\s+PER MIN/);
  assert.match(text.output, /jobs\s+JobListeners\.run \(not subscribed!\)\s+2\s+0\s+1\s+2/);
  assert.match(text.output, /trigger missing: _900_pubsub_after_insert_\w+ on Article/);
  assert.match(text.output, /subscription missing: JobListeners\.run on jobs/);
  assert.match(text.output, /fix: run `pubsub make-migration`/);

  // Without listener modules it shows the database alone and says what it did not compare.
  const bare = await statusJson([]);
  assert.equal(row(bare, 'jobs', 'JobListeners.run').loaded, null);
  assert.equal(bare.drift.ok, null);
  assert.deepEqual(bare.drift.triggers, []);
  assert.match(bare.drift.notes.join(' '), /No listener modules were loaded/);
  // Without a Prisma schema, trigger listeners' triggers are not compared, and it says so.
  const noSchema = await runCli(['status', '--json', ...modules], { DATABASE_URL: db.url }, empty());
  assert.equal(noSchema.code, 0, noSchema.output);
  assert.match(JSON.parse(noSchema.output).drift.notes.join(' '), /Triggers were not compared: no Prisma schema/);
});

test('a role with only the documented read grants can run status', async () => {
  const role = `pubsub_status_${process.pid}`;
  await db.query(`drop role if exists ${role}`);
  await db.query(`create role ${role} login password 'status'`); // the embedded server asks for one; trust auth ignores it
  try {
    await db.query(`grant usage on schema pubsub to ${role}`);
    await db.query(`grant select on pubsub.notification, pubsub.claim, pubsub.subscription, pubsub.channel to ${role}`);
    const url = new URL(db.url);
    url.username = role;
    url.password = 'status';
    const run = await runCli(['status', '--json', '--schema', schema, ...modules], { DATABASE_URL: url.toString() }, empty());
    assert.equal(run.code, 0, run.output);
    assert.equal(row(JSON.parse(run.output), 'jobs', 'JobListeners.run').dead, 2);
    // It cannot change anything: retry is refused by the server, with its message.
    const retry = await runCli(['dead', 'retry', '--all'], { DATABASE_URL: url.toString() });
    assert.equal(retry.code, 1);
    assert.match(retry.output, /permission denied for table notification/);
  } finally {
    await db.query(`drop owned by ${role}`);
    await db.query(`drop role ${role}`);
  }
});

test('throughput: notifications that a real worker completes between two samples, not failed attempts nor dead ones', async () => {
  const registry = getRegistry();
  const fail = new Set<number>();
  class Tp {
    n!: number;
  }
  class TpListeners {
    @Listen('status_tp', { maxAttempts: 2, backoff: { baseMs: 60_000 } })
    run(tp: Tp, _ctx: NotificationContext) {
      if (fail.has(tp.n)) throw new Error(`tp ${tp.n} fails`);
    }
  }
  void TpListeners;
  // Subscribed as a generated migration would.
  await db.query(`insert into pubsub.subscription (channel, listener) values ('status_tp', 'TpListeners.run')`);
  const monitor = statusMonitor({ databaseUrl: db.url, registry: new Registry() });
  try {
    for (let n = 0; n < 12; n++) await notify('status_tp', { n }, { client: db.pool });
    fail.add(3).add(4);
    const first = await monitor.read();
    assert.equal(row(first, 'status_tp', 'TpListeners.run').pending, 12);
    assert.equal(first.throughput.perMinute, null);
    const worker = await listen({ channels: ['status_tp'], databaseUrl: db.url, logger: { info() {}, warn() {}, error() {} } });
    try {
      await waitFor(async () => (await db.query(`select count(*)::int as n from pubsub.notification where channel = 'status_tp'`))[0].n === 2, 'the 10 that succeed');
    } finally {
      await worker.close();
    }
    const second = await monitor.read();
    const tp = row(second, 'status_tp', 'TpListeners.run');
    assert.deepEqual([tp.pending, tp.failing], [0, 2], 'the two that failed wait for their retry');
    assert.equal(second.throughput.history.at(-1)!.processed, 10, 'exactly the completed ones');
    assert.ok(tp.perMinute! > 0 && second.throughput.perMinute! >= tp.perMinute!);
    const seconds = second.throughput.history.at(-1)!.seconds;
    assert.equal(tp.perMinute, Math.round((10 / seconds) * 60 * 10) / 10);
  } finally {
    await monitor.close();
    registry.channels.delete('status_tp');
    registry.listenerIds.delete('TpListeners.run');
  }
});

test('status --watch redraws until SIGTERM; --json --watch prints one report per line', async () => {
  const watch = startCli(['status', '--json', '--watch', '1', '--schema', schema, ...modules], { DATABASE_URL: db.url }, empty());
  await waitFor(() => watch.output().split('\n').filter((l) => l.startsWith('{')).length >= 3, 'three samples', 15_000);
  assert.equal(await watch.stop('SIGTERM'), 0, watch.output());
  const reports = watch.output().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as StatusReport);
  assert.equal(reports[0]!.throughput.perMinute, null);
  assert.notEqual(reports[2]!.throughput.perMinute, null, 'from the second sample on, a rate (0 here)');
  assert.ok(reports[2]!.throughput.windowSeconds >= 1);
});

const hasScript = fs.existsSync('/usr/bin/script');

test('dead retry --all over 25,000 dead rows: progress on a terminal, quiet in a pipe and with --json; every row retried once', async (t) => {
  await db.query(`insert into pubsub.notification (channel, listener, payload, attempts, dead_at, last_error)
    select 'bulk', 'Bulk.run', jsonb_build_object('n', g), 10, now(), 'boom' from generate_series(1, 25000) g`);
  const piped = await runCli(['dead', 'retry', '--all', '--channel', 'bulk'], { DATABASE_URL: db.url });
  assert.equal(piped.code, 0, piped.output);
  assert.equal(piped.output.trim(), 'pubsub: 25000 notification(s) will be retried', 'no progress in a pipe');
  const [counts] = await db.query(`select count(*) filter (where dead_at is null and attempts = 0)::int as revived, count(*)::int as total from pubsub.notification where channel = 'bulk'`);
  assert.deepEqual(counts, { revived: 25000, total: 25000 });

  await db.query(`update pubsub.notification set dead_at = now(), attempts = 10 where channel = 'bulk'`);
  if (!hasScript) return t.skip('util-linux `script` is not installed: the terminal half is not run');
  const tty = await runInTerminal(['dead', 'retry', '--all', '--channel', 'bulk'], { DATABASE_URL: db.url });
  assert.match(tty, /retried 10,000 of 25,000 \(40%\)/);
  assert.match(tty, /retried 20,000 of 25,000 \(80%\)/);
  assert.match(tty, /25000 notification\(s\) will be retried/);

  await db.query(`update pubsub.notification set dead_at = now(), attempts = 10 where channel = 'bulk'`);
  const json = await runInTerminal(['dead', 'purge', '--all', '--channel', 'bulk', '--json'], { DATABASE_URL: db.url });
  assert.doesNotMatch(json, /purged \d/, '--json: no progress even on a terminal');
  assert.deepEqual(JSON.parse(json.trim()), { count: 25000 });
  assert.equal((await db.query(`select count(*)::int as n from pubsub.notification where channel = 'bulk'`))[0].n, 0);
});

test('status against a database without the pubsub tables says what to do, and exits 1', async () => {
  const bare = await createTestDatabase();
  try {
    const run = await runCli(['status'], { DATABASE_URL: bare.url }, empty());
    assert.equal(run.code, 1);
    assert.match(run.output, /no pubsub tables\. Run `pubsub make-migration` and apply the migration/);
  } finally {
    await bare.drop();
  }
});

test('pubsub migrate shows which migration of how many it applies on a terminal, and stays quiet in a pipe', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-migrate-progress-'));
  for (let i = 1; i <= 3; i++) {
    fs.mkdirSync(path.join(dir, `2026010100000${i}_step`));
    fs.writeFileSync(path.join(dir, `2026010100000${i}_step`, 'migration.sql'), `create table progress_${i} (id int);`);
  }
  const fresh = await createTestDatabase();
  try {
    if (!hasScript) {
      const piped = await runCli(['migrate', '--migrations-dir', dir], { DATABASE_URL: fresh.url });
      assert.doesNotMatch(piped.output, /applying migration/);
      return t.skip('util-linux `script` is not installed: the terminal half is not run');
    }
    const tty = await runInTerminal(['migrate', '--migrations-dir', dir], { DATABASE_URL: fresh.url });
    assert.match(tty, /applying migration 1 of 3 \(33%\)/);
    assert.match(tty, /applying migration 3 of 3 \(100%\)/);
    assert.match(tty, /applied 20260101000001_step, 20260101000002_step, 20260101000003_step/);
    fs.mkdirSync(path.join(dir, '20260101000004_step'));
    fs.writeFileSync(path.join(dir, '20260101000004_step', 'migration.sql'), 'create table progress_4 (id int);');
    const piped = await runCli(['migrate', '--migrations-dir', dir], { DATABASE_URL: fresh.url });
    assert.equal(piped.code, 0, piped.output);
    assert.equal(piped.output.trim(), 'pubsub: applied 20260101000004_step', 'no progress in a pipe');
  } finally {
    await fresh.drop();
  }
});
