/**
 * Bridges: the other direction of relays. A bridge consumes a RabbitMQ queue or a JetStream durable
 * pull consumer and stores each message as a durable notification on a channel, so that broker
 * messages get typed listeners, retries and dead letters like any other notification.
 *
 * A bridge is one loop (BridgeRunner), in one of these states, in this order:
 * - `waiting`: for the next batch (up to `batchSize` messages, the prefetch), connecting to the broker
 *   first when needed, with backoff between failed attempts (BrokerLink);
 * - `storing`: the batch goes to PostgreSQL in one statement, `pubsub.bridge_store()`, so in one
 *   transaction: each message's id is recorded in `pubsub.bridge_seen` and the message stored with
 *   pubsub.notify(), unless its id is there already (a redelivery: skipped). While the database fails,
 *   the same batch is tried again with backoff; its messages stay unacked in the broker meanwhile;
 * - `acking`: after the commit, every message of the batch (stored or skipped as a duplicate) is acked.
 * A body that is not UTF-8 JSON (or that PostgreSQL refuses as jsonb) is poison: it is rejected to the
 * broker's dead letters (AMQP nack without requeue, JetStream term) and logged, never stored, and the
 * rest of its batch goes on. A crash between commit and ack makes the broker deliver the batch again:
 * the ids recorded in the same transaction make that a no-op (effectively once, within `dedupeDays`).
 * `stopped`: close() ends the loop once the batch in hand is stored and acked (or, while the database
 * is failing, at once: the broker delivers those messages again).
 */
import createDebug from 'debug';
import pg from 'pg';
import { assertChannelName } from './channels.js';
import { brokerUrlFromEnv } from './config.js';
import { PubSubError } from './errors.js';
import { BrokerLink, importClient, redact, type Broker } from './relay.js';
import { LIBRARY_SCHEMA_VERSION, bridgeStoreSql, schemaVersionSql } from './sql.js';
import { TRACE_KEY } from './tracing.js';
import type { Logger } from './types.js';

/** Where a bridge consumes and where it stores; see README, "The other direction: a broker into PostgreSQL". */
export interface BridgeOptions {
  /** The broker: RabbitMQ (AMQP 0-9-1) or NATS JetStream. */
  from: Broker;
  /** The durable channel the messages are stored on. */
  channel: string;
  /** amqp: the queue consumed (declared by you; give it a dead-letter exchange to keep poison messages). */
  queue?: string;
  /** nats: the stream, and its durable pull consumer (created by you) the bridge consumes. */
  stream?: string;
  consumer?: string;
  /** The bridge's name, the namespace of its message ids in pubsub.bridge_seen. @defaultValue `bridge.amqp.<queue>` / `bridge.nats.<stream>.<consumer>` */
  name?: string;
  /** Broker URL. @defaultValue PUBSUB_AMQP_URL / PUBSUB_NATS_URL, else amqp://localhost / nats://localhost:4222 */
  url?: string;
  /** Messages per transaction, and the prefetch (messages the broker hands over unacked). @defaultValue 100 */
  batchSize?: number;
  /** How long a stored message id is remembered: a redelivery within it is not stored again. @defaultValue 7 */
  dedupeDays?: number;
}

/** A `"bridge"` entry of pubsub.config.json: the same options. */
export type BridgeConfig = BridgeOptions;

interface BridgeDefinition extends Required<Omit<BridgeOptions, 'url' | 'queue' | 'stream' | 'consumer'>> {
  url?: string;
  queue?: string;
  stream?: string;
  consumer?: string;
}

/** One message in the bridge's hands, whichever broker delivered it. */
export interface Delivery {
  /** The de-duplication key: the broker's message id (AMQP message_id; JetStream Nats-Msg-Id, else its stream sequence); undefined: none. */
  key?: string;
  body: Uint8Array;
  /** Put in the notification's context as `bridge` (with the bridge's name): message id, headers, where it came from. */
  meta: { messageId?: string; headers: Record<string, string>; [more: string]: unknown };
  /** False once the connection that delivered it is gone: the broker delivers it again, so it is dropped. */
  live(): boolean;
  ack(): void;
  /** To the broker's dead letters, never to be delivered again. */
  reject(reason: string): void;
  /** Asks for more time before a redelivery (JetStream's ack wait) while the database is retried. */
  working?(): void;
}

