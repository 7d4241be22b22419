/**
 * `npm run chaos`: fault injection against real `pubsub listen` workers on a dedicated embedded
 * PostgreSQL (data in .pubsub/chaos-pgdata, its own port, restarted at will). Each scenario writes
 * durable notifications (trigger inserts and notify(), some rolled back, some failing once) while one
 * kind of fault runs, stops the faults, waits for the drain and counts, per listener and item: lost,
 * duplicated and phantom effects, dead letters, drain time and repeated side effects outside the
 * transaction. Exits 1 when any scenario loses, duplicates, invents or wrongly dead-letters anything,
 * or does not drain within its bound. `-- --quick` (CI): smaller and shorter; `-- --only a,d`.
 * Results: chaos/results/latest.json (full run) or quick.json, and a Markdown table on stdout.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { applyMigrations, generateMigration } from 'pgpubsub';
import { postmasterPid, startEmbeddedPostgres, type EmbeddedPostgres } from '../src/embedded.js';
import { account, between, killEverything, now, onExit, runLoad, sleep, until, Workers, type LoadStats, type Outcome } from './harness.js';
import { HalfOpenProxy } from './proxy.js';
import { ensureBrokers, relayTable, runRelayScenarios, type RelayResult } from './relay.js';

const here = path.dirname(fileURLToPath(import.meta.url)); // dist/chaos
const root = path.resolve(here, '../..');
const args = process.argv.slice(2);
const quick = args.includes('--quick');
const onlyArg = args.find((a) => a.startsWith('--only'));
const only = onlyArg ? (onlyArg.split('=')[1] ?? args[args.indexOf(onlyArg) + 1] ?? '').split(',') : undefined;

const size = quick
  ? { items: 2000, loadMs: 4000, holdMs: 20_000, allMs: 8000, drainMs: 30_000, slow: 4, kill: 5, swallow: 10, runMs: 9 * 60_000 }
  : { items: 10_000, loadMs: 40_000, holdMs: 120_000, allMs: 60_000, drainMs: 120_000, slow: 20, kill: 20, swallow: 50, runMs: 20 * 60_000 };
const WORKERS = 3;
const ROLLBACK_RATE = 0.05;
const TRANSIENT_RATE = 0.02;
const IDLE_TIMEOUT = '2s';

// ---- scenarios

interface FaultContext {
  server: EmbeddedPostgres;
  /** Pool on the scenario's database, application_name chaos:harness. */
  admin: pg.Pool;
  database: string;
  workers: Workers;
  proxy?: HalfOpenProxy;
  loadMs: number;
  /** True once the load is over: fault loops return. */
  stopped(): boolean;
  /** Results beyond the counts, e.g. detection times; printed and stored. */
  notes: Record<string, unknown>;
  /** Watchers that outlive the load (detection); awaited, bounded, after the drain. */
  background: Array<Promise<void>>;
  /** performance.now() at which the drain bound expires (set when the load ends). */
  drainDeadline(): number;
}

interface Scenario {
  key: string;
  fault: string;
  /** How many items of the scenario carry each fault flag (full size; --quick uses its own counts). */
  flags?: Array<'slow' | 'kill' | 'swallow'>;
  /** Set idle_in_transaction_session_timeout on the database (every role's sessions). */
  idleTimeout?: boolean;
  /** Worker 0 connects through the half-open proxy. */
  proxy?: boolean;
  loadMs?: number;
  faults?(ctx: FaultContext): Promise<void>;
}

/** An admin query that waits out a server restart (retries for up to 30 s). */
async function query<R extends pg.QueryResultRow = any>(ctx: FaultContext, text: string, values?: unknown[]): Promise<R[]> {
  const deadline = now() + 30_000;
  for (;;) {
    try {
      return (await ctx.admin.query<R>(text, values)).rows;
    } catch (error) {
      if (now() > deadline) throw error;
      await sleep(200);
    }
  }
}

