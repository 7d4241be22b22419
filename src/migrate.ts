/**
 * `pubsub migrate`: applies pending Prisma migration folders in order and records them in
 * `_prisma_migrations` exactly as `prisma migrate deploy` does (same table, checksum, advisory lock and
 * `?schema=` handling), and `pubsub migrate resolve` marks a migration as `prisma migrate resolve` does,
 * for places without Prisma's schema engine. `prisma migrate status` agrees with it afterwards.
 */
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { PubSubError } from './errors.js';
import { migrationFolders } from './migration.js';
import { ident } from './sql.js';

/** The key `prisma migrate` takes with pg_advisory_lock, so the two never run at once. */
const PRISMA_ADVISORY_LOCK = 72707369;

const MIGRATIONS_TABLE = `CREATE TABLE IF NOT EXISTS _prisma_migrations (
    id                      VARCHAR(36) PRIMARY KEY NOT NULL,
    checksum                VARCHAR(64) NOT NULL,
    finished_at             TIMESTAMPTZ,
    migration_name          VARCHAR(255) NOT NULL,
    logs                    TEXT,
    rolled_back_at          TIMESTAMPTZ,
    started_at              TIMESTAMPTZ NOT NULL DEFAULT now(),
    applied_steps_count     INTEGER NOT NULL DEFAULT 0
)`;

/** Prisma's checksum: sha256 of the file's bytes, lowercase hex. */
export const migrationChecksum = (sql: string) => createHash('sha256').update(sql, 'utf8').digest('hex');

export interface MigrateResult {
  applied: string[];
  /** Applied earlier but edited since (Prisma warns about these too). */
  modified: string[];
}

/**
 * The `schema` parameter of a Prisma database URL: Prisma creates that schema if it is missing, keeps
 * `_prisma_migrations` in it and runs the migrations with it as the search_path. Undefined: the server's
 * search_path (public).
 */
export function urlSchema(databaseUrl: string): string | undefined {
  let url: URL;
  try {
    url = new URL(databaseUrl);
  } catch {
    return undefined; // a keyword/value connection string: pg reads it, and it has no schema parameter
  }
  return url.searchParams.get('schema') || undefined;
}

interface MigrationRow {
  id: string;
  migration_name: string;
  checksum: string;
  finished_at: Date | null;
  rolled_back_at: Date | null;
}

/** Connects as `prisma migrate` does (schema, search_path, advisory lock, migrations table) and runs `fn`. */
async function withMigrationSession<T>(databaseUrl: string, fn: (client: pg.Client, rows: MigrationRow[]) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: databaseUrl, keepAlive: true });
  await client.connect();
  try {
    const schema = urlSchema(databaseUrl);
    if (schema) {
      // Like Prisma: create only when missing, so a role without CREATE on the database can use an existing schema.
      const { rows } = await client.query('select 1 from pg_namespace where nspname = $1', [schema]);
      if (!rows.length) await client.query(`create schema ${ident(schema)}`);
      await client.query(`set search_path to ${ident(schema)}`);
    }
    await client.query('select pg_advisory_lock($1)', [PRISMA_ADVISORY_LOCK]);
    await client.query(MIGRATIONS_TABLE);
    const { rows } = await client.query<MigrationRow>('select id, migration_name, checksum, finished_at, rolled_back_at from _prisma_migrations order by started_at');
    return await fn(client, rows);
  } finally {
    await client.query('select pg_advisory_unlock($1)', [PRISMA_ADVISORY_LOCK]).catch(() => {});
    await client.end();
  }
}

const isFailed = (r: MigrationRow) => !r.finished_at && !r.rolled_back_at;

