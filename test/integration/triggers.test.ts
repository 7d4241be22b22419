// Trigger channels end to end: make-migration's SQL applied by `migrate` to a real database, rows
// written through Prisma and pg, listeners run by an in-process worker.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, beforeEach, test } from 'node:test';
import { PrismaPg } from '@prisma/adapter-pg';
import {
  PostDeleteListen,
  PostInsertListen,
  PostSaveListen,
  PostUpdateListen,
  PreDeleteListen,
  PreUpdateListen,
  TriggerListen,
  applyMigrations,
  generateMigration,
  listen,
  setContext,
  type NotificationContext,
  type TriggerPayload,
  type Worker,
} from '../../src/index.js';
import { Prisma, PrismaClient, type Account, type Article, type Everything, type Membership } from '../fixtures/generated/prisma/client.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';
import { ROOT } from '../helpers/cli.js';

type Seen = { listener: string; payload: TriggerPayload<any>; ctx: NotificationContext };
const seen: Seen[] = [];
const record = (listener: string) => (payload: TriggerPayload<any>, ctx: NotificationContext) => void seen.push({ listener, payload, ctx: { ...ctx } });

class EverythingListeners {
  @PostInsertListen('Everything')
  inserted(p: TriggerPayload<Everything>, ctx: NotificationContext) {
    record('everything.insert')(p, ctx);
  }
}

class AccountListeners {
  @PostInsertListen('Account')
  inserted(p: TriggerPayload<Account>, ctx: NotificationContext) {
    record('account.insert')(p, ctx);
  }
  @PostDeleteListen('Account')
  deleted(p: TriggerPayload<Account>, ctx: NotificationContext) {
    record('account.delete')(p, ctx);
  }
  @PostSaveListen('Account')
  saved(p: TriggerPayload<Account>, ctx: NotificationContext) {
    record('account.save')(p, ctx);
  }
  @TriggerListen({ model: 'Account', when: 'AFTER', events: ['UPDATE'], columns: ['balance'], condition: 'NEW.balance > 100' })
  rich(p: TriggerPayload<Account>, ctx: NotificationContext) {
    record('account.rich')(p, ctx);
  }
}

class MembershipListeners {
  @PreDeleteListen('Membership')
  beforeDelete(p: TriggerPayload<Membership>, ctx: NotificationContext) {
    record('membership.preDelete')(p, ctx);
  }
  @PreUpdateListen('Membership')
  beforeUpdate(p: TriggerPayload<Membership>, ctx: NotificationContext) {
    record('membership.preUpdate')(p, ctx);
  }
}

class ArticleListeners {
  @PostInsertListen('Article')
  durable(p: TriggerPayload<Article>, ctx: NotificationContext) {
    record('article.durable')(p, ctx);
  }
  @PostUpdateListen('Article', { channel: 'articles_fast', durable: false, select: '*' })
  fast(p: TriggerPayload<Article>, ctx: NotificationContext) {
    record('article.fast')(p, ctx);
  }
}

let db: TestDatabase;
let worker: Worker;
const warnings: string[] = [];
let prisma: PrismaClient;
let migrationsDir: string;

before(async () => {
  assert.ok(EverythingListeners && AccountListeners && MembershipListeners && ArticleListeners);
  db = await createTestDatabase();
  migrationsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-triggers-'));
  fs.cpSync(path.join(ROOT, 'test/fixtures/prisma/migrations'), migrationsDir, { recursive: true });
  const generated = await generateMigration({ schema: path.join(ROOT, 'test/fixtures/prisma/schema.prisma'), migrationsDir, name: 'pubsub' });
  assert.ok(generated.folder);
  await applyMigrations(db.url, migrationsDir);
  worker = await listen({ databaseUrl: db.url, pollIntervalMs: 200, logger: { info() {}, warn: (m) => warnings.push(m), error: console.error } });
  prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: db.url }) });
});

after(async () => {
  await worker?.close();
  await prisma?.$disconnect();
  await db?.drop();
});

beforeEach(() => void (seen.length = 0));

const forListener = (listener: string) => seen.filter((s) => s.listener === listener);
const waitForListener = (listener: string, n = 1) => waitFor(() => forListener(listener).length >= n, `${n} call(s) of ${listener}`);