/** A broker consumer: batches of deliveries. */
export interface Source {
  /** Up to `max` deliveries, at least one unless `signal` aborted or no message came for a while; throws `pubsub.brokerUnavailable` while it cannot connect. */
  take(max: number, signal: AbortSignal): Promise<Delivery[]>;
  close(): Promise<void>;
}

const debug = createDebug('pubsub:bridge');
const KEYS = ['from', 'channel', 'queue', 'stream', 'consumer', 'name', 'url', 'batchSize', 'dedupeDays'];
const NAME = /^[A-Za-z0-9_.:\-]{1,200}$/;
const BRIDGES = Symbol.for('pgpubsub.bridges');
/** Every round trip of a bridge to PostgreSQL ends within this (the server cancels the statement a little earlier). */
const STATEMENT_TIMEOUT_MS = 30_000;

/** The bridges declared in this process, by name (on globalThis, like the registry, so two copies of pgpubsub share them). */
function declared(): Map<string, BridgeDefinition> {
  const g = globalThis as { [BRIDGES]?: Map<string, BridgeDefinition> };
  return (g[BRIDGES] ??= new Map());
}

/** Checks a bridge's options (no I/O). */
function bridgeDefinition(options: BridgeOptions, where: string): BridgeDefinition {
  const fail = (why: string): never => {
    throw new PubSubError('pubsub.config', `${where}: ${why}`);
  };
  if (!options || typeof options !== 'object') fail(`must be an object such as { from: 'amqp', queue: 'orders-in', channel: 'orders' }.`);
  const unknown = Object.keys(options).find((k) => !KEYS.includes(k));
  if (unknown !== undefined) fail(`unknown option ${JSON.stringify(unknown)}; the options are ${KEYS.join(', ')}.`);
  const { from } = options;
  if (from !== 'amqp' && from !== 'nats') fail(`"from" must be 'amqp' (a RabbitMQ queue) or 'nats' (a JetStream pull consumer), got ${JSON.stringify(from)}.`);
  if (options.channel === undefined) fail('"channel" is missing: the durable channel the messages are stored on, such as "orders".');
  assertChannelName(options.channel, where);
  const text = (key: 'queue' | 'stream' | 'consumer' | 'url', example: string) => {
    const v = options[key];
    if (typeof v !== 'string' || !v) fail(`${key} must be a non-empty string such as ${JSON.stringify(example)}.`);
    return v as string;
  };
  const mine = from === 'amqp' ? ['queue'] : ['stream', 'consumer'];
  const misplaced = ['queue', 'stream', 'consumer'].find((k) => !mine.includes(k) && (options as unknown as Record<string, unknown>)[k] !== undefined);
  if (misplaced) fail(`${misplaced} is ${from === 'amqp' ? 'a NATS' : 'an AMQP'} option; with from: '${from}' give ${mine.join(' and ')}.`);
  const source = from === 'amqp' ? { queue: text('queue', 'orders-in') } : { stream: text('stream', 'ORDERS'), consumer: text('consumer', 'pgpubsub') };
  if (options.url !== undefined) text('url', from === 'amqp' ? 'amqp://user:pass@host:5672' : 'nats://host:4222');
  const name = options.name ?? (from === 'amqp' ? `bridge.amqp.${source.queue}` : `bridge.nats.${source.stream}.${source.consumer}`);
  if (typeof name !== 'string' || !NAME.test(name)) fail(`name ${JSON.stringify(name)} must be 1 to 200 letters, digits, "_", ".", ":" or "-" (give one with "name" when the queue's name has other characters).`);
  const batchSize = options.batchSize ?? 100;
  if (!(Number.isSafeInteger(batchSize) && batchSize >= 1 && batchSize <= 10_000)) fail(`batchSize must be a whole number from 1 to 10000, got ${JSON.stringify(options.batchSize)}.`);
  const dedupeDays = options.dedupeDays ?? 7;
  if (!(typeof dedupeDays === 'number' && dedupeDays > 0 && dedupeDays <= 3650)) fail(`dedupeDays must be a number of days above 0 and at most 3650, got ${JSON.stringify(options.dedupeDays)}.`);
  return { from, channel: options.channel, name, batchSize, dedupeDays, ...source, ...(options.url && { url: options.url }) };
}

/**
 * Declares a bridge: the messages of a RabbitMQ queue or of a JetStream durable pull consumer become
 * durable notifications on `channel`. `pubsub bridge` runs the bridges (or `startBridges()`).
 *
 * @example
 * bridge({ from: 'amqp', queue: 'orders-in', channel: 'orders' });
 * bridge({ from: 'nats', stream: 'ORDERS', consumer: 'pgpubsub', channel: 'orders' });
 */
