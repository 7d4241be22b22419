// ctx.prisma: the app's own PrismaClient bound to the worker's claim transaction, against a real
// server. Writes commit with the removal of the notification and roll back with a failed attempt;
// Prisma's own transactions are savepoints inside it; a leaked client never runs on a later claim.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { PrismaPg } from '@prisma/adapter-pg';
import { Listen, PubSubError, listen, notify, type NotificationContext, type PrismaAdapter, type Worker } from '../../src/index.js';
import { PrismaClient } from '../../examples/generated/prisma/client.js';
import { ROOT, runCli, startCli } from '../helpers/cli.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

class Ev {
  n!: number;
  name?: string;
}

/** The tests do not register a client type globally (it would retype every test file): a cast instead. */
const prismaOf = (ctx: NotificationContext) => ctx.prisma as PrismaClient;
const calls = new Map<string, number>();
const bump = (k: string) => calls.set(k, (calls.get(k) ?? 0) + 1);
const callsOf = (k: string) => calls.get(k) ?? 0;
const logged: string[] = [];
const logger = { info() {}, warn: (m: string) => void logged.push(m), error: (m: string, e?: unknown) => void logged.push(`${m} ${e instanceof Error ? e.message : String(e ?? '')}`) };
const today = new Date('2026-12-03T00:00:00Z');
let gate: Promise<void> | undefined;
let leaked: { client?: PrismaClient; pending?: Promise<unknown> } = {};
const seenErrors: unknown[] = [];

class PrismaListeners {
  @Listen('p_commit')
  async commit(e: Ev, ctx: NotificationContext) {
    await prismaOf(ctx).author.create({ data: { name: `commit-${e.n}` } });
    await gate;
  }

  @Listen('p_throw', { backoff: { baseMs: 50, maxMs: 50 } })
  async throwAfterWrite(e: Ev, ctx: NotificationContext) {
    bump(`throw:${e.n}`);
    await prismaOf(ctx).author.create({ data: { name: `throw-${e.n}-attempt-${ctx.attempt}` } });
    if (ctx.attempt === 0) throw new Error(`throws after its write (${e.n})`);
  }

  @Listen('p_nested')
  async nested(e: Ev, ctx: NotificationContext) {
    const prisma = prismaOf(ctx);
    await prisma.$transaction(async (tx) => {
      const author = await tx.author.create({ data: { name: `itx-${e.n}` } });
      await tx.$transaction(async (inner) => {
        await inner.post.create({ data: { authorId: author.id, content: 'inner', date: today } });
      });
      // A nested transaction that fails is undone alone; the outer one goes on.
      await assert.rejects(
        tx.$transaction(async (inner) => {
          await inner.author.create({ data: { name: `itx-${e.n}-undone` } });
          throw new Error('undo me');
        }),
        /undo me/,
      );
    });
    await prisma.$transaction([prisma.author.create({ data: { name: `batch-${e.n}-a` } }), prisma.author.create({ data: { name: `batch-${e.n}-b` } })]);
    // A batch is atomic: its second write fails, so its first is undone too.
    await assert.rejects(prisma.$transaction([prisma.author.create({ data: { name: `batch-${e.n}-undone` } }), prisma.author.create({ data: { id: 1_000_000, name: 'dup' } })]), /Unique constraint/);
    await assert.rejects(
      prisma.$transaction(async (tx) => {
        await tx.author.create({ data: { name: `top-${e.n}-undone` } });
        throw new Error('undo the top one');
      }),
    );
    // A savepoint runs at the worker's isolation level: asking for it is fine, asking for another is refused by PostgreSQL.
    await prisma.$transaction(async (tx) => tx.author.count(), { isolationLevel: 'ReadCommitted' });
    await assert.rejects(prisma.$transaction(async (tx) => tx.author.count(), { isolationLevel: 'Serializable' }), /SET TRANSACTION ISOLATION LEVEL must/);
    await prisma.author.create({ data: { name: `itx-${e.n}-after-refused-isolation` } });
  }

