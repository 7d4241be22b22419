/** Publishing: `notify()` through the default pool, a pg client or a Prisma client/transaction. */
import { AsyncLocalStorage } from 'node:async_hooks';
import pg from 'pg';
import { MAX_NOTIFY_PAYLOAD_BYTES, assertChannelName } from './channels.js';
import { requireDatabaseUrl } from './config.js';
import { PubSubError } from './errors.js';
import { encodePayload } from './payload.js';
import { getRegistry } from './registry.js';
import { notifyDurableSql, notifySql, setContextSql } from './sql.js';
import type { Channel, Queryable } from './types.js';

export interface NotifyOptions {
  /**
   * Where to send it: a pg Pool, Client or PoolClient, a PrismaClient or a Prisma interactive
   * transaction. Inside a transaction the notification exists only if the transaction commits.
   * Default: a pool on DATABASE_URL.
   */
  client?: Queryable;
  /** Store it until processed (default: the channel's setting, else true). */
  durable?: boolean;
  /** Context to attach (request id, tenant, …); default the one of `withContext()`, else the transaction's `setContext()`. */
  context?: Record<string, unknown>;
}

/**
 * Non-durable notifications that carry a context are sent as this marker followed by
 * `{"payload":…,"context":…}`; JSON text never starts with it, so plain payloads stay plain.
 */
export const ENVELOPE_MARK = '\u001e';

const contextStorage = new AsyncLocalStorage<Record<string, unknown>>();

/**
 * Runs `fn` with a context: every `notify()` inside it (awaited or not) carries `context`, unless
 * it passes its own. Database triggers do not see it; use `setContext(tx, …)` for those.
 */
export function withContext<R>(context: Record<string, unknown>, fn: () => R): R {
  return contextStorage.run(context, fn);
}

/**
 * Sets the context of the current transaction of `client` (set_config(…, is_local = true)): every
 * notification the transaction produces, trigger or `notify()`, carries it, and it ends with the
 * transaction, so it never leaks to the next user of a pooled connection. Outside a transaction it
 * lasts for that one statement only, so call it inside one.
 */
export async function setContext(client: Queryable, context: Record<string, unknown>): Promise<void> {
  await query(client, setContextSql, [JSON.stringify(context)]);
}

let defaultPool: pg.Pool | undefined;

/** The pool `notify()` uses when given no client, created on first use from DATABASE_URL. */
export function getDefaultPool(): pg.Pool {
  if (!defaultPool) {
    defaultPool = new pg.Pool({ connectionString: requireDatabaseUrl(), allowExitOnIdle: true, keepAlive: true });
    // A closed idle connection is replaced on next use; without a listener the 'error' would kill the process.
    defaultPool.on('error', () => {});
  }
  return defaultPool;
}

/** Closes the default pool (if one was opened). */
export async function disconnect(): Promise<void> {
  const pool = defaultPool;
  defaultPool = undefined;
  await pool?.end();
}

/** Runs one statement on any supported client and returns its rows. */
export async function query<R>(client: Queryable, text: string, values: unknown[]): Promise<R[]> {
  // Property reads, not `in`: a Prisma transaction of an $extends()ed client throws on `in`.
  const c = client as { $queryRawUnsafe?: Function; query?: Function };
  if (typeof c.$queryRawUnsafe === 'function') return (await c.$queryRawUnsafe(text, ...values)) as R[];
  if (typeof c.query === 'function') return ((await c.query(text, values)) as { rows: R[] }).rows;
  throw new PubSubError(
    'pubsub.invalidClient',
    'notify(): `client` must be a pg Pool, Client or PoolClient, a PrismaClient or a Prisma transaction client.',
  );
}

/**
 * Publishes `payload` on `channel`. Durable (default): stored in `pubsub.notification` and processed
 * exactly once by one worker; resolves to the notification id. Non-durable: a NOTIFY received by every
 * listening worker, at most once; the JSON must be under 8000 bytes.
 *
 * @example
 * await notify('post_reads_per_date', { postId: 12, date: new Date() });
 * await prisma.$transaction((tx) => notify(postReads, { postId: 12, date: new Date() }, { client: tx }));
 */
export function notify<T>(channel: Channel<T>, payload: T, options?: NotifyOptions): Promise<string | undefined>;
export function notify(channel: string, payload: unknown, options?: NotifyOptions): Promise<string | undefined>;
export async function notify(channel: Channel<unknown> | string, payload: unknown, options: NotifyOptions = {}): Promise<string | undefined> {
  const name = typeof channel === 'string' ? channel : channel.name;
  assertChannelName(name, 'notify()');
  const durable = options.durable ?? (typeof channel === 'string' ? getRegistry().get(name)?.durable : channel.durable) ?? true;
  const context = options.context ?? contextStorage.getStore();
  let text = encodePayload(payload, name);
  const client = options.client ?? getDefaultPool();
  if (durable) {
    const rows = await query<{ id: string }>(client, notifyDurableSql, [name, text, context ? JSON.stringify(context) : null]);
    return rows[0]?.id;
  }
  if (context) text = `${ENVELOPE_MARK}{"payload":${text},"context":${encodePayload(context, name)}}`;
  const bytes = Buffer.byteLength(text);
  if (bytes > MAX_NOTIFY_PAYLOAD_BYTES) {
    throw new PubSubError(
      'pubsub.payloadTooLarge',
      `notify("${name}"): the payload is ${bytes} bytes as JSON; a non-durable notification must be at most ${MAX_NOTIFY_PAYLOAD_BYTES}. Send less (an id to look up), or use a durable channel, which has no such limit.`,
    );
  }
  await query(client, notifySql, [name, text]);
  return undefined;
}
