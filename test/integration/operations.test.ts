// Operations (issue 9): /metrics scraped under load against the database's own counts, /readyz through
// a killed LISTEN connection and a listener without its subscription, the library without prom-client,
// the worker's events, and the CLI's JSON log lines.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { Listen, PubSubError, listen, notify, type NotificationContext, type Worker } from '../../src/index.js';
import { loadPromClient } from '../../src/metrics.js';
import { ROOT, startCli } from '../helpers/cli.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

const fixture = (f: string) => path.join(ROOT, 'dist/test/fixtures/listeners', f);
const quiet = { info() {}, warn() {}, error() {} };

class Probe {
  n!: number;
}
class ProbeListeners {
  @Listen('ops_probe', { maxAttempts: 2, backoff: { baseMs: 10, maxMs: 20 } })
  async handle(p: Probe, ctx: NotificationContext) {
    if (p.n < 0) throw new Error(`probe ${p.n} fails`);
    await ctx.tx!.query('select 1');
  }
}
class Unmigrated {
  @Listen('ops_unmigrated')
  handle(_p: Probe) {}
}

let db: TestDatabase;
before(async () => {
  assert.ok(ProbeListeners && Unmigrated);
  db = await createTestDatabase({ library: true });
  await db.query('create table seen (n int not null, pid int not null)');
  await db.query(`insert into pubsub.subscription (channel, listener) values ('ops', 'OpsListeners.handle'), ('ops_probe', 'ProbeListeners.handle')`);
});
after(() => db?.drop());

/** The sum of a metric's samples whose labels include `labels`, from Prometheus text. */
function sample(text: string, name: string, labels: Record<string, string> = {}): number {
  let sum = 0;
  let found = false;
  for (const line of text.split('\n')) {
    const m = /^([a-z_:]+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) {
      sum += Number(m[3]);
      found = true;
    }
  }
  assert.ok(found, `no sample of ${name} ${JSON.stringify(labels)} in:\n${text}`);
  return sum;
}

const get = async (url: string) => {
  const res = await fetch(url);
  return { status: res.status, text: await res.text(), type: res.headers.get('content-type') };
};

async function send(channel: string, ns: number[]): Promise<void> {
  const client = await db.pool.connect();
  try {
    await client.query('begin');
    for (const n of ns) await notify(channel, { n }, { client });
    await client.query('commit');
  } finally {
    client.release();
  }
}

