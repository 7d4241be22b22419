/**
 * Public types of pgpubsub.
 *
 * Terminology:
 * - channel: a name (≤ 63 bytes) that notifications are sent on and listeners subscribe to.
 * - notification: one message on a channel: a JSON payload, plus an id when it is durable.
 * - durable: stored in `pubsub.notification` in the sender's transaction and deleted by the worker in
 *   the transaction that processed it; the NOTIFY is only a wake-up. Non-durable: a plain NOTIFY that
 *   carries the payload to every listening worker, at most once.
 * - listener: a decorated method; several may share a channel.
 * - trigger channel: a channel fed by a database trigger on a Prisma model's table; its payload is a
 *   `TriggerPayload`.
 * - worker: the process (`pubsub listen`) or in-process object (`listen()`) that receives
 *   notifications and runs the listeners.
 */
import type { QueryConfig, QueryResult, QueryResultRow } from 'pg';
import type { StandardSchemaV1 } from './standard-schema.js';

export type TriggerOperation = 'INSERT' | 'UPDATE' | 'DELETE';
export type TriggerTiming = 'BEFORE' | 'AFTER';

/** What a trigger listener receives: the row images shaped like the Prisma model type. */
export interface TriggerPayload<T = Record<string, unknown>> {
  op: TriggerOperation;
  when: TriggerTiming;
  /** The Prisma model name, e.g. `Author`. */
  model: string;
  /** The row before the change; null on INSERT. */
  old: T | null;
  /** The row after the change; null on DELETE. */
  new: T | null;
  /**
   * Only on non-durable trigger channels: true when the row images did not fit in a NOTIFY
   * (8000 bytes), so `old`/`new` carry only the primary key fields. Fetch the row if you need more.
   */
  truncated?: boolean;
  /**
   * True when `old`/`new` hold only some fields: the listener's `select`, the primary key that
   * non-durable channels send by default, or the key of a truncated payload.
   */
  partial?: boolean;
  /** Non-durable trigger channels: the writing transaction's context (durable ones have it in ctx.context). */
  context?: unknown;
}

/** The second argument of every listener. */
export interface NotificationContext {
  channel: string;
  /** Id of the stored notification; undefined on non-durable channels. */
  id?: string;
  durable: boolean;
  /**
   * Durable channels only: the worker's transaction. Writes made through it commit together with the
   * removal of the notification, or roll back with it if the attempt fails. Usable only while the
   * attempt runs; queries run one at a time in call order. A query that fails and is swallowed leaves
   * the transaction aborted, which fails the attempt (see README, "Delivery guarantees").
   */
  tx?: Transaction;
  /** How many earlier attempts failed (0 on the first run). */
  attempt: number;
  /** Context stored with the notification, if any (see `setContext()` and `withContext()`). */
  context?: unknown;
  /** Listeners with `timeoutMs`: aborted when the attempt times out. Stop work and return. */
  signal?: AbortSignal;
}

/** The worker's transaction as a listener sees it (`ctx.tx`): a pg-style `query()`, nothing else. */
export interface Transaction {
  query<R extends QueryResultRow = any>(text: string | QueryConfig, values?: unknown[]): Promise<QueryResult<R>>;
}

/**
 * A channel with a payload type, so that `notify()` and `@Listen()` are checked by the compiler: `T`
 * is what listeners receive, `I` what `notify()` takes (they differ only for a schema that transforms).
 */
export interface Channel<T, I = T> {
  readonly name: string;
  /** The class payloads are turned into; undefined means the parameter type of each listener. */
  readonly type?: new (...args: any[]) => T;
  /** A Standard Schema (zod, valibot, arktype…) that checks payloads in `notify()` and in the worker. */
  readonly schema?: StandardSchemaV1<I, T>;
  readonly durable: boolean;
  /** Type-only markers; never set at runtime. */
  readonly __payload?: T;
  readonly __input?: I;
}

export type Listener<T> = (payload: T, ctx: NotificationContext) => unknown;

/** Something `notify()` can send through: a pg Pool, Client or PoolClient, a PrismaClient or a Prisma transaction. */
export type Queryable =
  | { query(text: string, values?: unknown[]): Promise<unknown> }
  | { $queryRawUnsafe(query: string, ...values: unknown[]): Promise<unknown> };

/**
 * Augment this interface to type pgpubsub with your own Prisma client and models (README, "Typed
 * models"), e.g.
 *   declare module 'pgpubsub' { interface Register { client: PrismaClient } }
 * Left empty, model names are plain strings and `ctx.prisma` is untyped.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-interface
export interface Register {}

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string, error?: unknown): void;
}
