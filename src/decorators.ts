/** Decorators: they only validate and record into the registry; nothing here touches the database. */
import 'reflect-metadata';
import { assertChannelName } from './channels.js';
import { PubSubError } from './errors.js';
import { getRegistry, parseOrderPath, type DeliveryOptions, type TriggerSpec } from './registry.js';
import { cronTiming, everyTiming, parseInterval, type CatchUp, type Timing } from './timing.js';
import type { Channel, ModelField, ModelName, ModelRow, NotificationContext, TriggerOperation, TriggerPayload, TriggerTiming } from './types.js';

type MethodDecoratorFor<T> = <F extends (payload: T, ctx: NotificationContext) => unknown>(
  target: object,
  key: string | symbol,
  descriptor: TypedPropertyDescriptor<F>,
) => void;

interface CommonOptions<T> extends Omit<DeliveryOptions, 'orderKey'> {
  /** Store notifications until processed (default true). */
  durable?: boolean;
  /**
   * The listener's name, stored with its notifications; default `Class.method`. Set it before
   * renaming the class or method, so that stored notifications still find the listener.
   */
  name?: string;
  /**
   * With `ordered`: notifications with the same key are processed one after another, in order. A
   * field path of the payload as stored (`'customerId'`, `'new.accountId'` for triggers) is stored
   * with each row by its writer; a function is run by the worker. Default one key.
   */
  orderKey?: string | ((payload: T) => string);
}

export interface ListenOptions<T = any> extends CommonOptions<T> {
  /** The payload class, where the parameter's type cannot tell (batch listeners take `T[]`). */
  type?: new (...args: any[]) => T;
}

/**
 * Options of the trigger listeners. `M` is the model, `Op` the operations the listener fires on; with
 * a client registered (README, "Typed models"), `select` and `columns` take only the model's fields.
 */
export interface TriggerListenOptions<M extends string = string, Op extends TriggerOperation = TriggerOperation> extends CommonOptions<TriggerPayload<M, Op>> {
  /** Channel name; default `model.<Model>` (one channel per model). */
  channel?: string;
  /**
   * SQL boolean expression over OLD/NEW, used as the trigger's WHEN clause. Write Prisma field names
   * (`NEW.balanceCents > 100`); they become the `@map`ped columns. Checked by make-migration.
   */
  condition?: string;
  /**
   * The fields `old`/`new` carry (Prisma field names; the primary key is always included), or `'*'`
   * for the whole row. Default: the whole row on durable channels (stored where only the worker's role
   * can read it), only the primary key on non-durable ones, whose NOTIFY any role that can connect
   * may LISTEN to, whatever its rights on the table.
   */
  select?: readonly ModelField<M>[] | '*';
  /**
   * Fire on UPDATE only when one of these fields is in the statement's SET list (`UPDATE OF`), even
   * if its value does not change; other events are unaffected. Only where UPDATE is one of the events.
   */
  columns?: 'UPDATE' extends Op ? readonly ModelField<M>[] : never;
}

type Batch = { size: number; waitMs?: number };

/** The options whose values shape the payload's type (the decorators infer them from the call), and `orderKey`, which sees that payload. */
type Shaping = 'select' | 'durable' | 'batch' | 'orderKey';
type Shaped<M extends string, Op extends TriggerOperation, S, D, B> = {
  select?: S;
  durable?: D;
  batch?: B;
  orderKey?: string | ((payload: TriggerPayload<M, Op, DeliveredRow<M, S, D>>) => string);
};
type Selection<M extends string> = readonly ModelField<M>[] | '*' | undefined;

/**
 * The rows a listener receives, as its options shape them: the whole row; the `select`ed fields plus
 * the primary key (which the type cannot name, so the other fields are optional); or, on non-durable
 * channels without `select`, only the key. Unregistered models stay `any`.
 */
type DeliveredRow<M extends string, S, D> =
  0 extends 1 & ModelRow<M>
    ? any
    : [S] extends [readonly (infer F)[]]
      ? { [K in keyof ModelRow<M>]?: ModelRow<M>[K] } & Pick<ModelRow<M>, F & keyof ModelRow<M>>
      : [S] extends ['*']
        ? ModelRow<M>
        : [D] extends [true]
          ? ModelRow<M>
          : Partial<ModelRow<M>>;

/** What the decorated method is called with: one payload, or an array of them with `batch`. */
type Delivered<M extends string, Op extends TriggerOperation, S, D, B> = [B] extends [Batch]
  ? TriggerPayload<M, Op, DeliveredRow<M, S, D>>[]
  : TriggerPayload<M, Op, DeliveredRow<M, S, D>>;

