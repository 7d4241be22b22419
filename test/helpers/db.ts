/** One fresh database per test file on the server named by DATABASE_URL (the runner starts an embedded one when it is unset). */
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { channelModes, orderPaths, subscriptions } from '../../src/migration.js';
import { getRegistry } from '../../src/registry.js';
import { channelsSql, librarySchemaSql, subscriptionsSql } from '../../src/sql.js';

export interface TestDatabase {
  url: string;
  pool: pg.Pool;
  query<R extends pg.QueryResultRow = any>(text: string, values?: unknown[]): Promise<R[]>;
  drop(): Promise<void>;
}

function serverUrl(): string {
  const url = process.env.DATABASE_URL;
  if (!url) throw new Error('DATABASE_URL is not set: run the tests with `npm test`, which starts an embedded PostgreSQL when it is unset.');
  return url;
}

/**
 * Creates an empty database; with `library: true` the pubsub tables are installed too, and with
 * `subscribe: true` the durable listeners registered so far are subscribed and the modes of their
 * channels recorded, as a generated migration does.
 */
export async function createTestDatabase(options: { library?: boolean; subscribe?: boolean } = {}): Promise<TestDatabase> {
  const name = `pubsub_test_${randomBytes(5).toString('hex')}`;
  const admin = new pg.Client(serverUrl());
  await admin.connect();
  await admin.query(`create database ${name}`);
  await admin.end();
  const url = new URL(serverUrl());
  url.pathname = `/${name}`;
  const pool = new pg.Pool({ connectionString: url.toString(), max: 5 });
  pool.on('error', () => {}); // idle connections closed by the server (tests terminate backends)
  if (options.library) await pool.query(librarySchemaSql(0));
  if (options.subscribe) {
    const pairs = subscriptions(getRegistry()).map((p) => ({ channel: p.slice(0, p.indexOf(' ')), listener: p.slice(p.indexOf(' ') + 1) }));
    const keys = Object.entries(orderPaths(getRegistry())).map(([p, path]) => ({ channel: p.slice(0, p.indexOf(' ')), listener: p.slice(p.indexOf(' ') + 1), path }));
    if (pairs.length) await pool.query(subscriptionsSql(pairs, [], keys));
    const modes = Object.entries(channelModes(getRegistry())).map(([name, durable]) => ({ name, durable }));
    if (modes.length) await pool.query(channelsSql(modes, []));
  }
  return {
    url: url.toString(),
    pool,
    query: async (text, values) => (await pool.query(text, values)).rows,
    async drop() {
      await pool.end();
      const c = new pg.Client(serverUrl());
      await c.connect();
      await c.query(`drop database if exists ${name} with (force)`);
      await c.end();
    },
  };
}

/** Polls `check` until it returns a truthy value, or fails after `timeoutMs`. */
export async function waitFor<T>(check: () => T | Promise<T>, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