/** Runs `fn` every 1–3 s until the load is over. */
async function every1to3s(ctx: FaultContext, fn: () => Promise<void> | void): Promise<void> {
  for (;;) {
    await sleep(between(1000, 3000));
    if (ctx.stopped()) return;
    await Promise.resolve().then(fn).catch(() => {});
  }
}

const killWorkers = (ctx: FaultContext) => every1to3s(ctx, () => ctx.workers.killRandom());

/** Ends some of the workers' sessions (LISTEN and pool), a random number of them each time. */
const terminateBackends = (ctx: FaultContext) =>
  every1to3s(ctx, async () => {
    const { rows } = await ctx.admin.query(
      `select count(pg_terminate_backend(pid))::int as n from (
         select pid from pg_stat_activity where datname = $1 and application_name in ('pubsub:listen', 'pubsub:worker')
         order by random() limit 1 + (random() * 4)::int) t`,
      [ctx.database],
    );
    ctx.notes.terminated = ((ctx.notes.terminated as number) ?? 0) + rows[0].n;
  });

/** Restarts PostgreSQL with -m immediate at 1/3 of the load and -m fast at 2/3; recovery = first effect committed after it is up. */
async function restartServer(ctx: FaultContext): Promise<void> {
  const start = now();
  const recoveries: Record<string, number | null> = {};
  for (const [at, mode] of [[1 / 3, 'immediate'], [2 / 3, 'fast']] as const) {
    await sleep(start + ctx.loadMs * at - now());
    if (ctx.stopped()) break;
    const t0 = now();
    await ctx.server.restart(mode);
    const upMs = now() - t0;
    const [{ t: up }] = await query(ctx, 'select now() as t');
    const t1 = now();
    const recovered = await until(async () => (await ctx.admin.query('select exists(select 1 from chaos_effect where at > $1) as yes', [up])).rows[0].yes, 30_000, 50);
    recoveries[mode] = recovered ? Math.round(now() - t1) : null;
    ctx.notes[`restart_${mode}_server_ms`] = Math.round(upMs);
  }
  ctx.notes.recovery_ms = recoveries;
  const times = Object.values(recoveries);
  ctx.notes.recovery = times.some((t) => t === null) ? 'no effect within 30 s of a restart' : `first effect ${Math.max(...(times as number[]))} ms after the server was up`;
}

/**
 * Freezes worker 0's connections (the proxy) right after one of them reported an open transaction,
 * then watches the frozen server sessions: detection = time until none of them is in a transaction
 * any more (its claim is released, so the rows can be processed by anyone).
 */
async function halfOpen(ctx: FaultContext): Promise<void> {
  await sleep(ctx.loadMs / 3);
  if (ctx.stopped() || !ctx.proxy) return;
  const caught = await ctx.proxy.freezeInTransaction(5000);
  const frozenAt = ctx.proxy.frozenAt!;
  await sleep(200);
  const rows = await query<{ pid: number }>(ctx, `select pid from pg_stat_activity where client_port = any($1) and xact_start is not null`, [ctx.proxy.frozenPorts]);
  const pids = rows.map((r) => r.pid);
  ctx.notes.half_open = { caughtInTransaction: caught, frozenSessions: ctx.proxy.frozenPorts.length, frozenInTransaction: pids.length };
  if (!pids.length) {
    ctx.notes.detection = 'no frozen session held a transaction (the worker is wedged, its rows were not)';
    return;
  }
  ctx.background.push(
    (async () => {
      // Bounded by the drain: a claim still held when the drain bound expires counts as never detected.
      const held = async () => (await ctx.admin.query(`select count(*)::int as n from pg_stat_activity where pid = any($1) and xact_start is not null`, [pids])).rows[0].n > 0;
      let released = false;
      while (!released && now() < ctx.drainDeadline()) {
        released = !(await held().catch(() => true));
        if (!released) await sleep(100);
      }
      const ms = Math.round(now() - frozenAt);
      ctx.notes.detection_ms = released ? ms : null;
      ctx.notes.detection = released ? `claim released ${(ms / 1000).toFixed(1)} s after the freeze` : `never: claim still held ${(ms / 1000).toFixed(1)} s after the freeze`;
    })(),
  );
}

