/**
 * How `pubsub listen` stops: close the worker (no more claims; running listeners finish), then run the
 * listener modules' `shutdown` exports, all within one grace period. When it ends first, the process
 * exits anyway with code 1: the claim transactions still open roll back when their connections close,
 * and the attempt ledger counts them, so another worker takes those notifications later.
 */
import type { Log } from '../log.js';
import type { ShutdownHook } from './load.js';

/** Exit code when the grace period ends before the stop did. */
export const GRACE_EXPIRED_EXIT_CODE = 1;

/** Waits until stdout and stderr have written everything handed to them, then exits. */
export async function exitAfterFlush(code: number): Promise<never> {
  await Promise.all([process.stdout, process.stderr].map((s) => new Promise<void>((resolve) => s.write('', () => resolve()))));
  process.exit(code);
}

/** 'done' when `work` settles within `ms`, else 'late'; a rejection is rethrown. */
async function within(work: Promise<unknown>, ms: number): Promise<'done' | 'late'> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), Math.max(0, ms))));
  try {
    return await Promise.race([work.then(() => 'done' as const), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The handles that keep the event loop alive, e.g. "TCPSocketWrap ×3, Timeout". */
function openHandles(): string {
  const counts = new Map<string, number>();
  for (const kind of process.getActiveResourcesInfo()) counts.set(kind, (counts.get(kind) ?? 0) + 1);
  return [...counts].map(([kind, n]) => (n > 1 ? `${kind} ×${n}` : kind)).join(', ') || 'none';
}

/**
 * Stops within `gracePeriodMs`: closes the worker, runs the hooks in load order, logs "stopped". When the
 * grace period ends during any of it, or a hook fails, it exits 1; after "stopped", a process that
 * something still keeps alive (a pool no hook ended) exits 1 at the end of the grace period.
 */
export async function shutdown(close: () => Promise<void>, hooks: ShutdownHook[], gracePeriodMs: number, log: Log): Promise<void> {
  const deadline = Date.now() + gracePeriodMs;
  const expired = async (what: string): Promise<never> => {
    log.error(`grace period of ${gracePeriodMs} ms ended ${what}; exiting with code ${GRACE_EXPIRED_EXIT_CODE}. Claims still open are rolled back by the server and retried by another worker.`);
    return exitAfterFlush(GRACE_EXPIRED_EXIT_CODE);
  };
  if ((await within(close(), deadline - Date.now())) === 'late') await expired('with listeners still running');
  let failed = false;
  for (const hook of hooks) {
    const run = Promise.resolve().then(hook.shutdown);
    try {
      if ((await within(run, deadline - Date.now())) === 'late') await expired(`during shutdown() of ${hook.module}`);
    } catch (error) {
      failed = true;
      log.error(`shutdown() of ${hook.module} failed:`, error);
    }
  }
  log.info('stopped');
  if (failed) await exitAfterFlush(1);
  // The process should now end by itself; if a handle keeps it alive, it ends when the grace period does.
  setTimeout(() => {
    log.warn(`still running after "stopped" (open: ${openHandles()}); grace period of ${gracePeriodMs} ms over, exiting with code ${GRACE_EXPIRED_EXIT_CODE}. Close what your listener modules open in an exported \`async function shutdown()\`.`);
    void exitAfterFlush(GRACE_EXPIRED_EXIT_CODE);
  }, Math.max(0, deadline - Date.now())).unref();
}
