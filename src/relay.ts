/**
 * Relays: durable listeners whose "handler" publishes the claimed notifications to a message broker
 * (RabbitMQ over AMQP 0-9-1, or NATS JetStream) and returns only once the broker confirmed each one,
 * so the claim's commit deletes a row only after the broker holds its message (flask-signalbus's
 * record-send-delete, with the drain's claims, retries, ordering and dead letters).
 *
 * A relay is registered like any listener (a subscription per relay, rows stored with the write), by
 * the `@Relay` class decorator, `relay()`, or `"relay"` entries of pubsub.config.json. The drain
 * (drain.ts) hands a relay's claimed rows to the worker's RelayHub, which publishes them in one burst
 * per claim on one connection per broker URL, and answers per row: confirmed, or why not. The
 * broker clients (amqplib, nats) are optional peer dependencies, imported only when a relay runs.
 *
 * Message id: `<listener>:<notification id>`, the same for every attempt of a row, so a duplicate
 * (a confirm lost with the connection, a relay killed between publish and commit) carries the id of
 * its first copy: JetStream drops it within its duplicate window (`Nats-Msg-Id`), RabbitMQ consumers
 * dedupe on `message_id`.
 */
import createDebug from 'debug';
import type { Stored } from './attempts.js';
import { brokerUrlFromEnv } from './config.js';
import { PubSubError } from './errors.js';
import { getRegistry, parseOrderPath, type DeliveryOptions, type ListenerDefinition } from './registry.js';
import { TRACE_KEY } from './tracing.js';
import type { Channel, Logger } from './types.js';
import { assertChannelName } from './channels.js';

export type Broker = 'amqp' | 'nats';

/** Where a relay publishes and how it claims; see README, "Relay to a broker". */
export interface RelayOptions<T = any> {
  /** The broker: RabbitMQ (AMQP 0-9-1, publisher confirms) or NATS JetStream (publish acks). */
  to: Broker;
  /** The relay's listener name, stored with its notifications. @defaultValue `relay.<to>.<channel>` */
  name?: string;
  /** Broker URL. @defaultValue PUBSUB_AMQP_URL / PUBSUB_NATS_URL, else amqp://localhost / nats://localhost:4222 */
  url?: string;
  /** amqp: the exchange (declared by you). @defaultValue '' (the default exchange: the routing key names a queue) */
  exchange?: string;
  /** amqp: the routing key, or a template with `{field.path}` of the payload. @defaultValue the channel name */
  routingKey?: string | ((payload: T) => string);
  /** amqp: a message no queue is bound for is returned by the broker and counts as not confirmed (retried). @defaultValue true */
  mandatory?: boolean;
  /** nats: the subject (a stream must capture it), or a template with `{field.path}`. @defaultValue the channel name */
  subject?: string | ((payload: T) => string);
  /** Per key, publish strictly in commit order (the next one only once the broker confirmed the previous one). */
  ordered?: boolean;
  /** With `ordered`: the key, or the path of a payload field such as `"customerId"`. Default one key. */
  orderKey?: string | ((payload: T) => string);
  /** Rows claimed and published per burst (one transaction, one wait for confirms). @defaultValue 1000 */
  batchSize?: number;
  /** Attempts before a row is dead-lettered; a broker outage counts attempts. @defaultValue 1000 (hours of outage at the backoff's cap) */
  maxAttempts?: number;
  /** @defaultValue { baseMs: 200, maxMs: 30000 } */
  backoff?: { baseMs?: number; maxMs?: number };
  /** Longest wait for a burst's confirms; a row not confirmed by then is retried (maybe a duplicate). @defaultValue 30000 */
  timeoutMs?: number;
}

/** A relay entry of pubsub.config.json: RelayOptions with the channel, and no functions (templates and field paths instead). */
export interface RelayConfig extends Omit<RelayOptions, 'routingKey' | 'subject' | 'orderKey'> {
  channel: string;
  routingKey?: string;
  subject?: string;
  orderKey?: string;
}

/** What the drain and the hub need of a relay (ListenerDefinition.relay). */
export interface RelayDefinition {
  to: Broker;
  /** Unset: from the environment when the hub starts. */
  url?: string;
  exchange: string;
  mandatory: boolean;
  /** The routing key (amqp) or subject (nats) of a payload; `parse` says whether it reads the payload. */
  destination: { of: (payload: unknown) => string; parse: boolean };
  batchSize: number;
  timeoutMs: number;
}