/** What TriggerListen() takes: the options plus the model, timing and events. */
export type TriggerListenSpec<M extends string = string, Op extends TriggerOperation = TriggerOperation> = TriggerListenOptions<M, Op> & {
  /** The Prisma model name, as written in schema.prisma. */
  model: M;
  when: TriggerTiming;
  events: readonly Op[];
};

const LISTENER_NAME = /^[A-Za-z0-9_.:\-]{1,200}$/;
/** setTimeout fires at once for longer delays (32-bit overflow), so a longer timeout would cut every attempt short. */
const MAX_TIMEOUT_MS = 2 ** 31 - 1;
const DEFAULT_BACKOFF = { baseMs: 1000, maxMs: 300_000 };

const COMMON_KEYS = ['durable', 'name', 'orderKey', 'maxAttempts', 'backoff', 'timeoutMs', 'ordered', 'batch'];
const LISTEN_KEYS = [...COMMON_KEYS, 'type'];
const SHORTCUT_KEYS = [...COMMON_KEYS, 'channel', 'condition', 'select', 'columns'];
const TRIGGER_KEYS = [...SHORTCUT_KEYS, 'model', 'when', 'events'];

/** A value as it would be written in code, for messages (short, never the whole of something huge). */
function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value.length > 60 ? `${value.slice(0, 60)}…` : value);
  if (typeof value === 'function') return 'a function';
  if (typeof value === 'bigint') return `${value}n`;
  if (Array.isArray(value)) return 'an array';
  if (value !== null && typeof value === 'object') return 'an object';
  return String(value);
}

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const isPositive = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0;

/**
 * Options come from JavaScript as often as from TypeScript, so their shape is checked here rather
 * than trusted: an unknown key is usually a typo that would otherwise silently do nothing.
 */
function checkShape(id: string, options: unknown, keys: string[], what: string): asserts options is Record<string, unknown> {
  if (!isObject(options)) throw new PubSubError('pubsub.config', `${id}: ${what} must be an object such as { maxAttempts: 5 }, got ${show(options)}.`);
  const unknown = Object.keys(options).find((k) => !keys.includes(k));
  if (unknown !== undefined) {
    throw new PubSubError('pubsub.config', `${id}: unknown option ${JSON.stringify(unknown)} in ${what}; the options are ${keys.join(', ')}.`);
  }
}

function delivery(id: string, options: CommonOptions<any>): { name: string; delivery: DeliveryOptions } {
  const { maxAttempts, backoff, timeoutMs, ordered, orderKey, batch, durable } = options;
  const name = options.name ?? id;
  const fail = (why: string) => {
    throw new PubSubError('pubsub.config', `${id}: ${why}`);
  };
  if (typeof name !== 'string' || !LISTENER_NAME.test(name)) fail(`name ${show(name)} must be 1 to 200 letters, digits, "_", ".", ":" or "-".`);
  if (durable !== undefined && typeof durable !== 'boolean') fail(`durable must be true or false, got ${show(durable)}.`);
  if (maxAttempts !== undefined && !(Number.isSafeInteger(maxAttempts) && maxAttempts >= 1)) fail(`maxAttempts must be a whole number ≥ 1, got ${show(maxAttempts)}.`);
  if (timeoutMs !== undefined && !(isPositive(timeoutMs) && timeoutMs <= MAX_TIMEOUT_MS)) {
    fail(`timeoutMs must be a positive number of milliseconds up to ${MAX_TIMEOUT_MS}, got ${show(timeoutMs)}.`);
  }
  if (backoff !== undefined) {
    checkShape(id, backoff, ['baseMs', 'maxMs'], 'backoff');
    if (backoff.baseMs !== undefined && !isPositive(backoff.baseMs)) fail(`backoff.baseMs must be a positive number of milliseconds, got ${show(backoff.baseMs)}.`);
    if (backoff.maxMs !== undefined && !isPositive(backoff.maxMs)) fail(`backoff.maxMs must be a positive number of milliseconds, got ${show(backoff.maxMs)}.`);
    const { baseMs, maxMs } = { ...DEFAULT_BACKOFF, ...backoff };
    if (baseMs > maxMs) fail(`backoff.baseMs (${baseMs}) exceeds backoff.maxMs (${maxMs}${backoff.maxMs === undefined ? ', the default' : ''}); raise maxMs or lower baseMs.`);
  }
  if (ordered !== undefined && typeof ordered !== 'boolean') fail(`ordered must be true or false, got ${show(ordered)}.`);
  if (orderKey !== undefined && typeof orderKey !== 'function') {
    try {
      parseOrderPath(orderKey);
    } catch (error) {
      fail((error as Error).message);
    }
  }
  if (orderKey && !ordered) fail('orderKey needs ordered: true.');
  if (batch !== undefined) {
    checkShape(id, batch, ['size', 'waitMs'], 'batch');
    if (!(Number.isSafeInteger(batch.size) && batch.size >= 1)) fail(`batch.size must be a whole number ≥ 1, got ${show(batch.size)}.`);
    if (batch.waitMs !== undefined && !(typeof batch.waitMs === 'number' && batch.waitMs >= 0 && batch.waitMs <= MAX_TIMEOUT_MS)) {
      fail(`batch.waitMs must be a number of milliseconds from 0 to ${MAX_TIMEOUT_MS}, got ${show(batch.waitMs)}.`);
    }
  }
  if (batch && ordered) fail('a listener cannot be both ordered and batched.');
  const result: DeliveryOptions = {};
  if (maxAttempts !== undefined) result.maxAttempts = maxAttempts;
  if (backoff) result.backoff = backoff;
  if (timeoutMs !== undefined) result.timeoutMs = timeoutMs;
  if (ordered) result.ordered = true;
  if (orderKey) result.orderKey = orderKey;
  if (batch) result.batch = batch;
  return { name, delivery: result };
}

