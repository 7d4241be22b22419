/**
 * Calling listeners: the object whose method runs, the argument decoded from the stored JSON text
 * (parsed afresh for each call, so no listener can change what another one, or a retry, sees), and
 * a time limit that ends the attempt without waiting for a listener that ignores it.
 */
import { PubSubError } from './errors.js';
import { decodePayload, decodeTriggerPayload, type ModelShape, type WireTriggerPayload } from './payload.js';
import type { ListenerDefinition } from './registry.js';
import { validate } from './standard-schema.js';
import { triggerKey } from './sql.js';
import type { Logger, NotificationContext } from './types.js';

/** A listener without `timeoutMs` gets this long per attempt; `timeoutMs: 0` means no limit. */
export const DEFAULT_TIMEOUT_MS = 60_000;

export const timeoutOf = (l: ListenerDefinition | undefined): number => l?.delivery.timeoutMs ?? DEFAULT_TIMEOUT_MS;

/** Ends the message of a stored payload that its channel's schema refuses. */
const STORED_FIX =
  'notify() checks payloads against the schema, so this one was written around it (raw SQL, another program, or before the schema changed). The listener was not called. Inspect it with `pubsub dead show <id>`; fix the schema and `pubsub dead retry <id>`, or `pubsub dead purge <id>`.';

export class ListenerTimeoutError extends PubSubError {
  constructor(what: string, ms: number) {
    super('pubsub.listenerTimeout', `${what} timed out after ${ms} ms; its writes through ctx.tx are rolled back and the attempt counts as failed (raise the listener's timeoutMs if it needs longer).`);
  }
}

/** A listener's own error, named: its `cause` is what the listener threw. */
export class ListenerError extends Error {
  constructor(listener: string, cause: unknown) {
    super(`${listener} failed`, { cause });
    this.name = 'ListenerError';
  }
}

export class Dispatcher {
  private readonly instances = new Map<Function, object>();
  private readonly triggerKeys = new Map<ListenerDefinition, string>();
  private readonly warned = new Set<string>();

  constructor(
    private readonly listeners: ListenerDefinition[],
    private readonly models: Map<string, ModelShape>,
    private readonly logger: Logger,
    private readonly instance?: (cls: Function) => object,
  ) {
    for (const l of listeners) if (l.trigger) this.triggerKeys.set(l, triggerKey(l.trigger, l.channel, l.durable));
  }

  private receiver(l: ListenerDefinition): Record<string | symbol, Function> {
    if (typeof l.target === 'function') return l.target as never; // static method
    const cls = l.target.constructor;
    let obj = this.instances.get(cls);
    if (!obj) this.instances.set(cls, (obj = this.instance ? this.instance(cls) : new (cls as new () => object)()));
    return obj as never;
  }

  /**
   * Builds every listener's object now (`instance`, or `new Class()`): a class that cannot be built
   * (not a provider of the app's container, a throwing constructor) stops the worker at start with
   * its name, instead of failing each of its notifications until they are dead-lettered.
   */
  resolveReceivers(): void {
    for (const l of this.listeners) {
      try {
        const receiver = this.receiver(l);
        if (typeof receiver?.[l.method] !== 'function') throw new Error(`the object has no method ${String(l.method)}`);
      } catch (error) {
        const cls = typeof l.target === 'function' ? l.target : l.target.constructor;
        throw new PubSubError(
          'pubsub.config',
          `${l.id}: the worker could not get the object of class ${cls.name} to call (${(error as Error)?.message ?? String(error)}). With the \`instance\` option, make sure it returns an instance of every listener class (e.g. register the class as a provider of your container).`,
          { cause: error },
        );
      }
    }
  }

  /**
   * The listener's argument from a payload's JSON text, or undefined when it is not for this listener
   * (trigger key or operation). Async because a channel's schema may validate asynchronously.
   */
  async argument(l: ListenerDefinition, text: string): Promise<{ value: unknown } | undefined> {
    const payload: unknown = JSON.parse(text);
    if (l.schema) return { value: await validate(l.schema, payload, `${l.id}`, STORED_FIX) };
    if (!l.trigger) return { value: decodePayload(payload, l.payloadType, this.warnOnce) };
    const wire = payload as WireTriggerPayload;
    // Not a trigger payload at all: decoding it says what is wrong (a row that belongs to nobody is never dropped unseen).
    if (typeof wire !== 'object' || wire === null || typeof wire.trigger !== 'string' || !['INSERT', 'UPDATE', 'DELETE'].includes(wire.op)) {
      decodeTriggerPayload(wire);
      throw new PubSubError('pubsub.invalidPayload', `${l.id}: the notification has no trigger key ("trigger"), so no pgpubsub trigger wrote it. Inspect it with \`pubsub dead show <id>\` and purge it.`);
    }
    if (wire.trigger !== this.triggerKeys.get(l) || !l.trigger.events.includes(wire.op)) return undefined;
    return { value: decodeTriggerPayload(wire, this.models.get(wire.model), this.warnOnce) };
  }

  private readonly warnOnce = (message: string): void => {
    if (!this.warned.has(message)) this.logger.warn(message);
    this.warned.add(message);
  };

  /** Calls the listener's method; its own error becomes the cause of one naming the listener. */
  async call(l: ListenerDefinition, arg: unknown, ctx: NotificationContext): Promise<void> {
    if (l.schedule) ctx.slot = arg as Date; // a scheduled method's payload is its slot
    try {
      await this.receiver(l)[l.method]!(arg, ctx);
    } catch (error) {
      throw new ListenerError(l.id, error);
    }
  }
}

/**
 * Runs `work` for at most `ms` (0: no limit). On expiry `onTimeout` runs (abort the listener's signal,
 * close its `ctx.tx`) and this rejects at once: a listener that ignores its signal is abandoned, never
 * waited for.
 */
export async function withTimeout(work: Promise<void>, ms: number, what: string, onTimeout: (error: Error) => void): Promise<void> {
  if (!ms) return work;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      const error = new ListenerTimeoutError(what, ms);
      onTimeout(error);
      reject(error);
    }, ms);
  });
  work.catch(() => {}); // an abandoned listener's late failure is nobody's to handle
  try {
    await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}
