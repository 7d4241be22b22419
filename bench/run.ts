/**
 * `npm run bench`: pgpubsub side by side with graphile-worker, pg-boss, pg-listen and raw `pg`, on one
 * PostgreSQL, in one run. Prints a table and writes every figure, the machine, the server settings
 * and the method to bench/results/latest.json. `-- --smoke` runs seconds-long sizes; `-- --only W1,W3`.
 */
import { fork, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHistogram, type RecordableHistogram } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import * as pgListen from 'pg-listen';
import { applyMigrations, generateMigration, listen, notify, notifyMany, startEmbeddedPostgres } from 'pgpubsub';
import { latencyChart } from './chart.js';
import { RELAY_QUEUE, RELAY_SUBJECT, bucketMs, clock, observed } from './listeners.js';
import { startSampler } from './sampler.js';
import { sendSample, type SampleKind } from './sender.js';
import { percentiles, round } from './stats.js';
import { writerExperiments } from './w6x.js';

// pg-listen is CommonJS with an __esModule default export.
type Subscriber = { notifications: { on(channel: string, fn: (payload: any) => void): void }; connect(): Promise<void>; listenTo(channel: string): Promise<unknown>; close(): Promise<void> };
const createSubscriber = ((pgListen as any).default?.default ?? (pgListen as any).default) as (config: pg.ClientConfig) => Subscriber;
const here = path.dirname(fileURLToPath(import.meta.url)); // bench/dist
const benchDir = path.resolve(here, '..');
const root = path.resolve(benchDir, '..');
const cli = path.join(root, 'dist/src/cli/main.js');
const listenersModule = path.join(here, 'listeners.js');
const args = process.argv.slice(2);
const smoke = args.includes('--smoke');
const onlyAt = args.findIndex((a) => a.startsWith('--only'));
const only = onlyAt < 0 ? undefined : (args[onlyAt]!.split('=')[1] ?? args[onlyAt + 1] ?? '').split(',');
// W11 (30 minutes) runs only when named (--only W11) or in --smoke (20 seconds).
const runs = (w: string) => (only ? only.includes(w) : w !== 'W11' || smoke);
const minutesAt = args.findIndex((a) => a.startsWith('--lasting-minutes'));
const lastingMinutes = minutesAt < 0 ? undefined : Number(args[minutesAt]!.split('=')[1] ?? args[minutesAt + 1]);
// W11 experiments: storage parameters set on pubsub.notification first, e.g. `--reloptions autovacuum_vacuum_cost_delay=0,fillfactor=90`.
const reloptionsAt = args.findIndex((a) => a.startsWith('--reloptions'));
const reloptions = reloptionsAt < 0 ? undefined : (args[reloptionsAt]!.split('=').slice(1).join('=') || args[reloptionsAt + 1]!);
// … and the server's autovacuum_naptime (seconds; ALTER SYSTEM for the run, reset after), e.g. `--naptime 10`.
const naptimeAt = args.findIndex((a) => a.startsWith('--naptime'));
const naptime = naptimeAt < 0 ? undefined : Number(args[naptimeAt]!.split('=')[1] ?? args[naptimeAt + 1]);
// … and `--reindex`: REINDEX TABLE CONCURRENTLY pubsub.notification right after the xmin is released (indexes never shrink by vacuum).
const reindex = args.includes('--reindex');
// … and `--maintain`: the worker keeps the table small itself (`pubsub listen --maintain`).
const maintain = args.includes('--maintain');
// W10: runs of each variant (interleaved), `--reps 9`; the median is reported. Default 3.
const repsAt = args.findIndex((a) => a.startsWith('--reps'));
const reps = repsAt < 0 ? 3 : Number(args[repsAt]!.split('=')[1] ?? args[repsAt + 1]);
// W10: the backlog's size, `--w10-rows 100000` (longer drains weigh the worker's start less). Default: the no-op size.
const w10RowsAt = args.findIndex((a) => a.startsWith('--w10-rows'));
const w10Rows = w10RowsAt < 0 ? undefined : Number(args[w10RowsAt]!.split('=')[1] ?? args[w10RowsAt + 1]);
const size = smoke
  ? { drain: 2000, steadyMs: 2000, samples: 50, fanInMs: 500, writerMs: 2000, rss: 5000, writes: 100, noops: 1000, relayed: 5000, fanOut: 2000, lastingMs: (lastingMinutes ?? 1 / 3) * 60_000 }
  : { drain: 50_000, steadyMs: 30_000, samples: 1000, fanInMs: 5000, writerMs: 5000, rss: 200_000, writes: 2000, noops: 20_000, relayed: 100_000, fanOut: 100_000, lastingMs: (lastingMinutes ?? 30) * 60_000 };

const results: Record<string, unknown> = {};
const table: Array<[string, string, string, string]> = [];
const row = (workload: string, system: string, figure: string, ratio = '') => {
  table.push([workload, system, figure, ratio]);
  console.log(`${workload.padEnd(4)} ${system.padEnd(34)} ${figure.padEnd(44)} ${ratio}`);
};
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- server and database
let serverUrl = process.env.DATABASE_URL;
const embedded = serverUrl ? undefined : await startEmbeddedPostgres({ dir: path.join(benchDir, '.pgdata') });
serverUrl ??= embedded!.url;
const admin = new pg.Client(serverUrl);
await admin.connect();
await admin.query('drop database if exists pubsub_bench with (force)');
await admin.query('create database pubsub_bench');
await admin.end();
const url = new URL(serverUrl);
url.pathname = '/pubsub_bench';
const db = url.toString();
const pool = new pg.Pool({ connectionString: db, max: 40, application_name: 'bench' });
pool.on('error', () => {});
const q = async (text: string, values?: unknown[]) => (await pool.query(text, values)).rows;

const migrations = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-bench-'));
fs.mkdirSync(path.join(migrations, '00000000000000_tables'));
fs.writeFileSync(
  path.join(migrations, '00000000000000_tables', 'migration.sql'),
  `create table readings (id serial primary key, value int not null, note text not null);
create table readings_plain (id serial primary key, value int not null, note text not null);
create table readings_3 (id serial primary key, value int not null, note text not null);
create table readings_10 (id serial primary key, value int not null, note text not null);
create table bare_jobs (id bigint generated always as identity primary key, payload jsonb not null);
create table authors (id serial primary key, name text not null, created_at timestamp(3) not null default current_timestamp);`,
);
await generateMigration({ schema: path.join(benchDir, 'schema.prisma'), migrationsDir: migrations });
await applyMigrations(db, migrations);

const [{ server_version: version }] = await q('show server_version');
const settings = Object.fromEntries(
  (await q(`select name, setting from pg_settings where name = any($1)`, [
    ['shared_buffers', 'fsync', 'synchronous_commit', 'autovacuum', 'wal_level', 'max_connections', 'work_mem', 'checkpoint_timeout', 'max_wal_size'],
  ])).map((r) => [r.name, r.setting]),
);
results.machine = { cores: os.cpus().length, cpu: os.cpus()[0]?.model, memoryGiB: round(os.totalmem() / 2 ** 30, 1), node: process.version, platform: `${os.platform()} ${os.release()}` };
results.postgres = { version, embedded: !!embedded, settings };
results.mode = smoke ? 'smoke' : 'full';
results.date = new Date().toISOString();
results.loadAverage = { start: os.loadavg().map((x) => round(x)) };
console.log(`PostgreSQL ${version} (${embedded ? 'embedded' : 'DATABASE_URL'}), ${os.cpus().length} cores, ${round(os.totalmem() / 2 ** 30, 1)} GiB, ${smoke ? 'smoke' : 'full'} sizes\n`);

