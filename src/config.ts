/** Settings from flags, the environment and pubsub.config.json, in that order. The only reader of process.env. */
import fs from 'node:fs';
import path from 'node:path';
import { PubSubError } from './errors.js';

export interface FileConfig {
  /** Compiled modules that declare listeners, relative to the config file. */
  require?: string[];
  /** Prisma schema file or folder. */
  schema?: string;
  /** Prisma migrations folder. */
  migrations?: string;
  /** Channels the worker listens to; default every registered channel. */
  channels?: string[];
  /** Roles that make-migration grants EXECUTE on pubsub.notify() (durable notify()). */
  grantNotify?: string[];
}

/** The database URL: DATABASE_URL, else PUBSUB_DATABASE_URL. */
export function databaseUrlFromEnv(env: NodeJS.ProcessEnv = process.env): string | undefined {
  return env.DATABASE_URL || env.PUBSUB_DATABASE_URL || undefined;
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
  let raw: FileConfig | undefined;
  let base = dir;
  const candidate = file ? path.resolve(dir, file) : path.join(dir, 'pubsub.config.json');
  if (fs.existsSync(candidate)) {
    try {
      raw = JSON.parse(fs.readFileSync(candidate, 'utf8'));
    } catch (cause) {
      throw new PubSubError('pubsub.config', `${candidate} is not valid JSON: ${(cause as Error).message}`, { cause });
    }
    base = path.dirname(candidate);
  } else if (file) {
    throw new PubSubError('pubsub.config', `Config file ${candidate} does not exist.`);
  } else if (fs.existsSync(path.join(dir, 'package.json'))) {
    raw = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')).pubsub;
  }
  const abs = (p: string) => path.resolve(base, p);
  if (raw?.grantNotify !== undefined && !(Array.isArray(raw.grantNotify) && raw.grantNotify.every((r) => typeof r === 'string'))) {
    throw new PubSubError('pubsub.config', `"grantNotify" in ${candidate} must be a list of role names, such as ["app"].`);
  }
  return {
    dir: base,
    ...(raw?.require && { require: raw.require.map(abs) }),
    ...(raw?.schema && { schema: abs(raw.schema) }),
    ...(raw?.migrations && { migrations: abs(raw.migrations) }),
    ...(raw?.channels && { channels: raw.channels }),
    ...(raw?.grantNotify && { grantNotify: raw.grantNotify }),
  };
}
