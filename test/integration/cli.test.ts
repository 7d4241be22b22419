// The real `pubsub` CLI in child processes: competing workers, make-migration, --check and migrate.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { notify } from '../../src/index.js';
import { migrationChecksum } from '../../src/migrate.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';
import { ROOT, runCli, startCli } from '../helpers/cli.js';

const fixture = (f: string) => path.join(ROOT, 'dist/test/fixtures/listeners', f);
const schema = path.join(ROOT, 'test/fixtures/prisma/schema.prisma');
let db: TestDatabase;

before(async () => {
  db = await createTestDatabase({ library: true });
  await db.query('create table seen (n int not null, pid int not null)');
});
after(() => db?.drop());

test('two competing `pubsub listen` processes process each notification exactly once, including those stored before they started', async () => {
  const total = 600;
  const send = async (from: number, to: number) => {
    const client = await db.pool.connect();
    await client.query('begin');
    for (let n = from; n < to; n++) await notify('jobs', { n }, { client });
    await client.query('commit');
    client.release();
  };
  await send(0, 200); // stored while no worker runs
  const args = ['listen', '--require', fixture('jobs.js'), '--batch-size', '10'];
  const workers = [startCli(args, { DATABASE_URL: db.url }), startCli(args, { DATABASE_URL: db.url })];
  await Promise.all(workers.map((w) => w.waitForOutput(/listening on jobs/)));
  for (let from = 200; from < total; from += 50) await send(from, from + 50);
  await waitFor(async () => (await db.query('select count(*)::int as n from seen'))[0].n >= total, `${total} jobs`, 30_000);
  const codes = await Promise.all(workers.map((w) => w.stop('SIGTERM')));
  assert.deepEqual(codes, [0, 0], workers.map((w) => w.output()).join('\n'));
  const [stats] = await db.query('select count(*)::int as rows, count(distinct n)::int as distinct_n, count(distinct pid)::int as pids from seen');
  assert.equal(stats.rows, total, 'no notification processed twice');
  assert.equal(stats.distinct_n, total, 'none lost');
  assert.equal((await db.query('select count(*)::int as n from pubsub.notification'))[0].n, 0);
  console.log(`processed by ${stats.pids} worker process(es)`);
});

test('make-migration writes once, then finds nothing to do; --check catches drift; migrate applies it as Prisma would', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-cli-'));
  const migrations = path.join(dir, 'migrations');
  fs.cpSync(path.join(ROOT, 'test/fixtures/prisma/migrations'), migrations, { recursive: true });
  const base = ['--schema', schema, '--migrations-dir', migrations, '--require', fixture('articles.js')];

  const first = await runCli(['make-migration', ...base, '--name', 'articles']);
  assert.equal(first.code, 0, first.output);
  assert.match(first.output, /create the pubsub schema/);
  assert.match(first.output, /add trigger _900_pubsub_after_insert_[0-9a-f]{8} on Article/);
  const folders = () => fs.readdirSync(migrations).filter((f) => !f.endsWith('.toml'));
  assert.equal(folders().length, 2);

  const again = await runCli(['make-migration', ...base]);
  assert.equal(again.code, 0);
  assert.match(again.output, /up to date; nothing written/);
  assert.equal(folders().length, 2, 'no second migration');
  assert.equal((await runCli(['make-migration', '--check', ...base])).code, 0);

  const drift = await runCli(['make-migration', '--check', ...base, '--require', fixture('articles-more.js')]);
  assert.equal(drift.code, 1, drift.output);
  assert.match(drift.output, /add trigger _900_pubsub_after_delete_.* on Article/);
  assert.match(drift.output, /run `pubsub make-migration`/);
  assert.equal(folders().length, 2, '--check writes nothing');

  const target = await createTestDatabase();
  try {
    const migrate = await runCli(['migrate', '--migrations-dir', migrations], { DATABASE_URL: target.url });
    assert.equal(migrate.code, 0, migrate.output);
    const rows = await target.query('select migration_name, checksum, finished_at, applied_steps_count from _prisma_migrations order by migration_name');
    assert.deepEqual(rows.map((r) => r.migration_name), folders().sort());
    for (const r of rows) {
      assert.equal(r.checksum, migrationChecksum(fs.readFileSync(path.join(migrations, r.migration_name, 'migration.sql'), 'utf8')));
      assert.ok(r.finished_at);
      assert.equal(r.applied_steps_count, 1);
    }
    const rerun = await runCli(['migrate', '--migrations-dir', migrations], { DATABASE_URL: target.url });
    assert.match(rerun.output, /no pending migrations/);

    const worker = startCli(['listen', '--require', fixture('articles.js')], { DATABASE_URL: target.url });
    await worker.waitForOutput(/listening on model\.Article/);
    await target.query(`insert into "Article" (body) values ('hello')`);
    await worker.waitForOutput(/article 1 created/);
    assert.equal(await worker.stop('SIGINT'), 0);
  } finally {
    await target.drop();
  }
});

