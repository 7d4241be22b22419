/**
 * The chaos suite's machinery: child processes that never outlive the suite, a supervised set of
 * real `pubsub listen` workers, paced writers that record what they committed in a ledger, and the
 * final accounting of lost, duplicated and phantom effects.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { notify } from 'pgpubsub';
import { LISTENERS_OF } from './listeners.js';

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, Math.max(0, ms)));
export const now = () => performance.now();
export const between = (min: number, max: number) => min + Math.random() * (max - min);

// ---- children: every process the suite starts is killed when it exits, however it exits

const children = new Set<ChildProcess>();
const exitHooks: Array<() => void> = [];

/** Synchronous work to do on exit (besides killing the children), e.g. stopping the embedded server. */
export function onExit(hook: () => void): void {
  exitHooks.push(hook);
}

export function killEverything(): void {
  for (const child of children) child.kill('SIGKILL');
  for (const hook of exitHooks.splice(0)) {
    try {
      hook();
    } catch {
      // exiting anyway
    }
  }
}
process.on('exit', killEverything);

function track(child: ChildProcess): ChildProcess {
  children.add(child);
  child.on('exit', () => children.delete(child));
  return child;
}

/** Resolves when `check` is true (polled every `everyMs`), or with false after `timeoutMs`. */
export async function until(check: () => Promise<boolean> | boolean, timeoutMs: number, everyMs = 100): Promise<boolean> {
  const deadline = now() + timeoutMs;
  for (;;) {
    if (await Promise.resolve().then(check).catch(() => false)) return true;
    if (now() >= deadline) return false;
    await sleep(Math.min(everyMs, deadline - now()));
  }
}

// ---- workers

interface WorkerProcess {
  child: ChildProcess;
  ready: boolean;
}

/**
 * `count` real `pubsub listen` processes, each restarted 200 ms after it dies for as long as the
 * set is not stopping. Worker i connects to `urlOf(i)` (one of them may go through the proxy).
 */
export class Workers {
  private readonly procs: Array<WorkerProcess | undefined> = [];
  private stopping = false;
  /** Deaths the suite caused (SIGKILL) and the others (a listener killing its process, a crash). */
  killed = 0;
  died = 0;
  private readonly planned = new Set<ChildProcess>();

  constructor(
    private readonly options: { cli: string; listeners?: string; count: number; urlOf: (i: number) => string; logDir: string; env: NodeJS.ProcessEnv; command?: 'listen' | 'relay' },
  ) {}

  start(): void {
    for (let i = 0; i < this.options.count; i++) this.spawn(i);
  }

