/**
 * `ctx.prisma`: the application's own PrismaClient, bound to the claim transaction of one listener call.
 *
 * How: `@prisma/adapter-pg` (an optional peer dependency) takes a `pg.Pool` and talks to it through
 * `query()` and `connect()` only. We give it a pool of our own, a subclass of the very `Pool` class the
 * adapter imports (resolved from the adapter's own location: its `instanceof` check would otherwise
 * treat our pool as a config object and open real connections), that sends every statement through
 * the listener's `ListenerScope` (transaction.ts): the call's savepoint, the one-at-a-time queue,
 * the refusal once the attempt is over and the detection of a swallowed failure all apply as to
 * `ctx.tx`. The adapter's BEGIN/COMMIT/ROLLBACK become a nested savepoint, so Prisma's `$transaction`
 * (interactive, batch, nested) is a transaction inside the listener's; its checked-out connection is
 * exclusive, like a pool of one, so that concurrent calls never interleave inside another's savepoint.
 *
 * Cost: a PrismaClient takes ~10 ms to construct and connect (its query compiler) and compiles each
 * query shape once, so clients are not made per call. A worker keeps a few **slots** (client + pool),
 * one per listener call that is using `ctx.prisma` at the moment. A call gets a slot's client wrapped
 * by `$extends` with a guard of its own (Prisma's public extension API): every operation checks, when
 * it runs, that its call's attempt is still going, before it reaches the engine, so a leaked
 * `ctx.prisma` (or a lazy PrismaPromise) of an earlier call can never run on a later one. A slot goes
 * back for reuse only when nothing of the call is still running on it; otherwise it is retired.
 * Never one client shared by concurrent calls: Prisma batches same-tick reads across callers.
 */
import { EventEmitter } from 'node:events';
import { createRequire } from 'node:module';
import path from 'node:path';
import { PubSubError } from './errors.js';
import type { ListenerScope } from './transaction.js';
import type { NotificationContext, PrismaFactory } from './types.js';

/** `@prisma/adapter-pg` versions whose use of the pool (query(), connect(), BEGIN/COMMIT/ROLLBACK) was verified; the probe at start checks it anyway. */
export const ADAPTER_RANGE = '^7.10.0';

/** What PrismaPg needs from a pool and what it gives back, as far as we use them. */
interface AdapterFactory {
  connect(): Promise<{ underlyingDriver?(): unknown; dispose(): Promise<void> }>;
}
type PrismaPgClass = new (pool: object, options?: { schema?: string }) => AdapterFactory;
type PoolClass = new (config: object) => object;
/** The methods of a PrismaClient we rely on. */
interface Client {
  $extends(extension: object): unknown;
  $transaction(fn: (tx: unknown) => Promise<unknown>): Promise<unknown>;
  $executeRawUnsafe(sql: string): Promise<unknown>;
  $disconnect(): Promise<void>;
}

/** A statement's destination: the listener call's scope while it runs, or a recorder (the probe). */
interface Sink {
  readonly usable: boolean;
  readonly what: string;
  query(text: string | object, values?: unknown[]): Promise<unknown>;
  nested(): Promise<{ end(keep: boolean): Promise<void> }>;
}

const EMPTY = { command: '', rowCount: 0, rows: [], fields: [] };
/** Statements that would end or replace the worker's transaction; only the adapter's own BEGIN/COMMIT/ROLLBACK are translated. */
const CONTROL = /^(begin|start\s+transaction|commit|end|rollback(?!\s+to\b)|abort|prepare\s+transaction)\b/i;
const LEADING_COMMENTS = /^(\s+|--[^\n]*(\n|$)|\/\*[\s\S]*?\*\/)*/;

const leaked = (what: string) =>
  new PubSubError(
    'pubsub.invalidClient',
    `ctx.prisma of ${what} was used after its attempt ended (it returned, failed or timed out); its transaction is no longer yours. Await every Prisma call inside the listener.`,
  );

/**
 * The pool class handed to PrismaPg: `Base` is the adapter's own `pg.Pool`. No connection of its own:
 * statements go to `sink`, the current listener call (none: refused).
 */