export function bridge(options: BridgeOptions): void {
  const def = bridgeDefinition(options, `bridge to "${options?.channel}"`);
  const known = declared();
  if (known.has(def.name)) throw new PubSubError('pubsub.config', `bridge "${def.name}" is declared twice; give each bridge of one ${def.from === 'amqp' ? 'queue' : 'consumer'} its own "name".`);
  known.set(def.name, def);
}

/** Registers the `"bridge"` entries of pubsub.config.json. */
export function registerBridges(entries: unknown, where = 'pubsub.config.json'): void {
  if (entries === undefined) return;
  if (!Array.isArray(entries)) throw new PubSubError('pubsub.config', `${where}: "bridge" must be a list such as [{"from": "amqp", "queue": "orders-in", "channel": "orders"}].`);
  entries.forEach((entry, i) => {
    const def = bridgeDefinition(entry as BridgeOptions, `${where}: "bridge"[${i}]`);
    if (!declared().has(def.name)) declared().set(def.name, def); // a file read twice by one process declares its bridges once
  });
}

/** The names of the bridges declared so far. */
export const bridgeNames = (): string[] => [...declared().keys()];

/** Header values as text (AMQP tables hold numbers, buffers and more). */
export function textHeaders(headers: Record<string, unknown> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(headers ?? {})) {
    if (v !== undefined && v !== null) out[k] = typeof v === 'string' ? v : Buffer.isBuffer(v) ? v.toString('utf8') : JSON.stringify(v, (_, x) => (typeof x === 'bigint' ? String(x) : x));
  }
  return out;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

/**
 * A delivery as the texts bridge_store() takes: the body as it came (checked to be UTF-8 JSON), and the
 * context: a relayed message's `pubsub-context` and trace headers as they were, plus `bridge`.
 */
export function decode(name: string, d: Delivery): { payload: string; context: string } | { poison: string } {
  let payload: string;
  try {
    payload = utf8.decode(d.body);
  } catch {
    return { poison: 'its body is not UTF-8 text' };
  }
  try {
    JSON.parse(payload);
  } catch (error) {
    return { poison: `its body is not JSON (${(error as Error).message})` };
  }
  const { headers } = d.meta;
  let carried: Record<string, unknown> = {};
  try {
    const parsed: unknown = headers['pubsub-context'] === undefined ? {} : JSON.parse(headers['pubsub-context']);
    if (parsed && typeof parsed === 'object' && !Array.isArray(parsed)) carried = parsed as Record<string, unknown>;
  } catch {
    // not a context pgpubsub wrote: it stays a header, under bridge.headers
  }
  const trace = headers.traceparent ? { [TRACE_KEY]: { traceparent: headers.traceparent, ...(headers.tracestate && { tracestate: headers.tracestate }) } } : {};
  return { payload, context: JSON.stringify({ ...carried, ...trace, bridge: { name, ...d.meta } }) };
}

/** Backoff between attempts to store a batch: 200 ms doubling to 30 s, half of it random. */
const storeDelayMs = (failures: number) => {
  const cap = Math.min(30_000, 200 * 2 ** Math.min(failures, 10));
  return Math.round(cap / 2 + (Math.random() * cap) / 2);
};

/** Waits `ms`, or less when `signal` aborts or `early` (given the wake-up function) wakes it. */
const sleep = (ms: number, signal: AbortSignal, early?: (wake: () => void) => void) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    signal.addEventListener('abort', done, { once: true });
    early?.(done);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
  });

/** A PostgreSQL data exception (class 22): a value it refuses, such as a \u0000 in JSON text that jsonb cannot hold. */
const dataError = (error: unknown) => /^22/.test(String((error as { code?: unknown })?.code ?? ''));

/** Runs one bridge; see the states at the top of this file. */
class BridgeRunner {
  state: 'waiting' | 'storing' | 'acking' | 'stopped' = 'waiting';
  private readonly stopping = new AbortController();
  readonly done: Promise<void>;

  constructor(
    private readonly def: BridgeDefinition,
    private readonly source: Source,
    private readonly pool: pg.Pool,
    private readonly log: Logger,
  ) {
    this.done = this.loop();
  }