/** One session holds a snapshot (xmin) for the whole load: vacuum cannot remove the deleted notifications. Reopened after a restart. */
async function holdXmin(ctx: FaultContext): Promise<void> {
  let heldMs = 0;
  while (!ctx.stopped()) {
    const client = new pg.Client({ connectionString: ctx.admin.options.connectionString, application_name: 'chaos:xmin' });
    client.on('error', () => {});
    const started = now();
    try {
      await client.connect();
      await client.query(`set idle_in_transaction_session_timeout = 0`);
      await client.query('begin isolation level repeatable read');
      await client.query('select txid_current(), count(*) from chaos_ledger');
      while (!ctx.stopped()) {
        await sleep(500);
        await client.query('select 1'); // notices a restart that ended the session
      }
      await client.query('commit');
    } catch {
      await sleep(500);
    } finally {
      heldMs += now() - started;
      await client.end().catch(() => {});
    }
  }
  ctx.notes.xmin_held_ms = Math.round(heldMs);
}

const scenarios: Scenario[] = [
  { key: 'a', fault: 'SIGKILL a random worker every 1–3 s', faults: killWorkers },
  { key: 'b', fault: 'pg_terminate_backend of worker sessions every 1–3 s', faults: terminateBackends },
  { key: 'c', fault: 'PostgreSQL restart -m immediate, then -m fast', faults: restartServer },
  { key: 'd', fault: 'half-open TCP (proxy freezes mid-transaction)', proxy: true, faults: halfOpen },
  { key: 'e', fault: `listeners sleep 3 s > idle_in_transaction_session_timeout ${IDLE_TIMEOUT}`, idleTimeout: true, flags: ['slow'] },
  { key: 'f', fault: 'listener SIGKILLs its own worker (maxAttempts 3)', flags: ['kill'] },
  { key: 'g', fault: 'listener swallows a ctx.tx error (attempt 0)', flags: ['swallow'] },
  { key: 'h', fault: `transaction holding xmin for ${size.holdMs / 1000} s`, loadMs: size.holdMs, faults: holdXmin },
  {
    key: 'i',
    fault: 'all at once',
    idleTimeout: true,
    proxy: true,
    flags: ['slow', 'kill', 'swallow'],
    loadMs: size.allMs,
    faults: async (ctx) => {
      const errors: string[] = [];
      // Each fault alone: one that fails (its query hit the restart) must not hide the others.
      await Promise.all([killWorkers, terminateBackends, restartServer, halfOpen, holdXmin].map((f) => f(ctx).catch((e: Error) => void errors.push(`${f.name}: ${e.message}`))));
      if (errors.length) throw new Error(errors.join('; '));
    },
  },
];

// ---- one scenario

interface Result {
  key: string;
  fault: string;
  passed: boolean;
  failures: string[];
  load: LoadStats;
  loadMs: number;
  drained: boolean;
  drainMs: number | null;
  outcome: Outcome;
  workerDeaths: { killedBySuite: number; other: number };
  notes: Record<string, unknown>;
}

const work = path.join(root, '.pubsub/chaos');
const cli = path.join(root, 'dist/src/cli/main.js');
const listenersModule = path.join(here, 'listeners.js');

async function prepareMigrations(): Promise<string> {
  const dir = path.join(work, 'migrations');
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(path.join(dir, '00000000000000_tables'), { recursive: true });
  fs.writeFileSync(
    path.join(dir, '00000000000000_tables', 'migration.sql'),
    `create table chaos_orders (id serial primary key, n int not null, flags text not null);
-- What the writers committed: a row exists exactly when its transaction committed.
create table chaos_ledger (n int primary key, kind text not null, flags text not null);
-- Effects written through ctx.tx; no unique key, so that duplicates stay visible.
create table chaos_effect (listener text not null, n int not null, attempt int not null, pid int not null, at timestamptz not null default clock_timestamp());
create index chaos_effect_listener_n on chaos_effect (listener, n);
create index chaos_effect_at on chaos_effect (at);
-- Holds 0 so that the swallowing listener's insert always fails.
create table chaos_unique (n int primary key);
insert into chaos_unique values (0);`,
  );
  await generateMigration({ schema: path.join(root, 'chaos/schema.prisma'), migrationsDir: dir });
  return dir;
}