/**
 * One message as both publishers send it. The id and channel go in each broker's own fields (AMQP
 * message_id and type; NATS Nats-Msg-Id and a pubsub-channel header); headers carry only the context
 * and the trace (AMQP header tables cost RabbitMQ a lot per message: five of them halved its rate here).
 */
export interface Outgoing {
  id: string;
  channel: string;
  /** When the notification was stored (the writer's transaction), in ms since the epoch. */
  createdAt: number;
  destination: string;
  body: Buffer;
  /** `pubsub-context` (JSON, without the trace), `traceparent`, `tracestate`: only those present. */
  headers?: Record<string, string>;
}

/** A broker connection that publishes bursts; one per broker URL and worker. */
export interface Publisher {
  /** Publishes every message and waits for the broker's confirms: per message, undefined (confirmed) or why not. Never throws. */
  publish(messages: Outgoing[], options: { exchange: string; mandatory: boolean; timeoutMs: number }): Promise<Array<Error | undefined>>;
  close(): Promise<void>;
}

const debug = createDebug('pubsub:relay');
/** `pubsub relay`'s default --concurrency: claims (bursts) in flight at once, so the broker's confirm round trips overlap the database's. */
export const RELAY_CONCURRENCY = 4;
const DEFAULTS = { batchSize: 1000, maxAttempts: 1000, backoff: { baseMs: 200, maxMs: 30_000 }, timeoutMs: 30_000 };
const KEYS = ['to', 'name', 'url', 'exchange', 'routingKey', 'mandatory', 'subject', 'ordered', 'orderKey', 'batchSize', 'maxAttempts', 'backoff', 'timeoutMs'];
const LISTENER_NAME = /^[A-Za-z0-9_.:\-]{1,200}$/;
const RUN = Symbol('pgpubsub.relay');

/** A payload field by dotted path, as text (objects as JSON); missing: ''. */
function field(payload: unknown, path: string): string {
  let v: unknown = payload;
  for (const k of path.split('.')) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[k] : undefined;
  return v === undefined || v === null ? '' : typeof v === 'object' ? JSON.stringify(v) : String(v);
}

/** A string with `{field.path}` placeholders, or a function, as a function of the payload. */
function template(value: string | ((payload: any) => string), where: string): RelayDefinition['destination'] {
  if (typeof value === 'function') return { of: (p) => String(value(p)), parse: true };
  if (typeof value !== 'string') throw new PubSubError('pubsub.config', `${where} must be a string (with {field} placeholders) or a function of the payload, got ${typeof value}.`);
  const parts = value.split(/\{([^{}]+)\}/);
  if (parts.length === 1) return { of: () => value, parse: false };
  return { of: (p) => parts.map((s, i) => (i % 2 ? field(p, s.trim()) : s)).join(''), parse: true };
}

