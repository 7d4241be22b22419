// The worker's LISTEN connection on its failure paths, through a loopback proxy that misbehaves on cue:
// a backend terminated while LISTEN runs, a connection cut during LISTEN, a proxy that refuses LISTEN,
// and half-open sockets that never answer.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createListenConnection, type ListenConnectionOptions } from '../../src/connection.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';
import { startProxy, type Proxy } from '../helpers/pg-proxy.js';

let db: TestDatabase;
let proxy: Proxy;

before(async () => {
  db = await createTestDatabase();
  const u = new URL(db.url);
  proxy = await startProxy({ host: u.hostname, port: Number(u.port || 5432) });
});
after(async () => {
  await proxy?.close();
  await db?.drop();
});

/** A LISTEN connection through the proxy that records what happens to it. */
function connect(options: Partial<ListenConnectionOptions> = {}) {
  const events: string[] = [];
  const errors: Error[] = [];
  const connection = createListenConnection({
    connectionString: proxy.url(db.url),
    channels: ['conn_test'],
    onNotification: (_channel, payload) => events.push(`notification ${payload}`),
    onConnected: () => events.push('connected'),
    onDisconnected: (error) => {
      errors.push(error);
      events.push('disconnected');
    },
    onListenRefused: (error) => {
      errors.push(error);
      events.push('refused');
    },
    maxBackoffMs: 200,
    ...options,
  });
  return { connection, events, errors };
}

const connected = (events: string[], n = 1) => waitFor(() => events.filter((e) => e === 'connected').length >= n, `${n} connect(s): ${events}`);

test('gh: a backend terminated (57P01) while LISTEN runs is a lost connection, not a refusal: the worker reconnects instead of polling for good', async () => {
  const next = proxy.next('hold');
  const { connection, events, errors } = connect();
  try {
    const held = await next;
    await held.listenSeen;
    // The LISTEN is in flight (held by the proxy) when the server terminates its backend.
    const [victim] = await waitFor(() => db.query(`select pid from pg_stat_activity where datname = current_database() and application_name = 'pubsub:listen'`), 'the LISTEN backend');
    await db.query('select pg_terminate_backend($1)', [victim.pid]);
    await connected(events);
    assert.ok(!events.includes('refused'), `not taken for a refusal: ${events} ${errors.map((e) => e.message)}`);
    assert.equal(events[0], 'disconnected');
    await db.query(`select pg_notify('conn_test', 'after the reconnect')`);
    await waitFor(() => events.includes('notification after the reconnect'), 'a notification on the new connection');
  } finally {
    await connection.close();
  }
});

test('a connection cut during LISTEN is reconnected', async () => {
  void proxy.next('cut');
  const { connection, events } = connect();
  try {
    await connected(events);
    assert.deepEqual(events, ['disconnected', 'connected']);
  } finally {
    await connection.close();
  }
});

test('a real refusal (0A000 from a proxy without LISTEN) stops the attempts', async () => {
  void proxy.next('refuse');
  const { connection, events, errors } = connect();
  try {
    await waitFor(() => events.length > 0, 'an outcome');
    await new Promise((r) => setTimeout(r, 500)); // no reconnect follows
    assert.deepEqual(events, ['refused']);
    assert.equal((errors[0] as { code?: string }).code, '0A000');
  } finally {
    await connection.close();
  }
});

test('a LISTEN that never gets an answer is bounded: the socket is destroyed and the connection made again', async () => {
  const next = proxy.next('hold');
  const { connection, events, errors } = connect({ healthCheckMs: 600 });
  try {
    const held = await next;
    await held.listenSeen;
    await held.clientClosed; // destroyed by the client, not closed by the server or the proxy
    await connected(events);
    assert.match(errors[0]!.message, /did not answer within 200 ms/);
  } finally {
    await connection.close();
  }
});

test('the health check destroys a half-open socket and reconnects; statements on it are bounded too', async () => {
  const next = proxy.next('pass');
  const { connection, events, errors } = connect({ healthCheckMs: 600 });
  try {
    await connected(events);
    const first = await next;
    first.blackhole();
    // A statement of the worker (a sleep lock) on the silent connection returns, as "disconnected".
    assert.equal(await connection.query('select 1'), undefined);
    await first.clientClosed;
    await connected(events, 2);
    assert.match(errors[0]!.message, /did not answer within 200 ms/);
    assert.deepEqual(await connection.query('select 1 as one'), [{ one: 1 }]);
  } finally {
    await connection.close();
  }
});
