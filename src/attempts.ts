/**
 * Attempt accounting. An attempt counts when it starts, whatever ends it; every attempt ends in one
 * of three outcomes: done (the row is deleted with the listener's writes), retry later (put back, byte
 * for byte as it was claimed, with the attempt counted and a backoff), or dead (put back with dead_at).
 *
 * A listener's throw, a timeout or an unusable transaction are settled in the claim's own transaction.
 * Whatever ends that transaction instead (a crash, SIGKILL, process.exit, a killed backend, a restart,
 * idle_in_transaction_session_timeout, a watchdog) is counted through the claim record: written and
 * committed here before any listener runs, deleted by the claim's commit, and counted by the next
 * claim of any worker if it is still there when its transaction is over (pubsub.reap_lost_claims()
 * in sql.ts, called by every claim).
 */
import os from 'node:os';
import pg from 'pg';
import { destroySocket } from './connection.js';
import { ListenerError } from './dispatch.js';
import type { ListenerDefinition } from './registry.js';
import { recordClaimSql, restoreSql } from './sql.js';
import { SchemaRejection } from './standard-schema.js';

export const DEFAULT_MAX_ATTEMPTS = 10;

/** A claimed notification, as `claimSql` returns it: payload and context as the exact stored JSON text. */
export interface Stored {
  id: string;
  channel: string;
  listener: string | null;
  payload: string;
  context: string | null;
  attempts: number;
  /** As text: only needed to put a failed row back. */
  created_at: string;
  order_key: string | null;
  isolated: boolean;
  /** From the start of the transaction that stored it to the start of this claim's, on the server's clock (events, metrics). float8 (date_part), not numeric: cheap per row. */
  latency_ms: number;
  /** Ordered claims only: kept for a row put back without an attempt. */
  last_error?: string | null;
  last_attempt_at?: string | null;
}

export interface Failure {
  n: Stored;
  error: unknown;
  listener?: ListenerDefinition;
}

/** Seconds before the next attempt after `failures`: exponential, capped, half of it random. */
export function retryDelaySeconds(failures: number, backoff: { baseMs?: number; maxMs?: number } = {}): number {
  const cap = Math.min(backoff.maxMs ?? 300_000, (backoff.baseMs ?? 1000) * 2 ** Math.min(failures - 1, 40));
  return (cap / 2 + (Math.random() * cap) / 2) / 1000;
}

/**
 * Whether this failure dead-letters the notification: its last allowed attempt, or a stored payload that
 * the channel's (synchronous) schema refuses, which no retry of the same bytes can fix. Not for batch
 * listeners: their failure is shared by every row of the batch, valid ones included.
 */
export const isLastAttempt = (f: Failure) =>
  f.n.attempts + 1 >= (f.listener?.delivery.maxAttempts ?? DEFAULT_MAX_ATTEMPTS) || (f.error instanceof SchemaRejection && f.error.permanent && !f.listener?.delivery.batch);

/** What the listener itself threw, when `error` only wraps it with the listener's name. */
export const ownError = (error: unknown): unknown => (error instanceof ListenerError ? error.cause : error);

/**
 * An error as text that can always be stored: never throws (a hostile toString), no NUL (text columns
 * refuse it), at most 8 KB. The listener's own error when it was wrapped with the listener's name.
 */
export function describe(error: unknown): string {
  let text: string;
  try {
    const reason = ownError(error);
    text = reason instanceof Error ? (reason.stack ?? `${reason.name}: ${reason.message}`) : String(reason);
  } catch {
    text = 'an error that cannot be printed';
  }
  text = text.replace(/\0/g, '\\0');
  return text.length > 8192 ? `${text.slice(0, 8192)}… (${text.length - 8192} more characters)` : text;
}

/** A claim record: `sent` when it is already written to the socket, so that no crash of this process can lose it. */
export interface Recording {
  sent: boolean;
  /** Settles when the server has it (committed); wait for it before the claim's own commit. */
  done: Promise<void>;
}