// ---- helpers
const workerDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-bench-worker-'));
function startWorker(extra: string[] = [], command: 'listen' | 'relay' = 'listen') {
  // In an empty directory: the repository's own pubsub.config.json (the demo's, which loads a Prisma
  // client for ctx.prisma: +100 MB of RSS) must not shape the worker measured; W7 passes --prisma itself.
  const child = spawn(process.execPath, [cli, command, '--require', listenersModule, ...extra], { cwd: workerDir, env: { ...process.env, DATABASE_URL: db }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const ready = new Promise<number>((resolve, reject) => {
    const check = setInterval(() => {
      if (/listening on/.test(out)) {
        clearInterval(check);
        resolve(performance.now());
      } else if (child.exitCode !== null) {
        clearInterval(check);
        reject(new Error(`worker exited: ${out}`));
      }
    }, 1);
  });
  const stop = async () => {
    const exited = new Promise((r) => child.on('exit', r));
    child.kill('SIGTERM');
    await exited;
  };
  return { child, ready, stop, output: () => out };
}

async function untilEmpty(sql: string) {
  for (;;) {
    const [{ left }] = await q(sql);
    if (!left) return performance.now();
    await sleep(5);
  }
}

/**
 * A drain's backlog, from a fresh table as graphile-worker's runner starts from one (it truncates its
 * jobs): the dead rows of the previous drain would otherwise stay for the next one to walk wherever
 * autovacuum is off (as on the CI server this was first measured on) or has not come round yet.
 */
async function fillNotifications(channel: string, listener: string, n: number) {
  await q('truncate pubsub.notification, pubsub.claim');
  await q(`insert into pubsub.notification (channel, listener, payload) select $1, $2, jsonb_build_object('n', g) from generate_series(1, $3::int) g`, [channel, listener, n]);
}

let peers: { graphile?: any; pgboss?: any } = {};
try {
  peers = { graphile: await import(path.join(benchDir, 'peers/graphile.mjs')), pgboss: await import(path.join(benchDir, 'peers/pgboss.mjs')) };
} catch (error) {
  console.log(`(peers not available: ${(error as Error).message})`);
}

// ---- W1 drain
if (runs('W1')) {
  const w1: Record<string, unknown> = {};
  await q(`insert into bare_jobs (payload) select jsonb_build_object('n', g) from generate_series(1, $1::int) g`, [size.drain]);
  const c = await pool.connect();
  const t0 = performance.now();
  for (;;) {
    const r = await c.query('delete from bare_jobs where id in (select id from bare_jobs order by id limit 100 for update skip locked)');
    if (!r.rowCount) break;
  }
  c.release();
  const bare = size.drain / ((performance.now() - t0) / 1000);
  w1.bareDelete100 = round(bare, 0);
  row('W1', 'bare DELETE … SKIP LOCKED, 100/tx', `${round(bare, 0)} rows/s`, 'baseline');

  // Repeated and interleaved (ours, then the peers, three times); the median of each is reported.
  const reps = smoke ? 1 : 3;
  const runsOf: Record<string, number[]> = {};
  const record = (key: string, rate: number) => (runsOf[key] ??= []).push(round(rate, 0));
  const configs = [[100, 1], [250, 1], [500, 1]] as const;
  for (let rep = 0; rep < reps; rep++) {
    for (const [batch, concurrency] of configs) {
      await fillNotifications('bench_drain', 'BenchListeners.noop', size.drain);
      const worker = startWorker(['--channel', 'bench_drain', '--batch-size', String(batch), '--concurrency', String(concurrency)]);
      const start = await worker.ready;
      const end = await untilEmpty(`select exists(select 1 from pubsub.notification where channel = 'bench_drain') as left`);
      await worker.stop();
      record(`pgpubsub_batch${batch}`, size.drain / ((end - start) / 1000));
    }
    {
      // The default, with metrics on and scraped every second: what the observer costs when someone listens.
      await fillNotifications('bench_drain', 'BenchListeners.noop', size.drain);
      const worker = startWorker(['--channel', 'bench_drain', '--http-port', '0', '--http-host', '127.0.0.1', '--metrics']);
      const start = await worker.ready;
      const port = await new Promise<string>((resolve) => {
        const check = setInterval(() => {
          const m = /health and metrics on http:\/\/127\.0\.0\.1:(\d+)/.exec(worker.output());
          if (m) resolve(m[1]!), clearInterval(check);
        }, 1);
      });
      const scraper = setInterval(() => void fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text()).catch(() => {}), 1000);
      const end = await untilEmpty(`select exists(select 1 from pubsub.notification where channel = 'bench_drain') as left`);
      clearInterval(scraper);
      await worker.stop();
      record('pgpubsub_batch100_metrics', size.drain / ((end - start) / 1000));
    }
    if (peers.graphile) {
      for (const batching of [true, false]) {
        if (!batching && rep > 0) continue; // ~10 s a run, and an order of magnitude away: once is enough
        record(`graphile_${batching ? 'batched' : 'plain'}`, (await peers.graphile.graphileDrain({ connectionString: db, jobs: size.drain, batching })).rate);
      }
    }
    if (peers.pgboss) record('pgboss', (await peers.pgboss.pgBossDrain({ connectionString: db, jobs: size.drain })).rate);
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  const names: Record<string, string> = {
    pgpubsub_batch100: 'pgpubsub listen --batch-size 100 (default)',
    pgpubsub_batch250: 'pgpubsub listen --batch-size 250',
    pgpubsub_batch500: 'pgpubsub listen --batch-size 500',
    pgpubsub_batch100_metrics: 'pgpubsub listen --metrics, scraped every 1 s',
    graphile_batched: 'graphile-worker, batching on',
    graphile_plain: 'graphile-worker, batching off',
    pgboss: 'pg-boss',
  };
  for (const [key, values] of Object.entries(runsOf)) {
    w1[key] = median(values);
    w1[`${key}_runs`] = values;
    row('W1', names[key]!, `${median(values)}/s (runs: ${values.join(', ')})`, `${round(median(values) / bare)}× bare`);
  }
  if (runsOf.pgpubsub_batch100_metrics) {
    w1.metricsRatio = round((w1.pgpubsub_batch100_metrics as number) / (w1.pgpubsub_batch100 as number));
    row('W1', 'pgpubsub --metrics / default', `${w1.metricsRatio}×`, 'target ≥ 0.95×');
  }
  if (runsOf.graphile_batched) {
    const best = Math.max(...configs.map(([b]) => w1[`pgpubsub_batch${b}`] as number));
    w1.ratioToGraphileBatched = round(best / (w1.graphile_batched as number));
    row('W1', 'pgpubsub (best batch) / graphile batching on', `${w1.ratioToGraphileBatched}×`, 'target ≥ 1.5×');
  }
  results.W1 = w1;
}

// ---- W2 steady state: writers on a table with the generated trigger while a worker consumes
if (runs('W2')) {
  await q('truncate readings; delete from pubsub.notification');
  const worker = startWorker(['--channel', 'model.Reading']);
  await worker.ready;
  let inserted = 0;
  const end = performance.now() + size.steadyMs;
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      const c = await pool.connect();
      while (performance.now() < end) {
        await c.query(`insert into readings (value, note) values ($1, 'steady')`, [inserted]);
        inserted++;
      }
      c.release();
    }),
  );
  const [{ backlog }] = await q(`select count(*)::int as backlog from pubsub.notification where channel = 'model.Reading'`);
  await worker.stop();
  const seconds = size.steadyMs / 1000;
  results.W2 = { writers: 4, seconds, inserted, insertsPerSecond: round(inserted / seconds, 0), processedPerSecond: round((inserted - backlog) / seconds, 0), backlogAtEnd: backlog };
  row('W2', 'pgpubsub, 4 writers + 1 worker', `${round(inserted / seconds, 0)} inserts/s, ${round((inserted - backlog) / seconds, 0)} processed/s`, `backlog ${backlog}`);
}