function claimPoolClass(Base: PoolClass) {
  return class ClaimPool extends Base {
    sink: Sink | undefined;
    /** Transactions are exclusive, like a pool of one connection: plain queries wait for the open one. */
    private turn: Promise<void> = Promise.resolve();
    /** A connection (an open Prisma transaction) is checked out. */
    busy = false;

    constructor() {
      super({ max: 1 });
    }

    private target(): Sink {
      if (!this.sink?.usable) throw leaked(this.sink?.what ?? 'an earlier listener call');
      return this.sink;
    }

    /** Waits for the open transaction, if any; resolves to the function that lets the next one in. */
    private async take(): Promise<() => void> {
      let done!: () => void;
      const previous = this.turn;
      this.turn = new Promise((resolve) => (done = resolve));
      await previous;
      return done;
    }

    async query(config: string | { text: string }, values?: unknown[]): Promise<unknown> {
      const done = await this.take();
      try {
        return await send(this.target(), config, values, false);
      } finally {
        done();
      }
    }

    async connect(): Promise<object> {
      const done = await this.take();
      let sink: Sink;
      try {
        sink = this.target(); // bound for good: this connection never serves another call
      } catch (error) {
        done();
        throw error;
      }
      this.busy = true;
      let tx: { end(keep: boolean): Promise<void> } | undefined;
      let released = false;
      // PrismaPg listens for 'error' on it, as on a pg.PoolClient.
      return Object.assign(new EventEmitter(), {
        query: async (config: string | { text: string }, values?: unknown[]) => {
          if (released) throw new PubSubError('pubsub.invalidClient', `${sink.what}: ctx.prisma used a transaction after it ended.`);
          const verb = statement(config).toUpperCase();
          if (verb === 'BEGIN') {
            if (tx) throw new PubSubError('pubsub.invalidClient', `${sink.what}: BEGIN inside an open ctx.prisma transaction.`);
            if (!sink.usable) throw leaked(sink.what);
            tx = await sink.nested();
            return EMPTY;
          }
          if (verb === 'COMMIT' || verb === 'ROLLBACK') {
            if (!tx) throw new PubSubError('pubsub.invalidClient', `${sink.what}: ${verb} without an open ctx.prisma transaction.`);
            if (!sink.usable) throw leaked(sink.what);
            await tx.end(verb === 'COMMIT');
            tx = undefined;
            return EMPTY;
          }
          return send(sink, config, values, true);
        },
        release: () => {
          if (released) return;
          released = true;
          this.busy = false;
          // Released without COMMIT/ROLLBACK (a failed COMMIT, a failed start): undo it. Once the
          // attempt is over the call's own rollback covers it.
          const open = tx;
          tx = undefined;
          const undone = open && sink.usable ? open.end(false).catch(() => {}) : Promise.resolve();
          void undone.then(done);
        },
      });
    }

    /** PrismaPg ends a pool it was given only when told to; the worker's connection is never ours to end. */
    async end(): Promise<void> {}
  };
}
type ClaimPool = InstanceType<ReturnType<typeof claimPoolClass>>;

/** The statement's text without leading comments and blanks. */
function statement(config: string | { text: string }): string {
  const text = typeof config === 'string' ? config : config.text;
  return text.replace(LEADING_COMMENTS, '').trimEnd().replace(/;$/, '');
}

function send(sink: Sink, config: string | { text: string }, values: unknown[] | undefined, inTransaction: boolean): Promise<unknown> {
  const text = statement(config);
  const verb = CONTROL.exec(text)?.[1];
  if (verb) {
    return Promise.reject(
      new PubSubError(
        'pubsub.invalidClient',
        `${sink.what}: ctx.prisma runs inside the worker's transaction, so \`${verb.toUpperCase()}\` is refused${inTransaction ? ' inside ctx.prisma.$transaction' : ''}: it would end the transaction that also removes the notification. Use ctx.prisma.$transaction(…) for a transaction of your own (a savepoint).`,
      ),
    );
  }
  if (!sink.usable) return Promise.reject(leaked(sink.what));
  return sink.query(config as string, values);
}

interface Slot {
  pool: ClaimPool;
  client: Client;
  /** Operations of the current call that have started and not yet settled. */
  running: number;
}

/** The worker's side of `ctx.prisma`: the adapter and Pool class it needs, checked at start, and the slots. */
export class PrismaBinding {
  private readonly free: Slot[] = [];
  private readonly all = new Set<Slot>();
  private closed = false;

  private constructor(
    private readonly factory: PrismaFactory,
    private readonly PrismaPg: PrismaPgClass,
    private readonly Pool: ReturnType<typeof claimPoolClass>,
    private readonly schema: string | undefined,
  ) {}

  /**
   * Resolves `@prisma/adapter-pg` and the `pg` it uses, builds one client with `factory` and checks,
   * without a database, that the adapter takes our pool and sends a `$transaction`'s BEGIN and COMMIT
   * through a checked-out connection and a plain statement through `query()`: what the binding relies
   * on. Throws `pubsub.config` naming what is wrong.
   */
  static async create(factory: unknown, options: { schema?: string; from?: string[] } = {}): Promise<PrismaBinding> {
    if (typeof factory !== 'function') {
      throw new PubSubError('pubsub.config', `listen(): prisma must be a function that builds your client, such as \`(adapter) => new PrismaClient({ adapter })\`; got ${describeValue(factory)}.`);
    }
    const { PrismaPg, Pool } = resolveAdapter(options.from ?? [import.meta.url, path.join(process.cwd(), 'package.json')]);
    const binding = new PrismaBinding(factory as PrismaFactory, PrismaPg, claimPoolClass(Pool), options.schema);
    await binding.probe();
    return binding;
  }