  @Listen('p_parallel')
  async parallel(e: Ev, ctx: NotificationContext) {
    const prisma = prismaOf(ctx);
    // Plain writes, nested writes (Prisma's internal transactions), an interactive transaction and reads, all at once.
    await Promise.all([
      ...Array.from({ length: 5 }, (_, i) => prisma.author.create({ data: { name: `par-${e.n}-${i}` } })),
      ...Array.from({ length: 3 }, (_, i) => prisma.author.create({ data: { name: `par-${e.n}-nested-${i}`, posts: { create: [{ content: 'a', date: today }, { content: 'b', date: today }] } } })),
      prisma.$transaction(async (tx) => {
        await tx.author.create({ data: { name: `par-${e.n}-itx` } });
        await tx.author.count();
      }),
      prisma.author.findMany({ where: { name: { startsWith: `par-${e.n}` } } }),
    ]);
  }

  @Listen('p_related')
  async related(e: Ev, ctx: NotificationContext) {
    const author = await prismaOf(ctx).author.create({
      data: { name: `related-${e.n}`, posts: { create: [{ content: 'first', date: today }, { content: 'second', date: today }] } },
      include: { posts: true },
    });
    assert.equal(author.posts.length, 2);
  }

  @Listen('p_unique', { maxAttempts: 1 })
  async unique(e: Ev, ctx: NotificationContext) {
    const prisma = prismaOf(ctx);
    await prisma.author.create({ data: { name: `before-dup-${e.n}` } });
    await prisma.author.create({ data: { id: 1_000_000, name: `dup-${e.n}` } }); // the second call violates the key
  }

  @Listen('p_swallow', { maxAttempts: 1 })
  async swallow(e: Ev, ctx: NotificationContext) {
    const prisma = prismaOf(ctx);
    await prisma.author.create({ data: { name: `swallow-${e.n}` } });
    try {
      await prisma.author.create({ data: { id: 1_000_000, name: 'dup' } });
    } catch (error) {
      seenErrors.push(error); // swallowed: the transaction is aborted, so the attempt must fail
    }
  }

  @Listen('p_recover', { maxAttempts: 1 })
  async recover(e: Ev, ctx: NotificationContext) {
    const prisma = prismaOf(ctx);
    await prisma.author.create({ data: { name: `recover-${e.n}` } });
    try {
      // Inside $transaction (a savepoint) the failure is rolled back to that savepoint.
      await prisma.$transaction(async (tx) => tx.author.create({ data: { id: 1_000_000, name: 'dup' } }));
    } catch (error) {
      seenErrors.push(error);
    }
    // A nested write (Prisma's own transaction) that fails is undone the same way.
    await prisma.post.create({ data: { content: 'orphan', date: today, author: { connect: { id: -1 } } } }).catch((error) => seenErrors.push(error));
    await prisma.author.create({ data: { name: `recover-${e.n}-after` } });
  }

  @Listen('p_leak')
  async leak(e: Ev, ctx: NotificationContext) {
    leaked.client = prismaOf(ctx);
    leaked.pending = prismaOf(ctx).author.create({ data: { name: `leaked-lazy-${e.n}` } }); // a PrismaPromise runs only when awaited
    await prismaOf(ctx).author.create({ data: { name: `leak-${e.n}` } });
  }

  @Listen('p_later')
  async later(e: Ev, ctx: NotificationContext) {
    await prismaOf(ctx).author.create({ data: { name: `later-${e.n}` } });
    await gate;
  }

  @Listen('p_timeout', { timeoutMs: 500, backoff: { baseMs: 50, maxMs: 50 } })
  async timeout(e: Ev, ctx: NotificationContext) {
    bump(`timeout:${e.n}`);
    const prisma = prismaOf(ctx);
    await prisma.author.create({ data: { name: `timeout-${e.n}-attempt-${ctx.attempt}` } });
    if (ctx.attempt === 0) {
      await prisma.$transaction(async (tx) => {
        await tx.author.create({ data: { name: `timeout-${e.n}-in-tx` } });
        await tx.$executeRaw`select pg_sleep(30)`; // cancelled at the timeout
      }, { timeout: 60_000 });
    }
  }

