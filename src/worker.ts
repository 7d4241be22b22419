/**
 * The worker: one LISTEN connection for wake-ups and non-durable payloads, and a drain loop that
 * claims durable notifications with FOR UPDATE SKIP LOCKED, runs their listener inside the claiming
 * transaction and deletes them in it. Each stored notification belongs to one listener, so listeners
 * succeed, fail, retry and dead-letter independently. A failure rolls back only that notification's
 * work and is recorded for a retry with backoff; nothing else re-runs; the worker goes on.
 */
import createDebug from 'debug';
import pg from 'pg';
import { requireDatabaseUrl } from './config.js';
import { createListenConnection, type ListenConnection } from './connection.js';
import { PubSubError } from './errors.js';
import { ENVELOPE_MARK } from './notify.js';
import { decodePayload, decodeTriggerPayload, type ModelShape, type WireTriggerPayload } from './payload.js';
import { getRegistry, type ChannelDefinition, type ListenerDefinition, type Registry } from './registry.js';
import {
  claimSql,
  failSql,
  gateClearSql,
  restoreSql,
  sleepSql,
  wakeSql,
  modelsSql,
  schemaVersionSql,
  setKeysSql,
  subscriptionsOfSql,
  triggerKey,
  unkeyedSql,
  LIBRARY_SCHEMA_VERSION,
} from './sql.js';
import type { Logger, NotificationContext } from './types.js';

const debug = createDebug('pubsub:worker');

export interface WorkerOptions {
  /** Channels to serve; default every registered channel. */
  channels?: string[];
  /** Default DATABASE_URL. */
  databaseUrl?: string;
  /**
   * Session connection for LISTEN, when `databaseUrl` goes through a transaction pooler such as
   * PgBouncer. @defaultValue databaseUrl
   */
  listenUrl?: string;
  /** Pool the drain loop takes its connections from; default a pool of 3 on `databaseUrl`. */
  pool?: pg.Pool;
  /**
   * Notifications claimed per listener per transaction. Claims grow up to 5× while full batches
   * finish in under 25 ms, and fall back when one takes over 100 ms. @defaultValue 100
   */
  batchSize?: number;
  /**
   * Claiming transactions run at once, each on its own connection. 1 is fastest for quick listeners
   * (two loops would step over each other's locked rows); raise it for listeners that wait on I/O.
   * @defaultValue 1
   */
  concurrency?: number;
  /** How often to look for stored work without a wake-up (retries; the only way without LISTEN). @defaultValue 2000 */
  pollIntervalMs?: number;
  /** false: never LISTEN, only poll (for PgBouncer transaction pooling without a session URL). @defaultValue true */
  listen?: boolean;
  /** Serve only notifications whose context contains these fields, e.g. `{ tenant: 'acme' }`. */
  context?: Record<string, unknown>;
  /** Builds the object whose method is called; default `new Class()` once per class. */
  instance?: (cls: Function) => object;
  /** Default: warnings and errors to the console. */
  logger?: Logger;
  registry?: Registry;
}

export interface Worker {
  readonly channels: string[];
  /** Stops listening, lets running listeners finish, then releases every connection. */
  close(): Promise<void>;
}

interface Stored {
  id: string;
  channel: string;
  listener: string | null;
  payload: unknown;
  context: unknown;
  attempts: number;
  /** As text: only needed to put a failed row back, so not worth parsing into a Date. */
  created_at: string;
  order_key: string | null;
}

/** A way of claiming: plain listeners together; ordered, batch and timed listeners each alone. */
interface Unit {
  kind: 'plain' | 'ordered' | 'batch' | 'timed';
  listeners: ListenerDefinition[];
  limit: number;
  /** Per listener, the highest id claimed in the current drain round (see ClaimTarget.after). */
  after: Map<string, string>;
  /** Plain units: claims grow to `limit * scale` while full batches finish quickly (see processUnit). */
  scale: number;
  /** Batch units: the last claim was short and we already waited for it to fill. */
  waited?: boolean;
}

