/** The one global registry that decorators record into and the worker and migrations read from. */
import { PubSubError } from './errors.js';
import type { RelayDefinition } from './relay.js';
import type { StandardSchemaV1 } from './standard-schema.js';
import type { CatchUp, Timing } from './timing.js';
import type { Channel, TriggerOperation, TriggerTiming } from './types.js';

export interface TriggerSpec {
  /** Prisma model name. */
  model: string;
  when: TriggerTiming;
  /** Sorted, without duplicates. */
  events: TriggerOperation[];
  /** SQL boolean expression over OLD/NEW, used as the trigger's WHEN clause. */
  condition?: string;
  /** Prisma field names: an UPDATE fires only when one of these columns is in the SET list. */
  columns?: string[];
  /**
   * Fields the row images carry: sorted Prisma field names (the primary key is always added), or '*'
   * for every field. Unset: every field on durable channels, the primary key on non-durable ones.
   */
  select?: string[] | '*';
}

/** How a listener's durable notifications are retried, ordered and batched (all optional). */
export interface DeliveryOptions {
  /**
   * Attempts before the notification is dead-lettered (kept, visible, never retried on its own).
   * @defaultValue 10
   */
  maxAttempts?: number;
  /** Delay before attempt n+1: a random time up to min(maxMs, baseMs * 2^(n-1)). @defaultValue { baseMs: 1000, maxMs: 300000 } */
  backoff?: { baseMs?: number; maxMs?: number };
  /** Cut an attempt off after this long: ctx.signal aborts, the attempt counts as failed. */
  timeoutMs?: number;
  /** Process notifications strictly one after another, in the order they were written, per key. */
  ordered?: boolean;
  /**
   * With `ordered`: the key; notifications of different keys run independently. Default one key. A
   * field path of the stored payload (`'customerId'`, `'new.accountId'`) is stored with the row by its
   * writer (see `orderPath`); a function is computed by the worker before it claims.
   */
  orderKey?: string | ((payload: any) => string);
  /** Hand the listener arrays of up to `size` payloads, waiting up to `waitMs` for a batch to fill. */
  batch?: { size: number; waitMs?: number };
}

/** Longest orderKey path, in characters. */
const MAX_PATH = 200;

/**
 * The segments of an orderKey field path (`'order.customerId'` → ['order', 'customerId']), checked:
 * 1 to 200 characters, no empty segment, no control character. Any other character is allowed (a JSON
 * key may hold quotes or braces): the path only ever reaches SQL quoted as a literal. Throws a message
 * for the caller to wrap.
 */
export function parseOrderPath(path: unknown): string[] {
  if (typeof path !== 'string' || !path) throw new Error(`orderKey must be a payload field path such as "customerId" or "order.customerId", or a function (payload) => string; got ${typeof path === 'string' ? 'an empty string' : typeof path}.`);
  if (path.length > MAX_PATH) throw new Error(`the orderKey path is ${path.length} characters long; at most ${MAX_PATH}.`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(path)) throw new Error(`the orderKey path ${JSON.stringify(path)} holds a control character.`);
  const segments = path.split('.');
  if (segments.some((s) => !s)) throw new Error(`the orderKey path ${JSON.stringify(path)} has an empty segment; write field names separated by single dots, such as "order.customerId".`);
  return segments;
}

/**
 * Where a listener's order key is stored by the writer (pubsub.notify(), trigger functions): its path
 * segments; [] for an ordered listener without orderKey (one key, ''); null when the worker keys its
 * rows (an orderKey function) or it is not ordered.
 */
export function orderPath(l: Pick<ListenerDefinition, 'delivery'>): string[] | null {
  const { ordered, orderKey } = l.delivery;
  if (!ordered || typeof orderKey === 'function') return null;
  return orderKey === undefined ? [] : parseOrderPath(orderKey);
}