  /** Builds a slot: the user's client on a pool of ours. */
  private slot(): Slot {
    const pool = new this.Pool();
    const adapter = new this.PrismaPg(pool, this.schema ? { schema: this.schema } : undefined);
    let client: unknown;
    try {
      client = this.factory(adapter as never);
    } catch (cause) {
      throw new PubSubError('pubsub.config', `The prisma factory threw: ${(cause as Error)?.message ?? String(cause)}`, { cause });
    }
    if (!isClient(client)) {
      throw new PubSubError(
        'pubsub.config',
        `The prisma factory must return a PrismaClient built on the adapter it is given, such as \`(adapter) => new PrismaClient({ adapter })\`; it returned ${describeValue(client)}${isThenable(client) ? ' (a promise: build the client synchronously)' : ''}.`,
      );
    }
    const slot: Slot = { pool, client, running: 0 };
    this.all.add(slot);
    return slot;
  }

  private async probe(): Promise<void> {
    const slot = this.slot();
    const seen: string[] = [];
    const recorder: Sink = {
      usable: true,
      what: 'the prisma check at worker start',
      query: async (config) => {
        seen.push(statement(config as string));
        return EMPTY;
      },
      nested: async () => {
        seen.push('BEGIN');
        return { end: async (keep) => void seen.push(keep ? 'COMMIT' : 'ROLLBACK') };
      },
    };
    slot.pool.sink = recorder;
    const fail = (why: string, cause?: unknown) =>
      new PubSubError(
        'pubsub.config',
        `ctx.prisma cannot be bound to the worker's transaction: ${why}. pgpubsub supports @prisma/adapter-pg ${ADAPTER_RANGE} (with the PrismaClient of the same Prisma version).`,
        cause === undefined ? undefined : { cause },
      );
    try {
      const adapter = await new this.PrismaPg(slot.pool).connect();
      const driver = adapter.underlyingDriver?.();
      await adapter.dispose();
      if (driver !== slot.pool) throw fail('@prisma/adapter-pg did not accept the pool it was given (a different copy of `pg`?)');
      await withTimeout(slot.client.$transaction(async () => {}), 10_000, 'a probe transaction');
      await withTimeout(slot.client.$executeRawUnsafe('select 1'), 10_000, 'a probe statement');
    } catch (error) {
      this.retire(slot);
      throw error instanceof PubSubError ? error : fail(`a check without the database failed (${(error as Error)?.message ?? String(error)})`, error);
    }
    slot.pool.sink = undefined;
    const expected = ['BEGIN', 'COMMIT', 'select 1'];
    if (seen.join('\n') !== expected.join('\n')) {
      this.retire(slot);
      throw fail(`the client sent ${JSON.stringify(seen)} where ${JSON.stringify(expected)} was expected`);
    }
    this.free.push(slot);
  }

  /**
   * `ctx.prisma` for one listener call: a slot's client, bound to `scope` until its attempt ends,
   * behind a guard of this call's own.
   */
  client(scope: ListenerScope): unknown {
    if (this.closed) throw leaked(scope.what);
    const slot = this.free.pop() ?? this.slot();
    slot.pool.sink = scope;
    let active = true;
    scope.onClose(() => {
      active = false;
      this.release(slot);
    });
    /** Counts `work` as running on the slot, or refuses it once the attempt is over. */
    const run = <T>(work: () => Promise<T>): Promise<T> => {
      if (!active) return Promise.reject(leaked(scope.what));
      slot.running++;
      let started: Promise<T>;
      try {
        started = work(); // now, not a tick later: a batch $transaction runs its operations in lock step
      } catch (error) {
        slot.running--;
        return Promise.reject(error);
      }
      return started.finally(() => slot.running--);
    };
    const guard = (client: Client): unknown =>
      new Proxy(client, {
        get: (target, key) => {
          // Starts a transaction (a connection of the pool) before any operation runs: guarded here.
          if (key === '$transaction') return (...args: unknown[]) => run(() => (target.$transaction as (...a: unknown[]) => Promise<unknown>)(...args));
          if (key === '$extends') return (...args: unknown[]) => guard((target.$extends as (...a: unknown[]) => Client)(...args));
          // The client is shared by the calls that use this slot in turn: the worker connects and disconnects it.
          if (key === '$connect' || key === '$disconnect') return async () => {};
          const value: unknown = Reflect.get(target, key);
          return typeof value === 'function' ? value.bind(target) : value;
        },
      });
    return guard(
      slot.client.$extends({
        name: 'pgpubsub.claim',
        // Runs when the operation runs (PrismaPromises are lazy), before it reaches the engine.
        query: { $allOperations: ({ args, query }: { args: unknown; query: (args: unknown) => Promise<unknown> }) => run(() => query(args)) },
      }) as Client,
    );
  }