test('every Prisma scalar type arrives with its exact value, keyed by field name', async () => {
  const bytes = new Uint8Array([0, 1, 2, 250, 255]);
  const row = await prisma.everything.create({
    data: {
      big: 9223372036854775807n,
      dec: new Prisma.Decimal('12345678901234567890.123456789012345678'),
      at: new Date('2024-02-29T23:59:59.999Z'),
      day: new Date('2024-03-01T00:00:00.000Z'),
      bytes,
      json: { nested: { list: [1, 2.5, 'three', null, true] }, quote: `it's "x"` },
      mood: 'SAD',
      ratio: 0.1 + 0.2,
      flag: true,
      text: `O'Brien "quoted"\n🎉 ünï`,
      tags: ['a', `b'c`, ''],
      bigs: [-9223372036854775808n, 0n],
    },
  });
  await waitForListener('everything.insert');
  const [{ payload, ctx }] = forListener('everything.insert') as [Seen];
  assert.equal(payload.op, 'INSERT');
  assert.equal(payload.when, 'AFTER');
  assert.equal(payload.model, 'Everything');
  assert.equal(payload.old, null);
  assert.ok(ctx.durable && ctx.tx && ctx.id);
  const got = payload.new as Everything;
  assert.deepEqual(Object.keys(got).sort(), Object.keys(row).sort(), 'field names, not column names');
  assert.equal(got.big, row.big);
  assert.ok(got.dec instanceof Prisma.Decimal, 'Decimal is Prisma.Decimal');
  assert.equal(got.dec.toFixed(18), row.dec.toFixed(18));
  assert.equal(got.at.getTime(), row.at.getTime());
  assert.equal(got.day!.getTime(), row.day!.getTime());
  assert.deepEqual(got.bytes, row.bytes);
  assert.deepEqual(got.json, row.json);
  assert.equal(got.mood, 'SAD');
  assert.equal(got.ratio, 0.30000000000000004);
  assert.equal(got.flag, true);
  assert.equal(got.text, row.text);
  assert.deepEqual(got.tags, row.tags);
  assert.deepEqual(got.bigs, row.bigs);
  assert.deepEqual({ ...got }, { ...row });
});

test('@map/@@map and a custom primary key; several operations and listeners on one channel each get only their own', async () => {
  await prisma.account.create({ data: { code: 'ACC-1', name: 'First' } });
  await waitForListener('account.save');
  await waitForListener('account.insert');
  const insert = forListener('account.insert')[0]!.payload;
  assert.deepEqual(insert.new, { code: 'ACC-1', name: 'First', balance: 0 });

  await prisma.account.update({ where: { code: 'ACC-1' }, data: { balance: 500 } });
  await waitForListener('account.save', 2);
  await waitForListener('account.rich');
  await prisma.account.update({ where: { code: 'ACC-1' }, data: { name: 'Renamed' } }); // not `balance`: no rich
  await waitForListener('account.save', 3);
  await prisma.account.delete({ where: { code: 'ACC-1' } });
  await waitForListener('account.delete');
  await new Promise((r) => setTimeout(r, 300));

  assert.deepEqual(forListener('account.insert').map((s) => s.payload.op), ['INSERT']);
  assert.deepEqual(forListener('account.save').map((s) => s.payload.op), ['INSERT', 'UPDATE', 'UPDATE']);
  assert.deepEqual(forListener('account.delete').map((s) => s.payload.op), ['DELETE']);
  assert.equal(forListener('account.rich').length, 1, 'condition and UPDATE OF columns hold');
  const rich = forListener('account.rich')[0]!.payload;
  assert.deepEqual([rich.old.balance, rich.new.balance], [0, 500]);
  assert.deepEqual(forListener('account.delete')[0]!.payload.old, { code: 'ACC-1', name: 'Renamed', balance: 500 });
  assert.equal(forListener('account.delete')[0]!.payload.new, null);
});

test('a BEFORE DELETE trigger never cancels the delete and a BEFORE UPDATE trigger never changes the row (composite key)', async () => {
  await prisma.membership.create({ data: { userId: 1, groupId: 2, role: 'member' } });
  await prisma.membership.update({ where: { userId_groupId: { userId: 1, groupId: 2 } }, data: { role: 'owner' } });
  assert.equal((await prisma.membership.findFirstOrThrow()).role, 'owner');
  const deleted = await prisma.membership.deleteMany({ where: { userId: 1 } });
  assert.equal(deleted.count, 1);
  assert.equal(await prisma.membership.count(), 0);
  await waitForListener('membership.preDelete');
  await waitForListener('membership.preUpdate');
  const update = forListener('membership.preUpdate')[0]!.payload;
  assert.equal(update.when, 'BEFORE');
  assert.deepEqual([update.old.role, update.new.role], ['member', 'owner']);
  assert.deepEqual(forListener('membership.preDelete')[0]!.payload.old, { userId: 1, groupId: 2, role: 'owner' });
});

test('a 100 KB row never fails the write: durable channels carry it whole, non-durable ones send the key and truncated: true', async () => {
  const body = 'é'.repeat(50_000) + `'"\n`; // > 100 KB of UTF-8
  const article = await prisma.article.create({ data: { body } });
  await waitForListener('article.durable');
  assert.equal(forListener('article.durable')[0]!.payload.new.body, body);

  await prisma.article.update({ where: { id: article.id }, data: { body: body + '!' } });
  await waitForListener('article.fast');
  const fast = forListener('article.fast')[0]!;
  assert.equal(fast.ctx.durable, false);
  assert.equal(fast.payload.truncated, true);
  assert.deepEqual(fast.payload.new, { id: article.id });

  await prisma.article.update({ where: { id: article.id }, data: { body: 'short' } }); // old row still 100 KB
  await prisma.article.update({ where: { id: article.id }, data: { body: 'shorter' } });
  await waitForListener('article.fast', 3);
  assert.equal(forListener('article.fast')[1]!.payload.truncated, true);
  const small = forListener('article.fast')[2]!.payload;
  assert.equal(small.truncated, undefined);
  assert.deepEqual([small.old.body, small.new.body], ['short', 'shorter']);
});