const WRAPPER_TYPES = new Set<Function>([Object, Array, Function, Promise]);

function listenerId(target: object, key: string | symbol): string {
  const cls = typeof target === 'function' ? target : target.constructor;
  return `${cls.name}.${String(key)}`;
}

function paramType(target: object, key: string | symbol, id: string): Function {
  const types: Function[] | undefined = Reflect.getMetadata('design:paramtypes', target, key);
  if (!types) {
    throw new PubSubError(
      'pubsub.missingParamType',
      `${id}: no parameter type metadata. Compile with tsc (or SWC) and "experimentalDecorators": true, "emitDecoratorMetadata": true in tsconfig.json; esbuild, tsx and plain vitest drop this metadata.`,
    );
  }
  if (types.length === 0) {
    throw new PubSubError('pubsub.missingParamType', `${id}: a listener takes the payload as its first parameter.`);
  }
  return types[0]!;
}

/**
 * Subscribes a method to a custom channel. The payload arrives as an instance of the method's first
 * parameter class (or of the channel's class), built by class-transformer; on a channel defined with a
 * Standard Schema, as the schema's output.
 *
 * @example
 * class PostListeners {
 *   @Listen('post_reads_per_date')
 *   async onRead(read: PostRead, ctx: NotificationContext) {}
 * }
 */
export function Listen<T = any>(channel: Channel<T, any> | string, options: ListenOptions<T> & { batch: { size: number; waitMs?: number } }): MethodDecoratorFor<T[]>;
export function Listen<T = any>(channel: Channel<T, any> | string, options?: ListenOptions<T>): MethodDecoratorFor<T>;
export function Listen<T = any>(channel: Channel<T, any> | string, options: ListenOptions<T> = {}): MethodDecoratorFor<any> {
  return (target, key) => {
    const id = listenerId(target, key);
    const def = typeof channel === 'string' ? undefined : (channel as Channel<T> | null | undefined);
    const name: unknown = def ? def.name : channel;
    assertChannelName(name, id);
    checkShape(id, options, LISTEN_KEYS, 'the options of @Listen');
    if (options.type !== undefined && typeof options.type !== 'function') {
      throw new PubSubError('pubsub.config', `${id}: the type option must be a class, got ${show(options.type)}.`);
    }
    const durable = def ? def.durable : (options.durable as boolean | undefined) ?? true;
    const schema = def?.schema;
    if (schema && options.type !== undefined) throw new PubSubError('pubsub.config', `${id}: channel "${name}" is defined with a schema, whose output the listener receives; remove the type option.`);
    // A schema is the payload type: no class to rebuild, so no decorator metadata is needed either.
    const reflected = schema ? undefined : paramType(target, key, id);
    const payloadType = schema ? undefined : options.type ?? def?.type ?? reflected;
    if (payloadType && WRAPPER_TYPES.has(payloadType)) {
      throw new PubSubError(
        'pubsub.missingParamType',
        `${id}: the payload parameter's type is ${payloadType.name}, which leaves nothing to rebuild the payload from at runtime. Declare the payload as a class (interfaces and type literals vanish when compiled), e.g. \`class PostRead { postId!: number; @Type(() => Date) date!: Date }\`, pass one to defineChannel(name, Class)${options.batch ? ' or as the `type` option (batch listeners take an array)' : ''}, or define the channel with a schema (defineChannel(name, z.object(…))).`,
      );
    }
    const { name: listener, delivery: opts } = delivery(id, options);
    getRegistry().register({ id: listener, channel: name, durable, target, method: key, ...(schema ? { schema } : { payloadType }), delivery: opts });
  };
}