export interface ListenerDefinition {
  /** Stored with each notification: `Class.method`, or the `name` option. Unique across the registry. */
  id: string;
  channel: string;
  durable: boolean;
  /** Prototype (instance method) or constructor (static method) that owns the method. */
  target: object;
  method: string | symbol;
  /** The class payloads are turned into (custom channels). */
  payloadType?: Function;
  /** Custom channels defined with a Standard Schema: payloads are validated with it instead (no class). */
  schema?: StandardSchemaV1;
  trigger?: TriggerSpec;
  /** A scheduled method (@Every, @Cron): its payload is the slot, stored by the scheduler itself, so it needs no subscription. */
  schedule?: string;
  delivery: DeliveryOptions;
  /** A relay (relay.ts): the drain publishes its rows to a broker instead of calling a method. */
  relay?: RelayDefinition;
}

/** A schedule (@Every, @Cron): the workers run it once per slot, all of them together. */
export interface ScheduleDefinition {
  /** Unique; the row of pubsub.schedule, and the listener's id for a method. */
  name: string;
  timing: Timing;
  catchUp: CatchUp;
  /** A method: each slot is stored as a notification for this listener (channel `schedule:<name>`). */
  listener?: ListenerDefinition;
  /** Or each slot publishes `payload(slot)` on a channel. */
  publish?: { channel: Channel<any, any> | string; payload: (slot: Date) => unknown };
}

export interface ChannelDefinition {
  name: string;
  durable: boolean;
  /** schedule: the channel of one scheduled method, `schedule:<name>`. */
  kind: 'custom' | 'trigger' | 'schedule';
  listeners: ListenerDefinition[];
}

export class Registry {
  readonly channels = new Map<string, ChannelDefinition>();
  readonly listenerIds = new Set<string>();
  readonly schedules = new Map<string, ScheduleDefinition>();

  register(listener: ListenerDefinition): void {
    if (this.listenerIds.has(listener.id)) {
      throw new PubSubError(
        'pubsub.duplicateListener',
        `${listener.id} is registered twice. Is the module loaded twice (e.g. both its .ts and .js file, or by two --require paths)?`,
      );
    }
    const kind = listener.trigger ? 'trigger' : listener.schedule ? 'schedule' : 'custom';
    const existing = this.channels.get(listener.channel);
    if (existing && (existing.kind !== kind || existing.durable !== listener.durable)) {
      const first = existing.listeners[0]!.id;
      throw new PubSubError(
        'pubsub.channelConflict',
        `Channel "${listener.channel}": ${listener.id} is a ${listener.durable ? 'durable' : 'non-durable'} ${kind} listener but ${first} made it a ${existing.durable ? 'durable' : 'non-durable'} ${existing.kind} channel. Listeners of one channel must agree; give one of them its own channel.`,
      );
    }
    const channel = existing ?? { name: listener.channel, durable: listener.durable, kind, listeners: [] };
    channel.listeners.push(listener);
    this.channels.set(listener.channel, channel);
    this.listenerIds.add(listener.id);
  }

  /** A schedule; a method's listener is registered first (see `register`), under the same name. */
  registerSchedule(schedule: ScheduleDefinition): void {
    if (this.schedules.has(schedule.name)) {
      throw new PubSubError(
        'pubsub.duplicateListener',
        `Schedule ${schedule.name} is registered twice. Is the module loaded twice, or do two schedules need a \`name\` of their own?`,
      );
    }
    if (schedule.listener) this.register(schedule.listener);
    this.schedules.set(schedule.name, schedule);
  }

  get(channel: string): ChannelDefinition | undefined {
    return this.channels.get(channel);
  }

  list(): ChannelDefinition[] {
    return [...this.channels.values()];
  }

  /** Forgets everything (tests). */
  clear(): void {
    this.channels.clear();
    this.listenerIds.clear();
    this.schedules.clear();
  }
}

const KEY = Symbol.for('pgpubsub.registry');

/** The registry, shared on globalThis so that two copies of the package still see one set of listeners. */
export function getRegistry(): Registry {
  const g = globalThis as { [KEY]?: Registry };
  return (g[KEY] ??= new Registry());
}
