// How `pubsub listen` stops (grace period, shutdown() hooks, second signal) and `--processes N`, through the real CLI.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { notify } from '../../src/index.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';
import { ROOT, alive, runCli, startCli, type CliProcess } from '../helpers/cli.js';

const fixture = (f: string) => path.join(ROOT, 'dist/test/fixtures/listeners', f);
let db: TestDatabase;

before(async () => {
  db = await createTestDatabase({ library: true });
  await db.query('create table seen (n int not null, pid int not null)');
});
after(() => db?.drop());

const count = async (sql: string, values: unknown[] = []) => (await db.query(sql, values))[0].n as number;
const connections = (app: string) => count('select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name like $1', [app]);
/** Sends the signal and resolves with the exit code and how long the process took to exit. */
async function timedStop(cli: CliProcess, signal: NodeJS.Signals = 'SIGTERM') {
  const at = Date.now();
  const code = await cli.stop(signal);
  return { code, ms: Date.now() - at };
}

/** A notification left behind by a stopped worker is processed once by a fresh one, and nothing stays stored. */
async function processedOnceByAnother(n: number) {
  const other = startCli(['listen', '--require', fixture('slow.js'), '--poll-interval', '200'], { DATABASE_URL: db.url });
  await other.waitForOutput(new RegExp(`finished ${n}`), 20_000);
  assert.equal(await other.stop(), 0, other.output());
  assert.equal(await count('select count(*)::int as n from seen where n = $1', [n]), 1, 'processed exactly once');
  assert.equal(await count(`select count(*)::int as n from pubsub.notification where channel = 'slow_jobs'`), 0);
}

test('a listener module with an open pool and a shutdown() export: SIGTERM ends the pool and the process, exit 0', async () => {
  const worker = startCli(['listen', '--require', fixture('pooled.js')], { DATABASE_URL: db.url, SHUTDOWN_HOOK: '1' });
  await worker.waitForOutput(/listening on pooled_jobs/);
  assert.equal(await connections('fixture:pool'), 1);
  const { code, ms } = await timedStop(worker);
  assert.equal(code, 0, worker.output());
  assert.match(worker.output(), /pool ended\n(.|\n)*stopped/);
  assert.ok(ms < 10_000, `exited in ${ms} ms, not at the end of the 30 s grace period`);
  await waitFor(async () => (await connections('fixture:pool')) === 0, 'the pool connection to close');
});

test('without a shutdown() export, the open pool does not keep the process: it exits 1 when the grace period ends, saying why', async () => {
  const worker = startCli(['listen', '--require', fixture('pooled.js'), '--grace-period', '1500'], { DATABASE_URL: db.url });
  await worker.waitForOutput(/listening on pooled_jobs/);
  const { code, ms } = await timedStop(worker);
  assert.equal(code, 1, worker.output());
  assert.match(worker.output(), /stopped\n(.|\n)*still running after "stopped" \(open: .*TCP.*\); grace period of 1500 ms over/);
  assert.match(worker.output(), /export.*async function shutdown\(\)/i);
  assert.ok(ms >= 1400 && ms < 10_000, `exited after ${ms} ms`);
  await waitFor(async () => (await connections('fixture:pool')) === 0, 'the pool connection to close with the process');
});

test('a listener running past the grace period: the worker exits 1 with a clear line; another worker processes the notification once later', async () => {
  const worker = startCli(['listen', '--require', fixture('slow.js'), '--grace-period', '1000'], { DATABASE_URL: db.url });
  await worker.waitForOutput(/listening on slow_jobs/);
  await notify('slow_jobs', { n: 1, firstMs: 60_000 }, { client: db.pool });
  await worker.waitForOutput(/started 1\n/);
  const { code, ms } = await timedStop(worker);
  assert.equal(code, 1, worker.output());
  assert.ok(ms < 10_000, `exited after ${ms} ms`);
  assert.match(worker.output(), /grace period of 1000 ms ended with listeners still running; exiting with code 1/);
  assert.doesNotMatch(worker.output(), /finished 1\n/);
  await processedOnceByAnother(1);
});

test('a second SIGTERM exits at once with code 130; the notification is processed once later', async () => {
  const worker = startCli(['listen', '--require', fixture('slow.js')], { DATABASE_URL: db.url });
  await worker.waitForOutput(/listening on slow_jobs/);
  await notify('slow_jobs', { n: 2, firstMs: 60_000 }, { client: db.pool });
  await worker.waitForOutput(/started 2\n/);
  worker.child.kill('SIGTERM');
  await worker.waitForOutput(/SIGTERM: finishing running listeners\n.*stopping within the grace period of 30000 ms/);
  const { code, ms } = await timedStop(worker);
  assert.equal(code, 130, worker.output());
  assert.ok(ms < 5000, `exited after ${ms} ms`);
  assert.match(worker.output(), /second SIGTERM: exiting now with code 130/);
  await processedOnceByAnother(2);
});

