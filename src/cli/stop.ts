/**
 * When a long-running command (`listen`, `dev`) should stop: on SIGINT or SIGTERM, or when it was started
 * by npm and npm's shell is gone. `npx pubsub listen` runs as npx → `sh -c pubsub listen` → node; npx
 * forwards a SIGTERM to the shell only, which dies of it, and the worker, adopted by init, would run on
 * with its connections and never hear of it. So under npm the CLI watches its parent: once the parent it
 * started with has exited, it stops as it does on SIGTERM. A worker process of `listen --processes`
 * watches its parent the same way, so that the supervisor's death (even by SIGKILL) stops it.
 */
import { startedByNpm, workerProcessNumber } from '../config.js';

/** How often the parent is checked under npm; process.ppid is one cheap system call. */
export const PARENT_CHECK_MS = 250;

/** Exit code after a second SIGINT or SIGTERM. */
export const FORCED_EXIT_CODE = 130;

/**
 * Resolves with why the command should stop (`SIGINT`, `SIGTERM`, or `parent exited`). A second
 * SIGINT or SIGTERM after that calls `force` (default: exit at once with code 130), for a shutdown that hangs.
 */
export function stopRequested(
  watchParent = startedByNpm() || workerProcessNumber() !== undefined,
  force: (signal: string) => void = () => process.exit(FORCED_EXIT_CODE),
): Promise<string> {
  return new Promise((resolve) => {
    const parent = process.ppid;
    // Unreferenced: the check alone never keeps the process alive (a command that failed must still exit).
    const timer = watchParent ? setInterval(() => process.ppid !== parent && stop('parent exited'), PARENT_CHECK_MS).unref() : undefined;
    const onSigint = () => stop('SIGINT');
    const onSigterm = () => stop('SIGTERM');
    function stop(why: string) {
      clearInterval(timer);
      process.off('SIGINT', onSigint).off('SIGTERM', onSigterm);
      process.once('SIGINT', () => force('SIGINT')).once('SIGTERM', () => force('SIGTERM'));
      resolve(why);
    }
    process.once('SIGINT', onSigint).once('SIGTERM', onSigterm);
  });
}