export async function applyMigrations(databaseUrl: string, migrationsDir: string): Promise<MigrateResult> {
  const folders = migrationFolders(migrationsDir);
  return withMigrationSession(databaseUrl, async (client, rows) => {
    const failed = rows.find(isFailed);
    if (failed) {
      throw new PubSubError(
        'pubsub.migrationFailed',
        `Migration ${failed.migration_name} failed earlier and is not resolved. Fix the database, then run \`pubsub migrate resolve --rolled-back ${failed.migration_name}\` to have it applied again, or \`pubsub migrate resolve --applied ${failed.migration_name}\` if you completed it by hand (prisma migrate resolve does the same).`,
      );
    }
    const done = new Map(rows.filter((r) => r.finished_at).map((r) => [r.migration_name, r.checksum]));
    const result: MigrateResult = { applied: [], modified: [] };
    for (const name of folders) {
      const sql = fs.readFileSync(path.join(migrationsDir, name, 'migration.sql'), 'utf8');
      const checksum = migrationChecksum(sql);
      if (done.has(name)) {
        if (done.get(name) !== checksum) result.modified.push(name);
        continue;
      }
      const id = randomUUID();
      await client.query('insert into _prisma_migrations (id, checksum, migration_name, started_at) values ($1, $2, $3, now())', [id, checksum, name]);
      try {
        // One simple-protocol query: PostgreSQL runs a multi-statement script as one transaction.
        await client.query(sql);
      } catch (cause) {
        await client.query('update _prisma_migrations set logs = $2 where id = $1', [id, String((cause as Error).message)]);
        throw new PubSubError('pubsub.migrationFailed', `Migration ${name} failed: ${(cause as Error).message}`, { cause });
      }
      await client.query('update _prisma_migrations set finished_at = now(), applied_steps_count = 1 where id = $1', [id]);
      result.applied.push(name);
    }
    return result;
  });
}

/**
 * `pubsub migrate resolve --rolled-back <name>`: marks the failed migration `name` as rolled back, so
 * that the next `pubsub migrate` (or `prisma migrate deploy`) runs it again. Undo what it did first.
 * Like `prisma migrate resolve`, refuses a migration that never ran or did not fail.
 */
export async function markRolledBack(databaseUrl: string, name: string): Promise<void> {
  await withMigrationSession(databaseUrl, async (client, rows) => {
    const mine = rows.filter((r) => r.migration_name === name);
    if (!mine.length) {
      throw new PubSubError('pubsub.migrationState', `Migration ${name} cannot be marked rolled back: it was never applied to this database. Is that the whole folder name (e.g. 20240101000000_pubsub)?`);
    }
    const failed = mine.filter(isFailed);
    if (!failed.length) {
      throw new PubSubError('pubsub.migrationState', `Migration ${name} cannot be marked rolled back: it did not fail. To undo a migration that succeeded, write a new migration.`);
    }
    await client.query('update _prisma_migrations set rolled_back_at = now() where id = any($1::varchar[])', [failed.map((r) => r.id)]);
  });
}

/**
 * `pubsub migrate resolve --applied <name>`: records the migration folder `name` as applied without
 * running it (you applied it by hand, or the database already has its changes). A failed attempt of it
 * is marked rolled back. Like `prisma migrate resolve`, refuses an unknown folder or one already applied.
 */
export async function markApplied(databaseUrl: string, migrationsDir: string, name: string): Promise<void> {
  const file = path.join(migrationsDir, name, 'migration.sql');
  if (!migrationFolders(migrationsDir).includes(name)) {
    throw new PubSubError('pubsub.migrationState', `Migration ${name} cannot be marked applied: there is no ${file}. Pass the whole folder name, and --migrations-dir if it is not the default.`);
  }
  const checksum = migrationChecksum(fs.readFileSync(file, 'utf8'));
  await withMigrationSession(databaseUrl, async (client, rows) => {
    const mine = rows.filter((r) => r.migration_name === name);
    if (mine.some((r) => r.finished_at)) {
      throw new PubSubError('pubsub.migrationState', `Migration ${name} is already recorded as applied in this database.`);
    }
    await client.query('begin');
    await client.query('update _prisma_migrations set rolled_back_at = now() where id = any($1::varchar[])', [mine.filter(isFailed).map((r) => r.id)]);
    await client.query(
      'insert into _prisma_migrations (id, checksum, migration_name, started_at, finished_at, applied_steps_count) values ($1, $2, $3, now(), now(), 0)',
      [randomUUID(), checksum, name],
    );
    await client.query('commit');
  });
}