// ---- W3 latency: commit → callback start, 1 sample at a time, the sender in this process and in its own
if (runs('W3')) {
  const w3: Record<string, unknown> = { loadAverageAtStart: os.loadavg().map((x) => round(x)) };
  const placements = ['inProcess', 'separateProcess'] as const;
  const placed = { inProcess: 'sender in-process', separateProcess: 'sender in own process' };
  const chart: Record<(typeof placements)[number], Array<{ name: string; samples: number[] }>> = { inProcess: [], separateProcess: [] };
  // Whichever receiver runs reports each sample's start here; the sample being measured is waiting for it.
  let waiting: { i: number; resolve: (at: number) => void } | undefined;
  const arrived = (i: number, at: number) => (waiting?.i === i ? waiting.resolve(at) : undefined);
  observed.arrived = arrived;
  const sender = await pool.connect();
  const child = fork(path.join(here, 'sender.js'), [db], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const replies = new Map<number, (at: number) => void>();
  await new Promise((resolve) => child.once('message', resolve)); // ready
  child.on('message', ({ i, at }: { i: number; at: number }) => replies.get(i)?.(at));
  const send: Record<(typeof placements)[number], (kind: SampleKind, i: number) => Promise<number>> = {
    inProcess: (kind, i) => sendSample(sender, kind, i),
    separateProcess: (kind, i) => new Promise((resolve) => (replies.set(i, resolve), child.send({ kind, i }))),
  };
  /** Event loop delay, as perf_hooks.monitorEventLoopDelay measures it (a 1 ms timer's lateness, ns), into `into` until stopped. */
  function recordLoopDelay(into: RecordableHistogram): () => void {
    let last = process.hrtime.bigint();
    const timer = setInterval(() => {
      const at = process.hrtime.bigint();
      into.record(at - last > 1_000_000n ? at - last - 1_000_000n : 1n);
      last = at;
    }, 1);
    return () => clearInterval(timer);
  }
  let next = 0; // sample indices are never reused, so a late start cannot count for a later sample
  async function one(kind: SampleKind, placement: (typeof placements)[number]): Promise<number> {
    const i = next++;
    const start = new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`W3 ${kind}: sample ${i} did not start within 10 s`)), 10_000);
      waiting = { i, resolve: (at) => (clearTimeout(timer), resolve(at)) };
    });
    const sentAt = await send[placement](kind, i);
    return (await start) - sentAt;
  }
  // Every receiver runs from the start (idle ones cost nothing measurable), so the systems can take turns:
  // blocks of 100 samples per system and placement, round-robin, so that a noisy minute of a shared
  // machine falls on all of them alike.
  const raw = new pg.Client(db);
  await raw.connect();
  raw.on('notification', (m) => arrived(JSON.parse(m.payload!).i, clock()));
  await raw.query('listen bench_raw');
  const worker = await listen({ databaseUrl: db, channels: ['bench_latency', 'bench_fast'], logger: { info() {}, warn: console.warn, error: console.error } });
  const graphile = await peers.graphile?.graphileLatencyWorker({ connectionString: db, onStart: (i: number) => arrived(i, clock()) });
  await sleep(200);
  const systems: Array<[string, string, SampleKind]> = [
    ['raw pg LISTEN (floor)', 'rawPg', 'raw'],
    ['pgpubsub non-durable', 'pgpubsubNonDurable', 'fast'],
    ['pgpubsub durable', 'pgpubsubDurable', 'durable'],
    ...(graphile ? [['graphile-worker add → start', 'graphile', 'graphile'] as [string, string, SampleKind]] : []),
  ];
  const block = Math.min(100, size.samples);
  const taken = new Map<string, { samples: number[]; loop: RecordableHistogram }>();
  for (let done = 0; done < size.samples; done += block) {
    for (const [, key, kind] of systems) {
      for (const placement of placements) {
        const t = taken.get(key + placement) ?? { samples: [], loop: createHistogram() };
        taken.set(key + placement, t);
        const stop = recordLoopDelay(t.loop);
        for (let n = 0; n < block; n++) t.samples.push(await one(kind, placement));
        stop();
      }
    }
  }
  await worker.close();
  await graphile?.stop();
  await raw.end();
  for (const [name, key] of systems) {
    const figures: Record<string, unknown> = {};
    for (const placement of placements) {
      const { samples, loop } = taken.get(key + placement)!;
      const p = percentiles(samples);
      const eventLoopDelay = { p50: round(loop.percentile(50) / 1e6, 3), p99: round(loop.percentile(99) / 1e6, 3), max: round(loop.max / 1e6, 3) };
      figures[placement] = { p50: round(p.p50, 3), p95: round(p.p95, 3), p99: round(p.p99, 3), max: round(p.max, 3), n: p.n, eventLoopDelay };
      chart[placement].push({ name, samples });
      row('W3', `${name}, ${placed[placement]}`, `p50 ${round(p.p50, 3)} p95 ${round(p.p95, 3)} p99 ${round(p.p99, 3)} max ${round(p.max, 2)} ms`, `event loop delay p99 ${eventLoopDelay.p99} ms`);
    }
    w3[key] = figures;
  }
  sender.release();
  child.disconnect();
  if (peers.pgboss?.pgBossLatency) {
    const p = percentiles(await peers.pgboss.pgBossLatency({ connectionString: db, samples: size.samples }));
    w3.pgboss = { inProcess: { p50: round(p.p50, 3), p95: round(p.p95, 3), p99: round(p.p99, 3), max: round(p.max, 3), n: p.n } };
    row('W3', 'pg-boss send → start (stamped after commit), sender in-process', `p50 ${round(p.p50, 3)} p95 ${round(p.p95, 3)} p99 ${round(p.p99, 3)} max ${round(p.max, 2)} ms`);
  }
  w3.loadAverageAtEnd = os.loadavg().map((x) => round(x));
  type Figures = Record<string, { p50: number; p99: number }>;
  const [durable, fast, rawPg, peer] = [w3.pgpubsubDurable, w3.pgpubsubNonDurable, w3.rawPg, w3.graphile] as Array<Figures | undefined>;
  for (const placement of placements) {
    const targets: Record<string, unknown> = {};
    if (durable && peer) {
      targets.durableP50OverGraphile = round(durable[placement]!.p50 / peer[placement]!.p50);
      targets.durableP99OverGraphile = round(durable[placement]!.p99 / peer[placement]!.p99);
      row('W3', `durable / graphile, ${placed[placement]}`, `p50 ${targets.durableP50OverGraphile}×, p99 ${targets.durableP99OverGraphile}×`, 'target ≤ 1× both');
    }
    if (fast && rawPg) {
      targets.nonDurableP99MinusRaw = round(fast[placement]!.p99 - rawPg[placement]!.p99, 3);
      row('W3', `non-durable p99 − raw p99, ${placed[placement]}`, `${targets.nonDurableP99MinusRaw} ms`, 'target ≤ 0.5 ms');
    }
    w3[`${placement}Targets`] = targets;
  }
  fs.mkdirSync(path.join(benchDir, 'results'), { recursive: true });
  const svg = path.join(benchDir, 'results', smoke ? 'w3-smoke.svg' : 'w3.svg');
  fs.writeFileSync(svg, latencyChart(`W3 commit → callback start, ${size.samples} sequential samples each (load average ${w3.loadAverageAtStart}; ${new Date().toISOString().slice(0, 16)}Z)`, [
    { title: 'sender in the bench process', series: chart.inProcess },
    { title: 'sender in its own process', series: chart.separateProcess },
  ]));
  console.log(`wrote ${path.relative(root, svg)}`);
  results.W3 = w3;
}

