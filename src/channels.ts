/** Channel names: validation and the typed channel factory. */
import { PubSubError } from './errors.js';
import { isStandardSchema, type StandardSchemaV1 } from './standard-schema.js';
import type { Channel } from './types.js';

/** PostgreSQL truncates identifiers at 63 bytes (NAMEDATALEN - 1); pg_notify rejects longer names. */
export const MAX_CHANNEL_BYTES = 63;
/** pg_notify payloads must be shorter than 8000 bytes. */
export const MAX_NOTIFY_PAYLOAD_BYTES = 7999;

const CHANNEL_PATTERN = /^[A-Za-z0-9_.:\-]+$/;

/** The name as a JSON string (quotes, NUL and line breaks visible), cut short if huge. */
function show(name: string): string {
  return name.length > 80 ? `${JSON.stringify(name.slice(0, 80)).slice(0, -1)}…"` : JSON.stringify(name);
}

/**
 * Channel names are ASCII letters, digits, "_", ".", ":" and "-", 1 to 63 bytes. The library quotes
 * them wherever they reach SQL (LISTEN "Orders.Created"), so case is kept and names that are SQL
 * keywords or start with a digit work; the narrow alphabet keeps them readable in logs and shells,
 * and keeps lookalike Unicode names (and their byte counts) out.
 */
export function assertChannelName(name: unknown, where = 'channel'): asserts name is string {
  if (typeof name !== 'string' || name.length === 0) {
    const got = typeof name === 'string' ? 'an empty string' : name === null ? 'null' : typeof name === 'object' ? 'an object' : typeof name === 'function' ? 'a function' : `${typeof name} ${String(name)}`;
    throw new PubSubError('pubsub.invalidChannel', `${where}: a channel name must be a non-empty string such as "orders.created", got ${got}.`);
  }
  const bytes = Buffer.byteLength(name);
  if (bytes > MAX_CHANNEL_BYTES) {
    throw new PubSubError(
      'pubsub.invalidChannel',
      `${where}: channel name ${show(name)} is ${bytes} bytes (UTF-8); PostgreSQL allows at most ${MAX_CHANNEL_BYTES}. Choose a shorter name.`,
    );
  }
  if (!CHANNEL_PATTERN.test(name)) {
    const bad = [...name].find((c) => !CHANNEL_PATTERN.test(c))!;
    throw new PubSubError(
      'pubsub.invalidChannel',
      `${where}: channel name ${show(name)} contains ${JSON.stringify(bad)}; use only ASCII letters, digits, "_", ".", ":" and "-", e.g. "orders.created".`,
    );
  }
}

/**
 * Declares a channel and its payload type once, for use by both sides:
 * `@Listen(postReads)` and `notify(postReads, payload)` are then checked by the compiler.
 *
 * @param type - the payload class (listeners receive instances of it, built by class-transformer), or a
 *   Standard Schema (zod, valibot, arktype…): `notify()` then takes the schema's input type and refuses
 *   what it rejects, and listeners receive its output, validated again by the worker.
 * @param options.durable - store notifications until processed (default true).
 *
 * @example
 * const orderPlaced = defineChannel('order_placed', z.object({ orderId: z.number().int() }));
 */
export function defineChannel<S extends StandardSchemaV1>(
  name: string,
  schema: S,
  options?: { durable?: boolean },
): Channel<StandardSchemaV1.InferOutput<S>, StandardSchemaV1.InferInput<S>>;
export function defineChannel<T>(name: string, type?: new (...args: any[]) => T, options?: { durable?: boolean }): Channel<T>;
export function defineChannel(name: string, type?: unknown, options: { durable?: boolean } = {}): Channel<unknown> {
  assertChannelName(name, 'defineChannel');
  if (isStandardSchema(type)) return Object.freeze({ name, schema: type, durable: options.durable ?? true });
  if (type !== undefined && typeof type !== 'function') {
    throw new PubSubError(
      'pubsub.config',
      `defineChannel("${name}"): the payload type must be a class or a Standard Schema (an object with "~standard", version 1: zod ≥ 3.24, valibot ≥ 1, arktype), got ${type === null ? 'null' : typeof type}.`,
    );
  }
  return Object.freeze({ name, type: type as (new () => unknown) | undefined, durable: options.durable ?? true });
}
