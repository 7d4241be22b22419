// Custom channels: notify() through every kind of client, in and out of transactions, and the worker's
// handling of failures, late starts and lost connections.
import assert from 'node:assert/strict';
import { after, before, beforeEach, test } from 'node:test';
import pg from 'pg';
import { PrismaPg } from '@prisma/adapter-pg';
import { Listen, Transform, Type, defineChannel, listen, notify, notifyMany, type NotificationContext, type Worker } from '../../src/index.js';
import { PrismaClient } from '../fixtures/generated/prisma/client.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

class Line {
  sku!: string;
  qty!: number;
}

class Order {
  id!: number;
  @Type(() => Date)
  placedAt!: Date;
  @Type(() => Line)
  lines!: Line[];
  @Transform(({ value }) => BigInt(value), { toClassOnly: true })
  cents!: bigint;
  note!: string;
}

const orders = defineChannel('orders', Order);
const received: Array<{ order: Order; ctx: NotificationContext }> = [];
const pings: string[] = [];
let failuresLeft = 0;

class OrderListeners {
  @Listen(orders)
  async onOrder(order: Order, ctx: NotificationContext) {
    if (order.note === 'fail' && failuresLeft > 0) {
      failuresLeft--;
      await ctx.tx!.query('select 1/0'); // a failing statement inside the worker's transaction
    }
    received.push({ order, ctx });
  }

  @Listen('pings', { durable: false })
  onPing(text: string, ctx: NotificationContext) {
    assert.equal(ctx.durable, false);
    pings.push(text);
  }
}

// The typed form is checked by the compiler: these lines must not compile.
export function typeChecks() {
  // @ts-expect-error qty must be a number
  void notify(orders, { id: 1, placedAt: new Date(), lines: [{ sku: 'a', qty: '1' }], cents: 1n, note: '' });
  // @ts-expect-error placedAt is missing
  void notify(orders, { id: 1, lines: [], cents: 1n, note: '' });
  // @ts-expect-error each payload is typed too
  void notifyMany(orders, [{ id: 1, lines: [], cents: 1n, note: '' }]);
}

let db: TestDatabase;
let worker: Worker;
const order = (id: number, note = 'ok'): Order => ({ id, placedAt: new Date(Date.UTC(2024, 0, id, 12, 0, 0, id)), lines: [{ sku: `s${id}`, qty: id }], cents: 10n ** 18n + BigInt(id), note });
const ids = () => received.map((r) => r.order.id).sort((a, b) => a - b);

before(async () => {
  assert.ok(OrderListeners);
  db = await createTestDatabase({ library: true });
  worker = await listen({ databaseUrl: db.url, pollIntervalMs: 100, logger: { info() {}, warn() {}, error() {} } });
});

after(async () => {
  await worker?.close();
  await db?.drop();
});

beforeEach(() => {
  received.length = 0;
  pings.length = 0;
});

test('a payload arrives as its class, with Date, nested classes, arrays, bigint and awkward strings exact', async () => {
  const note = `it's "quoted"; -- not SQL\n\ttabs \\ 🎉 ünïcødé 中文`;
  const id = await notify(orders, { ...order(1), note }, { client: db.pool });
  await waitFor(() => received.length === 1, 'the order');
  const [{ order: got, ctx }] = received as [{ order: Order; ctx: NotificationContext }];
  assert.ok(got instanceof Order && got.lines[0] instanceof Line && got.placedAt instanceof Date);
  assert.equal(got.placedAt.toISOString(), '2024-01-01T12:00:00.001Z');
  assert.equal(got.cents, 1000000000000000001n);
  assert.equal(got.note, note);
  assert.deepEqual({ ...got.lines[0] }, { sku: 's1', qty: 1 });
  assert.equal(ctx.id, id);
  assert.equal(ctx.channel, 'orders');
  assert.equal(ctx.attempt, 0);
});

