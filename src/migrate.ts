/**
 * `pubsub migrate`: applies pending Prisma migration folders in order and records them in
 * `_prisma_migrations` exactly as `prisma migrate deploy` does (same table, checksum and advisory
 * lock), for places without Prisma's schema engine. `prisma migrate status` agrees with it afterwards.
 */
import { createHash, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import { PubSubError } from './errors.js';
import { migrationFolders } from './migration.js';

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

export async function applyMigrations(databaseUrl: string, migrationsDir: string): Promise<MigrateResult> {
  const folders = migrationFolders(migrationsDir);
  const client = new pg.Client({ connectionString: databaseUrl, keepAlive: true });
  await client.connect();
  try {
    await client.query('select pg_advisory_lock($1)', [PRISMA_ADVISORY_LOCK]);
    await client.query(MIGRATIONS_TABLE);
    const { rows } = await client.query<{ migration_name: string; checksum: string; finished_at: Date | null; rolled_back_at: Date | null }>(
      'select migration_name, checksum, finished_at, rolled_back_at from _prisma_migrations order by started_at',
    );
    const failed = rows.find((r) => !r.finished_at && !r.rolled_back_at);
    if (failed) {
      throw new PubSubError(
        'pubsub.migrationFailed',
        `Migration ${failed.migration_name} failed earlier and is not resolved. Fix the database, then mark it with \`prisma migrate resolve --applied|--rolled-back ${failed.migration_name}\` (or delete its row from _prisma_migrations).`,
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
  } finally {
    await client.query('select pg_advisory_unlock($1)', [PRISMA_ADVISORY_LOCK]).catch(() => {});
    await client.end();
  }
}
