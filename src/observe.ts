/**
 * What the worker tells the outside: one small typed event stream that the drain, the LISTEN session
 * and the worker's lifecycle report to, and that everything else (`worker.on()`, metrics, logs,
 * readiness) subscribes to. Nobody listening costs one property lookup per report: events are built
 * only for the names someone listens to.
 */
import createDebug from 'debug';
import { isLastAttempt, ownError, type Stored } from './attempts.js';
import type { ListenerDefinition } from './registry.js';

const debug = createDebug('pubsub:observe');

/** One attempt of one listener on stored notifications (several for a batch listener). */
export interface AttemptEvent {
  channel: string;
  /** The listener's name (`Class.method` or its `name` option); null for a row stored before anyone subscribed, which every listener of the channel ran on. */
  listener: string | null;
  /** The first notification's id; `ids` has all of them (a batch). */
  id: string;
  ids: string[];
  /** Which attempt this was, from 1 (`ctx.attempt + 1`); for a batch, that of its first-tried notification. */
  attempt: number;
}

export interface ProcessedEvent extends AttemptEvent {
  /** How long the listener ran (the attempt, savepoint included). */
  durationMs: number;
  /**
   * Per notification (same order as `ids`): from the start of the transaction that stored it (its
   * `created_at`, the writer's `now()`, on the server's clock) to its claim. Includes the backoff of
   * earlier attempts for a retry.
   */
  latencyMs: number[];
}

export interface FailedEvent extends AttemptEvent {
  /** What the listener threw (or the timeout); for a lost attempt, an Error saying its transaction ended. */
  error: unknown;
  /** How long it ran; undefined for a lost attempt (its process or connection died meanwhile). */
  durationMs?: number;
  /** The attempt never ended: its transaction was lost (a crash, a cut connection), counted by a later claim. */
  lost: boolean;
  /** It was the last attempt: the notifications are dead-lettered (`pubsub dead list`), else kept for a retry. */
  dead: boolean;
}

export interface ClaimFailedEvent {
  /** Which claim unit: plain listeners together, an ordered or batch listener, or isolated rows. */
  unit: 'plain' | 'ordered' | 'batch' | 'isolated';
  listeners: string[];
  error: unknown;
  retryInMs: number;
}

/** Every event and what it carries. */
export interface WorkerEvents {
  /** An attempt succeeded and its transaction committed. */
  processed: ProcessedEvent;
  /** An attempt failed (a throw, a timeout, a lost transaction), one event per notification; followed by `retried` or `dead`. */
  failed: FailedEvent;
  /** The failed notifications were put back for a later attempt. */
  retried: FailedEvent;
  /** The failed notifications were dead-lettered (their last attempt). */
  dead: FailedEvent;
  /** A claim could not finish (a database error); its unit backs off. Its rows are counted as lost attempts later. */
  claimFailed: ClaimFailedEvent;
  /** LISTEN is in place and committed (the first time, and after every reconnect). */
  listening: { reconnect: boolean };
  /** The LISTEN connection was lost or could not be made; a new one is tried in `retryInMs`. */
  disconnected: { error: Error; retryInMs: number };
  /** LISTEN is back after a disconnect. */
  reconnected: Record<string, never>;
  /** Wake-ups cannot arrive (LISTEN refused, or a test NOTIFY never came back): the worker polls instead. */
  pollingFallback: { reason: string };
  /** The first drain after start is over: everything stored while no worker ran has been claimed. */
  caughtUp: Record<string, never>;
}

export type WorkerEventName = keyof WorkerEvents;
type Handler<K extends WorkerEventName> = (event: WorkerEvents[K]) => void;

/** One attempt as the drain saw it: its rows, its listener (none for unassigned rows), how long it ran, and its failure. */
export interface Attempted {
  ns: Stored[];
  listener?: ListenerDefinition;
  durationMs: number;
  failure?: { error: unknown };
}

/** A lost attempt counted by a claim (pubsub.reap_lost_claims()). */
export interface Reaped {
  id: string;
  channel: string;
  listener: string | null;
  attempts: number;
  dead: boolean;
}

export class Observer {
  private readonly handlers: { [K in WorkerEventName]?: Array<Handler<K>> } = {};

  /** Calls `fn` for every `event`; returns the function that stops it. */
  on<K extends WorkerEventName>(event: K, fn: Handler<K>): () => void {
    const list: Array<Handler<K>> = ((this.handlers as Record<K, Array<Handler<K>>>)[event] ??= []);
    list.push(fn);
    return () => {
      const i = list.indexOf(fn);
      if (i >= 0) list.splice(i, 1);
    };
  }

  wants(event: WorkerEventName): boolean {
    return !!this.handlers[event]?.length;
  }

  /** A subscriber that throws must not break the drain or the connection: its error goes to debug. */
  emit<K extends WorkerEventName>(event: K, payload: WorkerEvents[K]): void {
    const list = this.handlers[event] as Array<Handler<K>> | undefined;
    if (!list?.length) return;
    for (const fn of [...list]) {
      try {
        fn(payload);
      } catch (error) {
        debug('a subscriber of %s threw: %O', event, error);
      }
    }
  }

  /** The outcomes of one committed claim: `processed`, or `failed` then `retried`/`dead`. */
  settled(attempts: Attempted[]): void {
    const processed = this.wants('processed');
    const failed = this.wants('failed') || this.wants('retried') || this.wants('dead');
    if (!processed && !failed) return;
    // Objects are built field by field: an object spread here cost several µs per notification (V8 slow path).
    for (const a of attempts) {
      const ns = a.ns;
      const first = ns[0]!;
      const channel = first.channel;
      const listener = a.listener?.id ?? first.listener;
      if (!a.failure) {
        if (!processed) continue;
        let attempts = first.attempts;
        for (const n of ns) attempts = Math.min(attempts, n.attempts);
        this.emit('processed', { channel, listener, id: first.id, ids: ns.map((n) => n.id), attempt: attempts + 1, durationMs: a.durationMs, latencyMs: ns.map((n) => n.latency_ms) });
      } else if (failed) {
        // One event per notification: each has its own attempt count, so in a batch some may die and others retry.
        const error = ownError(a.failure.error); // what the listener threw, not our wrapper naming it
        for (const n of ns) {
          const dead = isLastAttempt({ n, error, listener: a.listener });
          this.failure({ channel, listener, id: n.id, ids: [n.id], attempt: n.attempts + 1, error, durationMs: a.durationMs, lost: false, dead });
        }
      }
    }
  }

  /** Lost attempts that a committed claim counted. */
  reaped(rows: Reaped[]): void {
    if (!rows.length || !(this.wants('failed') || this.wants('retried') || this.wants('dead'))) return;
    for (const r of rows) {
      const error = new Error('the attempt never ended: its transaction was lost (its worker died, its connection was cut or timed out, or the server restarted)');
      this.failure({ channel: r.channel, listener: r.listener, id: r.id, ids: [r.id], attempt: r.attempts, error, lost: true, dead: r.dead });
    }
  }

  private failure(event: FailedEvent): void {
    this.emit('failed', event);
    this.emit(event.dead ? 'dead' : 'retried', event);
  }
}