test('every kind of client works, and inside a transaction only a commit delivers', async () => {
  const client = new pg.Client(db.url);
  await client.connect();
  await client.query('begin');
  await notify(orders, order(2), { client });
  await client.query('rollback');
  await client.query('begin');
  await notify(orders, order(3), { client });
  await client.query('commit');
  await client.end();

  const poolClient = await db.pool.connect();
  await poolClient.query('begin');
  await notify('orders', order(4), { client: poolClient });
  await poolClient.query('commit');
  poolClient.release();

  const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: db.url }) });
  await notify(orders, order(5), { client: prisma });
  await prisma.$transaction(async (tx) => {
    await notify(orders, order(6), { client: tx });
  });
  await assert.rejects(
    prisma.$transaction(async (tx) => {
      await notify(orders, order(7), { client: tx });
      throw new Error('rolled back');
    }),
  );
  await prisma.$disconnect();

  await waitFor(() => received.length >= 4, 'four orders');
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(ids(), [3, 4, 5, 6]);
});

test('the default pool comes from DATABASE_URL', async () => {
  const saved = process.env.DATABASE_URL;
  process.env.DATABASE_URL = db.url;
  const { disconnect } = await import('../../src/index.js');
  try {
    await notify(orders, order(8));
  } finally {
    process.env.DATABASE_URL = saved;
    await disconnect();
  }
  await waitFor(() => received.length === 1, 'the order');
});

test('non-durable notifications reach every listening worker; an oversize one fails at notify()', async () => {
  const second = await listen({ databaseUrl: db.url, channels: ['pings'] });
  try {
    await new Promise((r) => setTimeout(r, 200)); // let the second worker's LISTEN commit
    await notify('pings', 'hello', { client: db.pool });
    await waitFor(() => pings.length === 2, 'both workers to receive the ping');
    assert.deepEqual(pings, ['hello', 'hello']);
    const max = 'x'.repeat(7999 - 2); // JSON adds the two quotes
    await notify('pings', max, { client: db.pool });
    await assert.rejects(notify('pings', max + 'x', { client: db.pool }), (e: any) => e.code === 'pubsub.payloadTooLarge' && /7999/.test(e.message) && /durable/.test(e.message));
    await waitFor(() => pings.length === 4, 'the largest allowed ping');
  } finally {
    await second.close();
  }
});

test('a failing listener keeps its notification for a retry and never holds back the others', async () => {
  failuresLeft = 1;
  const client = await db.pool.connect();
  await client.query('begin');
  await notify(orders, order(10), { client });
  await notify(orders, order(11, 'fail'), { client });
  await notify(orders, order(12), { client });
  await client.query('commit');
  client.release();
  await waitFor(() => ids().includes(10) && ids().includes(12), 'the healthy orders');
  assert.deepEqual(ids(), [10, 12], 'the healthy orders ran once each; the failed one left no trace');
  // The listeners ran before their claim committed: wait for the commit that records the failure.
  const [kept] = (await waitFor(async () => {
    const rows = await db.query(`select attempts, last_error, payload->>'id' as id from pubsub.notification`);
    return rows.length === 1 && rows[0].attempts === 1 ? rows : false;
  }, 'the failed attempt to be recorded')) as any[];
  assert.equal(kept.id, '11');
  assert.equal(kept.attempts, 1);
  assert.match(kept.last_error, /division by zero/);
  await waitFor(() => ids().includes(11), 'the retry of the failed order', 5000);
  assert.equal(received.find((r) => r.order.id === 11)!.ctx.attempt, 1);
  assert.deepEqual(ids(), [10, 11, 12]);
  await waitFor(async () => (await db.query('select count(*)::int as n from pubsub.notification'))[0].n === 0, 'the retry to commit');
});

test('a worker started after notifications were stored processes them', async () => {
  await worker.close();
  for (let i = 20; i < 25; i++) await notify(orders, order(i), { client: db.pool });
  worker = await listen({ databaseUrl: db.url, pollIntervalMs: 60_000 }); // no poll: the catch-up must do it
  await waitFor(() => received.length === 5, 'the stored orders');
  assert.deepEqual(ids(), [20, 21, 22, 23, 24]);
});

