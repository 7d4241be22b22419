/**
 * The drain: claims stored notifications unit by unit and runs their listeners in the claim's
 * transaction (transaction.ts), settling every attempt (attempts.ts).
 *
 * Units are ways of claiming, each with its own cursor, claim size and backoff: all plain listeners
 * together; each ordered listener (heads of keys, each with the run of its key behind it); each batch listener; and the isolated rows
 * (whose earlier attempt was lost), one per transaction. A drain round visits the units in turn, one
 * claim each, until every unit comes back short, so one backlog cannot starve the others; a unit whose
 * claim fails waits out its own backoff while the others go on.
 *
 * Owned by the drain: the units and their state. Shared read-only: the listener definitions.
 */
import { performance } from 'node:perf_hooks';
import createDebug from 'debug';
import type pg from 'pg';
import { AttemptLedger, describe, holdBackValues, restoreSql, restoreValues, type Failure, type Stored } from './attempts.js';
import { Dispatcher, ListenerTimeoutError, timeoutOf, withTimeout } from './dispatch.js';
import type { Attempted, Observer, Reaped } from './observe.js';
import { orderPath, type ListenerDefinition, type Registry } from './registry.js';
import { claimSql, holdBackSql, keyRowsSql, setKeysSql, settleClaimSql, unkeyedSql } from './sql.js';
import { noPrisma, withPrisma, type PrismaBinding } from './prisma.js';
import { HELD_BACK, type RelayHub } from './relay.js';
import { ClaimTransaction, TransactionLostError } from './transaction.js';
import { traceProcess, withoutTrace } from './tracing.js';
import type { Logger, NotificationContext } from './types.js';

const debug = createDebug('pubsub:drain');

/** What a claim script (claimSql) returned; its rows in id (write) order. */
export interface Claimed {
  pid: number;
  reaped: Reaped[];
  isolatedWaiting: boolean;
  rows: Stored[];
  xid: string | null;
  /** Ordered claims: whether rows wait for their key. */
  unkeyed: boolean;
  /** Whether writes wait in pubsub.fanout to be made into their listeners' rows (common claims only). */
  fanoutWaiting: boolean;
}

