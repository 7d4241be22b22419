/**
 * Logs: lines with fields. Every line about a notification carries `channel`, `listener`, `id` and
 * `attempt` as fields (and the error as `err`), so a log pipeline can filter without parsing prose.
 * The worker writes through a `Log`, made from whatever the user gave:
 * - nothing: the `debug` namespace `pubsub:log` (silent unless DEBUG=pubsub:*): a library writes nothing by itself;
 * - a pino logger (recognised by its `bindings()` and `child()`): `logger.warn({ ...fields, err }, message)`;
 * - any `{ info, warn, error }` logger: `logger.warn(message)`, `logger.error(message, error)`, as before.
 * The CLI's own logger (`lineLogger`) writes pino's JSON lines, or the plain `pubsub: …` lines.
 */
import os from 'node:os';
import createDebug from 'debug';
import { ownError } from './attempts.js';
import type { FailedEvent, Observer } from './observe.js';
import type { Logger } from './types.js';

export type Level = 'debug' | 'info' | 'warn' | 'error';
export type Fields = Record<string, unknown>;
export const LEVELS = ['debug', 'info', 'warn', 'error', 'silent'] as const;
export type LevelSetting = (typeof LEVELS)[number];
/** pino's numbers for the levels, so its tools (pino-pretty, transports) read our JSON lines. */
const PINO_LEVEL: Record<Level, number> = { debug: 20, info: 30, warn: 40, error: 50 };

const IS_LOG = Symbol.for('pubsub.log');

/** What the worker writes through; also a plain Logger, for the parts that only log messages. */
export interface Log extends Logger {
  readonly [IS_LOG]: true;
  enabled(level: Level): boolean;
  /** A line with fields; `fields.err` is the error, if any. */
  write(level: Level, message: string, fields?: Fields): void;
}

/** The part of pino's logger that we call. */
interface PinoLike {
  bindings(): object;
  child(bindings: object): unknown;
  isLevelEnabled?(level: string): boolean;
  debug(obj: object, message: string): void;
  info(obj: object, message: string): void;
  warn(obj: object, message: string): void;
  error(obj: object, message: string): void;
}

function makeLog(enabled: (level: Level) => boolean, write: (level: Level, message: string, fields?: Fields) => void): Log {
  return {
    [IS_LOG]: true,
    enabled,
    write,
    info: (message) => write('info', message),
    warn: (message) => write('warn', message),
    error: (message, error) => write('error', message, error === undefined ? undefined : { err: error }),
  };
}

/** The worker's Log from `listen({ logger })`. */
export function toLog(logger?: Logger | Log): Log {
  if (!logger) {
    const debug = createDebug('pubsub:log');
    return makeLog(
      () => debug.enabled,
      (level, message, fields) => (fields ? debug('%s %s %o', level, message, fields) : debug('%s %s', level, message)),
    );
  }
  if ((logger as Log)[IS_LOG]) return logger as Log;
  const pino = logger as unknown as PinoLike;
  if (typeof pino.bindings === 'function' && typeof pino.child === 'function') {
    return makeLog(
      (level) => pino.isLevelEnabled?.(level) ?? true,
      (level, message, fields) => pino[level](fields ?? {}, message),
    );
  }
  const plain = logger as Logger & { debug?(message: string): void };
  return makeLog(
    (level) => level !== 'debug' || typeof plain.debug === 'function',
    (level, message, fields) => {
      if (level === 'error') plain.error(message, fields?.err);
      else if (level === 'debug') plain.debug?.(message);
      else plain[level](message);
    },
  );
}

export interface LineLoggerOptions {
  /** @defaultValue 'info' */
  level?: LevelSetting;
  /** json: one pino-compatible JSON object per line on `out`; pretty: `pubsub: message` (warnings and errors on `err`). @defaultValue 'pretty' */
  format?: 'json' | 'pretty';
  out?: NodeJS.WritableStream;
  err?: NodeJS.WritableStream;
}