/** Checks a relay's options and builds its listener definition (no I/O). */
function relayDefinition(channel: string, options: RelayOptions, owner?: Function): ListenerDefinition {
  assertChannelName(channel, 'relay');
  const id = `relay of "${channel}"`;
  const fail = (why: string): never => {
    throw new PubSubError('pubsub.config', `${id}: ${why}`);
  };
  if (!options || typeof options !== 'object') fail(`options must be an object such as { to: 'amqp', exchange: 'orders' }.`);
  const unknown = Object.keys(options).find((k) => !KEYS.includes(k));
  if (unknown !== undefined) fail(`unknown option ${JSON.stringify(unknown)}; the options are ${KEYS.join(', ')}.`);
  const { to } = options;
  if (to !== 'amqp' && to !== 'nats') fail(`"to" must be 'amqp' (RabbitMQ) or 'nats' (NATS JetStream), got ${JSON.stringify(to)}.`);
  const name = options.name ?? `relay.${to}.${channel}`;
  if (typeof name !== 'string' || !LISTENER_NAME.test(name)) fail(`name ${JSON.stringify(name)} must be 1 to 200 letters, digits, "_", ".", ":" or "-".`);
  const other = to === 'amqp' ? ['subject'] : ['exchange', 'routingKey', 'mandatory'];
  const misplaced = other.find((k) => (options as unknown as Record<string, unknown>)[k] !== undefined);
  if (misplaced) fail(`${misplaced} is ${to === 'amqp' ? 'a NATS' : 'an AMQP'} option; with to: '${to}' use ${to === 'amqp' ? 'exchange and routingKey' : 'subject'}.`);
  if (options.url !== undefined && (typeof options.url !== 'string' || !options.url)) fail(`url must be a non-empty string such as "${to === 'amqp' ? 'amqp://user:pass@host:5672' : 'nats://host:4222'}".`);
  if (options.exchange !== undefined && typeof options.exchange !== 'string') fail('exchange must be a string.');
  if (options.mandatory !== undefined && typeof options.mandatory !== 'boolean') fail('mandatory must be true or false.');
  const whole = (key: 'batchSize' | 'maxAttempts' | 'timeoutMs', max: number) => {
    const v = options[key];
    if (v !== undefined && !(Number.isSafeInteger(v) && v >= 1 && v <= max)) fail(`${key} must be a whole number from 1 to ${max}, got ${JSON.stringify(v)}.`);
    return v ?? DEFAULTS[key];
  };
  const batchSize = whole('batchSize', 10_000);
  const timeoutMs = whole('timeoutMs', 3_600_000);
  const delivery: DeliveryOptions = { maxAttempts: whole('maxAttempts', 1_000_000), backoff: { ...DEFAULTS.backoff, ...options.backoff }, timeoutMs };
  const { baseMs, maxMs } = delivery.backoff!;
  if (!(typeof baseMs === 'number' && baseMs > 0 && typeof maxMs === 'number' && maxMs >= baseMs)) fail(`backoff must be { baseMs, maxMs } with 0 < baseMs ≤ maxMs, got ${JSON.stringify(options.backoff)}.`);
  if (options.ordered !== undefined && typeof options.ordered !== 'boolean') fail('ordered must be true or false.');
  if (options.orderKey !== undefined && !options.ordered) fail('orderKey needs ordered: true.');
  if (options.ordered) {
    delivery.ordered = true;
    const key = options.orderKey;
    if (key !== undefined) {
      // A path is stored with each row by its writer (registry.ts, orderPath), as for listeners.
      if (typeof key === 'function') delivery.orderKey = key;
      else {
        try {
          parseOrderPath(key);
          delivery.orderKey = key as string;
        } catch (error) {
          fail((error as Error).message);
        }
      }
    }
  } else {
    delivery.batch = { size: batchSize }; // its own claim unit: many rows per transaction
  }
  const destination = template((to === 'amqp' ? options.routingKey : options.subject) ?? channel, `${id}: ${to === 'amqp' ? 'routingKey' : 'subject'}`);
  // The worker resolves every listener's receiver at start: a relay's is never called (the drain publishes instead).
  const target = owner ?? Object.defineProperty(function relay() {}, 'name', { value: name });
  Object.defineProperty(target, RUN, { value: () => fail('a relay is run by the worker, not called.'), configurable: true });
  return {
    id: name,
    channel,
    durable: true,
    target,
    method: RUN,
    delivery,
    relay: { to, ...(options.url && { url: options.url }), exchange: options.exchange ?? '', mandatory: options.mandatory ?? true, destination, batchSize, timeoutMs },
  };
}

/**
 * Registers a relay of a durable channel's notifications to a broker. Run `pubsub make-migration`
 * afterwards (a relay is subscribed like a listener), then `pubsub relay` (or `pubsub listen`).
 *
 * @example
 * relay('orders', { to: 'nats', subject: 'orders.{region}', ordered: true, orderKey: 'customerId' });
 */
export function relay<T = any>(channel: Channel<T, any> | string, options: RelayOptions<T>): void {
  const name = typeof channel === 'string' ? channel : (channel as Channel<T> | undefined)?.name;
  if (typeof channel !== 'string' && channel && !channel.durable) throw new PubSubError('pubsub.config', `relay of "${name}": the channel is not durable; only stored notifications can be relayed.`);
  getRegistry().register(relayDefinition(name as string, options));
}

/**
 * The class form of relay(): `@Relay('orders', { to: 'amqp', exchange: 'orders' }) class OrdersToRabbit {}`.
 * The class is only a place for the decorator (and for several relays of one module to live in).
 */
export function Relay<T = any>(channel: Channel<T, any> | string, options: RelayOptions<T>): (cls: Function) => void {
  return () => relay(channel, options);
}

/** Registers the `"relay"` entries of pubsub.config.json. */
export function registerRelays(entries: unknown, where = 'pubsub.config.json'): void {
  if (entries === undefined) return;
  if (!Array.isArray(entries)) throw new PubSubError('pubsub.config', `${where}: "relay" must be a list of { "channel", "to", … } objects.`);
  for (const [i, entry] of entries.entries()) {
    if (!entry || typeof entry !== 'object' || typeof (entry as RelayConfig).channel !== 'string') {
      throw new PubSubError('pubsub.config', `${where}: "relay"[${i}] must be an object with "channel" and "to", such as {"channel": "orders", "to": "amqp", "exchange": "orders"}.`);
    }
    const { channel, ...options } = entry as RelayConfig;
    for (const key of ['routingKey', 'subject', 'orderKey'] as const) {
      if (options[key] !== undefined && typeof options[key] !== 'string') throw new PubSubError('pubsub.config', `${where}: "relay"[${i}].${key} must be a string (the config file takes templates such as "orders.{region}" and field paths, not functions).`);
    }
    relay(channel, options);
  }
}