test('the real CLI under load: /metrics scraped while 500 notifications (some failing, some dead) are processed agrees with the database; its JSON log lines name channel, listener, id and attempt', async () => {
  const total = 500;
  await send('ops', Array.from({ length: total }, (_, n) => n));
  const cli = startCli(['listen', '--require', fixture('ops.js'), '--http-port', '0', '--http-host', '127.0.0.1', '--metrics', '--log-format', 'json', '--batch-size', '20'], { DATABASE_URL: db.url });
  try {
    await cli.waitForOutput(/health and metrics on http:\/\/127\.0\.0\.1:\d+/);
    const base = /health and metrics on (http:\/\/127\.0\.0\.1:\d+)/.exec(cli.output())![1]!;
    const labels = { channel: 'ops', listener: 'OpsListeners.handle' };
    // Scrape while it works: every scrape answers, and the counters never go down.
    let last = 0;
    let scrapes = 0;
    const done = async () => (await db.query(`select count(*)::int as n from pubsub.notification where dead_at is null`))[0].n === 0;
    while (!(await done()) && scrapes < 2000) {
      const r = await get(`${base}/metrics`);
      assert.equal(r.status, 200);
      assert.match(r.type ?? '', /^text\/plain/);
      const now = sample(r.text, 'pgpubsub_processed_total', labels);
      assert.ok(now >= last, `processed went from ${last} down to ${now}`);
      last = now;
      scrapes++;
    }
    assert.ok(await done(), 'the backlog drained');
    const [{ seen }] = await db.query(`select count(*)::int as seen from seen`);
    const [{ dead, deadAttempts }] = await db.query(`select count(*)::int as dead, coalesce(sum(attempts), 0)::int as "deadAttempts" from pubsub.notification where dead_at is not null`);
    assert.equal(seen, 450, '400 first-time successes + 50 that succeeded on their second attempt');
    assert.equal(dead, 50);
    // Counters are updated after commit, and the last commit may be a moment behind the table: wait for them to settle.
    const final = (await waitFor(async () => {
      const r = await get(`${base}/metrics`);
      return sample(r.text, 'pgpubsub_processed_total', labels) === seen && sample(r.text, 'pgpubsub_dead_lettered_total', labels) === dead ? r.text : undefined;
    }, 'the counters to match the database'))!;
    assert.equal(sample(final, 'pgpubsub_failed_total', labels), deadAttempts + 50, 'two failed attempts per dead one, one per job that failed once');
    assert.equal(sample(final, 'pgpubsub_retried_total', labels), 100);
    assert.equal(sample(final, 'pgpubsub_processing_seconds_count', labels), 450 + deadAttempts + 50, 'one observation per attempt');
    assert.equal(sample(final, 'pgpubsub_latency_seconds_count', labels), 400, 'first attempts that succeeded');
    assert.equal(sample(final, 'pgpubsub_pending', labels), 0);
    assert.equal(sample(final, 'pgpubsub_dead_letters', labels), dead);
    assert.equal(sample(final, 'pgpubsub_oldest_pending_age_seconds', labels), 0);
    assert.equal(sample(final, 'pgpubsub_scrape_database_ok'), 1);
    assert.equal(sample(final, 'pgpubsub_polling_fallback'), 0);
    assert.equal(sample(final, 'pgpubsub_ready'), 1);
    assert.equal(sample(final, 'pgpubsub_reconnects_total'), 0);
    assert.ok(sample(final, 'pgpubsub_notification_queue_usage') >= 0);
    assert.ok(sample(final, 'pgpubsub_oldest_transaction_age_seconds') >= 0);
    console.log(`${scrapes} scrapes during the drain`);

    // Pending and the oldest pending age come from the database at scrape time.
    await db.query(`insert into pubsub.notification (channel, listener, payload, created_at, run_at) values ('ops', 'OpsListeners.handle', '{"n": 3}', now() - interval '90 seconds', now() + interval '1 hour')`);
    const later = (await get(`${base}/metrics`)).text;
    assert.equal(sample(later, 'pgpubsub_pending', labels), 1);
    assert.ok(sample(later, 'pgpubsub_oldest_pending_age_seconds', labels) >= 90);

    const lines = cli.output().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as Record<string, any>);
    const failures = lines.filter((l) => /failed on channel/.test(l.msg));
    assert.equal(failures.length, deadAttempts + 50, 'one error line per failed attempt');
    for (const l of failures) {
      assert.equal(l.level, 50);
      assert.equal(l.channel, 'ops');
      assert.equal(l.listener, 'OpsListeners.handle');
      assert.match(l.id, /^\d+$/);
      assert.ok(l.attempt === 1 || l.attempt === 2, JSON.stringify(l));
      assert.match(l.err.message, /job \d+ (always fails|fails once)/);
      assert.equal(l.err.type, 'Error');
      assert.equal(typeof l.time, 'number');
      assert.equal(l.pid, cli.child.pid);
    }
    assert.equal(failures.filter((l) => l.dead).length, 50);
    assert.ok(lines.some((l) => l.level === 30 && /^listening on ops/.test(l.msg)));
    assert.equal(cli.output().split('\n').filter((l) => l.trim() && !l.startsWith('{')).length, 0, `every line is JSON:\n${cli.output()}`);
  } finally {
    assert.equal(await cli.stop(), 0, cli.output());
  }
});