async function runScenario(server: EmbeddedPostgres, migrations: string, s: Scenario): Promise<Result> {
  const database = `chaos_${s.key}`;
  const admin0 = new pg.Client(server.url);
  await admin0.connect();
  await admin0.query(`drop database if exists ${database} with (force)`);
  await admin0.query(`create database ${database}`);
  if (s.idleTimeout) await admin0.query(`alter database ${database} set idle_in_transaction_session_timeout = '${IDLE_TIMEOUT}'`);
  await admin0.end();
  const url = server.urlFor(database);
  await applyMigrations(url, migrations);

  const dir = path.join(work, s.key);
  fs.rmSync(dir, { recursive: true, force: true });
  fs.mkdirSync(dir, { recursive: true });
  const sideFile = path.join(dir, 'side-effects.txt');
  const proxy = s.proxy ? await HalfOpenProxy.start(server.port) : undefined;
  const proxied = proxy && new URL(url);
  if (proxied) proxied.port = String(proxy!.port);
  const workers = new Workers({
    cli,
    listeners: listenersModule,
    count: WORKERS,
    urlOf: (i) => (i === 0 && proxied ? proxied.toString() : url),
    logDir: dir,
    env: { ...process.env, CHAOS_SIDE_FILE: sideFile },
  });
  const admin = new pg.Pool({ connectionString: url, max: 4, application_name: 'chaos:harness', connectionTimeoutMillis: 5000 });
  admin.on('error', () => {});
  try {
    workers.start();
    if (!(await workers.ready(30_000))) throw new Error(`scenario ${s.key}: the workers did not start within 30 s; see ${dir}/worker-*.log`);

    // Fault flags: each given to about `count` items, plus transient failures everywhere.
    const loadMs = s.loadMs ?? size.loadMs;
    const counts = { slow: size.slow, kill: size.kill, swallow: size.swallow };
    const flags = (kind: 'order' | 'job') => {
      const f: string[] = [];
      if (Math.random() < TRANSIENT_RATE) f.push('fail');
      for (const flag of s.flags ?? []) {
        if (flag === 'kill' && kind !== 'job') continue; // the crashing listener only listens to jobs
        const share = flag === 'kill' ? 2 : 1; // half the items are jobs
        if (Math.random() < (counts[flag] * share) / size.items) f.push(flag);
      }
      return f.join(',');
    };

    let loadOver = false;
    let drainDeadline = Infinity;
    const ctx: FaultContext = {
      server,
      admin,
      database,
      workers,
      ...(proxy && { proxy }),
      loadMs,
      stopped: () => loadOver,
      notes: {},
      background: [],
      drainDeadline: () => drainDeadline,
    };
    const faults = s.faults?.(ctx).catch((error: Error) => {
      ctx.notes.fault_error = error.message;
    });
    const load = await runLoad({ url, items: size.items, durationMs: loadMs, maxMs: loadMs * 3 + 30_000, rollbackRate: ROLLBACK_RATE, flags });
    loadOver = true;
    await Promise.race([faults, sleep(60_000)]); // every fault loop returns within seconds of loadOver
    const drainStart = now();
    drainDeadline = drainStart + size.drainMs;
    // Writes for both job listeners wait in pubsub.fanout until a worker makes their rows.
    const drained = await until(async () => (await admin.query(`select (select count(*) from pubsub.notification where dead_at is null) + (select count(*) from pubsub.fanout) as n`)).rows[0].n === '0', size.drainMs, 200);
    if (!drained) {
      // What the rows still pending look like, to tell a wedged worker from a slow retry.
      const { rows } = await admin.query(`select listener, isolated, attempts, count(*)::int as n, min(run_at - now()) as next_run, max(run_at - now()) as last_run,
          count(*) filter (where id in (select id from pubsub.notification for update skip locked))::int as unlocked
        from pubsub.notification where dead_at is null group by 1, 2, 3 order by 1, 2, 3`);
      const claims = (await admin.query(`select xid, txid_status(xid) as status, cardinality(ids) as ids, worker, now() - claimed_at as age from pubsub.claim`)).rows;
      const sessions = (await admin.query(`select application_name, state, now() - xact_start as xact_age, left(query, 60) as query from pg_stat_activity where application_name like 'pubsub%'`).catch(() => ({ rows: [] }))).rows;
      console.log(`(${s.key}) pending: ${JSON.stringify(rows)}\n  claims: ${JSON.stringify(claims)}\n  sessions: ${JSON.stringify(sessions)}`);
    }
    const drainMs = drained ? Math.round(now() - drainStart) : null;
    await Promise.race([Promise.all(ctx.background), sleep(Math.max(0, drainDeadline - now()) + 1000)]);
    await workers.stop();
    await proxy?.close();
    await admin.end();
    const outcome = await account(url, sideFile);

    const failures: string[] = [];
    if (outcome.lost) failures.push(`${outcome.lost} lost`);
    if (outcome.duplicated) failures.push(`${outcome.duplicated} duplicated`);
    if (outcome.phantom) failures.push(`${outcome.phantom} phantom`);
    if (outcome.unexpectedDead) failures.push(`${outcome.unexpectedDead} dead that should not be`);
    if (!drained) failures.push(`not drained within ${size.drainMs / 1000} s (${outcome.pending} pending)`);
    if (load.acked < size.items) failures.push(`the writers committed only ${load.acked} of ${size.items} items`);
    // Only a listener that kills its own worker may end a worker; any other death is a crash of ours (see the worker logs).
    if (workers.died && !s.flags?.includes('kill')) failures.push(`${workers.died} worker(s) died on their own (see ${dir}/worker-*.log)`);
    return {
      key: s.key,
      fault: s.fault,
      passed: failures.length === 0,
      failures,
      load,
      loadMs,
      drained,
      drainMs,
      outcome,
      workerDeaths: { killedBySuite: workers.killed, other: workers.died },
      notes: ctx.notes,
    };
  } finally {
    await workers.stop(1000);
    await proxy?.close().catch(() => {});
    await admin.end().catch(() => {});
  }
}