/** The message of a claimed row: its stored payload bytes as they are, its id and its context as headers. */
export function outgoing(l: ListenerDefinition, n: Stored): Outgoing {
  const def = l.relay!;
  let headers: Record<string, string> | undefined;
  if (n.context !== null) {
    headers = {};
    const { [TRACE_KEY]: trace, ...rest } = JSON.parse(n.context) as Record<string, unknown>;
    if (Object.keys(rest).length) headers['pubsub-context'] = JSON.stringify(rest);
    const carrier = trace as { traceparent?: unknown; tracestate?: unknown } | undefined;
    if (typeof carrier?.traceparent === 'string') headers.traceparent = carrier.traceparent;
    if (typeof carrier?.tracestate === 'string' && carrier.tracestate) headers.tracestate = carrier.tracestate;
  }
  return {
    id: `${l.id}:${n.id}`,
    channel: n.channel,
    createdAt: Date.parse(n.created_at.replace(' ', 'T').replace(/([+-]\d\d)$/, '$1:00')) || Date.now(),
    destination: def.destination.of(def.destination.parse ? JSON.parse(n.payload) : undefined),
    body: Buffer.from(n.payload),
    headers,
  };
}

/** Hides credentials in a URL for messages. */
export const redact = (url: string) => url.replace(/\/\/[^@/]*@/, '//***@');

/** A row of an ordered relay's claim not published because an earlier row of its key failed in the same claim. */
export const HELD_BACK: unique symbol = Symbol('pgpubsub.relay.heldBack');

/** Backoff between connection attempts to a broker: 100 ms doubling to 5 s, half of it random. */
export function reconnectDelayMs(failures: number): number {
  const cap = Math.min(5000, 100 * 2 ** Math.min(failures, 10));
  return Math.round(cap / 2 + (Math.random() * cap) / 2);
}

/**
 * A publisher's broker connection (T: what it publishes on), made on the first burst and again after
 * it is lost, with backoff between failed attempts: a burst meanwhile fails at once with
 * `pubsub.brokerUnavailable`, and its rows stay stored.
 */
export abstract class BrokerLink<T> {
  protected current?: T;
  protected closed = false;
  private connecting?: Promise<T>;
  private failures = 0;
  private retryAt = 0;

  /** `role`: who logs (relay, or `bridge <name>`); `meanwhile`: what happens to the work while the broker is unreachable. */
  protected constructor(
    private readonly broker: string,
    protected readonly url: string,
    protected readonly logger: Logger,
    protected readonly role = 'relay',
    private readonly meanwhile = 'rows stay stored meanwhile',
  ) {}

  /** Makes a new connection, cleaning up what it opened when it fails. */
  protected abstract connect(): Promise<T>;

  protected async open(): Promise<T> {
    if (this.current) return this.current;
    if (this.closed) throw new RelayError('pubsub.brokerUnavailable', `the ${this.role} is closing`);
    const wait = this.retryAt - Date.now();
    if (wait > 0) throw new RelayError('pubsub.brokerUnavailable', `${this.broker} at ${redact(this.url)} is unreachable; connecting again in ${wait} ms`);
    return (this.connecting ??= this.reconnect().finally(() => (this.connecting = undefined)));
  }

  private async reconnect(): Promise<T> {
    try {
      const made = await this.connect();
      if (this.failures) this.logger.info(`${this.role}: connected to ${this.broker} at ${redact(this.url)} again`);
      this.failures = 0;
      return (this.current = made);
    } catch (error) {
      const ms = reconnectDelayMs(this.failures++);
      this.retryAt = Date.now() + ms;
      this.logger.warn(`${this.role}: cannot connect to ${this.broker} at ${redact(this.url)} (${(error as Error).message}); connecting again in ${ms} ms, ${this.meanwhile}`);
      throw new RelayError('pubsub.brokerUnavailable', `${this.broker} at ${redact(this.url)} is unreachable: ${(error as Error).message}`, error);
    }
  }
}