test('/readyz: 200 once listening and caught up, 503 (saying why) while the LISTEN connection is reconnecting, 200 again after; /healthz stays 200', async () => {
  const worker = await listen({ databaseUrl: db.url, channels: ['ops_probe'], http: { port: 0, host: '127.0.0.1' }, logger: quiet, pollIntervalMs: 100 });
  const events: string[] = [];
  worker.on('disconnected', () => events.push('disconnected'));
  worker.on('reconnected', () => events.push('reconnected'));
  const base = `http://127.0.0.1:${worker.http!.port}`;
  // A database cannot refuse connections to itself: this runs from the server's default database.
  const admin = new pg.Client(process.env.DATABASE_URL);
  await admin.connect();
  const allowConnections = (allow: boolean) => admin.query(`alter database ${new URL(db.url).pathname.slice(1)} allow_connections ${allow}`);
  try {
    await waitFor(async () => (await get(`${base}/readyz`)).status === 200, 'ready');
    assert.deepEqual(JSON.parse((await get(`${base}/readyz`)).text), { ready: true, reasons: [], listening: true, pollingFallback: null, caughtUp: true, missingSubscriptions: [] });
    // Refuse new connections, then kill the LISTEN session: the worker stays unready until it can connect again.
    await allowConnections(false);
    await db.query(`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and application_name = 'pubsub:listen'`);
    const unready = await waitFor(async () => {
      const r = await get(`${base}/readyz`);
      return r.status === 503 ? JSON.parse(r.text) : undefined;
    }, '503 from /readyz');
    assert.equal(unready.ready, false);
    assert.equal(unready.listening, false);
    assert.match(unready.reasons.join('\n'), /LISTEN connection is reconnecting/);
    assert.equal((await get(`${base}/healthz`)).status, 200, 'alive all along');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await get(`${base}/readyz`)).status, 503, 'still unready while connections are refused');
    await allowConnections(true);
    await waitFor(async () => (await get(`${base}/readyz`)).status === 200, 'ready again', 20_000);
    assert.deepEqual(events, ['disconnected', ...events.slice(1, -1), 'reconnected']);
    assert.equal((await get(`${base}/metrics`)).status, 404, 'no /metrics without metrics');
  } finally {
    await allowConnections(true);
    await admin.end();
    await worker.close();
  }
  await assert.rejects(fetch(`${base}/healthz`), 'the server is closed with the worker');
});

test('/readyz is 503 and names the listener while a loaded listener has no subscription in the database (deployed before its migration), 200 once the migration is applied', async () => {
  const warnings: string[] = [];
  const worker = await listen({ databaseUrl: db.url, channels: ['ops_unmigrated'], http: { port: 0, host: '127.0.0.1' }, logger: { ...quiet, warn: (m) => warnings.push(m) } });
  const base = `http://127.0.0.1:${worker.http!.port}`;
  try {
    const r = await get(`${base}/readyz`);
    assert.equal(r.status, 503);
    const body = JSON.parse(r.text);
    assert.deepEqual(body.missingSubscriptions, [{ channel: 'ops_unmigrated', listener: 'Unmigrated.handle' }]);
    assert.match(body.reasons.join('\n'), /Unmigrated\.handle is not subscribed to "ops_unmigrated".*make-migration/);
    assert.match(warnings.join('\n'), /Unmigrated\.handle is not subscribed/);
    await db.query(`insert into pubsub.subscription (channel, listener) values ('ops_unmigrated', 'Unmigrated.handle')`);
    await waitFor(async () => (await get(`${base}/readyz`)).status === 200, 'ready once subscribed (checked again every 5 s)', 15_000);
  } finally {
    await worker.close();
  }
});

test('events: processed and failed/retried/dead with channel, listener, ids, attempt and durations; a subscriber that throws breaks nothing', async () => {
  const worker = await listen({ databaseUrl: db.url, channels: ['ops_probe'], logger: quiet, pollIntervalMs: 50 });
  const seen: Record<string, Array<Record<string, any>>> = { processed: [], failed: [], retried: [], dead: [] };
  for (const name of ['processed', 'failed', 'retried', 'dead'] as const) worker.on(name, (e) => seen[name]!.push(e as any));
  const stop = worker.on('processed', () => {
    throw new Error('a broken subscriber');
  });
  try {
    await send('ops_probe', [1, 2, -1]);
    await waitFor(() => seen.processed!.length === 2 && seen.dead!.length === 1, 'two processed, one dead');
    stop();
    for (const e of seen.processed!) {
      assert.equal(e.channel, 'ops_probe');
      assert.equal(e.listener, 'ProbeListeners.handle');
      assert.equal(e.attempt, 1);
      assert.deepEqual(e.ids, [e.id]);
      assert.ok(e.durationMs >= 0 && e.latencyMs[0] >= 0 && e.latencyMs[0] < 60_000, JSON.stringify(e));
    }
    assert.deepEqual(seen.failed!.map((e) => [e.attempt, e.dead, e.lost, (e.error as Error).message]), [[1, false, false, 'probe -1 fails'], [2, true, false, 'probe -1 fails']]);
    assert.deepEqual(seen.retried!.map((e) => e.attempt), [1]);
    assert.equal(seen.dead![0]!.id, seen.failed![0]!.id);
    assert.equal((await worker.readiness()).ready, true);
  } finally {
    await worker.close();
  }
});

