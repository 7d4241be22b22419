/** Dead letters: notifications whose listener failed `maxAttempts` times. Kept until retried or purged. */
import pg from 'pg';
import { deadCountSql, deadListSql, deadPageSql, deadPurgeSql, deadRetrySql, deadShowSql } from './sql.js';

export interface DeadFilter {
  id?: string;
  channel?: string;
  listener?: string;
}

export interface DeadNotification {
  id: string;
  channel: string;
  listener: string | null;
  attempts: number;
  last_error: string | null;
  created_at: Date;
  last_attempt_at: Date | null;
  dead_at: Date | null;
  payload?: unknown;
  context?: unknown;
}

/** Where dead letters live: a database URL (one connection per call) or a pool of the caller's. */
export type Database = string | pg.Pool;

export interface DeadActionOptions {
  /**
   * Called after each chunk with how many were done and how many there were when the action began
   * (rows dead meanwhile are not counted in the total, though they are included if their ids come later).
   */
  onProgress?: (done: number, total: number) => void;
  /** Rows changed per transaction. @defaultValue 10000 */
  chunkSize?: number;
}

const params = (f: DeadFilter) => [f.id ?? null, f.channel ?? null, f.listener ?? null];

async function withClient<T>(db: Database, fn: (client: pg.ClientBase) => Promise<T>): Promise<T> {
  if (typeof db !== 'string') {
    const client = await db.connect();
    try {
      return await fn(client);
    } finally {
      client.release();
    }
  }
  const client = new pg.Client({ connectionString: db, keepAlive: true });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Dead notifications, oldest first; with `payloads`, each with its payload and context. */
export function listDead(db: Database, filter: DeadFilter = {}, limit = 100, options: { payloads?: boolean } = {}): Promise<DeadNotification[]> {
  const sql = options.payloads ? deadPageSql : deadListSql;
  return withClient(db, async (c) => (await c.query<DeadNotification>(sql, [...params(filter), limit])).rows);
}

/** How many dead notifications match. */
export function countDead(db: Database, filter: DeadFilter = {}): Promise<number> {
  return withClient(db, async (c) => (await c.query<{ count: number }>(deadCountSql, params(filter))).rows[0]!.count);
}

/** One stored notification (dead or not) with its payload, or undefined. */
export function showNotification(db: Database, id: string): Promise<DeadNotification | undefined> {
  return withClient(db, async (c) => (await c.query<DeadNotification>(deadShowSql, [id])).rows[0]);
}

/**
 * Runs a retry or purge in chunks of `chunkSize` rows in id order, one transaction each: a backlog of
 * a million dead rows neither holds one long transaction nor keeps the workers waiting for the last
 * row before the first can run again, and the caller can show progress. Each chunk wakes the workers
 * of the channels it revived.
 */
function inChunks(db: Database, sql: string, wake: boolean, filter: DeadFilter, options: DeadActionOptions): Promise<number> {
  const chunk = Math.max(1, Math.trunc(options.chunkSize ?? 10_000));
  return withClient(db, async (c) => {
    const total = options.onProgress ? (await c.query<{ count: number }>(deadCountSql, params(filter))).rows[0]!.count : 0;
    let done = 0;
    for (let after = '0'; ; ) {
      await c.query('begin');
      try {
        const { rows } = await c.query<{ last: string | null; count: number; channels: string[] }>(sql, [...params(filter), after, chunk]);
        const { last, count, channels } = rows[0]!;
        if (wake) for (const channel of channels) await c.query(`select pg_notify($1, '')`, [channel]);
        await c.query('commit');
        done += count;
        if (last === null) return done;
        after = last;
        options.onProgress?.(done, Math.max(total, done));
      } catch (error) {
        await c.query('rollback').catch(() => {});
        throw error;
      }
    }
  });
}

/**
 * Makes dead notifications pending again with a fresh attempt count, and wakes the workers. Returns
 * how many. Committed chunk by chunk (see `chunkSize`): if it fails halfway, the chunks before stay retried.
 */
export function retryDead(db: Database, filter: DeadFilter = {}, options: DeadActionOptions = {}): Promise<number> {
  return inChunks(db, deadRetrySql, true, filter, options);
}

/** Deletes dead notifications, chunk by chunk as `retryDead`. Returns how many. */
export function purgeDead(db: Database, filter: DeadFilter = {}, options: DeadActionOptions = {}): Promise<number> {
  return inChunks(db, deadPurgeSql, false, filter, options);
}
