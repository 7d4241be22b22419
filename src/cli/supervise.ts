/**
 * `pubsub listen --processes N`: N worker processes under one command, each the CLI itself (forked with
 * the same flags minus --processes, and PUBSUB_WORKER_PROCESS=n so it runs one worker whatever the
 * config file says). A worker process that dies is started again after a backoff; on SIGTERM/SIGINT the
 * signal is forwarded, each worker stops within its grace period, and any still alive shortly after
 * is killed. The workers run in their own process group, so a Ctrl-C in a terminal reaches them once,
 * forwarded, not twice; and each watches its parent, so they stop when the supervisor dies, even by SIGKILL.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { WORKER_LIMITS, WORKER_PROCESS_ENV } from '../config.js';
import type { Log } from '../log.js';
import { exitAfterFlush } from './shutdown.js';
import { FORCED_EXIT_CODE, stopRequested } from './stop.js';

/** Restart backoff: doubles from `firstMs` up to `maxMs`; back to `firstMs` for a process that ran `stableMs`. */
export const RESTART = { firstMs: 500, maxMs: 30_000, stableMs: 60_000 };
/** Time given to the workers past their grace period (they exit by themselves then) before SIGKILL. */
export const KILL_MARGIN_MS = 2000;

export interface SuperviseOptions {
  processes: number;
  gracePeriodMs: number;
  /** The CLI's arguments for every worker process. */
  args: string[];
  log: Log;
}

/** The arguments without `--processes n` / `--processes=n`. */
export function withoutProcessesFlag(args: string[]): string[] {
  const { flag } = WORKER_LIMITS.processes;
  return args.filter((arg, i) => arg !== flag && args[i - 1] !== flag && !arg.startsWith(`${flag}=`));
}

interface Slot {
  n: number;
  child?: ChildProcess;
  startedAt: number;
  ready: boolean;
  failures: number;
  restart?: NodeJS.Timeout;
}

/** Runs the worker processes until a signal (or a worker that fails at its first start), then exits the process. */
export async function supervise(options: SuperviseOptions): Promise<never> {
  const { log, processes, gracePeriodMs } = options;
  const slots: Slot[] = Array.from({ length: processes }, (_, i) => ({ n: i + 1, startedAt: 0, ready: false, failures: 0 }));
  let stopping = false;
  let anyReady = false;
  let exitCode = 0;
  let forwarded: NodeJS.Signals | undefined;
  let allExited!: () => void;
  const exited = new Promise<void>((resolve) => (allExited = resolve));
  let stopNow!: (why: string) => void;
  const startupFailed = new Promise<string>((resolve) => (stopNow = resolve));

  const start = (slot: Slot) => {
    const child = fork(process.argv[1]!, options.args, {
      env: { ...process.env, [WORKER_PROCESS_ENV]: String(slot.n) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
      detached: true,
    });
    Object.assign(slot, { child, startedAt: Date.now(), ready: false });
    log.info(`worker process ${slot.n} started (pid ${child.pid})`);
    child.on('message', (message) => {
      if (message !== 'ready') return;
      slot.ready = anyReady = true;
    });
    child.on('exit', (code, signal) => {
      slot.child = undefined;
      const how = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      if (stopping) {
        log.info(`worker process ${slot.n} (pid ${child.pid}) ${how}`);
        // Ended by the forwarded signal itself: it had not started yet, so nothing ran.
        if (code !== 0 && signal !== forwarded) exitCode ||= code ?? 1;
        if (slots.every((s) => !s.child)) allExited();
        return;
      }
      if (!slot.ready && !anyReady) {
        // Before any worker ever started: a configuration error that every process shares.
        log.error(`worker process ${slot.n} (pid ${child.pid}) ${how} before it started; stopping`);
        exitCode = code || 1;
        return stopNow('a worker process failed to start');
      }
      if (Date.now() - slot.startedAt >= RESTART.stableMs) slot.failures = 0;
      const delay = Math.min(RESTART.firstMs * 2 ** slot.failures, RESTART.maxMs);
      slot.failures++;
      log.warn(`worker process ${slot.n} (pid ${child.pid}) ${how}; starting it again in ${delay} ms`);
      slot.restart = setTimeout(() => start(slot), delay);
    });
  };

  log.info(`running ${processes} worker processes (pid ${process.pid} supervises them)`);
  for (const slot of slots) start(slot);
  const forward = (signal: NodeJS.Signals) => slots.forEach((s) => s.child?.kill(signal));
  const forced = (signal: string) => {
    log.warn(`second ${signal}: the worker processes exit now`);
    exitCode = FORCED_EXIT_CODE;
    forward(signal as NodeJS.Signals);
  };
  const why = await Promise.race([stopRequested(undefined, forced), startupFailed]);
  stopping = true;
  for (const slot of slots) clearTimeout(slot.restart);
  if (slots.every((s) => !s.child)) allExited();
  log.info(`${why}: stopping ${slots.filter((s) => s.child).length} worker processes (grace period ${gracePeriodMs} ms)`);
  forwarded = why === 'SIGINT' ? 'SIGINT' : 'SIGTERM';
  forward(forwarded);
  const killer = setTimeout(() => {
    const left = slots.filter((s) => s.child);
    log.error(`worker processes ${left.map((s) => `${s.n} (pid ${s.child!.pid})`).join(', ')} still running ${KILL_MARGIN_MS} ms after the grace period; killing them`);
    exitCode ||= 1;
    forward('SIGKILL');
  }, gracePeriodMs + KILL_MARGIN_MS);
  await exited;
  clearTimeout(killer);
  log.info('stopped');
  return exitAfterFlush(exitCode);
}