/**
 * Subscribes a method to a trigger on a Prisma model's table. The method receives a
 * `TriggerPayload<Model>`. Run `pubsub make-migration` to create or update the trigger.
 *
 * @example
 * @TriggerListen({ model: 'Order', when: 'AFTER', events: ['UPDATE'], columns: ['status'] })
 * async statusChanged(p: TriggerPayload<'Order', 'UPDATE'>) {}
 */
export function TriggerListen<
  M extends ModelName,
  const Op extends TriggerOperation,
  const S extends Selection<M> = undefined,
  D extends boolean = true,
  B extends Batch | undefined = undefined,
>(spec: Omit<TriggerListenSpec<M, Op>, Shaping> & Shaped<M, Op, S, D, B>): MethodDecoratorFor<Delivered<M, Op, S, D, B>>;
export function TriggerListen(spec: TriggerListenSpec): MethodDecoratorFor<any> {
  return triggerListener(spec);
}

/** TriggerListen() and the shortcuts, past their compile-time types. */
function triggerListener(spec: TriggerListenSpec): MethodDecoratorFor<any> {
  return (target, key) => {
    const id = listenerId(target, key);
    checkShape(id, spec, TRIGGER_KEYS, 'the options of the trigger listener');
    const { model, when, channel = `model.${model}`, durable = true } = spec;
    if (typeof model !== 'string' || !/^[A-Za-z][A-Za-z0-9_]*$/.test(model)) {
      throw new PubSubError('pubsub.schema', `${id}: model must be a Prisma model name such as "Author", got ${JSON.stringify(model)}.`);
    }
    if (when !== 'BEFORE' && when !== 'AFTER') {
      throw new PubSubError('pubsub.schema', `${id}: when must be 'BEFORE' or 'AFTER', got ${JSON.stringify(when)}.`);
    }
    const events = Array.isArray(spec.events) ? [...new Set(spec.events)].sort() : [];
    if (events.length === 0 || events.some((e) => !['INSERT', 'UPDATE', 'DELETE'].includes(e))) {
      throw new PubSubError('pubsub.schema', `${id}: events must be a non-empty list of 'INSERT', 'UPDATE', 'DELETE'.`);
    }
    if (spec.columns !== undefined && !(Array.isArray(spec.columns) && spec.columns.every((c) => typeof c === 'string' && c.length > 0))) {
      throw new PubSubError('pubsub.schema', `${id}: columns must be a list of field names such as ['title'], got ${show(spec.columns)}.`);
    }
    if (spec.columns && !events.includes('UPDATE')) {
      throw new PubSubError(
        'pubsub.schema',
        `${id}: columns only apply to UPDATE events, and this listener fires on ${events.join(' and ')}. Listen to UPDATE as well (PostUpdateListen, PostSaveListen, PreUpdateListen, PreSaveListen, or 'UPDATE' in events), or remove columns.`,
      );
    }
    if (spec.condition !== undefined && typeof spec.condition !== 'string') {
      throw new PubSubError('pubsub.schema', `${id}: condition must be an SQL boolean expression as a string such as "NEW.published", got ${show(spec.condition)}.`);
    }
    assertChannelName(channel, id);
    paramType(target, key, id); // fails early when the toolchain drops decorator metadata
    const trigger: TriggerSpec = { model, when, events };
    if (spec.condition) trigger.condition = spec.condition;
    if (spec.columns) trigger.columns = [...new Set(spec.columns)].sort();
    if (spec.select !== undefined) trigger.select = selection(spec.select, id);
    const { name: listener, delivery: opts } = delivery(id, spec);
    getRegistry().register({ id: listener, channel, durable, target, method: key, trigger, delivery: opts });
  };
}

