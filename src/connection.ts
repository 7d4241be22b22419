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
  /** The server refused LISTEN itself (a hot standby, a proxy without LISTEN): no more attempts are made. */
  onListenRefused(error: Error): void;
  /** How often an idle connection is checked; every statement on it must answer within a third of this. @defaultValue 30000 */
  healthCheckMs?: number;
  /** @defaultValue 10000 */
  maxBackoffMs?: number;
}

export interface ListenConnection {
  /** Runs a statement on the LISTEN session (for session-level locks); undefined while disconnected. */
  query<R extends pg.QueryResultRow>(text: string, values?: unknown[]): Promise<R[] | undefined>;
  /** Several statements in one simple-protocol round trip: one result per statement; undefined while disconnected. */
  script(text: string): Promise<pg.QueryResult[] | undefined>;
  close(): Promise<void>;
}

/**
 * SQLSTATEs with which a server refuses LISTEN for good: 25006 on a hot standby ("cannot execute LISTEN
 * during recovery"), 0A000 from a server or proxy without it. Every other error of the LISTEN statement,
 * above all classes 08 (connection exception) and 57 (admin shutdown, crash shutdown, cannot connect
 * now: a terminated backend or a restarting server), means this connection is gone: reconnect.
 */
const LISTEN_REFUSED = new Set(['25006', '0A000']);

/** Keepalive probes start after this much silence, so the OS notices a dead peer long before its 2-hour default. */
export const KEEPALIVE_DELAY_MS = 10_000;

/**
 * Closes a client's socket at once: unlike `end()`, this also ends a half-open connection that would
 * never answer. pg has no public way to do it; its `connection.stream` is the socket.
 */
export function destroySocket(c: pg.Client): void {
  (c as unknown as { connection?: { stream?: { destroy(): void } } }).connection?.stream?.destroy();
}

export function createListenConnection(options: ListenConnectionOptions): ListenConnection {
  const { healthCheckMs = 30_000, maxBackoffMs = 10_000 } = options;
  const answerWithinMs = healthCheckMs / 3;
  let client: pg.Client | undefined;
  let closed = false;
  let failures = 0;
  let reconnectTimer: NodeJS.Timeout | undefined;
  const dropped = new WeakSet<pg.Client>();

  function drop(c: pg.Client, error: Error): void {
    if (dropped.has(c)) return;
    dropped.add(c);
    if (client === c) client = undefined;
    destroySocket(c);
    if (closed) return;
    const delay = Math.min(maxBackoffMs, 100 * 2 ** failures) * (0.5 + Math.random() / 2);
    failures++;
    options.onDisconnected(error, Math.round(delay));
    reconnectTimer = setTimeout(connect, delay);
  }

  async function connect(): Promise<void> {
    reconnectTimer = undefined;
    if (closed) return;
    const c = new pg.Client({ connectionString: options.connectionString, keepAlive: true, keepAliveInitialDelayMillis: KEEPALIVE_DELAY_MS, connectionTimeoutMillis: 10_000, application_name: 'pubsub:listen' });
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
      await bounded(c, c.query(listenSql(options.channels)));
    } catch (err) {
      if (LISTEN_REFUSED.has((err as { code?: string }).code ?? '')) {
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

  /**
   * `work` on connection `c`, or a rejection once it has gone unanswered for `answerWithinMs`: then `c`
   * is dropped (its socket destroyed), because a half-open socket answers neither this nor anything after.
   */
  async function bounded<T>(c: pg.Client, work: Promise<T>): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new Error(`the LISTEN connection did not answer within ${answerWithinMs} ms`);
        drop(c, error);
        reject(error);
      }, answerWithinMs);
    });
    try {
      return await Promise.race([work, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  const health = setInterval(() => {
    const c = client;
    if (!c) return;
    bounded(c, c.query('select 1')).catch((err) => drop(c, err as Error));
  }, healthCheckMs);
  health.unref();

  void connect();

  async function run(text: string, values?: unknown[]): Promise<pg.QueryResult | pg.QueryResult[] | undefined> {
    const c = client;
    if (!c) return undefined;
    try {
      return await bounded(c, c.query(text, values));
    } catch (error) {
      if (!dropped.has(c)) throw error;
      return undefined; // the connection went away meanwhile; so did its session locks
    }
  }

  return {
    async query<R extends pg.QueryResultRow>(text: string, values?: unknown[]) {
      return ((await run(text, values)) as pg.QueryResult<R> | undefined)?.rows;
    },
    async script(text: string) {
      const results = await run(text);
      return results && (Array.isArray(results) ? results : [results]);
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
