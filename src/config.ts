/** Settings from flags, the environment and pubsub.config.json, in that order. The only reader of process.env. */
import fs from 'node:fs';
import path from 'node:path';
import { PubSubError } from './errors.js';

export interface FileConfig {
  /** Compiled modules that declare listeners, relative to the config file. */
  require?: string[];
  /** Prisma schema file or folder. */
  schema?: string;
  /** Prisma migrations folder (the `--migrations-dir` flag and `migrationsDir` option of the API). */
  migrationsDir?: string;
  /** @deprecated The old name of `migrationsDir`, still read. */
  migrations?: string;
  /** Channels the worker listens to; default every registered channel. */
  channels?: string[];
  /** Roles that make-migration grants EXECUTE on pubsub.notify() (durable notify()). */
  grantNotify?: string[];
  /** `pubsub listen --batch-size`. */
  batchSize?: number;
  /** `pubsub listen --concurrency`. */
  concurrency?: number;
  /** `pubsub listen --poll-interval`, in milliseconds. */
  pollIntervalMs?: number;
  /** `pubsub listen --prisma`: a compiled module exporting the `prisma` factory (default or named `prisma`). */
  prisma?: string;
  /** `pubsub listen --grace-period`, in milliseconds: the longest a stop may take before the process exits anyway. */
  gracePeriodMs?: number;
  /** `pubsub listen --processes`: worker processes run by one command. */
  processes?: number;
  /** `pubsub listen --maintain`: the workers vacuum pubsub.notification and rebuild its indexes (as its owner). */
  maintain?: boolean;
  /** Relays to brokers (relay.ts, RelayConfig): checked when registered. */
  relay?: unknown[];
  /** Bridges from brokers (bridge.ts, BridgeConfig): checked when registered. */
  bridge?: unknown[];
}

/**
 * Bounds of the worker's numeric settings, the same for flags and the config file. The upper bounds
 * catch typos (an extra zero or two) before they become a claim of millions of rows, a pool of
 * thousands of connections, or a timer past setInterval's 2^31-1 ms limit, which Node turns into 1 ms.
 */
export const WORKER_LIMITS = {
  batchSize: { flag: '--batch-size', min: 1, max: 10_000 },
  concurrency: { flag: '--concurrency', min: 1, max: 1_000 },
  pollIntervalMs: { flag: '--poll-interval', min: 10, max: 86_400_000 },
  gracePeriodMs: { flag: '--grace-period', min: 0, max: 86_400_000 },
  processes: { flag: '--processes', min: 1, max: 64 },
} as const;

/** `value` as a whole number from `min` to `max`; anything but a number (such as "100" in quotes) is refused. */
export function wholeNumber(value: unknown, where: string, min: number, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new PubSubError('pubsub.config', `${where} must be a whole number from ${min} to ${max}, got ${JSON.stringify(value)}.`);
  }
  return value;
}

const FILE_KEYS: Record<keyof FileConfig, 'strings' | 'string' | 'number' | 'boolean' | 'relays'> = {
  require: 'strings',
  schema: 'string',
  migrationsDir: 'string',
  migrations: 'string',
  channels: 'strings',
  grantNotify: 'strings',
  batchSize: 'number',
  concurrency: 'number',
  pollIntervalMs: 'number',
  prisma: 'string',
  gracePeriodMs: 'number',
  processes: 'number',
  maintain: 'boolean',
  relay: 'relays',
  bridge: 'relays',
};

/** Checks every key and value of a config file: a typo or a wrong type fails here, not silently later. */
function checkFileConfig(raw: unknown, where: string): FileConfig {
  if (raw === undefined) return {};
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw new PubSubError('pubsub.config', `${where} must be a JSON object.`);
  for (const [key, value] of Object.entries(raw)) {
    const kind = FILE_KEYS[key as keyof FileConfig];
    const at = `${where}: "${key}"`;
    if (!kind) throw new PubSubError('pubsub.config', `${at} is not a setting; the settings are ${Object.keys(FILE_KEYS).join(', ')}.`);
    if (kind === 'relays') {
      const example = key === 'relay' ? 'relays such as [{"channel": "orders", "to": "amqp", "exchange": "orders"}]' : 'bridges such as [{"from": "amqp", "queue": "orders-in", "channel": "orders"}]';
      if (!Array.isArray(value)) throw new PubSubError('pubsub.config', `${at} must be a list of ${example}.`);
    } else if (kind === 'boolean') {
      if (typeof value !== 'boolean') throw new PubSubError('pubsub.config', `${at} must be true or false, got ${JSON.stringify(value)}.`);
    } else if (kind === 'number') {
      const { min, max } = WORKER_LIMITS[key as keyof typeof WORKER_LIMITS];
      wholeNumber(value, at, min, max);
    } else if (kind === 'string' ? typeof value !== 'string' || !value : !Array.isArray(value) || !value.every((v) => typeof v === 'string' && v)) {
      throw new PubSubError('pubsub.config', `${at} must be ${kind === 'string' ? 'a non-empty string' : 'an array of non-empty strings'}, got ${JSON.stringify(value)}.`);
    }
  }
  return raw as FileConfig;
}