test('SIGTERM lets a running listener finish and commit, then exits 0', async () => {
  const worker = startCli(['listen', '--require', fixture('slow.js')], { DATABASE_URL: db.url });
  await worker.waitForOutput(/listening on slow_jobs/);
  await notify('slow_jobs', { n: 1000 }, { client: db.pool });
  await worker.waitForOutput(/started 1000/);
  assert.equal(await worker.stop('SIGTERM'), 0, worker.output());
  assert.match(worker.output(), /finished 1000/);
  assert.equal((await db.query('select count(*)::int as n from seen where n = 1000'))[0].n, 1);
  assert.equal((await db.query(`select count(*)::int as n from pubsub.notification where channel = 'slow_jobs'`))[0].n, 0);
});

test('a worker killed with SIGKILL mid-callback: another worker processes its notification, once, with the lost attempt counted', async () => {
  const args = ['listen', '--require', fixture('slow.js'), '--poll-interval', '200'];
  const doomed = startCli(args, { DATABASE_URL: db.url });
  const survivor = startCli(args, { DATABASE_URL: db.url });
  try {
    await doomed.waitForOutput(/listening on slow_jobs/);
    await survivor.waitForOutput(/listening on slow_jobs/);
    // The first attempt would take a minute: whoever claims it is still running it when killed.
    await notify('slow_jobs', { n: 2000, firstMs: 60_000 }, { client: db.pool });
    await waitFor(() => /started 2000/.test(doomed.output()) || /started 2000/.test(survivor.output()), 'a worker to start the job');
    const [victim, other] = /started 2000/.test(doomed.output()) ? [doomed, survivor] : [survivor, doomed];
    const killedAt = Date.now();
    assert.equal(await victim.stop('SIGKILL'), null);
    await other.waitForOutput(/finished 2000/, 30_000); // typically 1–2 s (time is the bench's business, not this test's)
    const took = Date.now() - killedAt;
    assert.equal(await other.stop('SIGTERM'), 0);
    const rows = await db.query('select pid from seen where n = 2000');
    assert.deepEqual(rows.map((r) => r.pid), [other.child.pid], 'processed once, by the survivor');
    console.log(`SIGKILL → processed by the other worker in ${took} ms`);
  } finally {
    await doomed.stop('SIGKILL');
    await survivor.stop('SIGKILL');
  }
});

test('workers loading different listener sets: every notification reaches every listener exactly once', async () => {
  await db.query('create table fan_seen (listener text not null, n int not null, pid int not null)');
  await db.query(`insert into pubsub.subscription (channel, listener) values ('fan', 'FanCache.onEvent'), ('fan', 'FanMail.onEvent')`);
  const cache = startCli(['listen', '--require', fixture('fan-cache.js')], { DATABASE_URL: db.url });
  const mail = startCli(['listen', '--require', fixture('fan-mail.js')], { DATABASE_URL: db.url });
  const both = startCli(['listen', '--require', fixture('fan-cache.js'), '--require', fixture('fan-mail.js')], { DATABASE_URL: db.url });
  await Promise.all([cache, mail, both].map((w) => w.waitForOutput(/listening on fan/)));
  const client = await db.pool.connect();
  await client.query('begin');
  for (let n = 0; n < 300; n++) await notify('fan', { n }, { client });
  await client.query('commit');
  client.release();
  await waitFor(async () => (await db.query('select count(*)::int as n from fan_seen'))[0].n >= 600, '600 deliveries', 30_000);
  assert.deepEqual(await Promise.all([cache, mail, both].map((w) => w.stop('SIGTERM'))), [0, 0, 0]);
  const stats = await db.query('select listener, count(*)::int as rows, count(distinct n)::int as distinct_n, array_agg(distinct pid) as pids from fan_seen group by listener order by listener');
  assert.deepEqual(stats.map((s) => [s.listener, s.rows, s.distinct_n]), [
    ['cache', 300, 300],
    ['mail', 300, 300],
  ]);
  assert.ok(!stats[0].pids.includes(mail.child.pid) && !stats[1].pids.includes(cache.child.pid), 'each worker ran only the listeners it loaded');
});

test('a worker pointed at a database without the pubsub tables says how to install them', async () => {
  const empty = await createTestDatabase();
  try {
    const r = await runCli(['listen', '--require', fixture('jobs.js')], { DATABASE_URL: empty.url });
    assert.equal(r.code, 1);
    assert.match(r.output, /pubsub tables are missing.*pubsub make-migration/);
  } finally {
    await empty.drop();
  }
});