function selection(select: unknown, id: string): string[] | '*' {
  if (select === '*') return '*';
  if (!Array.isArray(select) || select.some((f) => typeof f !== 'string' || !/^[A-Za-z][A-Za-z0-9_]*$/.test(f))) {
    throw new PubSubError('pubsub.schema', `${id}: select must be '*' or a list of Prisma field names such as ['id', 'email'], got ${JSON.stringify(select)}.`);
  }
  return [...new Set(select as string[])].sort();
}

/** A shortcut's options: `columns` only where UPDATE is one of its events. */
type ShortcutOptions<M extends string, Op extends TriggerOperation> = Omit<TriggerListenOptions<M, Op>, Shaping | ('UPDATE' extends Op ? never : 'columns')>;

function shortcut<Op extends TriggerOperation>(when: TriggerTiming, events: Op[]) {
  function decorator<M extends ModelName, const S extends Selection<M> = undefined, D extends boolean = true, B extends Batch | undefined = undefined>(
    model: M,
    options?: ShortcutOptions<M, Op> & Shaped<M, Op, S, D, B>,
  ): MethodDecoratorFor<Delivered<M, Op, S, D, B>>;
  function decorator(model: string, options: Omit<TriggerListenOptions, 'orderKey'> & Pick<DeliveryOptions, 'orderKey'> = {}): MethodDecoratorFor<any> {
    return (target, key, descriptor) => {
      checkShape(listenerId(target, key), options, SHORTCUT_KEYS, 'the options of the trigger listener');
      triggerListener({ ...options, model, when, events })(target, key, descriptor);
    };
  }
  return decorator;
}

/** After a row of the model is inserted. */
export const PostInsertListen = shortcut('AFTER', ['INSERT']);
/** After a row of the model is updated. */
export const PostUpdateListen = shortcut('AFTER', ['UPDATE']);
/** After a row of the model is deleted. */
export const PostDeleteListen = shortcut('AFTER', ['DELETE']);
/** After a row of the model is inserted or updated. */
export const PostSaveListen = shortcut('AFTER', ['INSERT', 'UPDATE']);
/** Before a row is inserted: the payload has the row as it will be written by this statement. */
export const PreInsertListen = shortcut('BEFORE', ['INSERT']);
/** Before a row is updated. */
export const PreUpdateListen = shortcut('BEFORE', ['UPDATE']);
/** Before a row is deleted. The delete always goes ahead. */
export const PreDeleteListen = shortcut('BEFORE', ['DELETE']);
/** Before a row is inserted or updated. */
export const PreSaveListen = shortcut('BEFORE', ['INSERT', 'UPDATE']);

/** Options of a scheduled method (@Every, @Cron): its retries, like any listener's, and how missed slots are handled. */
export interface ScheduleOptions extends Pick<DeliveryOptions, 'maxAttempts' | 'backoff' | 'timeoutMs'> {
  /**
   * The schedule's name, kept in pubsub.schedule with its last slot; default `Class.method`. Set it
   * before renaming the class or method, or the schedule starts afresh (at its next slot).
   */
  name?: string;
  /**
   * Slots that passed while no worker ran: `'last'` runs the latest of them once, `'all'` runs each (at
   * most 100 at once), `'none'` skips them. @defaultValue 'last'
   */
  catchUp?: CatchUp;
}

/** A schedule that publishes on a channel at each slot instead of running a method (on a class). */
export interface PublishScheduleOptions<I> {
  publish: Channel<any, I> | string;
  /** The payload of a slot; default `{ slot }`. Runs in the transaction that records the slot: keep it quick. */
  payload?: (slot: Date) => I | Promise<I>;
  /** Default `Class.<channel>`. */
  name?: string;
  catchUp?: CatchUp;
}

export interface CronOptions {
  /** IANA time zone of the expression's wall-clock times, e.g. 'Europe/Paris'. @defaultValue 'UTC' */
  tz?: string;
}

const SCHEDULE_KEYS = ['name', 'catchUp', 'maxAttempts', 'backoff', 'timeoutMs'];
const PUBLISH_KEYS = ['name', 'catchUp', 'publish', 'payload'];

