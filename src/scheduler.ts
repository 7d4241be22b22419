/**
 * Schedules at run time. Every worker keeps one timer per schedule; at each slot it runs a tick: one
 * short transaction that locks the schedule's row in pubsub.schedule, works out the slots due since
 * the row's `covered_until` (timing.ts, on the database server's clock, so workers with skewed clocks
 * agree), hands them on and advances the row. The first worker to lock the row does the work; the
 * others wait for its commit and find nothing left. So each slot is handed on exactly once across all
 * workers, and since the row moves in the same transaction as the hand-off, a crash before the commit
 * leaves the slot due (a restart neither repeats nor loses it).
 *
 * Handing a slot on is storing it: a scheduled method gets a durable notification on its own channel
 * (`schedule:<name>`), which the workers then claim and run like any other, with the same retries,
 * time limit and dead letters; a publishing schedule calls notify() in that transaction.
 *
 * Missed slots: each worker holds a session advisory lock on every schedule it runs, taken on its
 * tick connection, so the database knows who runs a schedule and since when (that connection's start).
 * A slot that passed while some worker was running the schedule is attended: it runs, however late. One
 * that passed while none was (every worker down, or cut off from the database) was missed, and follows
 * the schedule's `catchUp` policy (timing.ts `planSlots`).
 */
import pg from 'pg';
import { notify } from './notify.js';
import type { ScheduleDefinition } from './registry.js';
import { scheduleAdvanceSql, scheduleLockSql, scheduleRunningSql, scheduleStoreSql, scheduleUpsertSql } from './sql.js';
import { planSlots } from './timing.js';
import type { Logger } from './types.js';

/** A timer never waits longer than this: a tick that finds nothing due costs one short transaction. */
const MAX_WAIT_MS = 3_600_000;
/** Server-side bounds of a tick's transaction (see `tick`). */
const TICK_LOCK_TIMEOUT = '5s';
const TICK_IDLE_TIMEOUT = '30s';
/** Waits before trying a failed tick again: doubling from 0.5 s up to 30 s. */
const RETRY_MS = [500, 30_000] as const;

export interface SchedulerOptions {
  schedules: ScheduleDefinition[];
  /**
   * Connections for the ticks (the worker's own, with bounded round trips, that never closes idle
   * ones: they hold the running locks); not closed here.
   */
  pool: pg.Pool;
  logger: Logger;
  /** The clock, in ms since the epoch, instead of the database server's (tests). */
  now?: () => number;
}

export interface TickResult {
  /** The clock the tick went by. */
  now: number;
  /** Every slot up to this one is settled. */
  coveredUntil: number;
  /** The slots this tick handed on, and how many it skipped. */
  ran: Date[];
  skipped: number;
}

/** A publishing schedule's `payload()` or `notify()` failed: the slot stays due and the tick is tried again. */
class PublishError extends Error {}

export class Scheduler {
  private readonly timers = new Map<string, NodeJS.Timeout>();
  /** Connections that hold the running locks of every schedule here. */
  private readonly locked = new WeakSet<pg.PoolClient>();
  /** With an injected clock: its time at the first tick, standing for the connection's start. */
  private injectedSince?: number;
  /** Schedules whose row this worker has created or brought up to date. */
  private readonly recorded = new Set<string>();
  private readonly failures = new Map<string, number>();
  private readonly running = new Set<Promise<void>>();
  private closing = false;

  constructor(private readonly o: SchedulerOptions) {}

  /** Ticks each schedule now (catching up on what was missed), then at each of its slots. */
  start(): void {
    for (const s of this.o.schedules) this.arm(s, 0);
  }

  private arm(s: ScheduleDefinition, ms: number): void {
    if (this.closing) return;
    const timer = setTimeout(() => {
      this.timers.delete(s.name);
      const run = this.run(s).finally(() => this.running.delete(run));
      this.running.add(run);
    }, Math.max(0, Math.min(ms, MAX_WAIT_MS)));
    this.timers.set(s.name, timer);
  }