  @Listen('p_killed', { backoff: { baseMs: 50, maxMs: 50 } })
  async killed(e: Ev, ctx: NotificationContext) {
    bump(`killed:${e.n}`);
    const prisma = prismaOf(ctx);
    await prisma.author.create({ data: { name: `killed-${e.n}-attempt-${ctx.attempt}` } });
    if (ctx.attempt === 0) {
      await db.query(`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and application_name = 'pubsub:worker' and state like 'idle in transaction%'`);
      await prisma.author.count(); // the claim's connection is gone
    }
  }

  @Listen('p_unawaited', { maxAttempts: 1 })
  async unawaited(e: Ev, ctx: NotificationContext) {
    const prisma = prismaOf(ctx);
    let started!: () => void;
    const open = new Promise<void>((r) => (started = r));
    void prisma
      .$transaction(async (tx) => {
        await tx.author.create({ data: { name: `unawaited-${e.n}` } });
        started();
        await new Promise((r) => setTimeout(r, 300));
        await tx.author.create({ data: { name: `unawaited-${e.n}-second` } });
      })
      .catch(() => {});
    await open; // returns with the transaction half done
  }

  @Listen('p_control', { maxAttempts: 1 })
  async control(e: Ev, ctx: NotificationContext) {
    await prismaOf(ctx).author.create({ data: { name: `control-${e.n}` } });
    await prismaOf(ctx).$executeRawUnsafe('commit'); // would commit the claim: refused
  }

  @Listen('p_no_prisma', { maxAttempts: 1 })
  noPrisma(_e: Ev, ctx: NotificationContext) {
    void ctx.prisma;
  }

  @Listen('p_broadcast', { durable: false })
  broadcast(_e: Ev, ctx: NotificationContext) {
    try {
      void ctx.prisma;
    } catch (error) {
      seenErrors.push(error);
    }
    bump('broadcast');
  }

  @Listen('p_drain')
  async drain(e: Ev, ctx: NotificationContext) {
    await prismaOf(ctx).author.create({ data: { name: `drain-${e.n}`, posts: { create: { content: 'x', date: today } } } });
  }
}

let db: TestDatabase;
let worker: Worker;
const factory = (adapter: PrismaAdapter) => new PrismaClient({ adapter });
const names = async (prefix: string) => (await db.query<{ name: string }>('select name from authors where name like $1 order by name', [`${prefix}%`])).map((r) => r.name);
const pending = async (channel: string) => db.query('select id::text, attempts, dead_at, last_error from pubsub.notification where channel = $1 order by id', [channel]);
const drained = (channel: string, what = channel) => waitFor(async () => (await pending(channel)).length === 0, `${what} processed`, 15_000);
const deadIn = (channel: string) => waitFor(async () => (await pending(channel)).find((r) => r.dead_at), `a dead notification on ${channel}`, 15_000);

before(async () => {
  assert.ok(PrismaListeners);
  db = await createTestDatabase({ library: true, subscribe: true });
  await db.query(fs.readFileSync(path.join(ROOT, 'prisma/migrations/20261124000000_init/migration.sql'), 'utf8'));
  await db.query(`insert into authors (id, name) values (1000000, 'taken')`);
  const channels = ['p_commit', 'p_throw', 'p_nested', 'p_parallel', 'p_related', 'p_unique', 'p_swallow', 'p_recover', 'p_leak', 'p_later', 'p_timeout', 'p_killed', 'p_unawaited', 'p_control', 'p_broadcast', 'p_drain'];
  worker = await listen({ databaseUrl: db.url, channels, concurrency: 3, pollIntervalMs: 100, logger, prisma: factory });
});

after(async () => {
  await worker?.close();
  await db?.drop();
});

