/** Decorators: they only validate and record into the registry; nothing here touches the database. */
import 'reflect-metadata';
import { assertChannelName } from './channels.js';
import { PubSubError } from './errors.js';
import { getRegistry, type DeliveryOptions, type TriggerSpec } from './registry.js';
import type { Channel, NotificationContext, TriggerOperation, TriggerPayload, TriggerTiming } from './types.js';

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
  /** With `ordered`: notifications with the same key are processed one after another, in order. */
  orderKey?: (payload: T) => string;
}

export interface ListenOptions<T = any> extends CommonOptions<T> {
  /** The payload class, where the parameter's type cannot tell (batch listeners take `T[]`). */
  type?: new (...args: any[]) => T;
}

export interface TriggerListenOptions extends CommonOptions<TriggerPayload<any>> {
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
  select?: string[] | '*';
}

const LISTENER_NAME = /^[A-Za-z0-9_.:\-]{1,200}$/;

function delivery(id: string, options: CommonOptions<any>): { name: string; delivery: DeliveryOptions } {
  const { maxAttempts, backoff, timeoutMs, ordered, orderKey, batch } = options;
  const name = options.name ?? id;
  const fail = (why: string) => {
    throw new PubSubError('pubsub.config', `${id}: ${why}`);
  };
  if (!LISTENER_NAME.test(name)) fail(`name "${name}" must be 1 to 200 letters, digits, "_", ".", ":" or "-".`);
  if (maxAttempts !== undefined && !(Number.isInteger(maxAttempts) && maxAttempts >= 1)) fail('maxAttempts must be a whole number ≥ 1.');
  if (timeoutMs !== undefined && !(timeoutMs > 0)) fail('timeoutMs must be a positive number of milliseconds.');
  if (backoff && !((backoff.baseMs ?? 1) > 0 && (backoff.maxMs ?? 1) > 0)) fail('backoff.baseMs and backoff.maxMs must be positive.');
  if (orderKey && !ordered) fail('orderKey needs ordered: true.');
  if (batch && !(Number.isInteger(batch.size) && batch.size >= 1)) fail('batch.size must be a whole number ≥ 1.');
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
 * parameter class (or of the channel's class), built by class-transformer.
 *
 * @example
 * class PostListeners {
 *   @Listen('post_reads_per_date')
 *   async onRead(read: PostRead, ctx: NotificationContext) {}
 * }
 */
export function Listen<T = any>(channel: Channel<T> | string, options: ListenOptions<T> & { batch: { size: number; waitMs?: number } }): MethodDecoratorFor<T[]>;
export function Listen<T = any>(channel: Channel<T> | string, options?: ListenOptions<T>): MethodDecoratorFor<T>;
export function Listen<T = any>(channel: Channel<T> | string, options: ListenOptions<T> = {}): MethodDecoratorFor<any> {
  const name = typeof channel === 'string' ? channel : channel.name;
  const durable = typeof channel === 'string' ? options.durable ?? true : channel.durable;
  return (target, key) => {
    const id = listenerId(target, key);
    assertChannelName(name, id);
    const reflected = paramType(target, key, id);
    const payloadType = options.type ?? (typeof channel === 'object' && channel.type ? channel.type : reflected);
    if (WRAPPER_TYPES.has(payloadType)) {
      throw new PubSubError(
        'pubsub.missingParamType',
        `${id}: the payload parameter's type is ${payloadType.name}, which leaves nothing to rebuild the payload from at runtime. Declare the payload as a class (interfaces and type literals vanish when compiled), e.g. \`class PostRead { postId!: number; @Type(() => Date) date!: Date }\`, or pass one to defineChannel(name, Class)${options.batch ? ' or as the `type` option (batch listeners take an array)' : ''}.`,
      );
    }
    const { name: listener, delivery: opts } = delivery(id, options);
    getRegistry().register({ id: listener, channel: name, durable, target, method: key, payloadType, delivery: opts });
  };
}

/**
 * Subscribes a method to a trigger on a Prisma model's table. The method receives a
 * `TriggerPayload<Model>`. Run `pubsub make-migration` to create or update the trigger.
 */
export function TriggerListen(
  spec: TriggerListenOptions & { model: string; when: TriggerTiming; events: TriggerOperation[]; columns?: string[] } & { batch: { size: number; waitMs?: number } },
): MethodDecoratorFor<TriggerPayload<any>[]>;
export function TriggerListen(
  spec: TriggerListenOptions & { model: string; when: TriggerTiming; events: TriggerOperation[]; columns?: string[] },
): MethodDecoratorFor<TriggerPayload<any>>;
export function TriggerListen(
  spec: TriggerListenOptions & { model: string; when: TriggerTiming; events: TriggerOperation[]; columns?: string[] },
): MethodDecoratorFor<any> {
  const { model, when, channel = `model.${model}`, durable = true } = spec;
  return (target, key) => {
    const id = listenerId(target, key);
    if (typeof model !== 'string' || !/^[A-Za-z][A-Za-z0-9_]*$/.test(model)) {
      throw new PubSubError('pubsub.schema', `${id}: model must be a Prisma model name such as "Author", got ${JSON.stringify(model)}.`);
    }
    if (when !== 'BEFORE' && when !== 'AFTER') {
      throw new PubSubError('pubsub.schema', `${id}: when must be 'BEFORE' or 'AFTER', got ${JSON.stringify(when)}.`);
    }
    const events = [...new Set(spec.events)].sort();
    if (events.length === 0 || events.some((e) => !['INSERT', 'UPDATE', 'DELETE'].includes(e))) {
      throw new PubSubError('pubsub.schema', `${id}: events must be a non-empty list of 'INSERT', 'UPDATE', 'DELETE'.`);
    }
    if (spec.columns && !events.includes('UPDATE')) {
      throw new PubSubError('pubsub.schema', `${id}: columns only apply to UPDATE events.`);
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

function shortcut(when: TriggerTiming, events: TriggerOperation[]) {
  function decorator(model: string, options: TriggerListenOptions & { batch: { size: number; waitMs?: number } }): MethodDecoratorFor<TriggerPayload<any>[]>;
  function decorator(model: string, options?: TriggerListenOptions): MethodDecoratorFor<TriggerPayload<any>>;
  function decorator(model: string, options: TriggerListenOptions = {}): MethodDecoratorFor<any> {
    return TriggerListen({ ...options, model, when, events });
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