  /** The call's attempt is over: its slot is reused when nothing of the call still runs on it, else retired. */
  private release(slot: Slot): void {
    slot.pool.sink = undefined;
    if (!this.closed && slot.running === 0 && !slot.pool.busy) this.free.push(slot);
    else this.retire(slot);
  }

  /** A retired slot is never bound again; its client is disconnected (it never ends the worker's connection). */
  private retire(slot: Slot): void {
    slot.pool.sink = undefined;
    this.all.delete(slot);
    void slot.client.$disconnect().catch(() => {});
  }

  /** Disconnects every client (the worker is closing). */
  async close(): Promise<void> {
    this.closed = true;
    this.free.length = 0;
    await Promise.all([...this.all].map((slot) => slot.client.$disconnect().catch(() => {})));
    this.all.clear();
  }
}

/** `@prisma/adapter-pg`, from the first place that has it, and the `pg.Pool` that this copy of it imports. */
function resolveAdapter(from: string[]): { PrismaPg: PrismaPgClass; Pool: PoolClass } {
  for (const base of from) {
    let file: string;
    try {
      file = createRequire(base).resolve('@prisma/adapter-pg');
    } catch {
      continue;
    }
    const adapterRequire = createRequire(file);
    const { PrismaPg } = adapterRequire(file) as { PrismaPg?: PrismaPgClass };
    const { Pool } = adapterRequire('pg') as { Pool?: PoolClass };
    if (typeof PrismaPg !== 'function' || typeof Pool !== 'function') {
      throw new PubSubError('pubsub.config', `${file} does not export PrismaPg, or its \`pg\` has no Pool: install @prisma/adapter-pg ${ADAPTER_RANGE}.`);
    }
    return { PrismaPg, Pool };
  }
  throw new PubSubError('pubsub.config', `ctx.prisma needs @prisma/adapter-pg, which is not installed: \`npm install @prisma/adapter-pg\` (${ADAPTER_RANGE}, the version of your @prisma/client).`);
}

function isClient(value: unknown): value is Client {
  const c = value as Partial<Client> | null;
  return !!c && typeof c === 'object' && ['$extends', '$transaction', '$executeRawUnsafe', '$disconnect'].every((m) => typeof (c as Record<string, unknown>)[m] === 'function');
}

function isThenable(value: unknown): boolean {
  return !!value && typeof (value as { then?: unknown }).then === 'function';
}

function describeValue(value: unknown): string {
  if (value === null || value === undefined) return String(value);
  if (typeof value === 'function') return `a function (${value.name || 'anonymous'})`;
  if (typeof value === 'object') return `an object (${value.constructor?.name ?? 'no prototype'})`;
  return `a ${typeof value}`;
}

async function withTimeout<T>(work: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`${what} did not finish within ${ms} ms`)), ms)));
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Adds `ctx.prisma` to a listener's context: a lazy getter (a listener that never reads it pays
 * nothing), not enumerable (so `{ ...ctx }` and logging do not build a client).
 */
export function withPrisma(ctx: Omit<NotificationContext, 'prisma'>, get: () => unknown): NotificationContext {
  let value: unknown;
  let made = false;
  return Object.defineProperty(ctx, 'prisma', {
    enumerable: false,
    configurable: true,
    get() {
      if (!made) {
        value = get();
        made = true;
      }
      return value;
    },
  }) as NotificationContext;
}

/** `ctx.prisma` of a worker started without the `prisma` option. */
export function noPrisma(): never {
  throw new PubSubError(
    'pubsub.config',
    'ctx.prisma needs the worker\'s prisma option: `listen({ prisma: (adapter) => new PrismaClient({ adapter }) })`, or `"prisma": "dist/prisma.js"` in pubsub.config.json (`pubsub listen --prisma dist/prisma.js`), a module exporting that function.',
  );
}

/** `ctx.prisma` on a non-durable channel, which has no transaction. */
export function nonDurablePrisma(channel: string): never {
  throw new PubSubError(
    'pubsub.invalidClient',
    `ctx.prisma exists only for durable channels; "${channel}" is non-durable, so its listeners run outside any transaction. Use your own PrismaClient there.`,
  );
}