test('after its LISTEN connection is killed the worker reconnects and catches up on what was sent meanwhile', async () => {
  await worker.close();
  worker = await listen({ databaseUrl: db.url, pollIntervalMs: 60_000, logger: { info() {}, warn() {}, error() {} } });
  const listeners = () => db.query(`select pid from pg_stat_activity where datname = current_database() and application_name = 'pubsub:listen'`);
  const victim = await waitFor(async () => (await listeners())[0], 'the LISTEN connection');
  let relistened = false;
  worker.on('listening', (e) => void (relistened ||= e.reconnect));
  await db.query('select pg_terminate_backend($1)', [victim.pid]);
  await notify(orders, order(30), { client: db.pool }); // probably sent while the worker is not listening
  await waitFor(() => ids().includes(30), 'the order sent during the outage');
  await waitFor(async () => (await listeners()).some((l: any) => l.pid !== victim.pid), 'a new LISTEN connection');
  await waitFor(() => relistened, 'LISTEN committed again (a non-durable message sent before that is not received, by design)');
  await notify('pings', 'after reconnect', { client: db.pool });
  await waitFor(() => pings.includes('after reconnect'), 'a non-durable notification after the reconnect');
});

test('notifyMany(): one statement for many payloads, ids in their order, each processed once as its class; a bad payload anywhere sends nothing and names its index', async () => {
  const stored = async () => Number((await db.query(`select count(*)::int as n from pubsub.notification where channel = 'orders'`))[0].n);
  const before = await stored();
  // A payload that will not serialize, last in the list: refused before anything is sent.
  const circular: any = order(99);
  circular.self = circular;
  await assert.rejects(notifyMany(orders, [order(20), order(21), circular], { client: db.pool }), (e: any) => e.code === 'pubsub.invalidPayload' && /payload 2 of 3/.test(e.message) && /Nothing was sent/.test(e.message));
  await assert.rejects(notifyMany('orders', 'not a list' as any, { client: db.pool }), (e: any) => e.code === 'pubsub.invalidPayload' && /must be an array/.test(e.message));
  assert.equal(await stored(), before, 'nothing stored');
  assert.deepEqual(await notifyMany(orders, [], { client: db.pool }), [], 'an empty list sends nothing');

  // Inside a transaction: all or none, with the transaction.
  const client = await db.pool.connect();
  try {
    await client.query('begin');
    await notifyMany(orders, [order(22), order(23)], { client });
    await client.query('rollback');
    await client.query('begin');
    const ids = await notifyMany(orders, [30, 31, 32, 33, 34].map((n) => order(n)), { client, context: { batch: 'b1' } });
    await client.query('commit');
    assert.equal(ids.length, 5);
    assert.ok(ids.every((id, i) => i === 0 || BigInt(id!) > BigInt(ids[i - 1]!)), `ids in the payloads' order: ${ids}`);
  } finally {
    client.release();
  }
  const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: db.url }) });
  try {
    await prisma.$transaction((tx) => notifyMany(orders, [order(35)], { client: tx }));
  } finally {
    await prisma.$disconnect();
  }
  await waitFor(() => received.length === 6, 'six orders');
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(ids(), [30, 31, 32, 33, 34, 35], 'each once, none of the rolled-back or refused ones');
  const o = received.find((r) => r.order.id === 31)!;
  assert.ok(o.order instanceof Order && o.order.placedAt instanceof Date && o.order.cents === 10n ** 18n + 31n);
  assert.deepEqual(o.ctx.context, { batch: 'b1' });
});

test('notifyMany() on a non-durable channel: one NOTIFY per payload, undefined ids; one oversize payload refuses the call', async () => {
  const result = await notifyMany('pings', ['a', 'b', 'c'], { client: db.pool });
  assert.deepEqual(result, [undefined, undefined, undefined]);
  await waitFor(() => pings.length === 3, 'three pings');
  assert.deepEqual(pings, ['a', 'b', 'c']);
  await assert.rejects(notifyMany('pings', ['d', 'x'.repeat(8000)], { client: db.pool }), (e: any) => e.code === 'pubsub.payloadTooLarge' && /payload 1 of 2/.test(e.message));
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(pings, ['a', 'b', 'c'], 'not even the first one went out');
});