  private async loop(): Promise<void> {
    const { signal } = this.stopping;
    while (!signal.aborted) {
      this.state = 'waiting';
      let batch: Delivery[];
      try {
        batch = await this.source.take(this.def.batchSize, signal);
      } catch (error) {
        debug('%s: %s', this.def.name, (error as Error).message); // BrokerLink logged it, with its next attempt
        await sleep(250, signal);
        continue;
      }
      if (!batch.length) continue;
      const good: Array<{ d: Delivery; payload: string; context: string }> = [];
      for (const d of batch) {
        const decoded = decode(this.def.name, d);
        if ('poison' in decoded) this.reject(d, decoded.poison);
        else good.push({ d, ...decoded });
      }
      this.state = 'storing';
      const settled = await this.store(good);
      this.state = 'acking';
      for (const d of settled) d.ack();
    }
    this.state = 'stopped';
  }

  private reject(d: Delivery, why: string): void {
    this.log.warn(`bridge ${this.def.name}: message ${d.meta.messageId ?? d.key ?? '(without id)'} rejected to the broker's dead letters, not stored: ${why}`);
    d.reject(why);
  }

  /** Stores the batch, retrying while the database fails; resolves with the deliveries to ack (none when stopped meanwhile). */
  private async store(batch: Array<{ d: Delivery; payload: string; context: string }>): Promise<Delivery[]> {
    const { signal } = this.stopping;
    for (let failures = 0; ; failures++) {
      batch = batch.filter((m) => m.d.live()); // a lost broker connection: the broker delivers those again
      if (!batch.length) return [];
      try {
        const { rows } = await this.pool.query<{ ids: Array<string | null> }>(bridgeStoreSql, [
          this.def.name,
          this.def.channel,
          batch.map((m) => m.d.key ?? null),
          batch.map((m) => m.payload),
          batch.map((m) => m.context),
          this.def.dedupeDays * 86_400,
        ]);
        const duplicates = rows[0]!.ids.filter((id) => id === null).length;
        if (failures) this.log.info(`bridge ${this.def.name}: stored again after ${failures} failed attempt(s)`);
        if (duplicates) this.log.info(`bridge ${this.def.name}: ${duplicates} redelivered message(s) already stored, acked without storing them again`);
        debug('%s: %d stored, %d duplicates', this.def.name, batch.length - duplicates, duplicates);
        return batch.map((m) => m.d);
      } catch (error) {
        if (dataError(error)) {
          if (batch.length === 1) {
            this.reject(batch[0]!.d, `PostgreSQL refused it: ${(error as Error).message}`);
            return [];
          }
          // Which one? Each alone, in order (a rare path: a body JSON.parse takes and jsonb does not).
          const settled: Delivery[] = [];
          for (const m of batch) settled.push(...(await this.store([m])));
          return settled;
        }
        if (signal.aborted) return [];
        const ms = storeDelayMs(failures);
        const code = (error as { code?: string }).code;
        const hint = code === '42883' || code === '3F000' ? ` The pubsub tables are missing or older than version ${LIBRARY_SCHEMA_VERSION}: run \`pubsub make-migration\` and apply it.` : '';
        this.log.warn(`bridge ${this.def.name}: cannot store ${batch.length} message(s) (${(error as Error).message}); trying again in ${ms} ms, they stay unacked in the broker meanwhile.${hint}`);
        for (const m of batch) m.d.working?.();
        await sleep(ms, signal);
      }
    }
  }

  /** Ends the loop once the batch in hand is stored and acked (at once when the database is failing). */
  async close(): Promise<void> {
    this.stopping.abort();
    await this.done;
    await this.source.close();
  }
}

/** Running bridges; close() stops them (each finishes the batch it is storing) and closes their connections. */
export interface Bridges {
  readonly names: string[];
  close(): Promise<void>;
}

export interface StartBridgesOptions {
  /** @defaultValue DATABASE_URL */
  databaseUrl: string;
  /** Only these bridges (by name); default every declared one. */
  names?: string[];
  logger?: Logger;
}

/**
 * Starts the declared bridges (bridge(), "bridge" in pubsub.config.json). Checks the database first
 * (the pubsub tables at this version; each channel durable), then consumes: a broker that cannot be
 * reached is tried again with backoff, while the bridge runs.
 */