test('bad settings are refused: --grace-period out of range, --processes 65, --processes with --http-port', async () => {
  const range = await runCli(['listen', '--grace-period', '-5', '--require', fixture('jobs.js')], { DATABASE_URL: db.url });
  assert.equal(range.code, 1);
  assert.match(range.output, /--grace-period/);
  const many = await runCli(['listen', '--processes', '65', '--require', fixture('jobs.js')], { DATABASE_URL: db.url });
  assert.equal(many.code, 1);
  assert.match(many.output, /from 1 to 64, got 65/);
  const port = await runCli(['listen', '--processes', '2', '--http-port', '0', '--require', fixture('jobs.js')], { DATABASE_URL: db.url });
  assert.equal(port.code, 1);
  assert.match(port.output, /--http-port with --processes 2/);
});

test('--processes 2 with a module that cannot load stops at once with the workers\' exit code, instead of restarting them', async () => {
  const result = await runCli(['listen', '--processes', '2', '--require', fixture('missing.js')], { DATABASE_URL: db.url });
  assert.equal(result.code, 1, result.output);
  assert.match(result.output, /cannot load it/);
  assert.match(result.output, /before it started; stopping/);
});

test('--processes 3: three workers; one killed with SIGKILL is started again; every notification processed once; SIGTERM leaves no process or connection', async () => {
  await db.query('delete from seen');
  const send = async (from: number, to: number) => {
    for (let n = from; n < to; n += 50) {
      const client = await db.pool.connect();
      await client.query('begin');
      for (let i = n; i < Math.min(n + 50, to); i++) await notify('jobs', { n: i }, { client });
      await client.query('commit');
      client.release();
    }
  };
  await send(0, 300);
  const parent = startCli(['listen', '--processes', '3', '--require', fixture('jobs.js'), '--batch-size', '10', '--poll-interval', '200'], { DATABASE_URL: db.url });
  const pids = () => [...parent.output().matchAll(/worker process (\d) started \(pid (\d+)\)/g)].map((m) => ({ n: Number(m[1]), pid: Number(m[2]) }));
  await waitFor(() => (parent.output().match(/listening on jobs/g) ?? []).length === 3, `three workers listening:\n${parent.output()}`, 20_000);
  const first = pids();
  assert.deepEqual(first.map((p) => p.n).sort(), [1, 2, 3]);
  assert.equal(await connections('pubsub:listen'), 3, 'one LISTEN session per worker process');

  const victim = first.find((p) => p.n === 2)!;
  const sending = send(300, 900);
  process.kill(victim.pid, 'SIGKILL');
  await parent.waitForOutput(new RegExp(`worker process 2 \\(pid ${victim.pid}\\) was killed by SIGKILL; starting it again in 500 ms`));
  await waitFor(() => pids().length === 4 && (parent.output().match(/listening on jobs/g) ?? []).length === 4, 'worker process 2 started again');
  const restarted = pids()[3]!;
  assert.equal(restarted.n, 2);
  assert.notEqual(restarted.pid, victim.pid);
  await sending;
  await waitFor(async () => (await count('select count(*)::int as n from seen')) >= 900, '900 jobs', 30_000);
  const [stats] = await db.query('select count(*)::int as rows, count(distinct n)::int as distinct_n from seen');
  assert.deepEqual(stats, { rows: 900, distinct_n: 900 }, 'each once, none lost');

  const running = pids().filter((p) => p.pid !== victim.pid);
  assert.ok(running.every((p) => alive(p.pid)));
  assert.equal(await parent.stop('SIGTERM'), 0, parent.output());
  assert.ok(running.every((p) => !alive(p.pid)), 'no worker process left');
  await waitFor(async () => (await connections('pubsub:%')) === 0, 'no worker connection left');
  assert.equal(await count('select count(*)::int as n from pubsub.notification'), 0);
});

test('--processes 2: when the supervisor is killed with SIGKILL, its worker processes stop by themselves', async () => {
  const parent = startCli(['listen', '--processes', '2', '--require', fixture('jobs.js')], { DATABASE_URL: db.url });
  await waitFor(() => (parent.output().match(/listening on jobs/g) ?? []).length === 2, `two workers listening:\n${parent.output()}`, 20_000);
  const children = [...parent.output().matchAll(/started \(pid (\d+)\)/g)].map((m) => Number(m[1]));
  assert.equal(await parent.stop('SIGKILL'), null);
  await waitFor(() => children.every((pid) => !alive(pid)), 'the orphaned worker processes to exit');
  await waitFor(async () => (await connections('pubsub:%')) === 0, 'no worker connection left');
});