  private async run(s: ScheduleDefinition): Promise<void> {
    let wait: number;
    try {
      const { now, coveredUntil } = await this.tick(s);
      this.failures.delete(s.name);
      // A few ms past the slot: the server's clock, not this process's timer, decides that it is due.
      wait = s.timing.next(Math.max(now, coveredUntil)) - now + 5;
    } catch (error) {
      const n = (this.failures.get(s.name) ?? 0) + 1;
      this.failures.set(s.name, n);
      wait = Math.round(Math.min(RETRY_MS[1], RETRY_MS[0] * 2 ** (n - 1)) * (0.5 + Math.random() / 2));
      if (error instanceof PublishError) {
        this.o.logger.error(`schedule ${s.name}: ${error.message}, so the slot was not published; trying again in ${wait} ms:`, error.cause);
      } else {
        this.o.logger.warn(`schedule ${s.name}: could not record its slots (${(error as Error)?.message ?? String(error)}); trying again in ${wait} ms`);
      }
    }
    this.arm(s, wait);
  }

  /** One tick of a schedule: hands on the slots due now, once across all workers. */
  async tick(s: ScheduleDefinition): Promise<TickResult> {
    const client = await this.o.pool.connect();
    let broken: Error | undefined;
    try {
      if (!this.locked.has(client)) {
        // A new connection (the first, or one replacing a lost one): running from its start on.
        await client.query(scheduleRunningSql, [this.o.schedules.map((x) => x.name)]);
        this.locked.add(client);
      }
      // Bounded on the server too: a tick never waits long for another's row lock, and one whose worker
      // froze mid-tick (a half-open connection) is ended by the server, which frees the row for the others.
      await client.query(`begin; set local lock_timeout = '${TICK_LOCK_TIMEOUT}'; set local idle_in_transaction_session_timeout = '${TICK_IDLE_TIMEOUT}'`);
      const injected = this.o.now?.();
      if (!this.recorded.has(s.name)) {
        const t = s.timing;
        await client.query(scheduleUpsertSql, [s.name, t.kind, t.expression, t.timeZone, s.catchUp, injected === undefined ? null : new Date(injected).toISOString()]);
      }
      const row = (await client.query<{ covered_until: number; now: number; attended_from: number }>(scheduleLockSql, [s.name])).rows[0];
      if (!row) {
        // Deleted since this worker recorded it: the next tick creates it again.
        await client.query('commit');
        this.recorded.delete(s.name);
        const now = injected ?? Date.now();
        return { now, coveredUntil: now, ran: [], skipped: 0 };
      }
      const now = injected ?? row.now;
      if (injected !== undefined) this.injectedSince ??= injected;
      const plan = planSlots(s.timing, s.catchUp, row.covered_until, now, injected === undefined ? row.attended_from : this.injectedSince!);
      if (plan.through !== null) {
        if (plan.run.length) await this.handOn(client, s, plan.run);
        const iso = (ms: number) => new Date(ms).toISOString();
        await client.query(scheduleAdvanceSql, [s.name, iso(plan.through), plan.run.length ? iso(plan.run.at(-1)!) : null, plan.run.length, plan.skipped]);
      }
      await client.query('commit');
      this.recorded.add(s.name);
      if (plan.skipped) {
        this.o.logger.info(`schedule ${s.name}: ${plan.skipped} slot${plan.skipped === 1 ? '' : 's'} skipped (catchUp '${s.catchUp}'${s.catchUp === 'all' ? ', at most 100 at once' : ''}: passed while no worker ran it); ${plan.run.length} run now`);
      }
      return { now, coveredUntil: Math.max(row.covered_until, plan.through ?? 0), ran: plan.run.map((ms) => new Date(ms)), skipped: plan.skipped };
    } catch (error) {
      await client.query('rollback').catch((e: Error) => (broken = e));
      throw error;
    } finally {
      client.release(broken);
    }
  }

  private async handOn(client: pg.PoolClient, s: ScheduleDefinition, slots: number[]): Promise<void> {
    if (s.listener) {
      await client.query(scheduleStoreSql, [s.listener.channel, s.listener.id, slots.map((ms) => JSON.stringify(new Date(ms).toISOString()))]);
      return;
    }
    const { channel, payload } = s.publish!;
    for (const ms of slots) {
      let value: unknown;
      try {
        value = await payload(new Date(ms));
      } catch (error) {
        throw new PublishError(`payload() failed for the slot ${new Date(ms).toISOString()}`, { cause: error });
      }
      try {
        await notify(channel as never, value, { client });
      } catch (error) {
        throw new PublishError(`notify() refused the payload of the slot ${new Date(ms).toISOString()}`, { cause: error });
      }
    }
  }

  /** Stops the timers and waits for a tick in progress. */
  async close(): Promise<void> {
    this.closing = true;
    for (const timer of this.timers.values()) clearTimeout(timer);
    this.timers.clear();
    await Promise.allSettled([...this.running]);
  }
}