/** The CLI's logger: a tiny pino-compatible writer, so that the CLI needs no logging dependency. */
export function lineLogger(options: LineLoggerOptions = {}): Log {
  const { level = 'info', format = 'pretty', out = process.stdout, err = process.stderr } = options;
  const threshold = LEVELS.indexOf(level);
  const enabled = (l: Level) => LEVELS.indexOf(l) >= threshold;
  const base = { pid: process.pid, hostname: os.hostname() };
  return makeLog(enabled, (l, message, fields) => {
    if (!enabled(l)) return;
    if (format === 'json') {
      const line = { level: PINO_LEVEL[l], time: Date.now(), ...base, ...fields, ...(fields && 'err' in fields && { err: serializeError(fields.err) }), msg: message };
      out.write(`${safeJson(line)}\n`);
      return;
    }
    const e = fields?.err;
    const detail = e === undefined ? '' : ` ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`;
    (l === 'info' ? out : err).write(`pubsub: ${message}${detail}\n`);
  });
}

/** pino's `err` serializer, in short: type, message, stack, code and the cause. */
function serializeError(e: unknown, depth = 0): unknown {
  if (!(e instanceof Error)) return e;
  const code = (e as { code?: unknown }).code;
  return { type: e.name, message: e.message, stack: e.stack, ...(code !== undefined && { code }), ...(e.cause !== undefined && depth < 3 && { cause: serializeError(e.cause, depth + 1) }) };
}

/** A log line never throws: bigints become strings, cycles and hostile toJSON are replaced. */
function safeJson(value: unknown): string {
  try {
    const seen = new WeakSet<object>();
    return JSON.stringify(value, (_key, v: unknown) => {
      if (typeof v === 'bigint') return v.toString();
      if (v && typeof v === 'object') {
        if (seen.has(v)) return '[Circular]';
        seen.add(v);
      }
      return v;
    });
  } catch {
    return JSON.stringify({ level: (value as { level?: number }).level, time: Date.now(), msg: String((value as { msg?: unknown }).msg), logError: 'fields could not be serialized' });
  }
}

/** The fields every line about a notification carries. */
const notificationFields = (e: { channel: string; listener: string | null; id: string; ids: string[]; attempt: number }): Fields => ({
  channel: e.channel,
  listener: e.listener,
  id: e.id,
  attempt: e.attempt,
  ...(e.ids.length > 1 && { ids: e.ids }),
});

/** Logs the outcomes of attempts from the worker's events; subscribes only to what the log's level shows. */
export function logEvents(observer: Observer, log: Log): void {
  const outcome = (e: FailedEvent, retry: string) => (e.dead ? 'dead-lettered: see `pubsub dead list`' : retry);
  if (log.enabled('error')) {
    observer.on('failed', (e) => {
      const who = e.listener ?? 'a listener';
      const fields = { ...notificationFields(e), dead: e.dead, ...(e.durationMs !== undefined && { durationMs: round(e.durationMs) }) };
      if (e.lost) {
        log.write('warn', `${who} lost an attempt on channel "${e.channel}", notification ${e.id} (attempt ${e.attempt}): its transaction ended before it committed; ${outcome(e, 'retried alone')}`, { ...fields, lost: true });
      } else {
        log.write('error', `${who} failed on channel "${e.channel}", notification ${e.id} (attempt ${e.attempt}); ${outcome(e, 'kept for a retry')}:`, { ...fields, err: ownError(e.error) });
      }
    });
  }
  if (log.enabled('debug')) {
    observer.on('processed', (e) => {
      log.write('debug', `${e.listener ?? 'the listeners'} processed notification ${e.id}${e.ids.length > 1 ? ` and ${e.ids.length - 1} more` : ''} on channel "${e.channel}" in ${round(e.durationMs)} ms`, {
        ...notificationFields(e),
        durationMs: round(e.durationMs),
      });
    });
  }
}

const round = (ms: number) => Math.round(ms * 1000) / 1000;
