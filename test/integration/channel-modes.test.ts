// notify() against the channel modes the database records (pubsub.channel, written by the generated
// migration): every publisher uses a channel's real mode, whatever listeners it loaded. And notify()
// before the pubsub tables exist says how to install them, through pg and Prisma alike.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { PrismaPg } from '@prisma/adapter-pg';
import { defineChannel, notify, setContext } from '../../src/index.js';
import { channelModes, planMigration } from '../../src/migration.js';
import { ENVELOPE_MARK } from '../../src/notify.js';
import { Registry } from '../../src/registry.js';
import { LIBRARY_SCHEMA } from '../../src/sql.js';
import { PrismaClient } from '../fixtures/generated/prisma/client.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

let db: TestDatabase;
let prisma: PrismaClient;
let listener: pg.Client;
const heard: Array<{ channel: string; payload: string }> = [];

/** The listeners of another process: this one never loads them, so its registry knows neither channel. */
function otherProcessListeners(): Registry {
  const r = new Registry();
  const listener = (id: string, channel: string, durable: boolean) => ({ id, channel, durable, target: {}, method: 'm', delivery: {} });
  r.register(listener('Beeper.onBeep', 'beeps', false));
  r.register(listener('Jobs.run', 'jobs2', true));
  return r;
}

before(async () => {
  db = await createTestDatabase();
  const r = otherProcessListeners();
  await db.query(planMigration([], null, [], channelModes(r))!.sql); // the generated migration, as deployed
  prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: db.url }) });
  listener = new pg.Client(db.url);
  await listener.connect();
  listener.on('notification', (m) => heard.push({ channel: m.channel, payload: m.payload ?? '' }));
  await listener.query('listen beeps; listen jobs2');
});
after(async () => {
  await listener?.end();
  await prisma?.$disconnect();
  await db?.drop();
});

const stored = async (channel: string) => (await db.query('select count(*)::int as n from pubsub.notification where channel = $1', [channel]))[0].n as number;

test('gh: a channel the database records as non-durable is broadcast by a publisher that did not load its listeners (it used to be stored for nobody)', async () => {
  heard.length = 0;
  assert.equal(await notify('beeps', { n: 1 }, { client: db.pool }), undefined);
  await notify('beeps', { n: 2 }, { client: prisma });
  await waitFor(() => heard.length === 2, 'two NOTIFYs');
  assert.deepEqual(heard.map((h) => JSON.parse(h.payload)), [{ n: 1 }, { n: 2 }]);
  assert.equal(await stored('beeps'), 0, 'nothing stored');
  // The database wins over this process's declared mode; plain SQL publishers get the same.
  await notify(defineChannel('beeps', Object, { durable: true }), { n: 3 }, { client: db.pool });
  await db.query(`select pubsub.notify('beeps', '{"n": 4}')`);
  await waitFor(() => heard.length === 4, 'two more NOTIFYs');
  assert.equal(await stored('beeps'), 0);
});

test('a non-durable notification carries its context in the same envelope as before, from withContext or the transaction', async () => {
  heard.length = 0;
  await notify('beeps', { n: 5 }, { client: db.pool, context: { tenant: 'acme' } });
  const client = await db.pool.connect();
  await client.query('begin');
  await setContext(client, { request: 'r1' });
  await notify('beeps', 'plain', { client });
  await client.query('commit');
  client.release();
  await waitFor(() => heard.length === 2, 'two NOTIFYs');
  for (const h of heard) assert.ok(h.payload.startsWith(ENVELOPE_MARK), h.payload);
  assert.deepEqual(heard.map((h) => JSON.parse(h.payload.slice(ENVELOPE_MARK.length))), [
    { payload: { n: 5 }, context: { tenant: 'acme' } },
    { payload: 'plain', context: { request: 'r1' } },
  ]);
});

test('an oversize non-durable payload and a durable option that contradicts the database are PubSubErrors, through pg and Prisma', async () => {
  const big = 'x'.repeat(8000);
  for (const client of [db.pool, prisma]) {
    await assert.rejects(notify('beeps', big, { client }), (e: any) => e.code === 'pubsub.payloadTooLarge' && /8002 bytes/.test(e.message) && /7999/.test(e.message) && /durable/.test(e.message));
    await assert.rejects(notify('beeps', 1, { client, durable: true }), (e: any) => e.code === 'pubsub.channelConflict' && /channel beeps is non-durable in this database/.test(e.message) && /Leave the durable option out/.test(e.message));
    await assert.rejects(notify('jobs2', 1, { client, durable: false }), (e: any) => e.code === 'pubsub.channelConflict' && /channel jobs2 is durable/.test(e.message));
  }
  assert.equal(await notify('beeps', 1, { client: db.pool, durable: false }), undefined, 'an option that agrees is fine');
  assert.equal(await stored('beeps'), 0);
});

test('durable channels, and channels the database does not know, are stored', async () => {
  assert.match((await notify('jobs2', { n: 1 }, { client: db.pool }))!, /^\d+$/);
  assert.match((await notify('jobs2', { n: 2 }, { client: prisma }))!, /^\d+$/);
  assert.equal(await stored('jobs2'), 2);
  const rows = await db.query(`select listener from pubsub.notification where channel = 'jobs2'`);
  assert.deepEqual(rows.map((r) => r.listener), [null, null], 'no subscriptions in this database: unassigned rows');
  assert.match((await notify('nobody_knows', 1, { client: db.pool }))!, /^\d+$/);
  // Unknown to the database: this process's mode fills in.
  heard.length = 0;
  await listener.query('listen local_only');
  assert.equal(await notify('local_only', 'hi', { client: db.pool, durable: false }), undefined);
  await waitFor(() => heard.some((h) => h.channel === 'local_only'), 'the NOTIFY');
});

test('gh: notify() before the pubsub tables exist is pubsub.schemaMissing with the fix, through pg and Prisma; so is an older pubsub schema', async () => {
  const empty = await createTestDatabase();
  const emptyPrisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: empty.url }) });
  try {
    for (const client of [empty.pool, emptyPrisma]) {
      for (const durable of [true, false]) {
        await assert.rejects(notify('anything', 1, { client, durable }), (e: any) => e.code === 'pubsub.schemaMissing' && /tables are missing/.test(e.message) && /pubsub make-migration.*prisma migrate deploy.*pubsub migrate/.test(e.message) && e.cause !== undefined);
      }
    }
    await empty.query(`${LIBRARY_SCHEMA[1]}\n${LIBRARY_SCHEMA[2]}`); // version 2: no channel modes yet
    for (const client of [empty.pool, emptyPrisma]) {
      await assert.rejects(notify('anything', 1, { client }), (e: any) => e.code === 'pubsub.schemaMissing' && /older than this pgpubsub/.test(e.message));
    }
    // Other database errors pass through unchanged.
    await assert.rejects(notify('anything', 1, { client: { query: () => Promise.reject(Object.assign(new Error('boom'), { code: '57014' })) } }), /boom/);
  } finally {
    await emptyPrisma.$disconnect();
    await empty.drop();
  }
});
