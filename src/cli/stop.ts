/**
 * When a long-running command (`listen`, `dev`) should stop: on SIGINT or SIGTERM, or when it was started
 * by npm and npm's shell is gone. `npx pubsub listen` runs as npx → `sh -c pubsub listen` → node; npx
 * forwards a SIGTERM to the shell only, which dies of it, and the worker, adopted by init, would run on
 * with its connections and never hear of it. So under npm the CLI watches its parent: once the parent it
 * started with has exited, it stops as it does on SIGTERM.
 */
import { startedByNpm } from '../config.js';

/** How often the parent is checked under npm; process.ppid is one cheap system call. */
export const PARENT_CHECK_MS = 250;

/**
 * Resolves with why the command should stop (`SIGINT`, `SIGTERM`, or `parent exited`). A second
 * SIGINT or SIGTERM after that exits at once with code 130, for a shutdown that hangs.
 */
export function stopRequested(watchParent = startedByNpm()): Promise<string> {
  return new Promise((resolve) => {
    const parent = process.ppid;
    const timer = watchParent ? setInterval(() => process.ppid !== parent && stop('parent exited'), PARENT_CHECK_MS) : undefined;
    const onSigint = () => stop('SIGINT');
    const onSigterm = () => stop('SIGTERM');
    function stop(why: string) {
      clearInterval(timer);
      process.off('SIGINT', onSigint).off('SIGTERM', onSigterm);
      const force = () => process.exit(130);
      process.once('SIGINT', force).once('SIGTERM', force);
      resolve(why);
    }
    process.once('SIGINT', onSigint).once('SIGTERM', onSigterm);
  });
}