  private spawn(i: number): void {
    if (this.stopping) return;
    const { cli, listeners, urlOf, logDir, env, command = 'listen' } = this.options;
    const child = track(
      spawn(process.execPath, [cli, command, ...(listeners ? ['--require', listeners] : [])], {
        cwd: logDir, // no pubsub.config.json here (relays: only the one written there): only --require decides what runs
        env: { ...env, DATABASE_URL: urlOf(i) },
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
    const proc: WorkerProcess = { child, ready: false };
    this.procs[i] = proc;
    const log = fs.createWriteStream(path.join(logDir, `worker-${i}.log`), { flags: 'a' });
    log.write(`--- pid ${child.pid} started at ${new Date().toISOString()}\n`);
    child.stdout!.on('data', (d: Buffer) => {
      if (!proc.ready && d.includes('listening on')) proc.ready = true;
      log.write(d);
    });
    child.stderr!.pipe(log, { end: false });
    child.on('close', (code, signal) => log.end(`--- pid ${child.pid} exited: ${signal ?? code}\n`));
    child.on('exit', () => {
      if (this.planned.delete(child)) this.killed++;
      else if (!this.stopping) this.died++;
      if (this.procs[i] === proc) this.procs[i] = undefined;
      setTimeout(() => this.spawn(i), 200);
    });
  }

  ready(timeoutMs: number): Promise<boolean> {
    return until(() => this.procs.every((p) => p?.ready), timeoutMs);
  }

  /** SIGKILLs one running worker at random. */
  killRandom(): void {
    const live = this.procs.filter((p): p is WorkerProcess => !!p && p.child.exitCode === null && p.child.signalCode === null);
    const victim = live[Math.floor(Math.random() * live.length)];
    if (!victim) return;
    this.planned.add(victim.child);
    victim.child.kill('SIGKILL');
  }

  /** SIGTERM (finish running listeners), then SIGKILL whatever is still running after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    this.stopping = true;
    const live = this.procs.filter((p): p is WorkerProcess => !!p && p.child.exitCode === null && p.child.signalCode === null).map((p) => p.child);
    const exited = live.map((c) => new Promise((r) => c.once('exit', r)));
    for (const c of live) c.kill('SIGTERM');
    const all = Promise.all(exited);
    if (!(await Promise.race([all.then(() => true), sleep(graceMs).then(() => false)]))) {
      for (const c of live) c.kill('SIGKILL');
      await Promise.race([all, sleep(5000)]);
    }
  }
}

// ---- writers

export interface LoadStats {
  /** Items the writers tried to write (each is one trigger insert or one notify()). */
  sent: number;
  /** Items whose transaction's COMMIT succeeded (the ledger is the truth: a COMMIT cut off may still have committed). */
  acked: number;
  rolledBack: number;
  /** Items whose transaction failed (connection lost, server down): committed or not, the ledger tells. */
  failed: number;
  ms: number;
}

export interface LoadOptions {
  url: string;
  /** Items to commit. */
  items: number;
  /** Spread them over this long. */
  durationMs: number;
  /** Give up after this long even if fewer committed (the server may be down). */
  maxMs: number;
  rollbackRate: number;
  /** Fault flags of each item (see listeners.ts). */
  flags: (kind: 'order' | 'job') => string;
  writers?: number;
}

/**
 * Writers on their own connections (application_name chaos:writer, so no fault targets them):
 * transactions of 1 to 4 items, each a chaos_orders insert (the trigger stores a notification) or a
 * notify() on chaos_jobs, with a chaos_ledger row in the same transaction; some are rolled back.
 */
export async function runLoad(options: LoadOptions): Promise<LoadStats> {
  const pool = new pg.Pool({ connectionString: options.url, max: options.writers ?? 4, application_name: 'chaos:writer', connectionTimeoutMillis: 5000 });
  pool.on('error', () => {}); // idle connections cut by a restart are replaced
  const stats: LoadStats = { sent: 0, acked: 0, rolledBack: 0, failed: 0, ms: 0 };
  const started = now();
  const perMs = options.items / (1 - options.rollbackRate) / options.durationMs;
  let next = 1;
  const writer = async () => {
    while (stats.acked < options.items && now() - started < options.maxMs) {
      // Paced on the work done, so that a stretch of failures (server down) is caught up afterwards.
      await sleep(started + (stats.acked + stats.rolledBack) / perMs - now());
      const ns = Array.from({ length: 1 + Math.floor(Math.random() * 4) }, () => next++);
      stats.sent += ns.length;
      let client: pg.PoolClient | undefined;
      try {
        client = await pool.connect();
        // A checked-out client between two statements has no pool listener: a cut connection would throw.
        if (!client.listenerCount('error')) client.on('error', () => {});
        await client.query('begin');
        for (const n of ns) {
          const kind = Math.random() < 0.5 ? 'order' : 'job';
          const flags = options.flags(kind);
          await client.query('insert into chaos_ledger (n, kind, flags) values ($1, $2, $3)', [n, kind, flags]);
          if (kind === 'order') await client.query('insert into chaos_orders (n, flags) values ($1, $2)', [n, flags]);
          else await notify('chaos_jobs', { n, flags }, { client });
        }
        const rollback = Math.random() < options.rollbackRate;
        await client.query(rollback ? 'rollback' : 'commit');
        if (rollback) stats.rolledBack += ns.length;
        else stats.acked += ns.length;
        client.release();
      } catch (error) {
        stats.failed += ns.length;
        client?.release(error as Error);
        await sleep(100);
      }
    }
  };
  await Promise.all(Array.from({ length: options.writers ?? 4 }, writer));
  stats.ms = now() - started;
  await pool.end();
  return stats;
}

// ---- accounting

export interface Outcome {
  /** Committed items (ledger rows) and the notifications they imply (one per listener). */
  committed: number;
  notifications: number;
  /** Committed notifications with no effect and not dead (still pending ones included). */
  lost: number;
  /** Effects beyond the first for one (listener, n), plus dead notifications that also have an effect. */
  duplicated: number;
  /** Effects of items that never committed. */
  phantom: number;
  /** Dead notifications that the scenario meant to kill (ChaosJobs.fragile on `kill` items), and the others. */
  expectedDead: number;
  unexpectedDead: number;
  /** Notifications still stored and not dead. */
  pending: number;
  /** Lines appended outside the transaction beyond the first per (listener, n), as % of distinct ones. */
  outsideDuplicates: number;
  outsideDuplicatesPct: number;
}

const accountingSql = `with expected as (
    select l.n, x.listener, l.flags from chaos_ledger l
    cross join lateral unnest(case when l.kind = 'order' then $1::text[] else $2::text[] end) x(listener)
  ),
  effect as (select listener, n, count(*)::int as c from chaos_effect group by listener, n),
  dead as (select listener, coalesce(payload->'new'->>'n', payload->>'n')::int as n from pubsub.notification where dead_at is not null)
  select
    (select count(*) from chaos_ledger)::int as committed,
    (select count(*) from expected)::int as notifications,
    (select count(*) from expected e
      where not exists (select 1 from effect f where f.listener = e.listener and f.n = e.n)
        and not exists (select 1 from dead d where d.listener = e.listener and d.n = e.n))::int as lost,
    (select coalesce(sum(c - 1), 0) from effect)::int
      + (select count(*) from dead d join effect f using (listener, n))::int as duplicated,
    (select coalesce(sum(c), 0) from effect f where not exists (select 1 from chaos_ledger l where l.n = f.n))::int as phantom,
    (select count(*) from dead d join chaos_ledger l using (n)
      where d.listener = 'ChaosJobs.fragile' and 'kill' = any(string_to_array(l.flags, ',')))::int as expected_dead,
    (select count(*) from dead)::int as dead,
    (select count(*) from pubsub.notification where dead_at is null)::int + (select count(*) from pubsub.fanout)::int as pending`;

export async function account(url: string, sideFile: string): Promise<Outcome> {
  const client = new pg.Client({ connectionString: url, application_name: 'chaos:harness' });
  await client.connect();
  try {
    const r = (await client.query(accountingSql, [LISTENERS_OF.order, LISTENERS_OF.job])).rows[0];
    const lines = new Map<string, number>();
    const text = fs.existsSync(sideFile) ? fs.readFileSync(sideFile, 'utf8') : '';
    for (const line of text.split('\n')) {
      if (!line) continue;
      const key = line.split(' ').slice(0, 2).join(' ');
      lines.set(key, (lines.get(key) ?? 0) + 1);
    }
    const repeats = [...lines.values()].reduce((sum, c) => sum + c - 1, 0);
    return {
      committed: r.committed,
      notifications: r.notifications,
      lost: r.lost,
      duplicated: r.duplicated,
      phantom: r.phantom,
      expectedDead: r.expected_dead,
      unexpectedDead: r.dead - r.expected_dead,
      pending: r.pending,
      outsideDuplicates: repeats,
      outsideDuplicatesPct: lines.size ? Math.round((repeats / lines.size) * 10000) / 100 : 0,
    };
  } finally {
    await client.end();
  }
}
