/** Dead letters: notifications whose listener failed `maxAttempts` times. Kept until retried or purged. */
import pg from 'pg';
import { deadListSql, deadPurgeSql, deadRetrySql, deadShowSql } from './sql.js';

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

const params = (f: DeadFilter) => [f.id ?? null, f.channel ?? null, f.listener ?? null];

async function withClient<T>(databaseUrl: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: databaseUrl, keepAlive: true });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Dead notifications, oldest first. */
export function listDead(databaseUrl: string, filter: DeadFilter = {}, limit = 100): Promise<DeadNotification[]> {
  return withClient(databaseUrl, async (c) => (await c.query<DeadNotification>(deadListSql, [...params(filter), limit])).rows);
}

/** One stored notification (dead or not) with its payload, or undefined. */
export function showNotification(databaseUrl: string, id: string): Promise<DeadNotification | undefined> {
  return withClient(databaseUrl, async (c) => (await c.query<DeadNotification>(deadShowSql, [id])).rows[0]);
}

/** Makes dead notifications pending again with a fresh attempt count, and wakes the workers. Returns how many. */
export function retryDead(databaseUrl: string, filter: DeadFilter = {}): Promise<number> {
  return withClient(databaseUrl, async (c) => {
    await c.query('begin');
    const { rows } = await c.query<{ channel: string; count: number }>(deadRetrySql, params(filter));
    for (const r of rows) await c.query(`select pg_notify($1, '')`, [r.channel]);
    await c.query('commit');
    return rows.reduce((sum, r) => sum + r.count, 0);
  });
}

/** Deletes dead notifications. Returns how many. */
export function purgeDead(databaseUrl: string, filter: DeadFilter = {}): Promise<number> {
  return withClient(databaseUrl, async (c) => (await c.query<{ count: number }>(deadPurgeSql, params(filter))).rows[0]!.count);
}