const DEFAULT_MAX_ATTEMPTS = 10;
/** Plain claims grow up to this multiple of batchSize. */
const MAX_SCALE = 5;
const consoleLogger: Logger = {
  info: () => {},
  warn: (m) => console.warn(`pubsub: ${m}`),
  error: (m, e) => console.error(`pubsub: ${m}`, e ?? ''),
};

/** Seconds before the next attempt after `failures`: exponential, capped, half of it random. */
export function retryDelaySeconds(failures: number, backoff: { baseMs?: number; maxMs?: number } = {}): number {
  const cap = Math.min(backoff.maxMs ?? 300_000, (backoff.baseMs ?? 1000) * 2 ** (failures - 1));
  return (cap / 2 + (Math.random() * cap) / 2) / 1000;
}

function describe(error: unknown): string {
  const reason = error instanceof Error && error.cause !== undefined ? error.cause : error;
  return reason instanceof Error ? (reason.stack ?? reason.message) : String(reason);
}

class TimeoutError extends Error {
  constructor(listener: string, ms: number) {
    super(`${listener} timed out after ${ms} ms`);
  }
}

function selectChannels(registry: Registry, names?: string[]): ChannelDefinition[] {
  const all = registry.list();
  if (all.length === 0) {
    throw new PubSubError(
      'pubsub.noListenersLoaded',
      'No listeners are registered. Load the compiled modules that declare them first (`--require dist/listeners.js`, or "require" in pubsub.config.json).',
    );
  }
  if (!names?.length) return all;
  return names.map((name) => {
    const def = registry.get(name);
    if (!def) {
      throw new PubSubError('pubsub.unknownChannel', `No listener is registered for channel "${name}". Registered: ${all.map((c) => c.name).join(', ')}.`);
    }
    return def;
  });
}

function contains(context: unknown, filter: Record<string, unknown> | undefined): boolean {
  if (!filter) return true;
  if (!context || typeof context !== 'object') return false;
  return Object.entries(filter).every(([k, v]) => JSON.stringify((context as Record<string, unknown>)[k]) === JSON.stringify(v));
}

/**
 * Starts a worker for the registered listeners.
 *
 * @example
 * const worker = await listen({ channels: ['post_reads_per_date'] });
 * process.on('SIGTERM', () => worker.close());
 */