// ---- W4 fan-in: one publisher as fast as it can; received/s and p99 by receiver
if (runs('W4')) {
  const w4: Record<string, unknown> = {};
  const publish = (channel: string, bytes: number) =>
    new Promise<number>((resolve) => {
      const p = spawn(process.execPath, [path.join(here, 'publisher.js'), db, channel, String(bytes), String(size.fanInMs)]);
      let out = '';
      p.stdout.on('data', (d) => (out += d));
      p.on('exit', () => resolve(Number(out)));
    });
  for (const bytes of [100, 1000, 7900]) {
    const figures: Record<string, unknown> = {};
    const receivers: Array<[string, () => Promise<{ received: () => number; latencies: number[]; close(): Promise<void> }>]> = [
      [
        'raw pg',
        async () => {
          const c = new pg.Client(db);
          await c.connect();
          const latencies: number[] = [];
          c.on('notification', (m) => latencies.push(now() - JSON.parse(m.payload!).sentAt));
          await c.query('listen bench_fast');
          return { received: () => latencies.length, latencies, close: () => c.end() };
        },
      ],
      [
        'pg-listen',
        async () => {
          const subscriber = createSubscriber({ connectionString: db });
          const latencies: number[] = [];
          subscriber.notifications.on('bench_fast', (payload: { sentAt: number }) => latencies.push(now() - payload.sentAt));
          await subscriber.connect();
          await subscriber.listenTo('bench_fast');
          return { received: () => latencies.length, latencies, close: () => subscriber.close() };
        },
      ],
      [
        'pgpubsub',
        async () => {
          observed.latencies.length = 0;
          const w = await listen({ databaseUrl: db, channels: ['bench_fast'], logger: { info() {}, warn() {}, error: console.error } });
          return { received: () => observed.latencies.length, latencies: observed.latencies, close: () => w.close() };
        },
      ],
    ];
    const reps = smoke ? 1 : 3;
    const all: Record<string, Array<{ sent: number; received: number; receivedPerSecond: number; p99: number }>> = {};
    for (let rep = 0; rep < reps; rep++) {
      for (const [name, start] of receivers) {
        const receiver = await start();
        await sleep(300);
        const sent = await publish('bench_fast', bytes);
        await sleep(200);
        const got = receiver.received();
        const p = percentiles(receiver.latencies);
        await receiver.close();
        (all[name] ??= []).push({ sent, received: got, receivedPerSecond: round(got / (size.fanInMs / 1000), 0), p99: round(p.p99, 3) });
      }
    }
    for (const [name, list] of Object.entries(all)) {
      const sorted = [...list].sort((x, y) => x.receivedPerSecond - y.receivedPerSecond);
      figures[name] = { ...sorted[Math.floor(sorted.length / 2)]!, runs: list.map((x) => x.receivedPerSecond) };
    }
    const rawRate = (figures['raw pg'] as { receivedPerSecond: number }).receivedPerSecond;
    for (const name of ['raw pg', 'pg-listen', 'pgpubsub']) {
      const f = figures[name] as { receivedPerSecond: number; p99: number; sent: number; received: number };
      row('W4', `${name}, ${bytes} B`, `${f.receivedPerSecond}/s (${f.received}/${f.sent}), p99 ${f.p99} ms`, name === 'raw pg' ? 'baseline' : `${round(f.receivedPerSecond / rawRate)}× raw`);
    }
    w4[`${bytes}B`] = figures;
  }
  results.W4 = w4;
}

// ---- W6 writer overhead: INSERT commits/s with and without the trigger, each pair measured side by side
if (runs('W6') || only?.includes('W6x')) {
  const w6: Record<string, unknown> = {};
  const hasPgbench = spawnSync('pgbench', ['--version']).status === 0;
  const single = (table: string) => `insert into ${table} (value, note) values (1, 'w6')`;
  const hundred = (table: string) => `insert into ${table} (value, note) select g, 'w6' from generate_series(1, 100) g`;
  let scripts = 0;
  async function commitsPerSecond(sql: string, clients: number): Promise<number> {
    if (hasPgbench) {
      const file = path.join(os.tmpdir(), `pubsub-bench-w6-${process.pid}-${scripts++}.sql`);
      fs.writeFileSync(file, `${sql};\n`);
      const r = spawnSync('pgbench', ['-n', '-c', String(clients), '-j', String(Math.min(clients, 2)), '-T', String(size.writerMs / 1000), '-f', file, db], { encoding: 'utf8' });
      fs.rmSync(file, { force: true });
      const tps = r.stdout.match(/tps = ([\d.]+) \(without initial connection time\)/)?.[1];
      if (!tps) throw new Error(`pgbench failed: ${r.stdout}${r.stderr}`);
      return Number(tps);
    }
    let commits = 0;
    const end = performance.now() + size.writerMs;
    await Promise.all(
      Array.from({ length: clients }, async () => {
        const c = await pool.connect();
        while (performance.now() < end) {
          await c.query(sql);
          commits++;
        }
        c.release();
      }),
    );
    return commits / (size.writerMs / 1000);
  }
  /** Every variant (name → statement) `rounds` times, interleaved, each from empty tables; the median commits/s of each. */
  async function sideBySide(variants: Record<string, string>, clients: number, rounds = smoke ? 1 : 3): Promise<Record<string, number>> {
    const tables = (await q(`select string_agg(format('%I.%I', schemaname, tablename), ', ') as t from pg_tables
      where tablename like 'readings%' or (schemaname = 'pubsub' and (tablename like 'notification%' or tablename = 'fanout'))`))[0].t;
    const byName: Record<string, number[]> = {};
    for (let r = 0; r < rounds; r++) {
      for (const [name, sql] of Object.entries(variants)) {
        await q(`truncate ${tables}`);
        (byName[name] ??= []).push(await commitsPerSecond(sql, clients));
      }
    }
    return Object.fromEntries(Object.entries(byName).map(([name, list]) => [name, list.sort((a, b) => a - b)[Math.floor(list.length / 2)]!]));
  }
  if (runs('W6')) {
    for (const clients of [1, 8, 32]) {
      const { plain, alone } = await sideBySide({ plain: single('readings_plain'), alone: single('readings') }, clients); // alone: the trigger's own cost
      const worker = startWorker(['--channel', 'model.Reading']);
      await worker.ready;
      const consumed = await commitsPerSecond(single('readings'), clients); // a worker consuming on the same 2 cores
      await worker.stop();
      w6[`${clients}`] = { withoutTrigger: round(plain!, 0), withTrigger: round(alone!, 0), withTriggerAndWorker: round(consumed, 0), ratio: round(alone! / plain!), ratioWithWorker: round(consumed / plain!) };
      row('W6', `${clients} writer(s), trigger only`, `${round(alone!, 0)} vs ${round(plain!, 0)} commits/s`, `${round(alone! / plain!)}× no trigger`);
      row('W6', `${clients} writer(s), trigger + worker`, `${round(consumed, 0)} vs ${round(plain!, 0)} commits/s`, `${round(consumed / plain!)}× no trigger`);
    }
    for (const clients of [1, 8]) {
      const { plain, alone } = await sideBySide({ plain: hundred('readings_plain'), alone: hundred('readings') }, clients);
      w6[`${clients}x100`] = { withoutTrigger: round(plain! * 100, 0), withTrigger: round(alone! * 100, 0), ratio: round(alone! / plain!) };
      row('W6', `${clients} writer(s), 100 rows/INSERT`, `${round(alone! * 100, 0)} vs ${round(plain! * 100, 0)} rows/s`, `${round(alone! / plain!)}× no trigger`);
    }
    for (const clients of [1, 8]) {
      const f = await sideBySide({ plain: single('readings_plain'), l1: single('readings'), l3: single('readings_3'), l10: single('readings_10') }, clients);
      w6[`${clients}-listeners`] = Object.fromEntries(['l1', 'l3', 'l10'].map((k) => [k, { commits: round(f[k]!, 0), ratio: round(f[k]! / f.plain!) }]));
      for (const n of [1, 3, 10]) row('W6', `${clients} writer(s), ${n} listener(s)`, `${round(f[`l${n}`]!, 0)} vs ${round(f.plain!, 0)} commits/s`, `${round(f[`l${n}`]! / f.plain!)}× no trigger`);
    }
    // Publishing from the app: 100 notify() calls in one transaction (a round trip each) against one
    // notifyMany() of the same 100 payloads (one statement), notifications stored per second.
    for (const clients of [1, 8]) {
      const rates: Record<string, number[]> = {};
      for (let r = 0; r < (smoke ? 1 : 3); r++) {
        for (const variant of ['notify', 'notifyMany'] as const) {
          await q(`truncate pubsub.notification`);
          let stored = 0;
          const end = performance.now() + size.writerMs;
          await Promise.all(
            Array.from({ length: clients }, async () => {
              const c = await pool.connect();
              const payloads = Array.from({ length: 100 }, (_, n) => ({ n }));
              while (performance.now() < end) {
                await c.query('begin');
                if (variant === 'notify') for (const p of payloads) await notify('bench_drain', p, { client: c });
                else await notifyMany('bench_drain', payloads, { client: c });
                await c.query('commit');
                stored += 100;
              }
              c.release();
            }),
          );
          (rates[variant] ??= []).push(stored / (size.writerMs / 1000));
        }
      }
      const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
      const [one, many] = [med(rates.notify!), med(rates.notifyMany!)];
      w6[`${clients}-notifyMany`] = { notify: round(one, 0), notifyMany: round(many, 0), ratio: round(many / one) };
      row('W6', `${clients} writer(s), 100 payloads per transaction`, `notifyMany ${round(many, 0)} vs notify() ×100 ${round(one, 0)} notifications/s`, `${round(many / one)}× notify()`);
    }
    await q(`truncate pubsub.notification`);
    results.W6 = { client: hasPgbench ? 'pgbench' : 'node-postgres', ...w6 };
  }
  if (only?.includes('W6x')) results.W6x = await writerExperiments({ q, sideBySide, single, hundred, row });
}