/** The database URL: DATABASE_URL, else PUBSUB_DATABASE_URL. */
export function databaseUrlFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env.DATABASE_URL || env.PUBSUB_DATABASE_URL || undefined;
}

/**
 * True when npm started this process (npx, npm exec, npm run, npm start): npm runs the command in a
 * `sh -c` child of its own and forwards SIGTERM/SIGINT to that shell only.
 */
export function startedByNpm(env: NodeJS.ProcessEnv = process.env): boolean {
  return Boolean(env.npm_lifecycle_event);
}

/** The variable that marks a worker process started by `pubsub listen --processes`, holding its number. */
export const WORKER_PROCESS_ENV = 'PUBSUB_WORKER_PROCESS';

/** The number of this worker process under `pubsub listen --processes`, or undefined when it runs on its own. */
export function workerProcessNumber(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const n = Number(env[WORKER_PROCESS_ENV]);
  return Number.isSafeInteger(n) && n > 0 ? n : undefined;
}

/** A relay's broker URL when it names none: PUBSUB_AMQP_URL or PUBSUB_NATS_URL, else the broker on this machine. */
export function brokerUrlFromEnv(to: 'amqp' | 'nats', env: NodeJS.ProcessEnv = process.env): string {
  return to === 'amqp' ? env.PUBSUB_AMQP_URL || 'amqp://localhost' : env.PUBSUB_NATS_URL || 'nats://localhost:4222';
}

export function requireDatabaseUrl(url: string | undefined = databaseUrlFromEnv()): string {
  if (!url) {
    throw new PubSubError(
      'pubsub.config',
      'No database: set DATABASE_URL (e.g. postgresql://user:pass@localhost:5432/app), pass --database-url, or give a pg client/pool.',
    );
  }
  return url;
}

/**
 * Reads `pubsub.config.json` (or the `pubsub` key of package.json) from `dir`, with paths made
 * absolute. Returns {} when there is neither.
 */
export function loadFileConfig(dir: string, file?: string): FileConfig & { dir: string } {
  let raw: FileConfig;
  let base = dir;
  const candidate = file ? path.resolve(dir, file) : path.join(dir, 'pubsub.config.json');
  if (fs.existsSync(candidate)) {
    try {
      raw = JSON.parse(fs.readFileSync(candidate, 'utf8'));
    } catch (cause) {
      throw new PubSubError('pubsub.config', `${candidate} is not valid JSON: ${(cause as Error).message}`, { cause });
    }
    raw = checkFileConfig(raw, candidate);
    base = path.dirname(candidate);
  } else if (file) {
    throw new PubSubError('pubsub.config', `Config file ${candidate} does not exist.`);
  } else if (fs.existsSync(path.join(dir, 'package.json'))) {
    const pkg = path.join(dir, 'package.json');
    raw = checkFileConfig(JSON.parse(fs.readFileSync(pkg, 'utf8')).pubsub, `${pkg} "pubsub"`);
  } else {
    raw = {};
  }
  const abs = (p: string) => path.resolve(base, p);
  if (raw.migrations !== undefined && raw.migrationsDir !== undefined) {
    throw new PubSubError('pubsub.config', `${candidate} sets both "migrationsDir" and "migrations" (its old name); keep only "migrationsDir".`);
  }
  // The old key is read into the new one and not passed on: one setting, one name.
  const { migrations, ...settings } = raw;
  const migrationsDir = raw.migrationsDir ?? migrations;
  if (raw?.grantNotify !== undefined && !(Array.isArray(raw.grantNotify) && raw.grantNotify.every((r) => typeof r === 'string'))) {
    throw new PubSubError('pubsub.config', `"grantNotify" in ${candidate} must be a list of role names, such as ["app"].`);
  }
  return {
    dir: base,
    ...settings,
    ...(raw.require && { require: raw.require.map(abs) }),
    ...(raw.schema && { schema: abs(raw.schema) }),
    ...(migrationsDir && { migrationsDir: abs(migrationsDir) }),
    ...(raw.prisma && { prisma: abs(raw.prisma) }),
  };
}