// ---- report

const thousands = (n: number) => n.toLocaleString('en-US');
const seconds = (ms: number | null) => (ms === null ? '—' : `${(ms / 1000).toFixed(1)} s`);

function table(results: Result[]): string {
  const head = ['', 'fault', 'load', 'duration', 'lost', 'duplicated', 'phantom', 'dead (expected / unexpected)', 'drain time', 'detection time', 'outside-tx duplicates', 'verdict'];
  const rows = results.map((r) => [
    r.key,
    r.fault,
    `${thousands(r.outcome.committed)} items → ${thousands(r.outcome.notifications)} notifications (${thousands(r.load.rolledBack + r.load.failed)} rolled back or failed)`,
    seconds(r.load.ms),
    String(r.outcome.lost),
    String(r.outcome.duplicated),
    String(r.outcome.phantom),
    `${r.outcome.expectedDead} / ${r.outcome.unexpectedDead}`,
    r.drained ? seconds(r.drainMs) : `> ${size.drainMs / 1000} s (${r.outcome.pending} pending)`,
    String(r.notes.detection ?? r.notes.recovery ?? '—'),
    `${r.outcome.outsideDuplicates} (${r.outcome.outsideDuplicatesPct}%)`,
    r.passed ? 'pass' : `FAIL: ${r.failures.join(', ')}`,
  ]);
  return [head, head.map(() => '---'), ...rows].map((cells) => `| ${cells.join(' | ')} |`).join('\n');
}

// ---- main

