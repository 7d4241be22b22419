/**
 * The worker: one LISTEN connection for wake-ups and non-durable payloads, and a drain loop that
 * claims durable notifications with FOR UPDATE SKIP LOCKED, runs their listeners inside the claiming
 * transaction and deletes them in it. A listener that throws rolls back only its own notification's
 * work, which is kept with its attempt count for a later try; nothing else re-runs; the worker goes on.
 */
import createDebug from 'debug';
import pg from 'pg';
import { requireDatabaseUrl } from './config.js';
import { createListenConnection } from './connection.js';
import { PubSubError } from './errors.js';
import { decodePayload, decodeTriggerPayload, type WireTriggerPayload } from './payload.js';
import { getRegistry, type ChannelDefinition, type ListenerDefinition, type Registry } from './registry.js';
import { claimSql, completeSql, failSql, schemaInstalledSql, triggerKey } from './sql.js';
import type { Logger, NotificationContext } from './types.js';

const debug = createDebug('pubsub:worker');

export interface WorkerOptions {
  /** Channels to serve; default every registered channel. */
  channels?: string[];
  /** Default DATABASE_URL. The LISTEN connection always uses this URL: it must be a session connection, not PgBouncer transaction pooling. */
  databaseUrl?: string;
  /** Pool the drain loop takes its connection from; default a pool of 2 on `databaseUrl`. */
  pool?: pg.Pool;
  /** Notifications claimed per transaction. @defaultValue 100 */
  batchSize?: number;
  /** How often to look for stored work without a wake-up (retries, missed wake-ups). @defaultValue 2000 */
  pollIntervalMs?: number;
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

interface StoredNotification {
  id: string;
  channel: string;
  payload: unknown;
  context: unknown;
  attempts: number;
}

const consoleLogger: Logger = {
  info: () => {},
  warn: (m) => console.warn(`pubsub: ${m}`),
  error: (m, e) => console.error(`pubsub: ${m}`, e ?? ''),
};

/** Seconds before attempt n+1 after n failures: 1, 2, 4, … capped at 5 minutes. */
const retryDelaySeconds = (failures: number) => Math.min(300, 2 ** (failures - 1));

function describe(error: unknown): string {
  return error instanceof Error ? error.stack ?? error.message : String(error);
}

/** Selects the channels a worker serves and checks that listeners are loaded for them. */
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
  const { batchSize = 100, pollIntervalMs = 2000 } = options;
  const channels = selectChannels(registry, options.channels);
  const durableChannels = channels.filter((c) => c.durable).map((c) => c.name);
  const databaseUrl = requireDatabaseUrl(options.databaseUrl);
  const pool = options.pool ?? new pg.Pool({ connectionString: databaseUrl, max: 2 });
  const ownPool = !options.pool;

  const triggerKeys = new Map<ListenerDefinition, string>();
  for (const c of channels) for (const l of c.listeners) if (l.trigger) triggerKeys.set(l, triggerKey(l.trigger, c.name, c.durable));

  if (durableChannels.length) {
    const { rows } = await pool.query<{ installed: boolean }>(schemaInstalledSql).catch(async (cause) => {
      if (ownPool) await pool.end();
      throw new PubSubError('pubsub.config', `Cannot reach the database: ${(cause as Error).message}`, { cause });
    });
    if (!rows[0]?.installed) {
      if (ownPool) await pool.end();
      throw new PubSubError(
        'pubsub.schemaMissing',
        'The pubsub tables are missing from this database. Run `pubsub make-migration`, then apply it with `prisma migrate deploy` (or `pubsub migrate`).',
      );
    }
  }

  const instances = new Map<Function, object>();
  function receiver(l: ListenerDefinition): Record<string | symbol, Function> {
    if (typeof l.target === 'function') return l.target as never; // static method
    const cls = l.target.constructor;
    let obj = instances.get(cls);
    if (!obj) instances.set(cls, (obj = options.instance ? options.instance(cls) : new (cls as new () => object)()));
    return obj as never;
  }

  /** Runs every listener of this worker that the notification is for; the first failure throws. */
  async function run(channel: string, payload: unknown, ctx: NotificationContext): Promise<void> {
    const def = registry.get(channel);
    if (!def) return;
    for (const l of def.listeners) {
      let arg: unknown;
      if (l.trigger) {
        const wire = payload as WireTriggerPayload;
        if (wire?.trigger !== triggerKeys.get(l) || !l.trigger.events.includes(wire.op)) continue;
        arg = decodeTriggerPayload(structuredClone(wire));
      } else {
        arg = decodePayload(structuredClone(payload), l.payloadType);
      }
      try {
        await receiver(l)[l.method]!(arg, ctx);
      } catch (error) {
        throw Object.assign(new Error(`${l.id} failed`, { cause: error }), { listener: l.id });
      }
    }
  }

