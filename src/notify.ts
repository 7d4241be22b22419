/** Publishing: `notify()` through the default pool, a pg client or a Prisma client/transaction. */
import pg from 'pg';
import { MAX_NOTIFY_PAYLOAD_BYTES, assertChannelName } from './channels.js';
import { requireDatabaseUrl } from './config.js';
import { PubSubError } from './errors.js';
import { encodePayload } from './payload.js';
import { getRegistry } from './registry.js';
import { notifyDurableSql, notifySql } from './sql.js';
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
}

let defaultPool: pg.Pool | undefined;

/** The pool `notify()` uses when given no client, created on first use from DATABASE_URL. */
export function getDefaultPool(): pg.Pool {
  return (defaultPool ??= new pg.Pool({ connectionString: requireDatabaseUrl(), allowExitOnIdle: true }));
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
  const text = encodePayload(payload, name);
  const client = options.client ?? getDefaultPool();
  if (durable) {
    const rows = await query<{ id: string }>(client, notifyDurableSql, [name, text]);
    return rows[0]?.id;
  }
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