test('writes through ctx.prisma are invisible until the claim commits, then committed with the removal of the notification', async () => {
  let open!: () => void;
  gate = new Promise((r) => (open = r));
  await notify('p_commit', { n: 1 }, { client: db.pool });
  await waitFor(async () => (await db.query(`select 1 from pg_stat_activity where application_name = 'pubsub:worker' and query like 'INSERT INTO "public"."authors"%'`)).length > 0, 'the listener\'s insert');
  assert.deepEqual(await names('commit-'), [], 'not visible before the commit');
  assert.equal((await pending('p_commit')).length, 1, 'the notification is still there for everyone else');
  open();
  await drained('p_commit');
  assert.deepEqual(await names('commit-'), ['commit-1']);
  gate = undefined;
});

test('a listener that throws after a Prisma write: the write is rolled back, the retry\'s write commits once', async () => {
  await notify('p_throw', { n: 1 }, { client: db.pool });
  await drained('p_throw');
  assert.equal(callsOf('throw:1'), 2);
  assert.deepEqual(await names('throw-1'), ['throw-1-attempt-1']);
  assert.ok(logged.some((l) => /PrismaListeners.throwAfterWrite failed on channel "p_throw".*throws after its write/s.test(l)), logged.join('\n'));
});

test('Prisma transactions are savepoints: interactive, nested, batch; a failing one is undone alone', async () => {
  await notify('p_nested', { n: 1 }, { client: db.pool });
  await drained('p_nested');
  assert.deepEqual(await names('itx-1'), ['itx-1', 'itx-1-after-refused-isolation']);
  assert.deepEqual(await names('batch-1'), ['batch-1-a', 'batch-1-b']);
  assert.deepEqual(await names('top-1'), []);
  const [{ count }] = await db.query(`select count(*)::int as count from posts p join authors a on a.id = p.author_id where a.name = 'itx-1'`);
  assert.equal(count, 1);
});

test('Promise.all of writes, nested writes, a transaction and reads in one listener', async () => {
  await notify('p_parallel', { n: 1 }, { client: db.pool });
  await drained('p_parallel');
  const got = await names('par-1-');
  assert.equal(got.length, 9, got.join(', '));
  const [{ count }] = await db.query(`select count(*)::int as count from posts p join authors a on a.id = p.author_id where a.name like 'par-1-nested-%'`);
  assert.equal(count, 6);
});

test('nested writes: an author created with its posts', async () => {
  await notify('p_related', { n: 1 }, { client: db.pool });
  await drained('p_related');
  const rows = await db.query(`select p.content from posts p join authors a on a.id = p.author_id where a.name = 'related-1' order by p.content`);
  assert.deepEqual(rows.map((r) => r.content), ['first', 'second']);
});

test('a unique violation fails the attempt and leaves nothing half-written', async () => {
  await notify('p_unique', { n: 1 }, { client: db.pool });
  const dead = await deadIn('p_unique');
  assert.match(dead.last_error, /Unique constraint failed/);
  assert.deepEqual(await names('before-dup-1'), []);
});

test('a Prisma error the listener swallows fails the attempt with pubsub.transactionAborted; inside $transaction or a nested write it is undone and the listener goes on', async () => {
  seenErrors.length = 0;
  await notify('p_swallow', { n: 1 }, { client: db.pool });
  const dead = await deadIn('p_swallow');
  assert.match(dead.last_error, /PubSubError: .*returned normally, but a query it made through ctx.tx or ctx.prisma failed .*duplicate key value violates unique constraint.*left its transaction aborted/s);
  assert.deepEqual(await names('swallow-1'), []);

  await notify('p_recover', { n: 1 }, { client: db.pool });
  await drained('p_recover');
  assert.deepEqual(await names('recover-1'), ['recover-1', 'recover-1-after']);
  assert.equal(seenErrors.length, 3, 'the swallowed one and the two recovered ones');
});