test('nothing is delivered when the writing transaction rolls back', async () => {
  await assert.rejects(
    prisma.$transaction(async (tx) => {
      await tx.account.create({ data: { code: 'GONE', name: 'never' } });
      throw new Error('roll back');
    }),
  );
  await prisma.account.create({ data: { code: 'KEPT', name: 'after' } });
  await waitForListener('account.insert');
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(forListener('account.insert').map((s) => s.payload.new.code), ['KEPT']);
  assert.equal((await db.query('select count(*)::int as n from pubsub.notification'))[0].n, 0);
});

test('an application role with no grants on the pubsub schema can still write to a table with a trigger', async () => {
  const role = `pubsub_app_${Date.now()}`;
  await db.query(`create role ${role}`);
  await db.query(`grant select, insert on "Article" to ${role}`);
  await db.query(`grant usage on sequence "Article_id_seq" to ${role}`);
  const client = await db.pool.connect();
  try {
    await client.query(`set role ${role}`);
    await assert.rejects(client.query('select count(*) from pubsub.notification'), /permission denied/);
    await client.query(`insert into "Article" (body) values ('written by the app role')`);
    await client.query('reset role');
  } finally {
    client.release();
  }
  await waitFor(() => forListener('article.durable').some((s) => s.payload.new.body === 'written by the app role'), 'the app role\'s article');
  await db.query(`drop owned by ${role}`);
  await db.query(`drop role ${role}`);
});

test('a context set in a Prisma transaction reaches trigger listeners, durable and non-durable', async () => {
  await prisma.$transaction(async (tx) => {
    await setContext(tx, { requestId: 'req-7', tenant: 'acme' });
    await tx.account.create({ data: { code: 'CTX', name: 'with context' } });
    const article = await tx.article.create({ data: { body: 'x' } });
    await tx.article.update({ where: { id: article.id }, data: { body: 'y' } });
  });
  await waitForListener('account.insert');
  await waitForListener('article.fast');
  assert.deepEqual(forListener('account.insert')[0]!.ctx.context, { requestId: 'req-7', tenant: 'acme' });
  assert.deepEqual(forListener('article.fast')[0]!.payload.context, { requestId: 'req-7', tenant: 'acme' });
  assert.deepEqual(forListener('article.fast')[0]!.ctx.context, { requestId: 'req-7', tenant: 'acme' });
  await prisma.account.create({ data: { code: 'NOCTX', name: 'none' } }); // the context ended with the transaction
  await waitForListener('account.insert', 2);
  assert.equal(forListener('account.insert')[1]!.ctx.context, undefined);
});

test('a notification stored before a model change still reads: unknown fields dropped, missing optional ones null, one warning', async () => {
  const [model] = await db.query(`select version from pubsub.model where name = 'Account'`);
  const [{ payload: current }] = await db.query(`select '{}'::jsonb as payload`);
  assert.ok(model.version && current);
  const key = (await db.query(`select proname from pg_proc where proname like 'tg_accounts__after_insert_%'`))[0].proname.split('__')[1];
  const old = { op: 'INSERT', when: 'AFTER', model: 'Account', trigger: key, v: 'oldshape', old: null, new: { code: 'OLD', name: 'from before', nickname: 'gone' } };
  await db.query(`insert into pubsub.notification (channel, listener, payload) values ('model.Account', 'AccountListeners.inserted', $1)`, [old]);
  await db.query(`select pg_notify('model.Account', '')`);
  await waitForListener('account.insert');
  assert.deepEqual(forListener('account.insert')[0]!.payload.new, { code: 'OLD', name: 'from before' });
  assert.equal(warnings.filter((w) => /Account notification written with model version oldshape was read as version/.test(w)).length, 1);
  assert.match(warnings.find((w) => /oldshape/.test(w))!, /required fields missing: balance/);

  const everythingKey = (await db.query(`select proname from pg_proc where proname like 'tg_everything__after_insert_%'`))[0].proname.split('__')[1];
  const row = { id: 9, big: '12', dec: '1.5', at: '2024-01-01T00:00:00', mood: 'HAPPY', ratio: 1, flag: false, text: 't', tags: [], bigs: ['7'], legacy: true };
  const types = { big: 'BigInt', dec: 'Decimal', at: 'DateTime', bigs: 'BigInt[]' };
  await db.query(`insert into pubsub.notification (channel, listener, payload) values ('model.Everything', 'EverythingListeners.inserted', $1)`, [
    { op: 'INSERT', when: 'AFTER', model: 'Everything', trigger: everythingKey, v: 'v0', types, old: null, new: row },
  ]);
  await db.query(`select pg_notify('model.Everything', '')`);
  await waitForListener('everything.insert');
  const got = forListener('everything.insert')[0]!.payload.new;
  assert.deepEqual([got.day, got.bytes, got.json], [null, null, null], 'missing optional fields are null');
  assert.equal(got.legacy, undefined, 'unknown fields are dropped');
  assert.equal(got.big, 12n);
  assert.deepEqual(got.bigs, [7n]);
});
