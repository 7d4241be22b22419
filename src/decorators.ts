/** Decorators: they only validate and record into the registry; nothing here touches the database. */
import 'reflect-metadata';
import { assertChannelName } from './channels.js';
import { PubSubError } from './errors.js';
import { getRegistry, type TriggerSpec } from './registry.js';
import type { Channel, NotificationContext, TriggerOperation, TriggerPayload, TriggerTiming } from './types.js';

type MethodDecoratorFor<T> = <F extends (payload: T, ctx: NotificationContext) => unknown>(
  target: object,
  key: string | symbol,
  descriptor: TypedPropertyDescriptor<F>,
) => void;

export interface ListenOptions {
  /** Store notifications until processed (default true). Must match the sender's choice. */
  durable?: boolean;
}

export interface TriggerListenOptions {
  /** Channel name; default `model.<Model>` (one channel per model). */
  channel?: string;
  /** Store notifications until processed (default true). */
  durable?: boolean;
  /** SQL boolean expression over OLD/NEW (column names), used as the trigger's WHEN clause. */
  condition?: string;
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
export function Listen<T = any>(channel: Channel<T> | string, options: ListenOptions = {}): MethodDecoratorFor<T> {
  const name = typeof channel === 'string' ? channel : channel.name;
  const durable = typeof channel === 'string' ? options.durable ?? true : channel.durable;
  return (target, key) => {
    const id = listenerId(target, key);
    assertChannelName(name, id);
    const reflected = paramType(target, key, id);
    const payloadType = typeof channel === 'object' && channel.type ? channel.type : reflected;
    if (WRAPPER_TYPES.has(payloadType)) {
      throw new PubSubError(
        'pubsub.missingParamType',
        `${id}: the payload parameter's type is ${payloadType.name}, which leaves nothing to rebuild the payload from at runtime. Declare the payload as a class (interfaces and type literals vanish when compiled), e.g. \`class PostRead { postId!: number; @Type(() => Date) date!: Date }\`, or pass one to defineChannel(name, Class).`,
      );
    }
    getRegistry().register({ id, channel: name, durable, target, method: key, payloadType });
  };
}

/**
 * Subscribes a method to a trigger on a Prisma model's table. The method receives a
 * `TriggerPayload<Model>`. Run `pubsub make-migration` to create or update the trigger.
 */
export function TriggerListen(spec: {
  model: string;
  when: TriggerTiming;
  events: TriggerOperation[];
  condition?: string;
  columns?: string[];
  channel?: string;
  durable?: boolean;
}): MethodDecoratorFor<TriggerPayload<any>> {
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
    getRegistry().register({ id, channel, durable, target, method: key, trigger });
  };
}

function shortcut(when: TriggerTiming, events: TriggerOperation[]) {
  return (model: string, options: TriggerListenOptions = {}) => TriggerListen({ ...options, model, when, events });
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
