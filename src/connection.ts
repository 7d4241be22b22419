/**
 * The worker's one LISTEN connection. Contract: after every successful connect (the first and each
 * reconnect), every channel is LISTENed and committed before `onConnected` runs, so a catch-up that
 * starts then misses nothing. A lost connection (error, end, or a health check that gets no answer:
 * half-open sockets) is replaced with capped, jittered backoff, forever, until `close()`, which also
 * stops a pending reconnect.
 *
 * Written instead of wrapping pg-listen, whose reconnect gives up after `retryTimeout`, whose
 * `close()` cannot stop a reconnect in progress, and which has no hook to catch up after one.
 */
import createDebug from 'debug';
import pg from 'pg';
import { listenSql } from './sql.js';

const debug = createDebug('pubsub:connection');

export interface ListenConnectionOptions {
  connectionString: string;
  channels: string[];
  onNotification(channel: string, payload: string): void;
  /** Runs after every (re)connect, once LISTEN is in place. */
  onConnected(): void;
  /** A connection was lost or could not be made; a retry is already scheduled. */
  onDisconnected(error: Error, retryInMs: number): void;
  /** The server refused LISTEN itself (a hot standby, a proxy): no more attempts are made. */
  onListenRefused(error: Error): void;
  /** @defaultValue 30000 */
  healthCheckMs?: number;
  /** @defaultValue 10000 */
  maxBackoffMs?: number;
}

export interface ListenConnection {
  /** Runs a statement on the LISTEN session (for session-level locks); undefined while disconnected. */
  query<R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<R[] | undefined>;
  close(): Promise<void>;
}

export function createListenConnection(options: ListenConnectionOptions): ListenConnection {
  const { healthCheckMs = 30_000, maxBackoffMs = 10_000 } = options;
  let client: pg.Client | undefined;
  let closed = false;
  let failures = 0;
  let reconnectTimer: NodeJS.Timeout | undefined;
  const dropped = new WeakSet<pg.Client>();

  function drop(c: pg.Client, error: Error): void {
    if (dropped.has(c)) return;
    dropped.add(c);
    if (client === c) client = undefined;
    // Destroying the socket also ends a half-open connection that would never answer `end()`.
    (c as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
    if (closed) return;
    const delay = Math.min(maxBackoffMs, 100 * 2 ** failures) * (0.5 + Math.random() / 2);
    failures++;
    options.onDisconnected(error, Math.round(delay));
    reconnectTimer = setTimeout(connect, delay);
  }

  async function connect(): Promise<void> {
    reconnectTimer = undefined;
    if (closed) return;
    const c = new pg.Client({ connectionString: options.connectionString, keepAlive: true, connectionTimeoutMillis: 10_000, application_name: 'pubsub:listen' });
    c.on('error', (err) => drop(c, err));
    c.on('end', () => drop(c, new Error('connection closed by the server')));
    c.on('notification', (m) => {
      if (!dropped.has(c)) options.onNotification(m.channel, m.payload ?? '');
    });
    try {
      await c.connect();
    } catch (err) {
      drop(c, err as Error);
      return;
    }
    try {
      await c.query(listenSql(options.channels));
    } catch (err) {
      // An error from the server (it has a SQLSTATE) will not go away by reconnecting.
      if ((err as { code?: string }).code && !(err as { code: string }).code.startsWith('08')) {
        closed = true;
        clearInterval(health);
        dropped.add(c);
        await c.end().catch(() => {});
        options.onListenRefused(err as Error);
      } else {
        drop(c, err as Error);
      }
      return;
    }
    if (closed) {
      dropped.add(c);
      await c.end().catch(() => {});
      return;
    }
    client = c;
    failures = 0;
    debug('listening on %o', options.channels);
    options.onConnected();
  }

  const health = setInterval(() => {
    const c = client;
    if (!c) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`health check got no answer in ${healthCheckMs / 3} ms`)), healthCheckMs / 3);
    });
    Promise.race([c.query('select 1'), timeout])
      .catch((err) => drop(c, err as Error))
      .finally(() => clearTimeout(timer));
  }, healthCheckMs);
  health.unref();

  void connect();

  return {
    async query<R extends pg.QueryResultRow>(text: string, values?: unknown[]) {
      const c = client;
      if (!c) return undefined;
      try {
        return (await c.query<R>(text, values)).rows;
      } catch (error) {
        if (!dropped.has(c)) throw error;
        return undefined; // the connection went away meanwhile; so did its session locks
      }
    },
    async close() {
      closed = true;
      clearInterval(health);
      clearTimeout(reconnectTimer);
      const c = client;
      client = undefined;
      if (c) {
        dropped.add(c);
        await c.end().catch(() => {});
      }
    },
  };
}
