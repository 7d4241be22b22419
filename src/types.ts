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
 * - schedule: a method (or a publication) that the workers run once per time slot of an interval or
 *   cron expression, together: each slot is claimed by one worker, recorded in `pubsub.schedule`.
 * - worker: the process (`pubsub listen`) or in-process object (`listen()`) that receives
 *   notifications and runs the listeners.
 */
import type { QueryConfig, QueryResult, QueryResultRow } from 'pg';
import type { StandardSchemaV1 } from './standard-schema.js';

export type TriggerOperation = 'INSERT' | 'UPDATE' | 'DELETE';
export type TriggerTiming = 'BEFORE' | 'AFTER';

/**
 * What a trigger listener receives. `T` is a model name (`TriggerPayload<'Author'>`: the rows are typed
 * from the client registered through `Register`) or a row type (`TriggerPayload<Author>`). `Op` narrows
 * the rows to what the operation writes: `old` is null on INSERT, `new` is null on DELETE. `Row` is
 * the row type when it differs from the model's, e.g. `Partial<…>` for a listener with `select`.
 */
export interface TriggerPayload<T = Record<string, unknown>, Op extends TriggerOperation = TriggerOperation, Row = RowOf<T>> {
  op: Op;
  when: TriggerTiming;
  /** The Prisma model name, e.g. `Author`. */
  model: string;
  /** The row before the change; null on INSERT. */
  old: RowImage<Row, Op, 'INSERT'>;
  /** The row after the change; null on DELETE. */
  new: RowImage<Row, Op, 'DELETE'>;
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

/** A row image: null for the operation that has none (`Absent`), so possibly null when `Op` includes it. */
export type RowImage<Row, Op extends TriggerOperation, Absent extends TriggerOperation> = Op extends Absent ? null : Row;

type RowOf<T> = T extends string ? ModelRow<T> : T;

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
  /**
   * Durable channels: your own PrismaClient (from the worker's `prisma` option), bound to the same
   * transaction as `tx`: its writes commit with the removal of the notification or roll back with
   * the attempt; its `$transaction` is a savepoint inside it. Typed as `Register['client']`. Made on
   * first use (a listener that never reads it pays nothing); usable only while the attempt runs.
   * Throws `pubsub.config` when the worker has no `prisma` option, `pubsub.invalidClient` on a
   * non-durable channel.
   */
  readonly prisma: RegisteredPrismaClient;
  /** How many earlier attempts failed (0 on the first run). */
  attempt: number;
  /** Context stored with the notification, if any (see `setContext()` and `withContext()`). */
  context?: unknown;
  /** Listeners with `timeoutMs`: aborted when the attempt times out. Stop work and return. */
  signal?: AbortSignal;
  /** Scheduled methods (@Every, @Cron): the time slot this run is for (also their first argument). */
  slot?: Date;
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

/** `ctx.prisma` of an app that registered no client: any property, any call. */
export interface LoosePrismaClient {
  [key: string]: any;
}

/** The client type registered in `R` (`R['client']`), else a loose one. */
export type PrismaClientOf<R> = R extends { client: infer C } ? C : LoosePrismaClient;

/** The type of `ctx.prisma`: your `Register['client']`. */
export type RegisteredPrismaClient = PrismaClientOf<Register>;

/**
 * What pgpubsub passes to the `prisma` factory: a `@prisma/adapter-pg` adapter (a Prisma
 * `SqlDriverAdapterFactory`) whose pool is the worker's transaction. Give it to `new PrismaClient({ adapter })`.
 */
export interface PrismaAdapter {
  readonly provider: 'postgres';
  readonly adapterName: string;
  connect(): Promise<any>;
}

/** The worker's `prisma` option: builds your client on the adapter it is given; called a few times per worker, not per notification. */
export type PrismaFactory = (adapter: PrismaAdapter) => Register extends { client: infer C } ? C : object;

export interface Logger {
  info(message: string): void;
  warn(message: string): void;
  error(message: string, error?: unknown): void;
}

/** The registered client, or never; `any` counts as none. */
type RegisteredClient = Register extends { client: infer C } ? (0 extends 1 & C ? never : C) : never;

/** `prisma.author` → what the delegate says of its model, under its symbol key: `{ payload: { name, scalars }, fields }`. */
type ModelTypes<D> = (D extends { [key: symbol]: infer T } ? T : never) extends { types: infer X } ? X : never;

type Simplify<T> = { [K in keyof T]: T[K] } & {};

/**
 * A Prisma client's models, by the schema's model name (not the camelCase delegate, not the
 * `@@map`ped table) → the scalar fields a query returns. Read from the generated client's types, so
 * every `prisma generate` updates it. String keys only: the client's own symbol key describes no model.
 * Only the schema's fields (`fields`): an extended client's computed fields are not in the table.
 */
export type ModelsOf<C> = {
  [K in keyof C & string as ModelTypes<C[K]> extends { payload: { name: infer N extends string } } ? N : never]: ModelTypes<C[K]> extends {
    payload: { scalars: infer S };
    fields: infer F;
  }
    ? Simplify<Pick<S, keyof F & keyof S>>
    : never;
};

type Models = ModelsOf<RegisteredClient>;
/** Whether model names are checked: a client is registered and its models could be read from it. */
type Typed = [RegisteredClient] extends [never] ? false : [keyof Models] extends [never] ? false : true;

/** A model name of the registered Prisma client; any string when none is registered. */
export type ModelName = Typed extends true ? keyof Models & string : string;

/**
 * A row of model `M` as a trigger listener receives it: the scalar fields, typed as Prisma returns
 * them (the worker decodes DateTime to Date, BigInt to bigint, Decimal to Prisma's Decimal, Bytes to
 * Uint8Array, Float's NaN/±Infinity to numbers). `any` when no client is registered.
 */
export type ModelRow<M extends string> = Typed extends true ? (M extends keyof Models ? Models[M] : Record<string, unknown>) : any;

/** A scalar field of model `M` (for `select` and `columns`); any string when no client is registered. */
export type ModelField<M extends string> = Typed extends true ? (M extends keyof Models ? keyof Models[M] & string : string) : string;