/** Loads an optional broker client, or says how to install it. */
export async function importClient<T>(to: Broker, who = 'A relay to'): Promise<T> {
  const pkg = to === 'amqp' ? 'amqplib' : 'nats';
  try {
    return (await import(pkg)) as T;
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw error;
    throw new PubSubError('pubsub.missingDependency', `${who} ${to === 'amqp' ? 'RabbitMQ' : 'NATS JetStream'} needs the ${pkg} package, which is not installed: run \`npm install ${pkg}\` (an optional peer dependency of pgpubsub), or remove the ${who.split(' ')[1]}.`, { cause: error });
  }
}

/** The worker's broker connections: one publisher per broker URL, made on the first burst, reconnected after a loss. */
export class RelayHub {
  private readonly publishers = new Map<string, Publisher>();

  /** `factories`: a publisher per broker kind (load() gives the real ones). */
  constructor(
    private readonly factories: Map<Broker, (url: string, logger: Logger) => Publisher>,
    private readonly logger: Logger,
  ) {}

  /** Loads the clients the relays need now, so that a missing one stops the worker at start rather than failing every row. */
  static async load(relays: ListenerDefinition[], logger: Logger): Promise<RelayHub> {
    const factories = new Map<Broker, (url: string, logger: Logger) => Publisher>();
    for (const to of new Set(relays.map((l) => l.relay!.to))) {
      if (to === 'amqp') factories.set(to, (await import('./relay-amqp.js')).amqpPublisher(await importClient(to)));
      else factories.set(to, (await import('./relay-nats.js')).natsPublisher(await importClient(to)));
    }
    return new RelayHub(factories, logger);
  }

  /**
   * Publishes a relay's claimed rows and waits for the broker's confirms. Per row: undefined once the
   * broker confirmed it, the error if not, or HELD_BACK (not published: an earlier row of its key
   * failed in this claim). Unordered: one burst. Ordered: the claim's rows in id order, by key; a
   * burst takes the next row of every key, and the next burst goes out only once the broker confirmed
   * the previous one, so each key reaches the broker in order, one confirm round trip per row of a
   * key and many keys per round trip.
   */
  async send(l: ListenerDefinition, rows: Stored[]): Promise<Array<unknown | undefined>> {
    const def = l.relay!;
    const url = def.url ?? brokerUrlFromEnv(def.to);
    const key = `${def.to} ${url}`;
    let publisher = this.publishers.get(key);
    if (!publisher) this.publishers.set(key, (publisher = this.factories.get(def.to)!(url, this.logger)));
    const errors: Array<unknown | undefined> = new Array(rows.length);
    const runs = new Map<string | null, number[]>();
    rows.forEach((n, i) => {
      const k = l.delivery.ordered ? n.order_key : null;
      const run = runs.get(k);
      if (run) run.push(i);
      else runs.set(k, [i]);
    });
    for (let step = 0; ; step++) {
      const messages: Outgoing[] = [];
      const at: number[] = [];
      for (const run of runs.values()) {
        // Unordered: every row in this one burst; ordered: the key's next row, if its earlier ones went out.
        for (const i of l.delivery.ordered ? run.slice(step, step + 1) : run) {
          if (step > 0 && errors[run[step - 1]!] !== undefined) {
            errors[i] = HELD_BACK;
            continue;
          }
          try {
            messages.push(outgoing(l, rows[i]!));
            at.push(i);
          } catch (error) {
            errors[i] = error; // this row's routing key or subject failed: only it (and the rest of its key) waits for a retry
          }
        }
      }
      if (messages.length) {
        const started = performance.now();
        const confirmed = await publisher.publish(messages, { exchange: def.exchange, mandatory: def.mandatory, timeoutMs: def.timeoutMs });
        debug('%s: %d published and confirmed in %d ms', l.id, messages.length, Math.round(performance.now() - started));
        confirmed.forEach((e, j) => (errors[at[j]!] = e));
      }
      if (!l.delivery.ordered || ![...runs.values()].some((run) => run.length > step + 1)) return errors;
    }
  }

  async close(): Promise<void> {
    await Promise.all([...this.publishers.values()].map((p) => p.close().catch(() => {})));
    this.publishers.clear();
  }
}

/**
 * An error of a broker that refused or lost a message, or could not be reached. A condition of the
 * broker, not of our code: no stack, so that the failed attempts of a burst (one log line per row)
 * stay one line each while a broker is down.
 */
export class RelayError extends PubSubError {
  constructor(code: 'pubsub.relayNotConfirmed' | 'pubsub.brokerUnavailable', message: string, cause?: unknown) {
    super(code, message, cause === undefined ? undefined : { cause });
    this.stack = `${this.name} [${code}]: ${message}`;
  }
}