  /**
   * Claims a batch and runs it in one transaction. A listener that uses `ctx.tx` gets a savepoint,
   * taken when it first touches `tx`, so its failure rolls back only its own writes; listeners that
   * never touch `tx` cost no extra round trip. Failed notifications are kept with their attempt
   * count in the same transaction; the others are deleted. Returns how many were claimed.
   */
  async function processBatch(): Promise<number> {
    const client = await pool.connect();
    let broken: Error | undefined;
    try {
      await client.query('begin');
      const batch = (await client.query<StoredNotification>(claimSql, [durableChannels, batchSize])).rows;
      const done: string[] = [];
      const failed: Array<{ n: StoredNotification; error: unknown }> = [];
      for (const n of batch) {
        let active = true;
        let savepoint = false;
        const ctx: NotificationContext = {
          channel: n.channel,
          id: n.id,
          durable: true,
          attempt: n.attempts,
          ...(n.context != null && { context: n.context }),
          get tx() {
            if (!active) throw new PubSubError('pubsub.invalidClient', `ctx.tx of notification ${n.id} was used after its listener returned; its transaction is over.`);
            if (!savepoint) {
              savepoint = true;
              // Queued before any query the listener can send through `tx`, so no await is needed.
              client.query('savepoint pubsub_listener').catch(() => {});
            }
            return client;
          },
        };
        try {
          await run(n.channel, n.payload, ctx);
          active = false;
          if (savepoint) client.query('release savepoint pubsub_listener').catch(() => {});
          done.push(n.id);
        } catch (error) {
          active = false;
          if (savepoint) await client.query('rollback to savepoint pubsub_listener');
          failed.push({ n, error });
        }
      }
      if (done.length) await client.query(completeSql, [done]);
      for (const { n, error } of failed) {
        const reason = error instanceof Error && error.cause !== undefined ? error.cause : error;
        await client.query(failSql, [n.id, describe(reason), retryDelaySeconds(n.attempts + 1)]);
      }
      await client.query('commit');
      debug('processed %d, failed %d', done.length, failed.length);
      for (const { n, error } of failed) {
        const reason = error instanceof Error && error.cause !== undefined ? error.cause : error;
        logger.error(
          `${(error as Error).message} on channel "${n.channel}", notification ${n.id} (attempt ${n.attempts + 1}); kept for a retry in ${retryDelaySeconds(n.attempts + 1)} s:`,
          reason,
        );
      }
      return batch.length;
    } catch (error) {
      broken = error as Error;
      await client.query('rollback').catch(() => {});
      throw error;
    } finally {
      client.release(broken);
    }
  }

  let closing = false;
  let dirty = false;
  let draining: Promise<void> | undefined;
  let pause: { timer: NodeJS.Timeout; resolve(): void } | undefined;

  function kick(): void {
    if (closing || durableChannels.length === 0) return;
    dirty = true;
    draining ??= drain().finally(() => (draining = undefined));
  }

  async function drain(): Promise<void> {
    while (dirty && !closing) {
      dirty = false;
      try {
        while (!closing && (await processBatch()) === batchSize);
      } catch (error) {
        logger.error('could not process stored notifications; retrying in 1 s:', error);
        dirty = true;
        await new Promise<void>((resolve) => (pause = { timer: setTimeout(resolve, 1000), resolve }));
      }
    }
  }

  // Non-durable notifications run in arrival order, one after another.
  let broadcast: Promise<void> = Promise.resolve();
  function deliver(channel: string, text: string): void {
    broadcast = broadcast.then(async () => {
      try {
        await run(channel, JSON.parse(text), { channel, durable: false, attempt: 0 });
      } catch (error) {
        logger.error(`non-durable notification on channel "${channel}" failed and is dropped (at most once):`, error);
      }
    });
  }

  const connection = createListenConnection({
    connectionString: databaseUrl,
    channels: channels.map((c) => c.name),
    onNotification: (channel, text) => (text === '' ? kick() : deliver(channel, text)),
    onConnected: () => {
      logger.info(`listening on ${channels.map((c) => c.name).join(', ')}`);
      kick(); // catch up on everything stored while we were not listening
    },
    onDisconnected: (error, retryInMs) => logger.warn(`LISTEN connection lost (${error.message}); reconnecting in ${retryInMs} ms`),
  });
  const poll = setInterval(kick, pollIntervalMs);

  return {
    channels: channels.map((c) => c.name),
    async close() {
      if (closing) return;
      closing = true;
      clearInterval(poll);
      if (pause) {
        clearTimeout(pause.timer);
        pause.resolve();
      }
      await connection.close();
      await draining;
      await broadcast;
      if (ownPool) await pool.end();
    },
  };
}