export class AttemptLedger {
  /** Names this process in the records, so that a lost attempt's error says whose it was. */
  readonly worker = `${os.hostname()}:${process.pid}`;
  /** A connection of its own, so that a record goes out at once, without a round trip before the listeners. */
  private client: pg.Client | undefined;
  private connecting: Promise<void> | undefined;
  private busy = false;
  private closed = false;

  /** `control`: a pool whose round trips are bounded (query_timeout), used while the own connection is busy or missing. */
  constructor(
    private readonly control: pg.Pool,
    private readonly connection: pg.ClientConfig,
  ) {}

  /**
   * Records a claim before any of its listeners runs. On the ledger's idle connection the statement is
   * written to the socket before this returns (pg writes a query synchronously when the connection is
   * ready), and a process that dies from then on still has it delivered by its kernel: the listeners
   * need not wait for the answer. Otherwise (busy, not connected) the caller must wait for `done`.
   */
  record(xid: string, rows: Stored[], byId: Map<string, ListenerDefinition>): Recording {
    const policy: Record<string, [number, number, number]> = {};
    for (const n of rows) {
      const l = n.listener ? byId.get(n.listener) : undefined;
      if (l && !policy[l.id]) policy[l.id] = [l.delivery.maxAttempts ?? DEFAULT_MAX_ATTEMPTS, l.delivery.backoff?.baseMs ?? 1000, l.delivery.backoff?.maxMs ?? 300_000];
    }
    const sql = recordClaimSql(xid, rows.map((n) => n.id), policy, this.worker);
    const c = this.client;
    if (c && !this.busy && (c as unknown as { readyForQuery?: boolean }).readyForQuery === true) {
      this.busy = true;
      const done = c.query(sql).then(
        () => void (this.busy = false),
        (error) => {
          this.drop(c);
          throw error;
        },
      );
      // The claim may end before anyone awaits this (its transaction lost): its failure must not be unhandled.
      done.catch(() => {});
      return { sent: true, done };
    }
    this.connect();
    const done = this.control.query(sql).then(() => {});
    done.catch(() => {});
    return { sent: false, done };
  }

  private connect(): void {
    if (this.client || this.connecting || this.closed) return;
    const c = new pg.Client(this.connection);
    c.on('error', () => this.drop(c));
    c.on('end', () => this.drop(c));
    this.connecting = c.connect().then(
      () => {
        this.connecting = undefined;
        if (this.closed) return void c.end().catch(() => {});
        this.client = c;
        this.busy = false;
      },
      () => {
        this.connecting = undefined; // the next record tries again; meanwhile the control pool serves
      },
    );
  }

  private drop(c: pg.Client): void {
    if (this.client === c) this.client = undefined;
    destroySocket(c);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.connecting;
    const c = this.client;
    this.client = undefined;
    await c?.end().catch(() => {});
  }
}

/** Puts failed notifications back in the claim's transaction, each with its attempt counted, as claimed. */
export function restoreValues(failed: Failure[]): unknown[] {
  const ns = failed.map((f) => f.n);
  return [
    ns.map((n) => n.id),
    ns.map((n) => n.channel),
    ns.map((n) => n.listener),
    ns.map((n) => n.payload),
    ns.map((n) => n.context),
    ns.map((n) => n.attempts),
    ns.map((n) => n.created_at),
    ns.map((n) => n.order_key),
    ns.map((n) => n.isolated),
    failed.map((f) => describe(f.error)),
    failed.map((f) => retryDelaySeconds(f.n.attempts + 1, f.listener?.delivery.backoff)),
    failed.map(isLastAttempt),
  ];
}

/** Puts rows of an ordered claim back as they were claimed (held back behind a failure of their key). */
export function holdBackValues(ns: Stored[]): unknown[] {
  const field = <K extends keyof Stored>(k: K) => ns.map((n) => n[k] ?? null);
  return [field('id'), field('channel'), field('listener'), field('payload'), field('context'), field('attempts'), field('created_at'), field('order_key'), field('isolated'), field('last_error'), field('last_attempt_at')];
}

export { restoreSql };