let server: EmbeddedPostgres | undefined;
const dataDir = path.join(root, '.pubsub/chaos-pgdata');
onExit(() => {
  // The embedded server must not outlive us, even when we crash: fast shutdown by signal.
  const pid = server && postmasterPid(server.dir);
  if (pid) process.kill(pid, 'SIGINT');
});
const bail = (why: string, code: number) => {
  console.error(`chaos: ${why}`);
  killEverything();
  try {
    ensureBrokers(); // a relay scenario may have stopped one: CI and the next run need them
  } catch {
    // exiting anyway
  }
  process.exit(code);
};
process.on('SIGINT', () => bail('interrupted', 130));
process.on('SIGTERM', () => bail('terminated', 143));
process.on('uncaughtException', (error) => bail(`crashed (uncaught exception): ${error.stack ?? error}`, 2));
process.on('unhandledRejection', (error) => bail(`crashed (unhandled rejection): ${(error as Error)?.stack ?? error}`, 2));
setTimeout(() => bail(`the whole run took over ${size.runMs / 60_000} min; stopped`, 2), size.runMs).unref();

fs.mkdirSync(work, { recursive: true });
server = await startEmbeddedPostgres({ dir: dataDir });
const versionClient = new pg.Client(server.url);
await versionClient.connect();
const info = (await versionClient.query('show server_version')).rows[0] as { server_version: string };
await versionClient.end();
console.log(`chaos: ${quick ? 'quick' : 'full'} run, embedded PostgreSQL ${info?.server_version ?? '?'} on port ${server.port}, ${WORKERS} workers, ${os.cpus().length} cores`);
const migrations = await prepareMigrations();

const results: Result[] = [];
const started = now();
for (const s of scenarios.filter((x) => !only || only.includes(x.key))) {
  const t0 = now();
  console.log(`\n(${s.key}) ${s.fault}…`);
  const r = await runScenario(server, migrations, s);
  results.push(r);
  const o = r.outcome;
  console.log(
    `(${s.key}) ${r.passed ? 'pass' : `FAIL (${r.failures.join(', ')})`} in ${seconds(now() - t0)}: ${o.committed} items committed, ${o.notifications} notifications, lost ${o.lost}, duplicated ${o.duplicated}, phantom ${o.phantom}, dead ${o.expectedDead}+${o.unexpectedDead}, drain ${r.drained ? seconds(r.drainMs) : 'timed out'}, worker deaths ${r.workerDeaths.killedBySuite}+${r.workerDeaths.other}, notes ${JSON.stringify(r.notes)}`,
  );
}
// Relays to RabbitMQ and NATS JetStream (chaos/relay.ts): r1–r4, every mode.
const relayResults: RelayResult[] = await runRelayScenarios(server, { quick, work, cli, ...(only && { only }) });
await server.stop();
server = undefined;

const markdown = table(results) + (relayResults.length ? `\n\n${relayTable(relayResults)}` : '');
console.log(`\n${markdown}\n`);
const passed = results.every((r) => r.passed) && relayResults.every((r) => r.passed);
const out = path.join(root, 'chaos/results', quick ? 'quick.json' : only ? 'partial.json' : 'latest.json');
fs.mkdirSync(path.dirname(out), { recursive: true });
fs.writeFileSync(
  out,
  JSON.stringify(
    {
      mode: quick ? 'quick' : 'full',
      date: new Date().toISOString(),
      totalMs: Math.round(now() - started),
      machine: { cores: os.cpus().length, cpu: os.cpus()[0]?.model, node: process.version },
      postgres: info?.server_version,
      settings: { workers: WORKERS, ...size, rollbackRate: ROLLBACK_RATE, transientRate: TRANSIENT_RATE, idleTimeout: IDLE_TIMEOUT },
      passed,
      results,
      relay: relayResults,
      markdown,
    },
    null,
    2,
  ) + '\n',
);
const all = [...results, ...relayResults];
console.log(`chaos: ${all.filter((r) => r.passed).length} of ${all.length} scenarios passed in ${seconds(now() - started)}; results in ${path.relative(root, out)}`);
process.exit(passed ? 0 : 1);