/** Reads a claim script's results: the common claim's rows of pubsub.claim_next(), or the written-out script's statements. */
export function readClaim(results: pg.QueryResult[]): Claimed {
  let claim: Claimed;
  // The common claim: begin, then claim_next()'s rows, told apart by their first column.
  if (results.length === 2 && results[1]!.fields[0]?.name === 'kind') {
    const of = (kind: string) => results[1]!.rows.filter((r) => r.kind === kind);
    const session = of('session')[0];
    const fields = ({ kind, dead, pid, xid, ...row }: Record<string, unknown>) => row;
    claim = {
      pid: session.pid,
      reaped: of('reaped').map((r) => ({ id: r.id, channel: r.channel, listener: r.listener, attempts: r.attempts, dead: r.dead })),
      isolatedWaiting: session.isolated,
      rows: of('claimed').map(fields) as unknown as Stored[],
      xid: session.xid,
      unkeyed: false,
      fanoutWaiting: of('fanout').length > 0,
    };
  } else {
    const [, session, reaped, isolated, claimed, xid, unkeyed] = results;
    claim = { pid: session!.rows[0].pid, reaped: reaped!.rows, isolatedWaiting: isolated!.rows[0].isolated, rows: claimed!.rows, xid: xid!.rows[0].xid, unkeyed: unkeyed?.rows[0].unkeyed ?? false, fanoutWaiting: false };
  }
  // DELETE … RETURNING gives no order: process in id (write) order.
  claim.rows.sort((a, b) => a.id.length - b.id.length || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return claim;
}

/** Plain claims grow up to this multiple of batchSize while full batches finish quickly. */
const MAX_SCALE = 5;
/** Rows of one key in an ordered relay's claim at most (each costs its key a confirm round trip). */
const RELAY_RUN = 10;
/** Writes one pubsub.fan_out() call moves at most. */
const FANOUT_ROWS = 1000;
/**
 * Slack on top of the longest listener timeout before the server ends a claim session idle in its
 * transaction: covers the worker's own gaps between statements (a timed-out listener's statement is
 * running, not idle, while it is cancelled).
 */
const IDLE_SLACK_MS = 5_000;

interface Unit {
  kind: 'plain' | 'ordered' | 'batch' | 'isolated';
  listeners: ListenerDefinition[];
  limit: number;
  /** Per listener, the highest id claimed in the current drain round (see ClaimTarget.after). */
  after: Map<string, string>;
  /** Plain units: claims grow to `limit * scale` while full batches finish quickly. */
  scale: number;
  /** Batch units: the last claim was short and we already waited for it to fill. */
  waited: boolean;
  /** Ordered units: the highest key of the last full claim this round (the next claim starts at it). */
  afterKey?: string;
  /** Ordered units: rows may wait for their key (true at the start of a round; then as the last claim saw it). */
  unkeyed: boolean;
  /** Ordered units: the highest id given a key this round (keys are given in id order, so the rest come after it). */
  keyedAfter: string;
  /** Ordered units whose writers store the key: its path (orderPath(), parsed once here); null: the worker keys the rows. */
  orderPath: string[] | null;
  /** Claims that failed in a row, and when this unit may claim again. */
  failures: number;
  retryAt: number;
  lastError: string;
  /** The server ends a claim session idle in its transaction this long (0: never); see ClaimTarget. */
  idleTimeoutMs: number;
}

export interface DrainOptions {
  /** Claims' connections. */
  pool: pg.Pool;
  /** Bounded round trips outside the claim (records, cancels). */
  control: pg.Pool;
  ledger: AttemptLedger;
  dispatcher: Dispatcher;
  registry: Registry;
  /** Durable listeners this worker serves, by id. */
  byId: Map<string, ListenerDefinition>;
  /** Durable channels this worker serves (for rows without a listener). */
  channels: string[];
  context: string | null;
  batchSize: number;
  roundTripMs: number;
  logger: Logger;
  /** `ctx.prisma`'s clients, when the worker has the `prisma` option. */
  prisma?: PrismaBinding;
  /** Told every settled attempt, after its claim committed (events, metrics, logs). */
  observer: Observer;
  /** Called when a unit's backoff is over. */
  retry(ms: number): void;
  /** Told how many writes (transactions) each claim took rows of, before their listeners run. */
  claimed?(writes: number): void;
  /** Publishes the rows of relays (relay.ts), when the worker serves any. */
  relays?: RelayHub;
}

export class Drain {
  private readonly units: Unit[] = [];
  /** Whether the last claim saw isolated rows waiting: only then does the isolated unit claim. */
  private isolatedWaiting = true;
  /** Whether a claim saw writes waiting in pubsub.fanout: the round moves them, then claims again. */
  private fanoutWaiting = false;
  /** The move under way (fanOut()), and whether one moved writes since the units last started over. */
  private moving: Promise<number> | undefined;
  private moved = false;
  closing = false;

  constructor(private readonly o: DrainOptions) {
    const unit = (kind: Unit['kind'], listeners: ListenerDefinition[], limit: number): Unit => {
      const timeouts = listeners.map(timeoutOf);
      const idleTimeoutMs = timeouts.includes(0) ? 0 : Math.max(0, ...timeouts) + IDLE_SLACK_MS;
      const path = kind === 'ordered' ? orderPath(listeners[0]!) : null;
      return { kind, listeners, limit, after: new Map(), scale: 1, waited: false, keyedAfter: '0', unkeyed: true, orderPath: path, failures: 0, retryAt: 0, lastError: '', idleTimeoutMs };
    };
    const plain: ListenerDefinition[] = [];
    for (const l of o.byId.values()) {
      if (l.delivery.ordered) this.units.push(unit('ordered', [l], l.relay?.batchSize ?? o.batchSize));
      else if (l.delivery.batch) this.units.push(unit('batch', [l], l.delivery.batch.size));
      else plain.push(l);
    }
    this.units.unshift(unit('plain', plain, o.batchSize));
    this.units.push(unit('isolated', [...o.byId.values()], 1));
  }

  /**
   * One drain round: every unit, one claim at a time in turn, until each comes back short. Several
   * rounds may run side by side (concurrency). Returns how many notifications were claimed.
   */
  async round(): Promise<number> {
    let claimed = 0;
    let active = this.units.filter((u) => u.retryAt <= Date.now());
    const skipIsolated = (units: Unit[]) => units.filter((u) => u.kind !== 'isolated' || this.isolatedWaiting);
    try {
      while (active.length && !this.closing) {
        const next: Unit[] = [];
        for (const unit of skipIsolated(active)) {
          if (this.closing) break;
          let n: number;
          try {
            n = await this.process(unit);
            unit.failures = 0;
          } catch (error) {
            this.failed(unit, error);
            continue;
          }
          claimed += Math.max(0, n);
          if (n === -1 || n >= unit.limit) next.push(unit);
        }
        active = next;
        // Writes for several listeners wait as one row each: make their listeners' rows on a
        // connection of their own while the claims go on (committed before any listener runs, so a
        // row that kills its worker is counted as any other). Before the round would end, every unit
        // claims again from the start (a moved write's first row keeps the write's id).
        if (this.fanoutWaiting && !this.moving && !this.closing) this.moving = this.fanOut().finally(() => (this.moving = undefined));
        if (!active.length && this.moving) await this.moving;
        if (!active.length && this.moved && !this.closing) {
          this.moved = false;
          active = this.units.filter((u) => u.retryAt <= Date.now());
          this.restart();
        }
      }
    } finally {
      await this.moving;
      // The round is over: the next one scans each listener's range from its start again, which
      // picks up rows written with lower ids after we passed them (late commits, retries).
      this.restart();
    }
    return claimed;
  }

  private restart(): void {
    for (const unit of this.units) {
      unit.after.clear();
      unit.keyedAfter = '0';
      unit.afterKey = undefined;
      unit.unkeyed = true;
    }
  }

  /** Moves waiting writes into their listeners' rows (pubsub.fan_out(), its own transaction); how many it moved. */
  private async fanOut(): Promise<number> {
    this.fanoutWaiting = false;
    try {
      const moved = (await this.o.pool.query<{ moved: number }>('select pubsub.fan_out($1) as moved', [FANOUT_ROWS])).rows[0]!.moved;
      if (moved >= FANOUT_ROWS) this.fanoutWaiting = true;
      if (moved > 0) this.moved = true;
      debug('fanned out %d writes', moved);
      return moved;
    } catch (error) {
      this.fanoutWaiting = true;
      this.o.logger.error(`writes for several listeners could not be made into their listeners' rows (they stay stored; trying again in 1000 ms): ${describe(error).split('\n')[0]}`);
      this.o.retry(1000);
      return 0;
    }
  }

  /** The unit that waits out a failed claim's backoff the longest, if any: when it may claim again, its failures in a row, and its last error. */
  backoff(): { retryAt: number; failures: number; error: string } | undefined {
    const waiting = this.units.filter((u) => u.failures > 0).sort((a, b) => b.retryAt - a.retryAt)[0];
    return waiting && { retryAt: waiting.retryAt, failures: waiting.failures, error: waiting.lastError };
  }

  /** A claim that could not finish: the unit backs off; its rows' attempts are counted by the next claim. */
  private failed(unit: Unit, error: unknown): void {
    unit.failures++;
    const ms = Math.round(Math.min(10_000, 100 * 2 ** unit.failures) * (0.5 + Math.random() / 2));
    unit.retryAt = Date.now() + ms;
    unit.lastError = describe(error).split('\n')[0]!;
    unit.scale = 1;
    const names = unit.listeners.map((l) => l.id).join(', ') || 'unassigned rows';
    this.o.logger.error(`a ${unit.kind} claim of ${names} could not finish (attempt counted, rows isolated if any listener ran); claiming again in ${ms} ms: ${describe(error).split('\n')[0]}`);
    this.o.observer.emit('claimFailed', { unit: unit.kind, listeners: unit.listeners.map((l) => l.id), error, retryInMs: ms });
    this.o.retry(ms);
  }

  /** One claimed batch in one transaction. Returns how many were claimed; -1: wait for a batch to fill. */
  private async process(unit: Unit): Promise<number> {
    const client = await this.o.pool.connect();
    const tx = new ClaimTransaction(client, this.o.roundTripMs);
    try {
      if (unit.kind === 'ordered' && unit.unkeyed) await this.assignKeys(tx, unit);
      const started = performance.now();
      const limit = unit.kind === 'plain' || unit.kind === 'ordered' ? unit.limit * unit.scale : unit.limit;
      const { rows, xid, reaped } = await this.claim(tx, unit, limit);
      if (!rows.length || !xid) {
        await tx.commit(); // it may have counted lost attempts
        this.o.observer.reaped(reaped);
        return 0;
      }
      const waitMs = unit.kind === 'batch' ? unit.listeners[0]!.delivery.batch?.waitMs : undefined;
      if (waitMs && rows.length < unit.limit && !unit.waited) {
        // Let a short batch fill up for waitMs, once, without holding the claim meanwhile (no listener ran: nothing to count).
        unit.waited = true;
        unit.after.clear();
        await tx.run('rollback');
        await new Promise((r) => setTimeout(r, waitMs));
        return -1;
      }
      unit.waited = false;
      this.o.claimed?.(new Set(rows.map((n) => n.created_at)).size); // a write's rows share its start time
      const recording = this.o.ledger.record(xid, rows, this.o.byId);
      if (!recording.sent) await recording.done;
      const { attempts, heldBack } = await this.run(tx, unit, rows);
      const failed: Failure[] = [];
      for (const a of attempts) if (a.failure) for (const n of a.ns) failed.push({ n, error: a.failure.error, listener: a.listener });
      // The record must be in before the commit deletes it. If it failed, it may or may not be there: the
      // delete below removes it if it is; one still in flight lands as garbage that the next claim drops.
      await recording.done.catch((error) => debug('claim record of %s failed: %s', xid, (error as Error).message));
      if (failed.length) await tx.run(restoreSql, restoreValues(failed));
      if (heldBack.length) await tx.run(holdBackSql, holdBackValues(heldBack));
      await tx.commit(settleClaimSql(xid));
      if (unit.kind === 'plain' || unit.kind === 'ordered') {
        // Quick listeners get bigger claims (fewer commits), slow ones keep short transactions.
        const ms = performance.now() - started;
        if (rows.length >= limit && ms < 25) unit.scale = Math.min(MAX_SCALE, unit.scale * 2);
        else if (ms > 100) unit.scale = 1;
      }
      debug('%s: processed %d, failed %d', unit.kind, rows.length - failed.length, failed.length);
      // Committed: now the outcomes are facts (their log lines come from these events, see log.ts).
      this.o.observer.reaped(reaped);
      this.o.observer.settled(attempts);
      return rows.length;
    } catch (error) {
      tx.lose(error instanceof Error ? error : new Error(String(error)));
      throw error;
    } finally {
      tx.release();
    }
  }

  private async claim(tx: ClaimTransaction, unit: Unit, limit: number): Promise<{ rows: Stored[]; xid: string | null; reaped: Reaped[] }> {
    const sql = claimSql({
      listeners: unit.listeners.map((l) => l.id),
      unassigned: unit.kind === 'plain' || unit.kind === 'isolated' ? this.o.channels : [],
      limit,
      context: this.o.context,
      ordered: unit.kind === 'ordered',
      isolated: unit.kind === 'isolated',
      after: unit.after,
      ...(unit.kind === 'ordered' && unit.afterKey !== undefined && { afterKey: unit.afterKey }),
      ...(unit.orderPath && { writerKeyed: true }),
      // An ordered relay publishes a key's rows one confirm round trip apart, and every key's next row in one burst: many keys per claim.
      ...(unit.kind === 'ordered' && unit.listeners[0]!.relay && { runLimit: RELAY_RUN }),
      idleTimeoutMs: unit.idleTimeoutMs,
    });
    const claim = readClaim(await tx.runScript(sql));
    tx.serverPid = claim.pid;
    this.isolatedWaiting = claim.isolatedWaiting;
    if (claim.fanoutWaiting) this.fanoutWaiting = true;
    const { rows, xid, reaped } = claim;
    if (unit.kind === 'plain') for (const n of rows) if (n.listener) unit.after.set(n.listener, n.id); // ascending: the last one wins
    if (unit.kind === 'isolated' && rows[0]) unit.after.set('', rows[0].id); // one cursor over every listener's isolated rows
    if (unit.kind === 'ordered') {
      // A full claim: the next one of this round starts at its highest key (whose run it may have cut).
      if (rows.length >= limit) unit.afterKey = (rows[0] as Stored & { last_key: string }).last_key;
      unit.unkeyed = claim.unkeyed; // writer-keyed: only the next round's start looks again
    }
    return { rows, xid, reaped };
  }

  /**
   * Runs the listeners of the claimed rows; returns every attempt with its outcome, and the rows of an
   * ordered claim held back behind a failure of their key (not attempted). Throws when the transaction is lost.
   */
  private async run(tx: ClaimTransaction, unit: Unit, rows: Stored[]): Promise<{ attempts: Attempted[]; heldBack: Stored[] }> {
    const attempts: Attempted[] = [];
    const heldBack: Stored[] = [];
    const single = unit.kind === 'isolated' ? this.o.byId.get(rows[0]!.listener ?? '') : undefined;
    const relay = single ?? (unit.kind === 'plain' ? undefined : unit.listeners[0]);
    if (relay?.relay) return this.relay(tx, rows, relay);
    if (unit.kind === 'batch' || single?.delivery.batch) {
      const l = single ?? unit.listeners[0]!;
      const started = performance.now();
      const failure = await this.attempt(tx, rows, l, async (ctx) => this.o.dispatcher.call(l, await Promise.all(rows.map(async (n) => (await this.o.dispatcher.argument(l, n.payload))?.value)), ctx));
      attempts.push({ ns: rows, listener: l, durationMs: performance.now() - started, failure });
      return { attempts, heldBack };
    }
    /** Ordered: keys with a failed row in this claim; their later rows wait for its retry. */
    const failedKeys = new Set<string | null>();
    for (const n of rows) {
      if (unit.kind === 'ordered' && failedKeys.has(n.order_key)) {
        heldBack.push(n);
        continue;
      }
      const own = n.listener ? this.o.byId.get(n.listener) : undefined;
      const listeners = own ? [own] : (this.o.registry.get(n.channel)?.listeners ?? []).filter((l) => this.o.byId.has(l.id) && !l.relay);
      const started = performance.now();
      const failure = await this.attempt(tx, [n], own, async (ctx) => {
        for (const l of listeners) {
          const arg = await this.o.dispatcher.argument(l, n.payload);
          if (arg) await this.o.dispatcher.call(l, l.delivery.batch ? [arg.value] : arg.value, ctx);
        }
      });
      attempts.push({ ns: [n], listener: own, durationMs: performance.now() - started, failure });
      if (failure) failedKeys.add(n.order_key);
    }
    return { attempts, heldBack };
  }

  /**
   * A relay's claimed rows, published in one burst; the claim commits (deleting them) only once the
   * broker confirmed them. Each row not confirmed is its own failed attempt (retried, or dead-lettered
   * after maxAttempts), so one failing key of an ordered relay holds back only itself.
   */
  private async relay(tx: ClaimTransaction, rows: Stored[], l: ListenerDefinition): Promise<{ attempts: Attempted[]; heldBack: Stored[] }> {
    const started = performance.now();
    const info = { channel: rows[0]!.channel, durable: true, listener: l.id, attempt: Math.min(...rows.map((x) => x.attempts)) + 1, messages: rows.map((x) => ({ id: x.id, context: x.context })) };
    const errors = await traceProcess(info, () => this.o.relays!.send(l, rows));
    if (tx.lost) throw tx.lost; // the claim is gone: its rows come back (isolated) and are published again
    const durationMs = performance.now() - started;
    const confirmed = rows.filter((_, i) => errors[i] === undefined);
    const attempts: Attempted[] = confirmed.length ? [{ ns: confirmed, listener: l, durationMs }] : [];
    const heldBack: Stored[] = [];
    rows.forEach((n, i) => {
      if (errors[i] === HELD_BACK) heldBack.push(n);
      else if (errors[i] !== undefined) attempts.push({ ns: [n], listener: l, durationMs, failure: { error: errors[i] } });
    });
    return { attempts, heldBack };
  }

  /**
   * One attempt of one listener call (or of a batch): its own `ctx`, savepoint and time limit. Returns
   * its failure (whatever was thrown, even `undefined`), or nothing when it succeeded. Throws when the
   * claim's transaction is lost meanwhile. Traced as a `process` span (tracing.ts).
   */
  private attempt(tx: ClaimTransaction, ns: Stored[], l: ListenerDefinition | undefined, fn: (ctx: NotificationContext) => Promise<void>): Promise<{ error: unknown } | undefined> {
    const n = ns[0]!;
    const info = { channel: n.channel, durable: true, listener: l?.id, attempt: Math.min(...ns.map((x) => x.attempts)) + 1, messages: ns.map((x) => ({ id: x.id, context: x.context })) };
    return traceProcess(info, () => this.attemptOnce(tx, ns, l, fn), (failure) => failure);
  }

  private async attemptOnce(tx: ClaimTransaction, ns: Stored[], l: ListenerDefinition | undefined, fn: (ctx: NotificationContext) => Promise<void>): Promise<{ error: unknown } | undefined> {
    const n = ns[0]!;
    const what = `${l?.id ?? `the listeners of "${n.channel}"`} on notification ${n.id}${ns.length > 1 ? ` (and ${ns.length - 1} more)` : ''}`;
    const scope = tx.scope(what);
    // ctx.signal's controller is made when the listener reads it (most never do: an AbortSignal per call
    // was a tenth of a no-op drain's CPU), aborted already if the time limit passed before that.
    let controller: AbortController | undefined;
    let timedOut: Error | undefined;
    const prisma = this.o.prisma;
    const ctx: NotificationContext = withPrisma(
      {
        channel: n.channel,
        id: n.id,
        durable: true,
        attempt: Math.min(...ns.map((x) => x.attempts)),
        tx: scope,
        get signal() {
          if (!controller) {
            controller = new AbortController();
            if (timedOut) controller.abort(timedOut);
          }
          return controller.signal;
        },
        ...(n.context !== null && { context: withoutTrace(JSON.parse(n.context)) }),
      },
      () => (prisma ? prisma.client(scope) : noPrisma()),
    );
    let error: unknown;
    try {
      await withTimeout(fn(ctx), timeoutOf(l), what, (e) => {
        scope.close();
        timedOut = e;
        controller?.abort(e);
      });
      await scope.finish();
      return undefined;
    } catch (e) {
      error = e;
    }
    if (tx.lost) {
      scope.close(); // the attempt is over: ctx.tx and ctx.prisma refuse from now on (and ctx.prisma's client is freed)
      throw tx.lost;
    }
    if (error instanceof ListenerTimeoutError && scope.busy) {
      // Its statement is still running: cancel it (by the server pid read in the claim, right behind PgBouncer too).
      if (tx.serverPid) await this.o.control.query('select pg_cancel_backend($1)', [tx.serverPid]).catch(() => {});
      if (!(await tx.drained())) tx.lose(new TransactionLostError(`the statement of ${what} did not stop after its timeout and cancel`));
    }
    await scope.undo(); // throws if the transaction is lost
    return { error };
  }

  /**
   * Gives newly stored notifications of an ordered listener their key, in id order, one worker at a
   * time, committed before the claim. Only rows whose writer did not store it: an orderKey function's
   * (it runs here, on the decoded payload), and rows stored before library version 8 or by a trigger
   * function generated before the listener had its path. Within a drain round it looks only after the last id it keyed:
   * from the start it would walk every keyed row still waiting (a heap visit each) on every claim.
   * Rows committed late with lower ids get their key in the next round, which starts from the start.
   * For a listener keyed by a path, rows without a key are only those stored before its writers keyed
   * them, so it looks once per round (at its start), not after every claim: that look scans the
   * listener's rows (no index covers rows without a key), a cost each claim would pay for nothing.
   * It waits for the lock where a function key skips: rows keyed by their writers sit above the ones
   * still without a key, so a worker that claimed while another was keying them would take a key's
   * later rows before its earlier ones (it did, in CI: two workers, 2,500 unkeyed rows under 1,500 keyed).
   */
  private async assignKeys(tx: ClaimTransaction, unit: Unit): Promise<void> {
    const l = unit.listeners[0]!;
    let last: string | undefined;
    await tx.run('begin');
    const path = unit.orderPath;
    const lock = path ? 'select true as locked from (select pg_advisory_xact_lock(hashtext($1))) waited' : 'select pg_try_advisory_xact_lock(hashtext($1)) as locked';
    const { rows } = await tx.run<{ locked: boolean }>(lock, [`pubsub.order:${l.id}`]);
    if (rows[0]!.locked && path) {
      // Keyed by a path: in SQL, exactly as the writers key their rows (an unkeyed row here is one stored before them).
      await tx.run(keyRowsSql, [l.id, path]);
    } else if (rows[0]!.locked) {
      const waiting = (await tx.run<{ id: string; payload: string }>(unkeyedSql, [l.id, unit.keyedAfter])).rows;
      last = waiting.at(-1)?.id;
      if (waiting.length) {
        const keys = await Promise.all(
          waiting.map(async (n) => {
            try {
              const key = l.delivery.orderKey as (payload: unknown) => string; // a function: orderPath() is null
              return String(key((await this.o.dispatcher.argument(l, n.payload))?.value));
            } catch (error) {
              this.o.logger.error(`${l.id}: orderKey failed for notification ${n.id}; it is ordered under the key "!error":`, error);
              return '!error';
            }
          }),
        );
        await tx.run(setKeysSql, [waiting.map((n) => n.id), keys]);
      }
    }
    await tx.commit();
    if (last) unit.keyedAfter = last;
  }
}