// ---- W7 ctx.prisma: the cost per listener call of one insert through the app's PrismaClient, beside ctx.tx and a no-op
if (runs('W7')) {
  const w7: Record<string, unknown> = {};
  const prismaModule = path.join(here, 'prisma.js');
  const variants = [
    ['noop', 'bench_drain', 'BenchListeners.noop', [], size.noops, 'no-op listener'],
    ['noopWithPrisma', 'bench_drain', 'BenchListeners.noop', ['--prisma', prismaModule], size.noops, 'no-op listener, worker with --prisma'],
    ['tx', 'bench_tx_insert', 'BenchListeners.sqlInsert', [], size.writes, 'one insert through ctx.tx'],
    ['prisma', 'bench_prisma_insert', 'BenchListeners.prismaInsert', ['--prisma', prismaModule], size.writes, 'one author.create through ctx.prisma'],
  ] as const;
  const rates: Record<string, number[]> = {};
  for (let rep = 0; rep < (smoke ? 1 : 3); rep++) {
    for (const [key, channel, listener, extra, n] of variants) {
      await q('truncate authors');
      await fillNotifications(channel, listener, n);
      const worker = startWorker(['--channel', channel, ...extra]);
      const start = await worker.ready;
      const end = await untilEmpty(`select exists(select 1 from pubsub.notification where channel = '${channel}') as left`);
      await worker.stop();
      (rates[key] ??= []).push(round(n / ((end - start) / 1000), 0));
    }
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  const perCallUs = (key: string) => round(1e6 / median(rates[key]!), 1);
  for (const [key, , , , n, name] of variants) {
    w7[key] = { notifications: n, perSecond: median(rates[key]!), runs: rates[key], perCallUs: perCallUs(key) };
    const ratio = key === 'prisma' ? `${round(perCallUs('prisma') / perCallUs('tx'))}× ctx.tx per call` : key === 'noopWithPrisma' ? `${round(perCallUs(key) / perCallUs('noop'))}× without` : '';
    row('W7', name, `${median(rates[key]!)}/s, ${perCallUs(key)} µs per call (runs: ${rates[key]!.join(', ')})`, ratio);
  }
  w7.prismaExtraUsPerCall = round(perCallUs('prisma') - perCallUs('tx'), 1);
  row('W7', 'ctx.prisma − ctx.tx, per call', `${w7.prismaExtraUsPerCall} µs`);
  results.W7 = w7;
}

// ---- W10 ordered backlogs: one key, and many keys, against the same backlog unordered
if (runs('W10')) {
  const n = w10Rows ?? size.noops;
  const variants = [
    ['unordered', 'bench_drain', 'BenchListeners.noop', 1, 'unordered no-op'],
    ['oneKey', 'bench_ordered', 'BenchListeners.ordered', 1, 'ordered, one key'],
    ['manyKeys', 'bench_ordered', 'BenchListeners.ordered', 100, 'ordered, 100 keys'],
    ['manyKeysKeyed', 'bench_ordered', 'BenchListeners.ordered', 100, 'ordered, 100 keys, keyed at write'],
    ['manyKeysPath', 'bench_ordered_path', 'BenchListeners.orderedPath', 100, 'ordered, 100 keys, orderKey path (stored by the writer)'],
  ] as const;
  const rates: Record<string, number[]> = {};
  let violations = 0;
  for (let rep = 0; rep < (smoke ? 1 : reps); rep++) {
    for (const [key, channel, listener, keys] of variants) {
      // Each backlog in a fresh table: the dead rows of earlier drains would weigh on the later variants.
      await q('truncate pubsub.notification, pubsub.claim');
      // Through pubsub.notify(), which stores each row's key from the subscription's path (library version 8).
      if (key === 'manyKeysPath') {
        await q(`select pubsub.notify($1, jsonb_build_object('n', g, 'key', g % $3)) from generate_series(1, $2::int) g`, [channel, n, keys]);
        const [{ unkeyed }] = await q(`select count(*)::int as unkeyed from pubsub.notification where channel = $1 and order_key is null`, [channel]);
        if (unkeyed) throw new Error(`W10: ${unkeyed} rows of the orderKey path listener were stored without their key`);
      }
      else if (key === 'manyKeysKeyed') await q(`insert into pubsub.notification (channel, listener, payload, order_key) select $1, $2, jsonb_build_object('n', g, 'key', g % $4), (g % $4)::text from generate_series(1, $3::int) g`, [channel, listener, n, keys]);
      else await q(`insert into pubsub.notification (channel, listener, payload) select $1, $2, jsonb_build_object('n', g, 'key', g % $4) from generate_series(1, $3::int) g`, [channel, listener, n, keys]);
      const worker = startWorker(['--channel', channel]);
      const start = await worker.ready;
      const end = await untilEmpty(`select exists(select 1 from pubsub.notification where channel = '${channel}') as left`);
      await worker.stop();
      violations += (worker.output().match(/ORDER VIOLATION/g) ?? []).length;
      (rates[key] ??= []).push(round(n / ((end - start) / 1000), 0));
    }
  }
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  const w10: Record<string, unknown> = { notifications: n, orderViolations: violations };
  for (const [key, , , keys, name] of variants) {
    w10[key] = { keys, perSecond: median(rates[key]!), runs: rates[key] };
    const target = key === 'oneKey' ? 'target ≥ 0.30×' : key === 'manyKeys' || key === 'manyKeysPath' ? 'target ≥ 0.70×' : 'no key to give: the cost of giving keys';
    row('W10', name, `${median(rates[key]!)}/s (runs: ${rates[key]!.join(', ')})`, key === 'unordered' ? 'baseline' : `${round(median(rates[key]!) / median(rates.unordered!))}× unordered, ${target}`);
  }
  row('W10', 'ordering violations', String(violations), 'must be 0');
  if (violations) throw new Error(`W10: ${violations} ordering violations`);
  results.W10 = w10;
}

// ---- W9 fan-out and scale-out: one backlog drained by 1, 2 and 4 worker processes; one channel with 3 listeners
if (runs('W9')) {
  const w9: Record<string, unknown> = { notifications: size.fanOut };
  const variants = [
    ['processes1', 'bench_drain', ['BenchListeners.noop'], 1, '1 process, 1 listener'],
    ['processes2', 'bench_drain', ['BenchListeners.noop'], 2, '2 processes, 1 listener'],
    ['processes4', 'bench_drain', ['BenchListeners.noop'], 4, '4 processes, 1 listener'],
    ['listeners3', 'bench_fanout', ['BenchListeners.first', 'BenchListeners.second', 'BenchListeners.third'], 1, '1 process, 3 listeners on one channel'],
  ] as const;
  for (const [key, channel, listeners, processes, name] of variants) {
    // As notify() stores them: one row for one listener; one row of pubsub.fanout naming several (library version 10).
    if (listeners.length === 1) await q(`insert into pubsub.notification (channel, listener, payload) select $1, $3, jsonb_build_object('n', g) from generate_series(1, $2::int) g`, [channel, size.fanOut, listeners[0]]);
    else await q(`insert into pubsub.fanout (channel, listeners, payload) select $1, $3::text[], jsonb_build_object('n', g) from generate_series(1, $2::int) g`, [channel, size.fanOut, listeners]);
    await q('vacuum analyze pubsub.notification, pubsub.fanout');
    const workers = Array.from({ length: processes }, () => startWorker(['--channel', channel]));
    const ready = await Promise.all(workers.map((w) => w.ready));
    const stopSampler = await startSampler(db, workers.map((w) => w.child.pid!));
    const end = await untilEmpty(`select exists(select 1 from pubsub.notification where channel = '${channel}') or exists(select 1 from pubsub.fanout where channel = '${channel}') as left`);
    const usage = await stopSampler();
    await Promise.all(workers.map((w) => w.stop()));
    const seconds = (end - Math.min(...ready)) / 1000;
    const rows = size.fanOut * listeners.length;
    const perProcess = workers.map((w) => round(Number(/bench calls: (\d+)/.exec(w.output())?.[1] ?? 0) / seconds, 0));
    w9[key] = { processes, listeners: listeners.length, rows, rowsPerSecond: round(rows / seconds, 0), perProcess, ...usage, seconds: round(seconds) };
    row('W9', name, `${round(rows / seconds, 0)} rows/s${processes > 1 ? ` (per process: ${perProcess.join(', ')})` : ''}`, key === 'processes1' ? 'baseline' : `${round(rows / seconds / (w9.processes1 as { rowsPerSecond: number }).rowsPerSecond)}× 1 process`);
    row('W9', '  where it saturates', usage.saturation);
    row('W9', '  wait events (backends per sample)', usage.waits.slice(0, 4).map((w) => `${w.event} ${w.backends}`).join('; '));
    row('W9', '  CPU and WAL', `machine ${Math.round(usage.cpu.machineBusy * 100)}% busy, PostgreSQL ${usage.cpu.postgresCores} cores, workers ${usage.cpu.workerCores} cores, WAL ${usage.walMBPerSecond} MB/s`);
  }
  results.W9 = w9;
}

// ---- W11 speed that lasts: a steady load at half the drain rate while a second session holds its xmin for the middle third
if (runs('W11')) {
  const durationMs = size.lastingMs;
  const intervalMs = smoke ? 2000 : 60_000; // one row of the report
  const sampleMs = smoke ? 250 : 5000; // table size and dead tuples
  const holdFrom = durationMs / 3; // 10 of 30 minutes with the xmin held
  const holdUntil = (2 * durationMs) / 3;
  const recoverMs = durationMs / 6; // back to the clean size within 5 of 30 minutes
  await q('delete from pubsub.notification');
  if (reloptions) await q(`alter table pubsub.notification set (${reloptions.replace(/[^\w.=,]/g, '')})`);
  if (naptime) await q(`alter system set autovacuum_naptime = ${Math.round(naptime)}`).then(() => q(`select pg_reload_conf()`));
  await q('vacuum full pubsub.notification');
  // The drain rate of this machine now: a W1 drain of the no-op listener.
  await fillNotifications('bench_drain', 'BenchListeners.noop', size.drain);
  let worker = startWorker(['--channel', 'bench_drain']);
  const drainStart = await worker.ready;
  const drainRate = size.drain / ((await untilEmpty(`select exists(select 1 from pubsub.notification where channel = 'bench_drain') as left`)) - drainStart) * 1000;
  await worker.stop();
  await q('vacuum full pubsub.notification');
  const rate = drainRate / 2;
  const rel = `'pubsub.notification'::regclass`;
  const sizes = async () =>
    (await q(`select pg_total_relation_size(${rel})::float8 as total, pg_relation_size(${rel})::float8 as heap, pg_indexes_size(${rel})::float8 as indexes,
      n_live_tup::float8 as live, n_dead_tup::float8 as dead, autovacuum_count::int as autovacuums from pg_stat_user_tables where relid = ${rel}`))[0] as { total: number; heap: number; indexes: number; live: number; dead: number; autovacuums: number };
  worker = startWorker(['--channel', 'bench_lasting', ...(maintain ? ['--maintain'] : [])]);
  await worker.ready;
  const t0 = performance.now();
  const elapsed = () => performance.now() - t0;
  // The writer: every 10 ms, the rows due at the target rate in one statement (one transaction), as a statement-level trigger stores them.
  let produced = 0;
  const writer = await pool.connect();
  const writing = (async () => {
    while (elapsed() < durationMs) {
      const due = Math.min(Math.floor((rate * elapsed()) / 1000) - produced, 5000);
      if (due <= 0) {
        await sleep(10);
        continue;
      }
      await writer.query(
        `with stored as (insert into pubsub.notification (channel, listener, payload) select 'bench_lasting', 'BenchListeners.lasting', jsonb_build_object('sentAt', $1::float8, 'n', g) from generate_series(1, $2::int) g) select pubsub.wake('bench_lasting')`,
        [now(), due],
      );
      produced += due;
    }
    writer.release();
  })();
  // The worker prints its latency histogram once a second; read what it printed since the last look.
  let read = 0;
  const histogram = new Map<number, number>();
  const takeLatencies = () => {
    const out = worker.output();
    const upTo = out.lastIndexOf('\n') + 1;
    for (const m of out.slice(read, upTo).matchAll(/bench latencies: (\{.*\})/g)) for (const [b, n] of Object.entries(JSON.parse(m[1]!) as Record<string, number>)) histogram.set(Number(b), (histogram.get(Number(b)) ?? 0) + n);
    read = Math.max(read, upTo);
  };
  const p99 = () => {
    const total = [...histogram.values()].reduce((a, b) => a + b, 0);
    let seen = 0;
    for (const b of [...histogram.keys()].sort((x, y) => x - y)) if ((seen += histogram.get(b)!) >= 0.99 * total) return bucketMs(b);
    return NaN;
  };
  let holder: pg.Client | undefined;
  let released = false;
  let maintenance: Promise<void> | undefined;
  const samples: Array<{ ms: number; held: boolean } & Awaited<ReturnType<typeof sizes>>> = [];
  const intervals: Array<Record<string, number | boolean>> = [];
  let producedBefore = 0;
  let intervalStart = 0;
  let nextInterval = intervalMs;
  const mb = (bytes: number) => round(bytes / 2 ** 20, 1);
  const minute = (ms: number) => round(ms / intervalMs, 1);
  while (elapsed() < durationMs) {
    await sleep(Math.min(sampleMs, nextInterval - elapsed()));
    if (!holder && !released && elapsed() >= holdFrom) {
      holder = new pg.Client({ connectionString: db, application_name: 'bench' });
      await holder.connect();
      await holder.query('begin isolation level repeatable read');
      await holder.query('select txid_current()');
      console.log(`W11  xmin held from ${intervalMs === 60_000 ? 'minute' : 'interval'} ${minute(elapsed())}`);
    } else if (holder && elapsed() >= holdUntil) {
      await holder.query('commit');
      await holder.end();
      holder = undefined;
      released = true;
      if (reindex) {
        const started = elapsed();
        maintenance = q('reindex table concurrently pubsub.notification').then(() => console.log(`W11  reindexed concurrently in ${round((elapsed() - started) / 1000, 1)} s`));
      }
      console.log(`W11  xmin released at ${minute(elapsed())}`);
    }
    samples.push({ ms: elapsed(), held: !!holder, ...(await sizes()) });
    if (elapsed() < nextInterval - 5) continue;
    takeLatencies();
    const processed = [...histogram.values()].reduce((a, b) => a + b, 0);
    const last = samples.at(-1)!;
    const seconds = (elapsed() - intervalStart) / 1000;
    const [{ backlog }] = await q(`select count(*)::int as backlog from pubsub.notification where channel = 'bench_lasting'`);
    // What the first claim of every drain round pays: the walk from the start of the listener's range over entries of deleted rows.
    const [plan] = (await q(`explain (analyze, buffers, format json) select id from pubsub.notification where listener = 'BenchListeners.lasting' and dead_at is null order by id limit 100`))[0]['QUERY PLAN'];
    const i = {
      interval: intervals.length + 1,
      xminHeld: samples.filter((s) => s.ms > nextInterval - intervalMs).some((s) => s.held),
      producedPerSecond: round((produced - producedBefore) / seconds, 0),
      processedPerSecond: round(processed / seconds, 0),
      p99Ms: round(p99(), 2),
      backlog,
      headScanMs: round(plan['Execution Time'], 1),
      headScanBuffers: plan.Plan['Shared Hit Blocks'] + plan.Plan['Shared Read Blocks'],
      totalMB: mb(last.total),
      heapMB: mb(last.heap),
      indexMB: mb(last.indexes),
      deadTuples: last.dead,
      liveTuples: last.live,
      autovacuums: last.autovacuums,
    };
    intervals.push(i);
    histogram.clear();
    producedBefore = produced;
    intervalStart = elapsed();
    nextInterval += intervalMs;
    row('W11', `${intervalMs === 60_000 ? 'minute' : `${intervalMs / 1000} s interval`} ${i.interval}${i.xminHeld ? ' (xmin held)' : ''}`, `${i.processedPerSecond}/s of ${i.producedPerSecond}/s, p99 ${i.p99Ms} ms, ${i.totalMB} MB (heap ${i.heapMB}, indexes ${i.indexMB}), ${i.deadTuples} dead`, `backlog ${i.backlog}, autovacuums ${i.autovacuums}, scan from the start ${i.headScanMs} ms`);
  }
  await writing;
  await maintenance;
  await untilEmpty(`select exists(select 1 from pubsub.notification where channel = 'bench_lasting') as left`);
  await worker.stop();
  const maintained = worker.output().split('\n').filter((l) => /maintenance/.test(l));
  for (const l of maintained) console.log(`W11  worker: ${l}`);
  // Checks: the rate of every later interval against the clean ones (before the hold, the first one left out as warm-up);
  // the size after the release against the largest clean size (+10%).
  const clean = intervals.filter((i) => (i.interval as number) * intervalMs <= holdFrom);
  const cleanRates = (clean.length > 1 ? clean.slice(1) : clean).map((i) => i.processedPerSecond as number).sort((a, b) => a - b);
  const cleanRate = cleanRates[Math.floor(cleanRates.length / 2)]!;
  const minRatio = round(Math.min(...intervals.slice(1).map((i) => (i.processedPerSecond as number) / cleanRate)));
  const cleanBytes = Math.max(...samples.filter((s) => s.ms < holdFrom).map((s) => s.total));
  const peakBytes = Math.max(...samples.map((s) => s.total));
  const recovered = samples.find((s) => s.ms >= holdUntil && s.total <= 1.1 * cleanBytes);
  const recoveryS = recovered ? round((recovered.ms - holdUntil) / 1000, 0) : null;
  const settings = Object.fromEntries((await q(`select name, setting from pg_settings where name like 'autovacuum%' or name = 'vacuum_cost_limit'`)).map((r) => [r.name, r.setting]));
  if (naptime) await q(`alter system reset autovacuum_naptime`).then(() => q(`select pg_reload_conf()`));
  const storage = (await q(`select reloptions from pg_class where oid = ${rel}`))[0].reloptions;
  results.W11 = { drainRate: round(drainRate, 0), targetRate: round(rate, 0), durationMinutes: round(durationMs / 60_000, 2), intervalSeconds: intervalMs / 1000, holdFromMinute: round(holdFrom / 60_000, 2), holdUntilMinute: round(holdUntil / 60_000, 2), cleanRate, minRatio, cleanMB: mb(cleanBytes), peakMB: mb(peakBytes), recoverySeconds: recoveryS, recoveryLimitSeconds: recoverMs / 1000, reindexAfterRelease: reindex, workerMaintains: maintain, maintenanceLog: maintained, autovacuumSettings: settings, reloptions: storage, intervals, samples: samples.map((s) => ({ ...s, ms: Math.round(s.ms) })) };
  row('W11', 'drain rate measured first; load at half', `${round(drainRate, 0)}/s; ${round(rate, 0)}/s`);
  row('W11', 'lowest rate / clean rate', `${minRatio}× of ${cleanRate}/s`, 'target ≥ 0.8×');
  row('W11', 'table size after the release', `clean ${mb(cleanBytes)} MB, peak ${mb(peakBytes)} MB, ${recoveryS === null ? 'not back by the end' : `back within 10% after ${recoveryS} s`}`, `target ≤ ${round(recoverMs / 1000, 0)} s`);
}

// ---- W8 relay: stored notifications published to RabbitMQ / JetStream with confirms, beside a bare publisher doing the same confirmed publishes
if (runs('W8')) {
  const w8: Record<string, unknown> = {};
  const burst = 1000; // the relays' default batchSize: rows per claim and messages per wait for confirms
  const payload = (n: number) => Buffer.from(JSON.stringify({ n }));
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)]!;
  type Broker = { name: 'amqp' | 'nats'; label: string; count(): Promise<number>; purge(): Promise<void>; bare(n: number): Promise<void>; close(): Promise<void> };
  const brokers: Broker[] = [];
  try {
    const amqp = (await import('amqplib')).default;
    const connection = await amqp.connect('amqp://guest:guest@127.0.0.1:5672');
    const channel = await connection.createConfirmChannel();
    await channel.assertQueue(RELAY_QUEUE, { durable: true });
    brokers.push({
      name: 'amqp',
      label: 'RabbitMQ',
      count: async () => (await channel.checkQueue(RELAY_QUEUE)).messageCount,
      purge: async () => void (await channel.purgeQueue(RELAY_QUEUE)),
      async bare(n) {
        for (let i = 0; i < n; i += burst) {
          for (let j = i; j < Math.min(n, i + burst); j++) {
            if (!channel.publish('', RELAY_QUEUE, payload(j), { messageId: `bare:${j}`, contentType: 'application/json', persistent: true, mandatory: true })) await new Promise((r) => channel.once('drain', r));
          }
          await channel.waitForConfirms();
        }
      },
      close: async () => {
        await channel.deleteQueue(RELAY_QUEUE);
        await connection.close();
      },
    });
  } catch (error) {
    row('W8', 'relay to RabbitMQ', `skipped: ${(error as Error).message}`);
  }
  try {
    const nats = await import('nats');
    const nc = await nats.connect({ servers: 'nats://127.0.0.1:4222' });
    const jsm = await nc.jetstreamManager();
    const stream = 'PGPUBSUB_BENCH_RELAY';
    await jsm.streams.delete(stream).catch(() => {});
    await jsm.streams.add({ name: stream, subjects: [RELAY_SUBJECT] });
    brokers.push({
      name: 'nats',
      label: 'JetStream',
      count: async () => (await jsm.streams.info(stream)).state.messages,
      purge: async () => void (await jsm.streams.purge(stream)),
      async bare(n) {
        // Acks on one reply subscription, as the relay collects them (a js.publish request each costs the client several times more CPU).
        const inbox = nats.createInbox();
        let acked = 0;
        let burstDone = () => {};
        const sub = nc.subscribe(`${inbox}.*`, { callback: (_e, m) => {
          if (!JSON.parse(Buffer.from(m.data).toString()).stream) throw new Error('W8: bare publish not acknowledged');
          if (++acked % burst === 0 || acked === n) burstDone();
        } });
        for (let i = 0; i < n; i += burst) {
          const done = new Promise<void>((r) => (burstDone = r));
          for (let j = i; j < Math.min(n, i + burst); j++) {
            const h = nats.headers();
            h.set('Nats-Msg-Id', `bare:${j}:${Math.random()}`);
            nc.publish(RELAY_SUBJECT, payload(j), { reply: `${inbox}.${j}`, headers: h });
          }
          await done;
        }
        sub.unsubscribe();
      },
      close: async () => {
        await jsm.streams.delete(stream);
        await nc.close();
      },
    });
  } catch (error) {
    row('W8', 'relay to JetStream', `skipped: ${(error as Error).message}`);
  }
  const n = size.relayed;
  for (const b of brokers) {
    const bare: number[] = [];
    const relayed: Record<string, number[]> = { '': [], _2k: [] }; // default batchSize (1000), and 2000
    /** One relay drain of n stored rows by `pubsub relay`; msg/s. */
    const relay = async (channel: string) => {
      await b.purge();
      await fillNotifications(channel, `relay.${b.name}.${channel}`, n);
      const worker = startWorker(['--channel', channel], 'relay');
      const start = await worker.ready;
      const end = await untilEmpty(`select exists(select 1 from pubsub.notification where channel = '${channel}') as left`);
      await worker.stop();
      const arrived = await b.count();
      if (arrived !== n) throw new Error(`W8: ${b.label} holds ${arrived} messages, ${n} were relayed`);
      return round(n / ((end - start) / 1000), 0);
    };
    for (let rep = 0; rep < (smoke ? 1 : 3); rep++) {
      await b.purge();
      const start = performance.now();
      await b.bare(n);
      bare.push(round(n / ((performance.now() - start) / 1000), 0));
      for (const suffix of Object.keys(relayed)) relayed[suffix]!.push(await relay(`bench_relay_${b.name}${suffix}`));
    }
    const [one, two] = [relayed['']!, relayed._2k!];
    w8[b.name] = { messages: n, burst, relayedPerSecond: median(one), barePerSecond: median(bare), ratio: round(median(one) / median(bare)), relayedRuns: one, bareRuns: bare, batchSize2000: { relayedPerSecond: median(two), relayedRuns: two } };
    row('W8', `bare ${b.name === 'amqp' ? 'amqplib' : 'nats'} → ${b.label}, confirmed`, `${median(bare)} msg/s (runs: ${bare.join(', ')})`, 'ceiling');
    row('W8', `pubsub relay → ${b.label}`, `${median(one)} msg/s (runs: ${one.join(', ')})`, `${round(median(one) / median(bare))}× bare, target ≥ 20000/s`);
    row('W8', `pubsub relay → ${b.label}, batch 2000`, `${median(two)} msg/s (runs: ${two.join(', ')})`, `${round(median(two) / median(bare))}× bare, target ≥ 20000/s`);
    await b.close();
  }
  results.W8 = w8;
}

