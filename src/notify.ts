/** Publishing: `notify()` through the default pool, a pg client or a Prisma client/transaction. */
import { AsyncLocalStorage } from 'node:async_hooks';
import pg from 'pg';
import { MAX_NOTIFY_PAYLOAD_BYTES, assertChannelName } from './channels.js';
import { requireDatabaseUrl } from './config.js';
import { PubSubError } from './errors.js';
import { assertRebuildable, encodePayload } from './payload.js';
import { getRegistry } from './registry.js';
import { SQLSTATE_CHANNEL_CONFLICT, SQLSTATE_PAYLOAD_TOO_LARGE, notifyManySql, notifySql, setContextSql, tracedNotifyManySql, tracedNotifySql } from './sql.js';
import { activeTrace, traceSend } from './tracing.js';
import { SchemaRejection, formatIssues, validate, type StandardSchemaV1 } from './standard-schema.js';
import type { Channel, Queryable } from './types.js';

export interface NotifyOptions {
  /**
   * Where to send it: a pg Pool, Client or PoolClient, a PrismaClient or a Prisma interactive
   * transaction. Inside a transaction the notification exists only if the transaction commits.
   * Default: a pool on DATABASE_URL.
   */
  client?: Queryable;
  /**
   * Require this mode: a channel that the database (its generated migrations) records with the other
   * mode makes notify() throw `pubsub.channelConflict`. Default: the channel's mode in the database;
   * for a channel it does not record, the channel's setting here (defineChannel, or the listeners
   * loaded in this process), else durable.
   */
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
 * lasts for that one statement only, so call it inside one. With @opentelemetry/api, the active span's
 * trace context is stored along (see tracing.ts), so those notifications are traced into their listeners.
 */
export async function setContext(client: Queryable, context: Record<string, unknown>): Promise<void> {
  const trace = await activeTrace(); // with @opentelemetry/api, the caller's span: triggers' listeners are traced into it
  await query(client, setContextSql, [JSON.stringify(trace ? { ...context, ...trace } : context)]);
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
  const c = (client ?? {}) as { $queryRawUnsafe?: Function; query?: Function };
  let rows: unknown;
  if (typeof c.$queryRawUnsafe === 'function') rows = await c.$queryRawUnsafe(text, ...values);
  else if (typeof c.query === 'function') rows = ((await c.query(text, values)) as { rows?: unknown } | undefined)?.rows;
  else {
    const got = typeof client === 'string' ? 'a string (a connection string? pass a pg Pool built from it)' : client === null ? 'null' : `${typeof client} without query()`;
    throw new PubSubError('pubsub.invalidClient', `\`client\` must be a pg Pool, Client or PoolClient, a PrismaClient or a Prisma transaction client; got ${got}.`);
  }
  if (!Array.isArray(rows)) {
    throw new PubSubError('pubsub.invalidClient', '`client` did not answer like a pg or Prisma client (no rows came back). Pass a pg Pool, Client or PoolClient, a PrismaClient or a Prisma transaction client.');
  }
  return rows as R[];
}

/** SQLSTATE and message of a database error from pg, or from Prisma, which wraps it (P2010 + meta.driverAdapterError). */
function databaseError(error: unknown): { code?: string; message: string } {
  const e = error as { code?: unknown; message?: unknown; meta?: { driverAdapterError?: { cause?: { originalCode?: string; code?: string; originalMessage?: string; message?: string } } } };
  const cause = e?.meta?.driverAdapterError?.cause;
  if (cause) return { code: cause.originalCode ?? cause.code, message: cause.originalMessage ?? cause.message ?? '' };
  return { code: typeof e?.code === 'string' ? e.code : undefined, message: typeof e?.message === 'string' ? e.message : '' };
}

/** The PubSubError for a failed pubsub.notify() call, or the error itself when it is not pgpubsub's. */
function notifyError(error: unknown, channel: string): unknown {
  const { code, message } = databaseError(error);
  const where = `notify("${channel}")`;
  const migrate = 'Run `pubsub make-migration`, then apply the migration it writes with `prisma migrate deploy` (or `pubsub migrate`).';
  if (code === '3F000' && message.includes('"pubsub"')) {
    return new PubSubError('pubsub.schemaMissing', `${where}: the pubsub tables are missing from this database. ${migrate}`, { cause: error });
  }
  if (code === '42883' && message.includes('pubsub.notify')) {
    return new PubSubError('pubsub.schemaMissing', `${where}: the pubsub tables in this database are older than this pgpubsub. ${migrate} Notifications already stored are kept.`, { cause: error });
  }
  if (code === SQLSTATE_PAYLOAD_TOO_LARGE) {
    return new PubSubError('pubsub.payloadTooLarge', `${where}: ${message}. Send less (an id to look up), or make the channel durable, which has no such limit.`, { cause: error });
  }
  if (code === SQLSTATE_CHANNEL_CONFLICT) {
    return new PubSubError('pubsub.channelConflict', `${where}: ${message}. Leave the durable option out to use the channel's mode, or change the listeners and run \`pubsub make-migration\`.`, { cause: error });
  }
  return error;
}

/**
 * Validates what the worker will validate: the payload as JSON gives it back (a Date as its ISO string,
 * a bigint as digits). When only the JSON form fails, the message says so, since the payload as
 * passed looked right.
 */
async function checkSchema(schema: StandardSchemaV1, payload: unknown, text: string, channel: string): Promise<void> {
  const where = `notify("${channel}")`;
  try {
    await validate(schema, JSON.parse(text), where, 'Nothing was sent.');
  } catch (error) {
    if (!(error instanceof SchemaRejection)) throw error;
    const asPassed = await Promise.resolve()
      .then(() => schema['~standard'].validate(payload))
      .catch(() => undefined);
    if (!asPassed || asPassed.issues) throw error;
    throw new SchemaRejection(
      `${where}: the payload matches the channel's schema, but not once written as JSON, which is what the worker validates:\n${formatIssues(error.issues)}\nJSON turns a Date into an ISO string and a bigint into a string of digits: let the schema accept those (zod: z.coerce.date(), z.coerce.bigint(); valibot: a string with a transform). Nothing was sent.`,
      error.issues,
      error.permanent,
    );
  }
}

/**
 * Publishes `payload` on `channel`, in the channel's mode as the database records it (see
 * `NotifyOptions.durable`). Durable: stored in `pubsub.notification` and processed once by each
 * listener; resolves to the notification id. Non-durable: a NOTIFY received by every listening worker,
 * at most once, that must be under 8000 bytes as JSON; resolves to undefined. One round trip either way.
 * A channel defined with a schema refuses, before anything is sent, a payload its schema rejects
 * (`pubsub.invalidPayload`, listing the issues); one with a class refuses a Date or bigint in a
 * property the class does not declare, which the listener would otherwise receive as a string.
 *
 * @example
 * await notify('post_reads_per_date', { postId: 12, date: new Date() });
 * await prisma.$transaction((tx) => notify(postReads, { postId: 12, date: new Date() }, { client: tx }));
 */
export function notify<T, I>(channel: Channel<T, I>, payload: NoInfer<I>, options?: NotifyOptions): Promise<string | undefined>;
export function notify(channel: string, payload: unknown, options?: NotifyOptions): Promise<string | undefined>;
export async function notify(channel: Channel<unknown> | string, payload: unknown, options: NotifyOptions = {}): Promise<string | undefined> {
  const p = publication(channel, options, 'notify()');
  const text = await p.encode(payload);
  const [id] = await traceSend(p.name, async (trace) => (await p.send(notifySql, tracedNotifySql, text, trace)).map((r) => r.id));
  return id ?? undefined;
}

/**
 * Publishes several payloads on one channel in one statement (one round trip, however many): as many
 * `notify()` calls in a row, each payload checked the same way, all or none stored. Resolves to the
 * ids in the payloads' order (undefined for a non-durable channel). A payload that is refused names its
 * index and nothing is sent; an empty list sends nothing.
 *
 * @example
 * await notifyMany(postReads, reads.map((r) => ({ postId: r.postId, date: r.at })), { client: tx });
 */
export function notifyMany<T, I>(channel: Channel<T, I>, payloads: ReadonlyArray<NoInfer<I>>, options?: NotifyOptions): Promise<Array<string | undefined>>;
export function notifyMany(channel: string, payloads: ReadonlyArray<unknown>, options?: NotifyOptions): Promise<Array<string | undefined>>;
export async function notifyMany(channel: Channel<unknown> | string, payloads: ReadonlyArray<unknown>, options: NotifyOptions = {}): Promise<Array<string | undefined>> {
  const p = publication(channel, options, 'notifyMany()');
  if (!Array.isArray(payloads)) {
    throw new PubSubError('pubsub.invalidPayload', `notifyMany("${p.name}"): payloads must be an array, got ${payloads === null ? 'null' : typeof payloads}. Use notify() for one payload.`);
  }
  const texts: string[] = [];
  for (const [i, payload] of payloads.entries()) {
    try {
      texts.push(await p.encode(payload));
    } catch (error) {
      if (!(error instanceof PubSubError)) throw error;
      throw new PubSubError(error.code, `notifyMany("${p.name}"), payload ${i} of ${payloads.length} (from 0): ${error.message} Nothing was sent.`, { cause: error });
    }
  }
  if (texts.length === 0) return [];
  const ids = await traceSend(p.name, async (trace) => (await p.send(notifyManySql, tracedNotifyManySql, texts, trace)).map((r) => r.id), texts.length);
  return ids.map((id) => id ?? undefined);
}

/** What notify() and notifyMany() share: the channel's checks, the payload's encoding and checks, and the call. */
function publication(channel: Channel<unknown> | string, options: NotifyOptions, fn: string) {
  const name: unknown = typeof channel === 'string' ? channel : (channel as Channel<unknown> | null | undefined)?.name;
  assertChannelName(name, fn);
  // The database decides (pubsub.channel); this process's idea of the mode only fills in for a channel it does not record.
  const declared = options.durable ?? (typeof channel === 'string' ? getRegistry().get(name)?.durable : channel.durable) ?? null;
  const context = options.context ?? contextStorage.getStore();
  const contextText = context ? encodePayload(context, name, 'context') : null;
  const client = options.client ?? getDefaultPool();
  return {
    name,
    /** The payload as the JSON text to store or send, after the checks the worker would make. */
    async encode(payload: unknown): Promise<string> {
      if (typeof channel !== 'string' && channel.type) assertRebuildable(payload, channel.type, name);
      const text = encodePayload(payload, name);
      if (typeof channel !== 'string' && channel.schema) await checkSchema(channel.schema, payload, text, name);
      if (declared === false) {
        // Expected to go out as a NOTIFY: refuse here what cannot fit rather than ship megabytes to be refused
        // (the server measures its own printing of the JSON, a few bytes longer, and has the last word).
        const bytes = Buffer.byteLength(text) + (contextText ? Buffer.byteLength(contextText) + 24 : 0);
        if (bytes > MAX_NOTIFY_PAYLOAD_BYTES) {
          throw new PubSubError(
            'pubsub.payloadTooLarge',
            `notify("${name}"): the payload is ${bytes} bytes as JSON; a non-durable notification must be at most ${MAX_NOTIFY_PAYLOAD_BYTES}. Send less (an id to look up), or use a durable channel, which has no such limit.`,
          );
        }
      }
      return text;
    },
    /** One statement: `sql` with the payload(s) as $2, or `traced` with the trace context as $6. */
    async send(sql: string, traced: string, payload: string | string[], trace: Record<string, unknown> | undefined): Promise<Array<{ id: string | null }>> {
      const values = [name, payload, contextText, declared, options.durable !== undefined];
      try {
        return await (trace ? query<{ id: string | null }>(client, traced, [...values, JSON.stringify(trace)]) : query<{ id: string | null }>(client, sql, values));
      } catch (error) {
        throw notifyError(error, name);
      }
    },
  };
}
