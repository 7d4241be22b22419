/**
 * The listeners that the chaos suite's `pubsub listen` processes run. Each item the writers commit
 * carries a unique number `n` and fault flags; every listener records its effect through `ctx.tx`
 * (exactly once, or the suite reports a duplicate or a loss) and appends a line to a file outside
 * the transaction (at-least-once side effects, whose repeats the suite measures).
 *
 * Flags (comma-separated, see chaos/run.ts for who sets them):
 * - fail: throw on attempt 0 (a transient failure; the retry succeeds)
 * - slow: sleep 3 s on attempt 0, longer than the database's idle_in_transaction_session_timeout
 * - swallow: on attempt 0, make a statement on ctx.tx fail (duplicate key), catch the error and return
 * - kill: ChaosJobs.fragile SIGKILLs its own process on every attempt (a poison message)
 */
import fs from 'node:fs';
import { Listen, PostInsertListen, type NotificationContext, type TriggerPayload } from 'pgpubsub';

export class Job {
  n!: number;
  flags!: string;
}

interface OrderRow {
  id: number;
  n: number;
  flags: string;
}

const sideFile = process.env.CHAOS_SIDE_FILE;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Small backoff for every listener: retries after faults should not stretch the drain. */
const backoff = { baseMs: 100, maxMs: 1000 };
/**
 * Above the 3 s of the slow listeners, far below the 60 s default: the server frees a half-open claim
 * after the longest timeout + 5 s, and the drain bound must cover that (scenario d).
 */
const timeoutMs = 5000;

async function act(listener: string, n: number, flags: string, ctx: NotificationContext): Promise<void> {
  const has = (flag: string) => flags.split(',').includes(flag);
  if (has('fail') && ctx.attempt === 0) throw new Error(`chaos: transient failure of ${listener} ${n}`);
  if (has('slow') && ctx.attempt === 0) await sleep(3000);
  if (has('swallow') && ctx.attempt === 0) {
    // chaos_unique holds 0 from the start: this fails, and the listener returns as if it had worked.
    // Its transaction is aborted, so this attempt must count as failed (and be retried, when the
    // attempt after it writes the effect), not commit nothing or take the rest of the batch down.
    await ctx.tx!.query('insert into chaos_unique (n) values (0)').catch(() => {});
    return;
  }
  if (sideFile) fs.appendFileSync(sideFile, `${listener} ${n} ${process.pid}\n`); // O_APPEND: one line per write
  await ctx.tx!.query('insert into chaos_effect (listener, n, attempt, pid) values ($1, $2, $3, $4)', [listener, n, ctx.attempt, process.pid]);
}

export class ChaosJobs {
  @Listen('chaos_jobs', { backoff, timeoutMs })
  async work(job: Job, ctx: NotificationContext) {
    await act('ChaosJobs.work', job.n, job.flags, ctx);
  }

  /** The neighbour that crashes its worker on `kill` payloads: they must end dead after 3 attempts. */
  @Listen('chaos_jobs', { maxAttempts: 3, timeoutMs, backoff: { baseMs: 50, maxMs: 200 } })
  async fragile(job: Job, ctx: NotificationContext) {
    if (job.flags.split(',').includes('kill')) process.kill(process.pid, 'SIGKILL');
    await act('ChaosJobs.fragile', job.n, job.flags, ctx);
  }
}

export class ChaosOrders {
  @PostInsertListen('Order', { backoff, timeoutMs })
  async onInsert(p: TriggerPayload<OrderRow>, ctx: NotificationContext) {
    await act('ChaosOrders.onInsert', p.new!.n, p.new!.flags, ctx);
  }
}

/** Which listeners must record an effect for an item of each kind (the analysis in run.ts uses it). */
export const LISTENERS_OF = { order: ['ChaosOrders.onInsert'], job: ['ChaosJobs.work', 'ChaosJobs.fragile'] } as const;
