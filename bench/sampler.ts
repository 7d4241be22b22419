/**
 * W9: where a run spends its time. While it runs, the wait events of the workers' backends
 * (application_name pubsub:worker) are sampled from pg_stat_activity every 50 ms, and at the end the CPU
 * of the machine, of PostgreSQL's processes and of the worker processes (from /proc) and the WAL
 * written (pg_current_wal_lsn) are reported.
 */
import fs from 'node:fs';
import os from 'node:os';
import pg from 'pg';
import { round } from './stats.js';

const TICK_S = 0.01; // USER_HZ is 100 on Linux

/** utime + stime of a process, in clock ticks (fields 14 and 15 of /proc/<pid>/stat). */
function processTicks(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return Number(fields[11]) + Number(fields[12]);
  } catch {
    return undefined; // gone, or not on this machine
  }
}

function machineTicks() {
  const values = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0]!.split(/\s+/).slice(1).map(Number);
  return { idle: values[3]! + values[4]!, total: values.reduce((a, b) => a + b, 0) };
}

export type Usage = {
  seconds: number;
  samples: number;
  /** Average number of worker backends in each state per sample, largest first. */
  waits: Array<{ event: string; backends: number }>;
  cpu: { machineBusy: number; postgresCores: number; workerCores: number };
  walMBPerSecond: number;
  saturation: string;
};

/** Starts sampling; the returned function stops and summarises. Start it once the workers are ready. */
export async function startSampler(db: string, workerPids: number[], everyMs = 50): Promise<() => Promise<Usage>> {
  const client = new pg.Client({ connectionString: db, application_name: 'bench-sampler' });
  await client.connect();
  const walAt = async () => (await client.query(`select pg_current_wal_lsn()::text as lsn`)).rows[0].lsn as string;
  const wal0 = await walAt();
  const machine0 = machineTicks();
  const workers0 = workerPids.map((pid) => processTicks(pid) ?? 0);
  const t0 = performance.now();
  const first = new Map<number, number>();
  const last = new Map<number, number>();
  const waits = new Map<string, number>();
  let samples = 0;
  let stopped = false;
  const sampling = (async () => {
    while (!stopped) {
      const { rows } = await client.query(
        `select pid, application_name, state, wait_event_type, wait_event from pg_stat_activity
         where pid <> pg_backend_pid() and (datname = current_database() or datname is null) and coalesce(application_name, '') <> 'bench'`,
      );
      samples++;
      for (const r of rows) {
        const ticks = processTicks(r.pid);
        if (ticks !== undefined) {
          if (!first.has(r.pid)) first.set(r.pid, ticks);
          last.set(r.pid, ticks);
        }
        if (r.application_name !== 'pubsub:worker') continue; // the drain's connections (not the LISTEN session, idle by design)
        const event =
          r.state === 'active' ? (r.wait_event ? `${r.wait_event_type}:${r.wait_event}` : 'CPU (running, no wait event)')
          : r.state === 'idle' ? 'idle: waiting for the worker'
          : r.state === 'idle in transaction' ? 'idle in transaction: waiting for the worker'
          : String(r.state);
        waits.set(event, (waits.get(event) ?? 0) + 1);
      }
      await new Promise((r) => setTimeout(r, everyMs));
    }
  })();
  return async () => {
    stopped = true;
    await sampling;
    const seconds = (performance.now() - t0) / 1000;
    const machine1 = machineTicks();
    const walBytes = Number((await client.query(`select pg_wal_lsn_diff(pg_current_wal_lsn(), $1)::float8 as bytes`, [wal0])).rows[0].bytes);
    await client.end();
    const cores = (ticks: number) => round((ticks * TICK_S) / seconds);
    let pgTicks = 0;
    for (const [pid, t] of last) pgTicks += t - first.get(pid)!;
    const workerTicks = workerPids.reduce((sum, pid, i) => sum + ((processTicks(pid) ?? workers0[i]!) - workers0[i]!), 0);
    const busy = 1 - (machine1.idle - machine0.idle) / Math.max(1, machine1.total - machine0.total);
    const usage: Usage = {
      seconds: round(seconds),
      samples,
      waits: [...waits].map(([event, n]) => ({ event, backends: round(n / Math.max(1, samples)) })).sort((a, b) => b.backends - a.backends),
      cpu: { machineBusy: round(busy), postgresCores: cores(pgTicks), workerCores: cores(workerTicks) },
      walMBPerSecond: round(walBytes / 2 ** 20 / seconds),
      saturation: '',
    };
    usage.saturation = saturation(usage);
    return usage;
  };
}

/**
 * Names the resource the run ran out of: the CPU when the machine was ≥ 90% busy (and who used it);
 * otherwise the most common wait of the backends that were running (locks, WAL or I/O); otherwise the
 * workers themselves (their backends mostly idle, waiting for the next statement).
 */
function saturation(u: Usage): string {
  const cores = os.cpus().length;
  const running = u.waits.filter((w) => !w.event.startsWith('idle'));
  const waiting = running.filter((w) => !w.event.startsWith('CPU'));
  const idle = u.waits.filter((w) => w.event.startsWith('idle')).reduce((s, w) => s + w.backends, 0);
  const active = running.reduce((s, w) => s + w.backends, 0);
  const who = `PostgreSQL ${u.cpu.postgresCores} cores, workers ${u.cpu.workerCores} cores`;
  const others = round(cores * u.cpu.machineBusy - u.cpu.postgresCores - u.cpu.workerCores);
  if (u.cpu.machineBusy >= 0.9) return `CPU: the ${cores} cores ${Math.round(u.cpu.machineBusy * 100)}% busy (${who}, other processes ${others})`;
  if (waiting[0] && waiting[0].backends >= 0.25 * active) {
    const kind = /^(Lock|LWLock:(Lock|Buffer|Proc))/.test(waiting[0].event) ? 'locks' : /WAL/.test(waiting[0].event) ? 'WAL' : 'waits';
    return `${kind}: ${waiting[0].event} in ${Math.round((100 * waiting[0].backends) / Math.max(active, 1e-9))}% of the running samples (${who})`;
  }
  if (idle > active) return `the workers: their backends idle ${Math.round((100 * idle) / (idle + active))}% of the time (${who})`;
  return `PostgreSQL CPU (${who}, machine ${Math.round(u.cpu.machineBusy * 100)}% busy)`;
}