test('prom-client absent: metrics off works, metrics on is pubsub.missingDependency with the fix (a real CLI whose resolver cannot find prom-client)', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-no-prom-'));
  const hook = `export async function resolve(specifier, context, next) {
  if (specifier === 'prom-client' || specifier.startsWith('prom-client/')) {
    const error = new Error("Cannot find package 'prom-client'");
    error.code = 'ERR_MODULE_NOT_FOUND';
    throw error;
  }
  return next(specifier, context);
}`;
  fs.writeFileSync(path.join(dir, 'hide.mjs'), `import { register } from 'node:module';\nregister(${JSON.stringify(`data:text/javascript,${encodeURIComponent(hook)}`)});\n`);
  const env = { DATABASE_URL: db.url, NODE_OPTIONS: `--import=${path.join(dir, 'hide.mjs')}` };
  try {
    const on = startCli(['listen', '--require', fixture('ops.js'), '--http-port', '0', '--metrics'], env);
    assert.equal(await on.exited, 1, on.output());
    assert.match(on.output(), /Metrics need the prom-client package, which is not installed: run `npm install prom-client`/);
    const off = startCli(['listen', '--require', fixture('ops.js'), '--http-port', '0', '--http-host', '127.0.0.1'], env);
    try {
      await off.waitForOutput(/health on http:\/\/127\.0\.0\.1:\d+/);
      const base = /health on (http:\/\/127\.0\.0\.1:\d+)/.exec(off.output())![1]!;
      await waitFor(async () => (await get(`${base}/readyz`)).status === 200, 'ready without prom-client');
      assert.equal((await get(`${base}/metrics`)).status, 404);
    } finally {
      assert.equal(await off.stop(), 0, off.output());
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('loadPromClient: a missing module is pubsub.missingDependency; any other failure of the import is passed on as it is', async () => {
  const missing = Object.assign(new Error("Cannot find package 'prom-client'"), { code: 'ERR_MODULE_NOT_FOUND' });
  await assert.rejects(loadPromClient(() => Promise.reject(missing)), (e: unknown) => e instanceof PubSubError && e.code === 'pubsub.missingDependency' && e.cause === missing);
  const broken = new SyntaxError('Unexpected token');
  await assert.rejects(loadPromClient(() => Promise.reject(broken)), (e: unknown) => e === broken);
  assert.equal(typeof (await loadPromClient()).Registry, 'function', 'installed here as a dev dependency');
});

test('metrics into your own registry; a second worker on the same registry is a clear error; close() gives the names back', async () => {
  const prom = await loadPromClient();
  const registry = new prom.Registry();
  const worker = await listen({ databaseUrl: db.url, channels: ['ops_probe'], logger: quiet, metrics: { registry } });
  try {
    assert.equal(worker.metrics, registry);
    await send('ops_probe', [7]);
    await waitFor(async () => /pgpubsub_processed_total\{channel="ops_probe",listener="ProbeListeners.handle"\} 1/.test(await registry.metrics()), 'one processed');
    await assert.rejects(listen({ databaseUrl: db.url, channels: ['ops_probe'], logger: quiet, metrics: { registry } }), /already has a metric named pgpubsub_processed_total/);
  } finally {
    await worker.close();
  }
  assert.equal((await registry.metrics()).trim(), '', 'every metric removed');
});