// ---- Memory: peak RSS of the worker while draining
if (runs('RSS')) {
  await q('delete from pubsub.notification');
  await fillNotifications('bench_drain', 'BenchListeners.noop', size.rss);
  const worker = startWorker(['--channel', 'bench_drain']);
  await worker.ready;
  await untilEmpty(`select exists(select 1 from pubsub.notification where channel = 'bench_drain') as left`);
  const status = fs.readFileSync(`/proc/${worker.child.pid}/status`, 'utf8');
  const peakKiB = Number(status.match(/VmHWM:\s+(\d+)/)?.[1]);
  await worker.stop();
  results.RSS = { notifications: size.rss, peakMB: round(peakKiB / 1024, 1) };
  row('RSS', `pgpubsub listen, ${size.rss} drained`, `peak RSS ${round(peakKiB / 1024, 1)} MB`, 'target ≤ 150 MB');
}

results.method = {
  W1: 'N durable notifications stored first (one row per listener, as notify() stores them); time from the worker process printing "listening on" (it starts draining at that moment) until none are left, polled every 5 ms. Each configuration and peer runs 3 times, interleaved; the median is reported and every run is kept (…_runs). Peers: see bench/peers/*.mjs.',
  W2: '4 writer connections INSERT single rows (autocommit) into a table with the generated AFTER INSERT trigger for the whole duration while one `pubsub listen` consumes; processed/s = (inserted − backlog at end) / duration.',
  W3: 'Sequential samples; each: BEGIN, publish sample i (notify() / pg_notify / graphile add_job, bench/sender.ts), stamp, COMMIT; latency = callback (or task) start − stamp, so commit time is included for every system alike. The next sample is sent once the previous one started (the receiver resolves a promise: nothing spins). Each system twice, 1,000 samples each: the sender on its own connection in the bench process (sharing its event loop with the worker), and a forked sender process told over IPC to send sample i, which answers with its stamp. All receivers run throughout and the systems take turns in blocks of 100 samples per system and placement (round-robin), so load changes of a shared machine fall on all alike. Event loop delay of the bench process (how late a 1 ms interval timer fires, as perf_hooks.monitorEventLoopDelay measures it) is recorded per system and placement. Both stamps and starts are process.hrtime (CLOCK_MONOTONIC, one clock for every process of the machine). Workers (pgpubsub listen(), graphile-worker run(), a raw pg LISTEN client) run in the bench process on their own connections. Chart: bench/results/w3.svg. pg-boss: its own in-process loop, stamped after commit (bench/peers/pgboss.mjs).',
  W4: 'A separate publisher process sends SELECT pg_notify() (one per transaction) as fast as one connection can for the duration; the receiver counts what arrives and the send→receive latency from the stamp in the JSON payload. 3 runs per receiver, interleaved; the median run is reported.',
  W6: 'pgbench (or node-postgres) INSERT, autocommit, N clients, same table shape with and without the generated durable AFTER INSERT trigger, each from empty tables; "trigger only" and "no trigger" run 3 times each, interleaved, median reported; then once with a `pubsub listen` worker consuming on the same machine. Variants: 100 rows per INSERT (rows/s), and tables whose trigger stores a row for 1, 3 and 10 durable listeners. Publishing from the app: 100 notify() calls per transaction against one notifyMany() of the same 100 payloads, 1 and 8 clients, notifications stored per second (3 runs interleaved, median).',
  W6x: 'Only with --only W6x: copies of the readings table whose trigger is the generated one with one change (v4 wake-up call, no wake-up, v5 wake() call, slot try-lock, no SET, to_jsonb payload, notification copies with all or fewer indexes, statement-level with a transition table), measured as W6, side by side with the generated trigger and no trigger; see bench/w6x.ts.',
  RSS: 'VmHWM of the worker process after draining N stored notifications.',
  W10: 'N durable notifications stored first for an ordered no-op listener (key = n mod K; keys are given by the worker as it drains, for an orderKey function; the "keyed at write" variant stores them with their key by a plain insert, to show what giving keys costs; the "orderKey path" variant is a listener with `orderKey: "key"` whose rows pubsub.notify() stores with their key, library version 8), drained by `pubsub listen` as W1, beside the same backlog for an unordered no-op; the listener prints any n that is not above the last of its key. 3 runs each, interleaved; median reported.',
  W8: 'N durable notifications stored first for a relay (@Relay in bench/listeners.ts), drained by `pubsub relay` as W1 (from "listening on" until none are left), every message confirmed by the broker (RabbitMQ publisher confirms on a durable queue, persistent messages; JetStream publish acks on a file stream); the count at the broker is checked. Beside it, the ceiling: a bare amqplib confirm channel / nats client in the bench process (JetStream: publishes with a reply subject, acks counted on one subscription, as the relay collects them) publishing the same N messages in bursts of the same size (1000), waiting for each burst\'s confirms; the relay also with `batchSize: 2000`. 3 runs each, median reported.',
  W9: 'N notifications stored first for one no-op listener (1, 2 and 4 `pubsub listen` processes started together on the same backlog) and for a channel with 3 no-op listeners (N × 3 rows, 1 process); time from the first process printing "listening on" until none are left; per process = its listener calls (printed at exit) / that time. While it runs, pg_stat_activity is sampled every 50 ms: the state and wait event of each drain connection (application_name pubsub:worker) averaged per sample; CPU from /proc (machine busy share; utime+stime of the PostgreSQL processes of the database and of the workers) and WAL from pg_current_wal_lsn(). "Saturates" names the CPU when the machine is ≥ 90% busy, else the most common wait of running backends, else the workers (backends idle).',
  W11: 'The drain rate is measured first (a W1 drain of the no-op listener), then one writer connection stores notifications for a latency-recording listener at half that rate (every 10 ms, the rows due, in one INSERT … SELECT plus pubsub.wake(), stamped when sent) while one `pubsub listen` consumes, for --lasting-minutes (30; smoke 20 s). A second session holds `begin isolation level repeatable read; select txid_current()` from 1/3 to 2/3 of the run. Per interval (minute; smoke 2 s): produced/s, processed/s and commit→processed p99 (the worker prints a log histogram, ~9% buckets, every second), backlog (count), table/heap/index size, n_dead_tup, autovacuum count, and the time of `select … order by id limit 100` from the start of the listener\'s range. Checks: lowest interval (the first left out) / median clean interval before the hold ≥ 0.8; total size back within 10% of the largest clean size within 1/6 of the run (5 of 30 minutes) after the release.',
  W7: 'N durable notifications stored first, drained by `pubsub listen` (default batch size, concurrency 1) as W1; listeners: a no-op (without and with --prisma), one `insert` through ctx.tx, one `author.create` through ctx.prisma (the demo PrismaClient, --prisma bench/dist/prisma.js). 3 runs each, interleaved; median reported; per call = 1 / rate.',
};
results.table = table;
(results.loadAverage as Record<string, number[]>).end = os.loadavg().map((x) => round(x));
fs.mkdirSync(path.join(benchDir, 'results'), { recursive: true });
// Only a full run replaces latest.json (the figures the README quotes).
const out = path.join(benchDir, 'results', smoke ? 'smoke.json' : only ? 'partial.json' : 'latest.json');
fs.writeFileSync(out, JSON.stringify(results, null, 2) + '\n');
console.log(`\nwrote ${path.relative(root, out)}`);
await pool.end();
await embedded?.stop();
process.exit(0);
