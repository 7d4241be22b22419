// Handler sessions (issue 10, point 2): azafea hands each handler a session and commits it when the
// handler returns; ours is the claim's transaction, as ctx.tx and ctx.prisma. The azafea example as a
// listener commits with its notification and rolls back with a failure; a listener that never touches
// the transaction pays nothing for it: no savepoint, no Prisma client built.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { Listen, listen, notify, type NotificationContext, type PrismaAdapter, type Worker } from '../../src/index.js';
import { PrismaClient } from '../../examples/generated/prisma/client.js';
import { ROOT } from '../helpers/cli.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

/** azafea's MyEvent, as a payload class. */
class MyEvent {
  name!: string;
  timestamp!: Date;
}
class Nothing {
  n!: number;
}

class Handlers {
  /** azafea's process(dbsession, record): add the row; the worker commits it with the notification's removal. */
  @Listen('my_event', { maxAttempts: 2, backoff: { baseMs: 10, maxMs: 10 } })
  async process(event: MyEvent, ctx: NotificationContext) {
    const prisma = ctx.prisma as PrismaClient;
    await prisma.author.create({ data: { name: event.name, createdAt: event.timestamp } });
    if (event.name.startsWith('fail')) throw new Error(`${event.name} fails after its write`);
  }

  @Listen('untouched')
  untouched(_n: Nothing) {}
}

let db: TestDatabase;
let worker: Worker | undefined;
let pool: pg.Pool | undefined;
let built = 0;
/** Every statement the worker's claim connections send, in order. */
const sent: string[] = [];

before(async () => {
  assert.ok(Handlers);
  db = await createTestDatabase({ library: true, subscribe: true });
  await db.query(fs.readFileSync(path.join(ROOT, 'prisma/migrations/20261124000000_init/migration.sql'), 'utf8'));
  pool = new pg.Pool({ connectionString: db.url, max: 3 });
  pool.on('error', () => {});
  pool.on('connect', (client) => {
    const query = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as { query: unknown }).query = (...args: unknown[]) => {
      const first = args[0];
      sent.push(typeof first === 'string' ? first : String((first as { text?: string }).text));
      return query(...args);
    };
  });
  worker = await listen({
    databaseUrl: db.url,
    pool,
    channels: ['my_event', 'untouched'],
    pollIntervalMs: 600_000, // no polling: every claim counted below is one the notifications caused
    logger: { info() {}, warn() {}, error() {} },
    prisma: (adapter: PrismaAdapter) => {
      built++;
      return new PrismaClient({ adapter });
    },
  });
});
after(async () => {
  await worker?.close();
  await pool?.end();
  await db?.drop();
});

const count = async (sql: string) => (await db.query(sql))[0].n as number;

test('the azafea handler as a listener: its write commits with the notification, and a failed attempt leaves none of it', async () => {
  const client = await db.pool.connect();
  try {
    await client.query('begin');
    await notify('my_event', { name: 'ok', timestamp: new Date('2026-12-03T10:00:00Z') }, { client });
    await notify('my_event', { name: 'fail-twice', timestamp: new Date('2026-12-03T10:00:00Z') }, { client });
    await client.query('commit');
  } finally {
    client.release();
  }
  await waitFor(async () => (await count(`select count(*)::int as n from pubsub.notification where channel = 'my_event' and dead_at is null`)) === 0, 'both settled');
  assert.deepEqual(await db.query(`select name, created_at from authors order by name`), [{ name: 'ok', created_at: new Date('2026-12-03T10:00:00Z') }]);
  assert.equal(await count(`select count(*)::int as n from pubsub.notification where channel = 'my_event' and dead_at is not null and attempts = 2`), 1, 'the failing one is dead-lettered, its two writes undone');
});

test('a listener that never touches the transaction pays nothing for it: no savepoint and no Prisma client, only the claim and its commit', async () => {
  const builtBefore = built;
  sent.length = 0;
  const client = await db.pool.connect();
  try {
    await client.query('begin');
    for (let n = 0; n < 300; n++) await notify('untouched', { n }, { client });
    await client.query('commit');
  } finally {
    client.release();
  }
  await waitFor(async () => (await count(`select count(*)::int as n from pubsub.notification where channel = 'untouched'`)) === 0, '300 processed');
  const statements = sent.join('\n');
  assert.doesNotMatch(statements, /savepoint/i, 'no savepoint for a listener that never used ctx.tx or ctx.prisma');
  assert.equal(built, builtBefore, 'no Prisma client built for it');
  // What a claim sends: the claim (which begins the transaction and deletes the rows), then the commit that
  // settles it. (Falling asleep also sends a script that begins a transaction, on the LISTEN session.)
  const claims = sent.filter((s) => /^\s*begin/i.test(s) && /pubsub\.claim_next\(|delete from pubsub\.notification/i.test(s)).length;
  assert.ok(claims >= 1 && claims <= 10, `300 notifications in a few claims, not one each (${claims})`);
});
