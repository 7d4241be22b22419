/** Channel names: validation and the typed channel factory. */
import { PubSubError } from './errors.js';
import type { Channel } from './types.js';

/** PostgreSQL truncates identifiers at 63 bytes (NAMEDATALEN - 1); pg_notify rejects longer names. */
export const MAX_CHANNEL_BYTES = 63;
/** pg_notify payloads must be shorter than 8000 bytes. */
export const MAX_NOTIFY_PAYLOAD_BYTES = 7999;

const CHANNEL_PATTERN = /^[A-Za-z0-9_.:\-]+$/;

export function assertChannelName(name: unknown, where = 'channel'): asserts name is string {
  if (typeof name !== 'string' || name.length === 0) {
    throw new PubSubError('pubsub.invalidChannel', `${where}: channel name must be a non-empty string, got ${JSON.stringify(name)}.`);
  }
  if (Buffer.byteLength(name) > MAX_CHANNEL_BYTES) {
    throw new PubSubError(
      'pubsub.invalidChannel',
      `${where}: channel name "${name}" is ${Buffer.byteLength(name)} bytes; PostgreSQL allows at most ${MAX_CHANNEL_BYTES}. Choose a shorter name.`,
    );
  }
  if (!CHANNEL_PATTERN.test(name)) {
    throw new PubSubError(
      'pubsub.invalidChannel',
      `${where}: channel name "${name}" may only contain letters, digits, "_", ".", ":" and "-".`,
    );
  }
}

/**
 * Declares a channel and its payload type once, for use by both sides:
 * `@Listen(postReads)` and `notify(postReads, payload)` are then checked by the compiler.
 *
 * @param type - the payload class; listeners receive instances of it (class-transformer).
 * @param options.durable - store notifications until processed (default true).
 */
export function defineChannel<T>(
  name: string,
  type?: new (...args: any[]) => T,
  options: { durable?: boolean } = {},
): Channel<T> {
  assertChannelName(name, 'defineChannel');
  return Object.freeze({ name, type, durable: options.durable ?? true });
}