test('ctx.prisma after its attempt ended is refused, also while a later claim runs on the same client, and never writes', async () => {
  leaked = {};
  await notify('p_leak', { n: 1 }, { client: db.pool });
  await drained('p_leak');
  assert.ok(leaked.client && leaked.pending);
  const refused = (error: unknown) => error instanceof PubSubError && error.code === 'pubsub.invalidClient' && /ctx.prisma of PrismaListeners.leak .* was used after its attempt ended/.test(error.message);
  await assert.rejects(leaked.pending, refused);
  await assert.rejects(leaked.client.author.create({ data: { name: 'leaked-after' } }), refused);
  await assert.rejects(leaked.client.$transaction(async (tx) => tx.author.create({ data: { name: 'leaked-tx' } })), refused);

  let open!: () => void;
  gate = new Promise((r) => (open = r));
  await notify('p_later', { n: 1 }, { client: db.pool });
  await waitFor(async () => (await db.query(`select 1 from pg_stat_activity where application_name = 'pubsub:worker' and state = 'idle in transaction'`)).length > 0, 'the later claim');
  await assert.rejects(leaked.client.author.create({ data: { name: 'leaked-during-later' } }), refused);
  await assert.rejects(leaked.client.$executeRawUnsafe('select 1'), refused);
  await assert.rejects(leaked.client.$transaction(async (tx) => tx.author.create({ data: { name: 'leaked-tx-during-later' } })), refused);
  await assert.rejects(leaked.client.$extends({}).author.create({ data: { name: 'leaked-extended' } }), refused);
  await leaked.client.$disconnect(); // a no-op: the worker owns the client
  open();
  await drained('p_later');
  gate = undefined;
  assert.deepEqual(await names('leak'), ['leak-1']);
  assert.deepEqual(await names('later'), ['later-1']);
});

test('a listener that times out while a Prisma query runs: the query is cancelled, its writes rolled back, the retry commits once', async () => {
  await notify('p_timeout', { n: 1 }, { client: db.pool });
  await drained('p_timeout');
  assert.equal(callsOf('timeout:1'), 2);
  assert.deepEqual(await names('timeout-1'), ['timeout-1-attempt-1']);
  assert.ok(logged.some((l) => /PrismaListeners.timeout .*timed out after 500 ms/s.test(l)), logged.join('\n'));
  const [{ count }] = await db.query(`select count(*)::int as count from pg_stat_activity where query like '%pg_sleep(30)%' and pid <> pg_backend_pid()`);
  assert.equal(count, 0, 'nothing left sleeping on the server');
});

test('the claim\'s connection killed while a listener uses ctx.prisma: the attempt is counted, the retry commits once, the worker goes on', async () => {
  await notify('p_killed', { n: 1 }, { client: db.pool });
  await drained('p_killed');
  // Usually two calls; a third when another round claimed the row again before the lost attempt's record landed.
  assert.ok(callsOf('killed:1') >= 2, `${callsOf('killed:1')} calls`);
  const written = await names('killed-1');
  assert.equal(written.length, 1, written.join(', '));
  assert.match(written[0]!, /^killed-1-attempt-[1-9]/, 'only a retry\'s write is kept');
});

test('a listener that returns with its $transaction still open fails, and none of it is kept', async () => {
  await notify('p_unawaited', { n: 1 }, { client: db.pool });
  const dead = await deadIn('p_unawaited');
  assert.match(dead.last_error, /returned while a transaction it opened was still open/);
  await new Promise((r) => setTimeout(r, 500)); // the abandoned transaction's second write comes and is refused
  assert.deepEqual(await names('unawaited-1'), []);
});

test('COMMIT through ctx.prisma is refused: it would end the claim\'s transaction', async () => {
  await notify('p_control', { n: 1 }, { client: db.pool });
  const dead = await deadIn('p_control');
  assert.match(dead.last_error, /`COMMIT` is refused/);
  assert.deepEqual(await names('control-1'), []);
});