export async function listen(options: WorkerOptions = {}): Promise<Worker> {
  const registry = options.registry ?? getRegistry();
  const logger = options.logger ?? consoleLogger;
  const { batchSize = 100, pollIntervalMs = 2000, concurrency = 1 } = options;
  const channels = selectChannels(registry, options.channels);
  const databaseUrl = requireDatabaseUrl(options.databaseUrl);
  const pool = options.pool ?? new pg.Pool({ connectionString: databaseUrl, max: concurrency + 2, application_name: 'pubsub:worker' });
  const ownPool = !options.pool;
  // An idle pooled connection that the server closes emits 'error' on the pool; without a listener that kills the process.
  if (ownPool) pool.on('error', (error) => logger.warn(`an idle database connection was closed (${error.message}); it will be replaced`));
  const contextFilter = options.context ? JSON.stringify(options.context) : null;

  const durable = channels.filter((c) => c.durable);
  const byId = new Map(durable.flatMap((c) => c.listeners.map((l) => [l.id, l] as const)));
  const triggerKeys = new Map<ListenerDefinition, string>();
  for (const c of channels) for (const l of c.listeners) if (l.trigger) triggerKeys.set(l, triggerKey(l.trigger, c.name, c.durable));

  const plain: ListenerDefinition[] = [];
  const units: Unit[] = [];
  for (const l of byId.values()) {
    const d = l.delivery;
    if (d.ordered) units.push({ kind: 'ordered', listeners: [l], limit: batchSize, after: new Map(), scale: 1 });
    else if (d.batch) units.push({ kind: 'batch', listeners: [l], limit: d.batch.size, after: new Map(), scale: 1 });
    else if (d.timeoutMs) units.push({ kind: 'timed', listeners: [l], limit: 1, after: new Map(), scale: 1 });
    else plain.push(l);
  }
  units.unshift({ kind: 'plain', listeners: plain, limit: batchSize, after: new Map(), scale: 1 });

  let models = new Map<string, ModelShape>();
  const fail = async (error: PubSubError) => {
    if (ownPool) await pool.end();
    throw error;
  };
  if (durable.length) {
    const version = await pool
      .query<{ version: number }>(schemaVersionSql)
      .then((r) => r.rows[0]!.version)
      .catch((cause) => fail(new PubSubError('pubsub.config', `Cannot reach the database: ${(cause as Error).message}`, { cause })));
    if (version < LIBRARY_SCHEMA_VERSION) {
      await fail(
        new PubSubError(
          'pubsub.schemaMissing',
          version === 0
            ? 'The pubsub tables are missing from this database. Run `pubsub make-migration`, then apply it with `prisma migrate deploy` (or `pubsub migrate`).'
            : `The pubsub tables are at version ${version}; this pgpubsub needs version ${LIBRARY_SCHEMA_VERSION}. Run \`pubsub make-migration\` and apply the migration it writes; notifications already stored are kept.`,
        ),
      );
    }
    const subscribed = new Set((await pool.query(subscriptionsOfSql, [[...byId.keys()]])).rows.map((r) => `${r.channel}\n${r.listener}`));
    for (const l of byId.values()) {
      if (!subscribed.has(`${l.channel}\n${l.id}`)) {
        logger.warn(`${l.id} is not subscribed to "${l.channel}" in this database, so nothing is stored for it. Run \`pubsub make-migration\` and apply the migration.`);
      }
    }
    models = new Map((await pool.query(modelsSql)).rows.map((r) => [r.name, r]));
  }

  const instances = new Map<Function, object>();
  function receiver(l: ListenerDefinition): Record<string | symbol, Function> {
    if (typeof l.target === 'function') return l.target as never; // static method
    const cls = l.target.constructor;
    let obj = instances.get(cls);
    if (!obj) instances.set(cls, (obj = options.instance ? options.instance(cls) : new (cls as new () => object)()));
    return obj as never;
  }

  const warned = new Set<string>();
  /** The listener's argument, or undefined when this notification is not for it (trigger key or operation). */
  function argument(l: ListenerDefinition, payload: unknown, shared = true): { value: unknown } | undefined {
    // A payload that only this listener sees (its own row) needs no copy to protect the others.
    const own = <T>(value: T): T => (shared ? structuredClone(value) : value);
    if (!l.trigger) return { value: decodePayload(own(payload), l.payloadType) };
    const wire = payload as WireTriggerPayload;
    if (wire?.trigger !== triggerKeys.get(l) || !l.trigger.events.includes(wire.op)) return undefined;
    return {
      value: decodeTriggerPayload(own(wire), models.get(wire.model), (m) => {
        if (!warned.has(m)) logger.warn(m);
        warned.add(m);
      }),
    };
  }

  async function call(l: ListenerDefinition, arg: unknown, ctx: NotificationContext): Promise<void> {
    try {
      await receiver(l)[l.method]!(arg, ctx);
    } catch (error) {
      throw new Error(`${l.id} failed`, { cause: error });
    }
  }

  /** Runs `fn` with ctx.signal, failing with TimeoutError after `ms`. */
  async function withTimeout(l: ListenerDefinition, ctx: NotificationContext, fn: () => Promise<void>): Promise<void> {
    const ms = l.delivery.timeoutMs;
    if (!ms) return fn();
    const controller = new AbortController();
    ctx.signal = controller.signal;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new TimeoutError(l.id, ms);
        controller.abort(error);
        reject(error);
      }, ms);
    });
    try {
      await Promise.race([fn(), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * One claimed batch in one transaction. A listener that uses `ctx.tx` gets a savepoint, taken when
   * it first touches `tx`, so its failure rolls back only its own writes; listeners that never touch
   * `tx` cost no extra round trip. Returns how many notifications were claimed.
   */
  async function processUnit(unit: Unit): Promise<number> {
    const client = await pool.connect();
    let broken: Error | undefined;
    // A checked-out client has no pool listener: an error (the server ending it, a timeout's terminate) would crash us.
    const onError = (error: Error) => (broken ??= error);
    client.on('error', onError);
    try {
      if (unit.kind === 'ordered') await assignKeys(client, unit.listeners[0]!);
      const started = performance.now();
      const limit = unit.limit * unit.scale;
      const rows = await claim(client, unit, limit); // also begins the transaction
      const waitMs = unit.listeners[0]?.delivery.batch?.waitMs;
      if (unit.kind === 'batch' && waitMs && rows.length > 0 && rows.length < unit.limit && !unit.waited) {
        // Let a short batch fill up for waitMs, once, without holding the claim meanwhile.
        unit.waited = true;
        unit.after.clear(); // the rows go back: the next claim must see them again
        await client.query('rollback');
        await sleep(waitMs);
        return -1;
      }
      unit.waited = false;
      let succeeded = 0;
      const failed: Array<{ n: Stored; error: unknown; listener?: ListenerDefinition }> = [];
      let terminated = false;
      /** Runs `fn` as one unit of work that succeeds or fails alone, with its own `ctx`. */
      const attempt = async (ns: Stored[], listener: ListenerDefinition | undefined, fn: (ctx: NotificationContext) => Promise<void>) => {
        const n = ns[0]!;
        const state = { active: true, savepoint: false };
        const ctx: NotificationContext = {
          channel: n.channel,
          id: n.id,
          durable: true,
          attempt: Math.min(...ns.map((x) => x.attempts)),
          ...(n.context != null && { context: n.context }),
          get tx() {
            if (!state.active) throw new PubSubError('pubsub.invalidClient', `ctx.tx of notification ${n.id} was used after its listener returned; its transaction is over.`);
            if (!state.savepoint) {
              state.savepoint = true;
              // Queued before any query the listener can send through `tx`, so no await is needed.
              client.query('savepoint pubsub_listener').catch(() => {});
            }
            return client;
          },
        };
        try {
          await (listener ? withTimeout(listener, ctx, () => fn(ctx)) : fn(ctx));
          state.active = false;
          if (state.savepoint) client.query('release savepoint pubsub_listener').catch(() => {});
          succeeded += ns.length;
        } catch (error) {
          state.active = false;
          if (error instanceof TimeoutError && state.savepoint) {
            // The listener may still be using the connection: end its transaction from outside.
            terminated = true;
            await pool.query('select pg_terminate_backend($1)', [(client as unknown as { processID: number }).processID]).catch(() => {});
          } else if (state.savepoint) {
            await client.query('rollback to savepoint pubsub_listener');
          }
          for (const x of ns) failed.push({ n: x, error, ...(listener && { listener }) });
        }
      };

      if (unit.kind === 'batch') {
        const l = unit.listeners[0]!;
        if (rows.length) await attempt(rows, l, (ctx) => call(l, rows.map((n) => argument(l, n.payload, false)?.value), ctx));
      } else {
        for (const n of rows) {
          const listeners = n.listener ? [byId.get(n.listener)!] : registry.get(n.channel)!.listeners.filter((l) => byId.has(l.id));
          await attempt([n], n.listener ? listeners[0] : undefined, async (ctx) => {
            for (const l of listeners) {
              const arg = argument(l, n.payload, listeners.length > 1);
              if (arg) await call(l, l.delivery.batch ? [arg.value] : arg.value, ctx);
            }
          });
          if (terminated) break;
        }
      }

      if (terminated) {
        // Our transaction is gone, and with it the claim: the rows are back. Record the failures from another connection.
        broken = new Error('terminated after a listener timeout');
        await recordFailures(pool, failed, false);
        return rows.length;
      }
      await recordFailures(client, failed, true);
      await client.query('commit');
      if (unit.kind === 'plain') {
        // Quick listeners get bigger claims (fewer commits), slow ones keep short transactions.
        const ms = performance.now() - started;
        if (rows.length >= limit && ms < 25) unit.scale = Math.min(MAX_SCALE, unit.scale * 2);
        else if (ms > 100) unit.scale = 1;
      }
      debug('%s: processed %d, failed %d', unit.kind, succeeded, failed.length);
      for (const { n, error, listener } of failed) {
        const last = n.attempts + 1 >= (listener?.delivery.maxAttempts ?? DEFAULT_MAX_ATTEMPTS);
        logger.error(
          `${(error as Error).message} on channel "${n.channel}", notification ${n.id} (attempt ${n.attempts + 1}); ${last ? 'dead-lettered: see `pubsub dead list`' : 'kept for a retry'}:`,
          error instanceof Error && error.cause !== undefined ? error.cause : error,
        );
      }
      return rows.length;
    } catch (error) {
      broken ??= error as Error;
      await client.query('rollback').catch(() => {});
      throw error;
    } finally {
      client.off('error', onError);
      client.release(broken);
    }
  }

  /** Failed attempts: put the claimed rows back (`restore`) or update rows a lost transaction already put back. */
  async function recordFailures(db: pg.Pool | pg.PoolClient, failed: Array<{ n: Stored; error: unknown; listener?: ListenerDefinition }>, restore: boolean) {
    if (!failed.length) return;
    const errors = failed.map(({ error }) => describe(error));
    const delays = failed.map(({ n, listener }) => retryDelaySeconds(n.attempts + 1, listener?.delivery.backoff));
    const dead = failed.map(({ n, listener }) => n.attempts + 1 >= (listener?.delivery.maxAttempts ?? DEFAULT_MAX_ATTEMPTS));
    const ns = failed.map((f) => f.n);
    if (!restore) return void (await db.query(failSql, [ns.map((n) => n.id), errors, delays, dead]));
    await db.query(restoreSql, [
      ns.map((n) => n.id),
      ns.map((n) => n.channel),
      ns.map((n) => n.listener),
      ns.map((n) => JSON.stringify(n.payload)),
      ns.map((n) => (n.context == null ? null : JSON.stringify(n.context))),
      ns.map((n) => n.attempts),
      ns.map((n) => n.created_at),
      ns.map((n) => n.order_key),
      errors,
      delays,
      dead,
    ]);
  }

  const byIdOrder = (a: Stored, b: Stored) => a.id.length - b.id.length || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

  async function claim(client: pg.PoolClient, unit: Unit, limit: number): Promise<Stored[]> {
    const sql = claimSql({
      listeners: unit.listeners.map((l) => l.id),
      unassigned: unit.kind === 'plain' ? durable.map((c) => c.name) : [],
      limit,
      context: contextFilter,
      ordered: unit.kind === 'ordered',
      after: unit.after,
    });
    // Two statements in one simple-protocol query: pg returns one result per statement.
    const results = (await client.query(sql)) as unknown as pg.QueryResult<Stored>[];
    // DELETE … RETURNING gives no order: process in id (write) order.
    const rows = results[1]!.rows.sort(byIdOrder);
    for (const n of rows) if (n.listener) unit.after.set(n.listener, n.id); // ascending, so the last one wins
    return rows;
  }

  /** Gives newly stored notifications of an ordered listener their key, in id order, one worker at a time. */
  async function assignKeys(client: pg.PoolClient, l: ListenerDefinition): Promise<void> {
    await client.query('begin');
    try {
      const { rows } = await client.query<{ locked: boolean }>('select pg_try_advisory_xact_lock(hashtext($1)) as locked', [`pubsub.order:${l.id}`]);
      if (rows[0]!.locked) {
        const waiting = (await client.query<{ id: string; payload: unknown }>(unkeyedSql, [l.id])).rows;
        if (waiting.length) {
          const keys = waiting.map((n) => {
            try {
              return l.delivery.orderKey ? String(l.delivery.orderKey(argument(l, n.payload)?.value)) : '';
            } catch (error) {
              logger.error(`${l.id}: orderKey failed for notification ${n.id}; it is ordered under the key "!error":`, error);
              return '!error';
            }
          });
          await client.query(setKeysSql, [waiting.map((n) => n.id), keys]);
        }
      }
      await client.query('commit');
    } catch (error) {
      await client.query('rollback').catch(() => {});
      throw error;
    }
  }

  let closing = false;
  let dirty = false;
  let draining: Promise<void> | undefined;
  const sleepers = new Set<() => void>();
  function sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        sleepers.delete(done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      sleepers.add(done);
    });
  }

  function kick(): void {
    if (closing || durable.length === 0) return;
    dirty = true;
    draining ??= drain().finally(() => (draining = undefined));
  }

  /** One claim loop: every unit until each comes back short. `concurrency` of them run side by side. Returns how many it claimed. */
  async function drainUnits(): Promise<number> {
    let claimed = 0;
    for (const unit of units) {
      try {
        for (let n = unit.limit; !closing && (n >= unit.limit || n === -1); ) {
          n = await processUnit(unit);
          claimed += Math.max(0, n);
        }
      } finally {
        // The round is over: the next one scans each listener's range from its start again, which
        // picks up rows written with lower ids after we passed them (late commits, retries).
        unit.after.clear();
      }
    }
    return claimed;
  }

  // Asleep = holding the sleep locks of pubsub.wake() on the LISTEN session, so that writers NOTIFY.
  // Awake workers are not notified: they look at the table again before falling asleep (see sql.ts).
  const durableNames = durable.map((c) => c.name);
  let asleep = false;
  /**
   * True once this connection's test NOTIFY came back. Until then the worker never takes its sleep
   * lock: through a transaction pooler that session lock would land on a shared server connection.
   */
  let listenWorks = false;
  let sleepRetry: NodeJS.Timeout | undefined;
  /**
   * Next wait before trying the gate again. Doubles while it stays busy: a long writer transaction
   * would otherwise make other writers queue behind our attempts every few milliseconds. Meanwhile we
   * hold the sleep lock, so every later writer wakes us anyway.
   */
  let gateRetryMs = 1;
  async function setAsleep(value: boolean): Promise<void> {
    if (asleep === value || !connection) return;
    asleep = value;
    await connection
      .query(value ? sleepSql : wakeSql, value ? [durableNames] : [])
      .catch((error) => logger.warn(`could not ${value ? 'register as asleep' : 'wake up'}: ${(error as Error).message}`));
  }

  async function drain(): Promise<void> {
    let lookedAgain = false;
    while (!closing) {
      if (dirty) {
        dirty = false;
        let claimed = 0;
        try {
          claimed = (await Promise.all(Array.from({ length: concurrency }, drainUnits))).reduce((a, b) => a + b, 0);
        } catch (error) {
          logger.error('could not process stored notifications; retrying in 1 s:', error);
          dirty = true;
          await sleep(1000);
          continue;
        }
        if (claimed > 0) {
          lookedAgain = false;
          await setAsleep(false); // busy: writers need not wake us
        }
        continue;
      }
      // Nothing left. Register as asleep, wait out writers that may not have seen us, look once more.
      if (!listenWorks || !connection || lookedAgain) return;
      await setAsleep(true);
      const [gate] = (await connection.query<{ clear: boolean }>(gateClearSql, [durableNames]).catch(() => undefined)) ?? [];
      if (!gate?.clear) {
        clearTimeout(sleepRetry);
        sleepRetry = setTimeout(kick, gateRetryMs); // a writer is still committing: look again soon
        gateRetryMs = Math.min(gateRetryMs * 2, pollIntervalMs);
        return;
      }
      gateRetryMs = 1;
      lookedAgain = true;
      dirty = true;
    }
  }

  // Non-durable notifications run in arrival order, one after another.
  let broadcast: Promise<void> = Promise.resolve();
  function deliver(channel: string, text: string): void {
    broadcast = broadcast.then(async () => {
      try {
        let payload: unknown;
        let context: unknown;
        if (text.startsWith(ENVELOPE_MARK)) ({ payload, context } = JSON.parse(text.slice(1)));
        else payload = JSON.parse(text);
        context ??= (payload as { context?: unknown } | null)?.context; // trigger payloads carry it inside
        if (!contains(context, options.context)) return;
        const ctx: NotificationContext = { channel, durable: false, attempt: 0, ...(context != null && { context }) };
        const listeners = registry.get(channel)?.listeners ?? [];
        for (const l of listeners) {
          const arg = argument(l, payload, listeners.length > 1);
          if (arg) await call(l, l.delivery.batch ? [arg.value] : arg.value, ctx);
        }
      } catch (error) {
        logger.error(`non-durable notification on channel "${channel}" failed and is dropped (at most once):`, error);
      }
    });
  }

  const probeChannel = `pubsub_probe_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
  let probeTimer: NodeJS.Timeout | undefined;
  let pollOnlyWarned = false;
  function listenUnavailable(why: string): void {
    listenWorks = false;
    void setAsleep(false); // writers need not notify a worker that cannot hear them
    if (!pollOnlyWarned) logger.warn(`${why}; falling back to polling every ${pollIntervalMs} ms (deliveries are unchanged, only slower). Set --listen-url to a session connection to get wake-ups back.`);
    pollOnlyWarned = true;
  }

  let connection: ListenConnection | undefined;
  if (options.listen !== false) {
    connection = createListenConnection({
      connectionString: options.listenUrl ?? databaseUrl,
      channels: [...channels.map((c) => c.name), probeChannel],
      onNotification: (channel, text) => {
        if (channel === probeChannel) {
          clearTimeout(probeTimer);
          listenWorks = true;
          return kick(); // now it may fall asleep and be woken
        }
        if (text !== '') return deliver(channel, text);
        void setAsleep(false);
        kick();
      },
      onConnected: () => {
        asleep = false; // a new session holds no locks
        listenWorks = false; // until this connection's test NOTIFY comes back
        logger.info(`listening on ${channels.map((c) => c.name).join(', ')}`);
        kick(); // catch up on everything stored while we were not listening
        // A transaction pooler accepts LISTEN but never delivers: check that a NOTIFY really arrives.
        clearTimeout(probeTimer);
        probeTimer = setTimeout(() => listenUnavailable('a test NOTIFY did not arrive on the LISTEN connection (PgBouncer in transaction mode?)'), 5000);
        pool.query('select pg_notify($1, $2)', [probeChannel, 'probe']).catch(() => {});
      },
      onDisconnected: (error, retryInMs) => logger.warn(`LISTEN connection lost (${error.message}); reconnecting in ${retryInMs} ms`),
      onListenRefused: (error) => listenUnavailable(`the server refused LISTEN (${error.message})`),
    });
  } else {
    logger.info(`polling ${channels.map((c) => c.name).join(', ')} every ${pollIntervalMs} ms (LISTEN disabled)`);
    kick();
  }
  const poll = setInterval(kick, pollIntervalMs);

  return {
    channels: channels.map((c) => c.name),
    async close() {
      if (closing) return;
      closing = true;
      clearInterval(poll);
      clearTimeout(probeTimer);
      clearTimeout(sleepRetry);
      for (const wake of sleepers) wake();
      await connection?.close();
      await draining;
      await broadcast;
      if (ownPool) await pool.end();
    },
  };
}