/** What @Every and @Cron return: a method decorator, or with `publish` a class decorator. */
function scheduler(timing: (where: string) => Timing, options: Record<string, unknown>, extraKeys: string[]) {
  return (target: object, key?: string | symbol): void => {
    const publishing = options !== null && typeof options === 'object' && 'publish' in options;
    const id = key === undefined ? (target as Function).name : listenerId(target, key);
    checkShape(id, options, [...(publishing ? PUBLISH_KEYS : SCHEDULE_KEYS), ...extraKeys], 'the options of the schedule');
    const catchUp = options.catchUp ?? 'last';
    if (!['none', 'last', 'all'].includes(catchUp as string)) {
      throw new PubSubError('pubsub.invalidSchedule', `${id}: catchUp must be 'none', 'last' or 'all', got ${show(catchUp)}.`);
    }
    const when = timing(id);
    if (publishing) {
      if (key !== undefined) {
        throw new PubSubError('pubsub.invalidSchedule', `${id}: a schedule with \`publish\` runs no method; put it on the class, or drop \`publish\` and call notify(…, { client: ctx.tx }) from the method.`);
      }
      const channel = options.publish as Channel<unknown> | string;
      const name = typeof channel === 'string' ? channel : channel?.name;
      assertChannelName(name, id);
      if (options.payload !== undefined && typeof options.payload !== 'function') {
        throw new PubSubError('pubsub.invalidSchedule', `${id}: payload must be a function (slot: Date) => payload, got ${show(options.payload)}.`);
      }
      const scheduleName = (options.name as string | undefined) ?? `${id}.${name}`;
      if (typeof scheduleName !== 'string' || !LISTENER_NAME.test(scheduleName)) {
        throw new PubSubError('pubsub.invalidSchedule', `${id}: name ${show(scheduleName)} must be 1 to 200 letters, digits, "_", ".", ":" or "-".`);
      }
      const payload = (options.payload as ((slot: Date) => unknown) | undefined) ?? ((slot: Date) => ({ slot }));
      getRegistry().registerSchedule({ name: scheduleName, timing: when, catchUp: catchUp as CatchUp, publish: { channel, payload } });
      return;
    }
    if (key === undefined) {
      throw new PubSubError('pubsub.invalidSchedule', `${id}: on a class, a schedule needs \`publish: channel\` (what to publish at each slot); otherwise put it on the method to run.`);
    }
    const { name, delivery: opts } = delivery(id, options);
    const channel = `schedule:${name}`;
    if (Buffer.byteLength(channel) > 63) {
      throw new PubSubError('pubsub.invalidSchedule', `${id}: the schedule's channel "${channel}" is over 63 bytes; give the schedule a shorter \`name\`.`);
    }
    const listener = { id: name, channel, durable: true, target, method: key, payloadType: Date, schedule: name, delivery: opts };
    getRegistry().registerSchedule({ name, timing: when, catchUp: catchUp as CatchUp, listener });
  };
}

type ScheduledMethod = MethodDecoratorFor<Date>;

/**
 * Runs the method once per interval, in one of the workers: `(slot: Date, ctx)`, with retries and dead
 * letters like any listener. Slots are multiples of the interval since the Unix epoch ('5m': :00, :05…
 * UTC). With `publish` (on a class), publishes `payload(slot)` on that channel at each slot instead.
 *
 * @example
 * class Reports {
 *   @Every('5m') async refresh(slot: Date, ctx: NotificationContext) {}
 * }
 * @Every(300_000, { publish: pipeline, payload: (slot) => ({ startTimeMs: slot.getTime() }) })
 * class Pipelines {}
 */
export function Every<I>(interval: string | number, options: PublishScheduleOptions<I>): (target: Function) => void;
export function Every(interval: string | number, options?: ScheduleOptions): ScheduledMethod;
export function Every(interval: string | number, options: ScheduleOptions | PublishScheduleOptions<unknown> = {}): any {
  return scheduler((where) => everyTiming(parseInterval(interval, where)), options as Record<string, unknown>, []);
}

/**
 * Runs the method at the times of a cron expression (minute hour day-of-month month day-of-week, or
 * @hourly, @daily…), in a time zone (default UTC), once across all workers. Daylight saving time: a
 * time skipped by the clocks going forward runs that much later (02:30 → 03:30), a time repeated when
 * they go back runs once, the first time. With `publish` (on a class), publishes instead, as @Every.
 *
 * @example
 * @Cron('0 * * * *', { tz: 'Europe/Paris' }) async hourly(slot: Date) {}
 */
export function Cron<I>(expression: string, options: PublishScheduleOptions<I> & CronOptions): (target: Function) => void;
export function Cron(expression: string, options?: ScheduleOptions & CronOptions): ScheduledMethod;
export function Cron(expression: string, options: (ScheduleOptions | PublishScheduleOptions<unknown>) & CronOptions = {}): any {
  const o = options as Record<string, unknown>;
  return scheduler((where) => cronTiming(expression, (o?.tz as string | undefined) ?? 'UTC', where), o, ['tz']);
}