export async function startBridges(options: StartBridgesOptions): Promise<Bridges> {
  const logger = options.logger ?? { info: debug, warn: debug, error: debug };
  const defs = (options.names ?? bridgeNames()).map((name) => {
    const def = declared().get(name);
    if (!def) throw new PubSubError('pubsub.config', `there is no bridge named "${name}"; the bridges are ${bridgeNames().join(', ') || 'none'}.`);
    return def;
  });
  if (!defs.length) throw new PubSubError('pubsub.noListenersLoaded', 'No bridges are declared. Declare them with bridge() in a module named by --require, or as "bridge" in pubsub.config.json.', { exitCode: 2 });
  const pool = new pg.Pool({
    connectionString: options.databaseUrl,
    application_name: 'pubsub:bridge',
    max: defs.length,
    keepAlive: true,
    connectionTimeoutMillis: 10_000,
    statement_timeout: STATEMENT_TIMEOUT_MS,
    query_timeout: STATEMENT_TIMEOUT_MS + 5_000,
  });
  pool.on('error', () => {}); // an idle connection closed by the server is replaced on next use
  const runners: BridgeRunner[] = [];
  try {
    const version = (await pool.query<{ version: number }>(schemaVersionSql)).rows[0]!.version;
    if (version < LIBRARY_SCHEMA_VERSION) {
      throw new PubSubError('pubsub.schemaMissing', `The pubsub tables are at version ${version}; a bridge needs version ${LIBRARY_SCHEMA_VERSION} (pubsub.bridge_seen). Run \`pubsub make-migration\` and apply the migration it writes.`);
    }
    // A role granted only EXECUTE on pubsub.bridge_store() cannot read pubsub.channel: the function checks it then, batch by batch.
    const { rows } = await pool
      .query<{ name: string }>('select name from pubsub.channel where name = any($1::text[]) and not durable', [defs.map((d) => d.channel)])
      .catch((error: { code?: string }) => (error.code === '42501' ? { rows: [] } : Promise.reject(error)));
    if (rows.length) throw new PubSubError('pubsub.channelConflict', `bridge to "${rows[0]!.name}": the channel is not durable in this database; a bridge stores what it consumes. Make the channel durable, or bridge to another one.`);
    for (const def of defs) {
      const url = def.url ?? brokerUrlFromEnv(def.from);
      const source = def.from === 'amqp'
        ? (await import('./bridge-amqp.js')).amqpSource(await importClient(def.from, 'A bridge from'), url, def.queue!, def.batchSize, def.name, logger)
        : (await import('./bridge-nats.js')).natsSource(await importClient(def.from, 'A bridge from'), url, def.stream!, def.consumer!, def.batchSize, def.name, logger);
      runners.push(new BridgeRunner(def, source, pool, logger));
      logger.info(`bridge ${def.name}: ${def.from === 'amqp' ? `queue ${def.queue}` : `stream ${def.stream}, consumer ${def.consumer}`} at ${redact(url)} → channel ${def.channel}`);
    }
  } catch (error) {
    await Promise.all(runners.map((r) => r.close()));
    await pool.end();
    throw error;
  }
  return {
    names: defs.map((d) => d.name),
    async close() {
      await Promise.all(runners.map((r) => r.close()));
      await pool.end();
    },
  };
}

/**
 * A broker consumer's connection and its inbox: the broker pushes deliveries in, the runner takes
 * them out in batches. A lost connection empties the inbox (those messages come again).
 */
export abstract class BrokerSource<T> extends BrokerLink<T> implements Source {
  private inbox: Delivery[] = [];
  private arrived?: () => void;

  protected constructor(broker: string, url: string, logger: Logger, name: string) {
    super(broker, url, logger, `bridge ${name}`, 'messages stay in the broker meanwhile');
  }

  abstract close(): Promise<void>;

  protected deliver(d: Delivery): void {
    this.inbox.push(d);
    this.arrived?.();
  }

  /** The connection is gone: forget it and what it delivered; the next take() connects again. */
  protected forget(): void {
    this.current = undefined;
    this.inbox = [];
    this.arrived?.();
  }

  async take(max: number, signal: AbortSignal): Promise<Delivery[]> {
    await this.open();
    if (!this.inbox.length) {
      // Woken by a delivery, a stop or a lost connection; at the latest after a second, to look at the connection again.
      await sleep(1000, signal, (wake) => (this.arrived = wake));
      this.arrived = undefined;
      // The rest of a burst arrives in the next few milliseconds: take it in the same batch.
      if (this.inbox.length && this.inbox.length < max) await sleep(5, signal);
    }
    return this.inbox.splice(0, max);
  }
}