test('ctx.prisma on a non-durable channel, and in a worker without the prisma option, says why', async () => {
  seenErrors.length = 0;
  await notify('p_broadcast', { n: 1 }, { client: db.pool });
  await waitFor(() => callsOf('broadcast') === 1, 'the broadcast');
  assert.ok(seenErrors[0] instanceof PubSubError && seenErrors[0].code === 'pubsub.invalidClient' && /exists only for durable channels/.test(seenErrors[0].message));

  const plain = await listen({ databaseUrl: db.url, channels: ['p_no_prisma'], pollIntervalMs: 100, logger });
  try {
    await notify('p_no_prisma', { n: 1 }, { client: db.pool });
    const dead = await deadIn('p_no_prisma');
    assert.match(dead.last_error, /ctx.prisma needs the worker's prisma option/);
  } finally {
    await plain.close();
  }
});

test('200 notifications, each creating an author with a post through ctx.prisma, with concurrency 3: each exactly once', async () => {
  const client = await db.pool.connect();
  try {
    await client.query('begin');
    for (let n = 0; n < 200; n++) await notify('p_drain', { n }, { client });
    await client.query('commit');
  } finally {
    client.release();
  }
  await drained('p_drain', 'all 200');
  const [{ authors, distinct, posts }] = await db.query(
    `select count(*)::int as authors, count(distinct a.name)::int as distinct, (select count(*)::int from posts p join authors b on b.id = p.author_id where b.name like 'drain-%') as posts from authors a where a.name like 'drain-%'`,
  );
  assert.deepEqual({ authors, distinct, posts }, { authors: 200, distinct: 200, posts: 200 });
});

test('a wrong prisma option fails at start with pubsub.config, saying what to pass', async () => {
  const config = (pattern: RegExp) => (error: unknown) => error instanceof PubSubError && error.code === 'pubsub.config' && pattern.test(error.message);
  const base = { databaseUrl: db.url, channels: ['p_commit'], logger };
  await assert.rejects(listen({ ...base, prisma: 'dist/prisma.js' as never }), config(/prisma must be a function that builds your client/));
  await assert.rejects(listen({ ...base, prisma: () => ({}) }), config(/must return a PrismaClient built on the adapter it is given.*returned an object \(Object\)/));
  await assert.rejects(listen({ ...base, prisma: (adapter) => Promise.resolve(new PrismaClient({ adapter: adapter as never })) as never }), config(/a promise: build the client synchronously/));
  await assert.rejects(
    listen({ ...base, prisma: () => { throw new Error('no env'); } }),
    config(/The prisma factory threw: no env/),
  );
  // A client on its own connection would not be atomic with the claim: the check sees its statements never arrive.
  const own = new PrismaPg({ connectionString: db.url });
  await assert.rejects(listen({ ...base, prisma: () => new PrismaClient({ adapter: own }) }), config(/the client sent \[\] where \["BEGIN","COMMIT","select 1"\] was expected/));
});

test('pubsub listen --prisma and "prisma" in pubsub.config.json load the factory module; a module without one is refused', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-prisma-cli-'));
  try {
    const listeners = path.join(ROOT, 'dist/test/fixtures/listeners/prisma-authors.js');
    const factoryModule = path.join(ROOT, 'dist/test/fixtures/prisma-factory.js');
    fs.writeFileSync(path.join(dir, 'pubsub.config.json'), JSON.stringify({ require: [listeners], prisma: factoryModule }));
    await db.query(`insert into pubsub.subscription (channel, listener) values ('prisma_cli', 'PrismaAuthors.create') on conflict do nothing`);
    const cli = startCli(['listen', '--poll-interval', '100'], { DATABASE_URL: db.url }, dir);
    try {
      await cli.waitForOutput(/listening on prisma_cli/);
      await notify('prisma_cli', { n: 1 }, { client: db.pool });
      await drained('prisma_cli');
      assert.deepEqual(await names('cli-'), ['cli-1']);
    } finally {
      assert.equal(await cli.stop(), 0, cli.output());
    }
    const wrong = await runCli(['listen', '--require', listeners, '--prisma', listeners], { DATABASE_URL: db.url });
    assert.equal(wrong.code, 1);
    assert.match(wrong.output, /--prisma .*prisma-authors.js: export the function that builds your client/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
