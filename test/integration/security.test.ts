// Security with real roles (cluster-wide, so random names, dropped at the end): what each role of the
// README's Security section can do and see with exactly the grants it lists. The migrations are
// applied by an owner role that is not a superuser, as in production.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import {
  Listen,
  PostInsertListen,
  PostUpdateListen,
  PubSubError,
  TriggerListen,
  applyMigrations,
  generateMigration,
  listDead,
  listen,
  notify,
  purgeDead,
  retryDead,
  type NotificationContext,
  type TriggerPayload,
  type Worker,
} from '../../src/index.js';
import { planMigration, triggerDefinitions } from '../../src/migration.js';
import { parsePrismaSchema } from '../../src/prisma-schema.js';
import { Registry } from '../../src/registry.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';
import { ROOT } from '../helpers/cli.js';

const seen: Array<{ listener: string; payload: any }> = [];

class Job {
  fail?: boolean;
}

class SecurityListeners {
  @PostInsertListen('Account', { name: 'Sec.accountInserted' })
  inserted(p: TriggerPayload<any>) {
    seen.push({ listener: 'inserted', payload: p });
  }
  // Non-durable, no select: only the primary key may go out on the NOTIFY.
  @PostUpdateListen('Account', { channel: 'accounts_public', durable: false, name: 'Sec.updatedPublic' })
  updated(p: TriggerPayload<any>) {
    seen.push({ listener: 'updated', payload: p });
  }
  // Field names in the condition (name is @map("display name")), and a narrow selection.
  @TriggerListen({ model: 'Account', when: 'AFTER', events: ['UPDATE'], condition: 'NEW.name <> OLD.name', channel: 'accounts_renamed', durable: false, select: ['name'], name: 'Sec.renamed' })
  renamed(p: TriggerPayload<any>) {
    seen.push({ listener: 'renamed', payload: p });
  }
  @Listen('sec.jobs', { name: 'Sec.job', maxAttempts: 1 })
  job(p: Job, _ctx: NotificationContext) {
    if (p.fail) throw new Error('this job always fails');
    seen.push({ listener: 'job', payload: p });
  }
}

const suffix = randomBytes(4).toString('hex');
const role = (r: string) => `pubsub_sec_${suffix}_${r}`;
const [OWNER, APP, WORKER, DEAD, SNOOP] = ['owner', 'app', 'worker', 'dead', 'snoop'].map(role) as [string, string, string, string, string];
let db: TestDatabase;
let worker: Worker | undefined;
const pools: pg.Pool[] = [];

/** Every test role logs in with this password: the embedded server asks for one, trust auth ignores it. */
const PASSWORD = `pw_${suffix}`;
const urlAs = (user: string) => {
  const url = new URL(db.url);
  url.username = user;
  url.password = PASSWORD;
  return url.toString();
};
const poolAs = (user: string) => {
  const pool = new pg.Pool({ connectionString: urlAs(user), max: 2 });
  pools.push(pool);
  return pool;
};

before(async () => {
  assert.ok(SecurityListeners);
  db = await createTestDatabase();
  for (const r of [OWNER, APP, WORKER, DEAD, SNOOP]) await db.query(`create role ${r} login password '${PASSWORD}'`);
  // The owner applies every migration (the app's tables and pubsub's), as a non-superuser.
  const dbName = new URL(db.url).pathname.slice(1);
  await db.query(`grant create on database ${dbName} to ${OWNER}`);
  await db.query(`alter schema public owner to ${OWNER}`);
  const migrationsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-security-'));
  fs.cpSync(path.join(ROOT, 'test/fixtures/prisma/migrations'), migrationsDir, { recursive: true });
  const generated = await generateMigration({
    schema: path.join(ROOT, 'test/fixtures/prisma/schema.prisma'),
    migrationsDir,
    grantNotify: [APP],
    databaseUrl: db.url,
  });
  assert.deepEqual(generated.notes, []);
  await applyMigrations(urlAs(OWNER), migrationsDir);
  // README, Security: the grants of each role.
  await db.query(`grant select, insert, update, delete on accounts to ${APP}`);
  await db.query(`grant usage on schema pubsub to ${WORKER}, ${DEAD}, ${SNOOP}`);
  await db.query(`grant select, insert, update, delete on pubsub.notification to ${WORKER}`);
  await db.query(`grant select on pubsub.subscription, pubsub.model to ${WORKER}`);
  await db.query(`grant select, insert, update, delete on pubsub.claim to ${WORKER}`);
  await db.query(`grant select, update, delete on pubsub.notification to ${DEAD}`);
});

after(async () => {
  await worker?.close();
  for (const p of pools) await p.end();
  await db?.drop();
  const admin = new pg.Client(process.env.DATABASE_URL);
  await admin.connect();
  for (const r of [OWNER, APP, WORKER, DEAD, SNOOP]) await admin.query(`drop role if exists ${r}`);
  await admin.end();
});

test('a role that may LISTEN but not read the table receives only the primary key of a non-durable trigger channel', async () => {
  await db.query(`insert into accounts (account_code, "display name") values ('SEC-1', 'Alice')`);
  const snoop = new pg.Client(urlAs(SNOOP));
  await snoop.connect();
  const payloads: any[] = [];
  snoop.on('notification', (n) => payloads.push({ channel: n.channel, payload: JSON.parse(n.payload!) }));
  await snoop.query('listen accounts_public; listen accounts_renamed');
  await assert.rejects(snoop.query('select * from accounts'), /permission denied/);
  await db.query(`update accounts set "display name" = 'Alice Secret', balance = 7 where account_code = 'SEC-1'`);
  await db.query(`update accounts set balance = 8 where account_code = 'SEC-1'`); // same name: no renamed
  await waitFor(() => payloads.length >= 3, 'three notifications');
  await new Promise((r) => setTimeout(r, 200));
  await snoop.end();
  const pub = payloads.filter((p) => p.channel === 'accounts_public').map((p) => p.payload);
  assert.equal(pub.length, 2);
  assert.deepEqual([pub[0].old, pub[0].new], [{ code: 'SEC-1' }, { code: 'SEC-1' }], 'the key, not the name or balance');
  assert.equal(pub[0].partial, true);
  assert.doesNotMatch(JSON.stringify(payloads.filter((p) => p.channel === 'accounts_public')), /Alice/);
  const renamed = payloads.filter((p) => p.channel === 'accounts_renamed').map((p) => p.payload);
  assert.equal(renamed.length, 1, 'the condition, written with field names, held');
  assert.deepEqual([renamed[0].old, renamed[0].new], [{ code: 'SEC-1', name: 'Alice' }, { code: 'SEC-1', name: 'Alice Secret' }], 'select + key');
});

test('without grants a role cannot call pubsub.notify(), pubsub.wake() or a trigger function; a granted app role can notify', async () => {
  const snoop = poolAs(SNOOP); // has USAGE on schema pubsub, nothing else
  await assert.rejects(snoop.query(`select pubsub.notify('sec.jobs', '{"forged": true}'::jsonb)`), /permission denied for function notify/);
  await assert.rejects(snoop.query(`select pubsub.wake('sec.jobs')`), /permission denied for function wake/);
  const fns = await db.query(`select p.oid::regprocedure::text as fn from pg_proc p where pronamespace = 'pubsub'::regnamespace and proname like 'tg\\_%'`);
  assert.ok(fns.length >= 3);
  for (const { fn } of fns) {
    for (const r of [SNOOP, APP, WORKER]) {
      const [{ ok }] = await db.query(`select has_function_privilege($1, $2, 'execute') as ok`, [r, fn]);
      assert.equal(ok, false, `${r} may not execute ${fn}`);
    }
  }
  const id = await notify('sec.jobs', { fail: false }, { client: poolAs(APP) });
  assert.ok(id);
  await assert.rejects(poolAs(APP).query('select * from pubsub.notification'), /permission denied/);
});

test('a role with only INSERT on the table fires the trigger (EXECUTE on the function is not needed)', async () => {
  const writer = role('writer');
  await db.query(`create role ${writer} login password '${PASSWORD}'`);
  try {
    await db.query(`grant insert on accounts to ${writer}`);
    await poolAs(writer).query(`insert into accounts (account_code, "display name") values ('SEC-2', 'Bob')`);
    const rows = await db.query(`select payload from pubsub.notification where listener = 'Sec.accountInserted' and payload->'new'->>'code' = 'SEC-2'`);
    assert.equal(rows.length, 1);
    assert.deepEqual(rows[0].payload.new, { code: 'SEC-2', name: 'Bob', balance: 0 }, 'durable channels keep the whole row');
  } finally {
    await pools.pop()!.end();
    await db.query(`revoke all on accounts from ${writer}`);
    await db.query(`drop role ${writer}`);
  }
});

test('the worker role with the documented grants processes notifications; the dead-letter role lists, retries and purges', async () => {
  worker = await listen({ databaseUrl: urlAs(WORKER), pollIntervalMs: 200, logger: { info() {}, warn() {}, error() {} } });
  await waitFor(() => seen.some((s) => s.listener === 'inserted' && s.payload.new.code === 'SEC-2'), 'the durable insert, processed as the worker role');
  await waitFor(() => seen.some((s) => s.listener === 'job'), "the app role's notify()");
  await db.query(`update accounts set balance = 9 where account_code = 'SEC-1'`);
  const updated = await waitFor(() => seen.find((s) => s.listener === 'updated'), 'a non-durable update seen by the worker');
  assert.equal(updated!.payload.partial, true);
  assert.deepEqual(Object.keys(updated!.payload.new), ['code']);
  await notify('sec.jobs', { fail: true }, { client: poolAs(APP) });
  const dead = (await waitFor(async () => (await listDead(urlAs(DEAD), { channel: 'sec.jobs' })).at(0), 'a dead notification'))!;
  assert.match(dead.last_error ?? '', /always fails/);
  assert.equal(await retryDead(urlAs(DEAD), { id: dead.id }), 1);
  await waitFor(async () => (await listDead(urlAs(DEAD), { channel: 'sec.jobs' })).length === 1, 'dead again after the retry');
  assert.equal(await purgeDead(urlAs(DEAD), { channel: 'sec.jobs' }), 1);
  await assert.rejects(poolAs(DEAD).query(`insert into pubsub.notification (channel, payload) values ('x', '{}')`), /permission denied/);
});

test('hostile @map names ($pubsub$, quotes, spaces, mixed case, 63 bytes) cannot break out of the trigger function', async () => {
  const other = await createTestDatabase();
  try {
    const long = 'C'.repeat(63);
    const schema = `model Hostile {
  id    Int    @id @map("Id $pubsub$")
  evil  String @map("x$pubsub$; drop table hostile; --")
  quote String @map("it's \\"q\\"")
  wide  String @map("${long}")
  @@map("Hostile $pubsub$ Table")
}`;
    const models = parsePrismaSchema(schema);
    assert.equal(models.get('Hostile')!.fields[2]!.column, `it's "q"`);
    await other.query(`create table "Hostile $pubsub$ Table" ("Id $pubsub$" int primary key, "x$pubsub$; drop table hostile; --" text, "it's ""q""" text, "${long}" text)`);
    await other.query(`create table hostile (keep int)`);
    const registry = new Registry();
    registry.register({ id: 'H.durable', channel: 'model.Hostile', durable: true, target: {}, method: 'm', delivery: {}, trigger: { model: 'Hostile', when: 'AFTER', events: ['INSERT'], condition: `NEW.evil <> 'skip'` } });
    registry.register({ id: 'H.fast', channel: 'hostile_fast', durable: false, target: {}, method: 'm', delivery: {}, trigger: { model: 'Hostile', when: 'AFTER', events: ['INSERT'], select: '*' } });
    const plan = planMigration(triggerDefinitions(registry, models), null)!;
    await other.query(plan.sql);
    const listener = await other.pool.connect();
    const heard: string[] = [];
    listener.on('notification', (n) => heard.push(n.payload!));
    await listener.query('listen hostile_fast');
    await other.query(`insert into "Hostile $pubsub$ Table" values (1, 'evil value', 'q', 'w'), (2, 'skip', 'q', 'w')`);
    await waitFor(() => heard.length >= 2, 'two non-durable notifications');
    listener.release();
    const stored = await other.query(`select payload from pubsub.notification order by id`);
    assert.deepEqual(stored.map((r) => r.payload.new), [{ id: 1, evil: 'evil value', quote: 'q', wide: 'w' }], 'the condition used the field name evil');
    assert.deepEqual(JSON.parse(heard[0]!).new, { id: 1, evil: 'evil value', quote: 'q', wide: 'w' });
    assert.equal((await other.query(`select to_regclass('hostile') is not null as kept`))[0].kept, true);
  } finally {
    await other.drop();
  }
});

test('make-migration refuses a condition PostgreSQL rejects, naming the listener, the condition and the server message', async () => {
  const schemaFile = path.join(ROOT, 'test/fixtures/prisma/schema.prisma');
  const run = (condition: string, events: Array<'INSERT' | 'UPDATE'> = ['INSERT']) => {
    const registry = new Registry();
    registry.register({ id: 'Bad.cond', channel: 'model.Account', durable: true, target: {}, method: 'm', delivery: {}, trigger: { model: 'Account', when: 'AFTER', events, condition } });
    return generateMigration({ schema: schemaFile, migrationsDir: fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-cond-')), registry, databaseUrl: db.url, check: true });
  };
  const refused = async (condition: string, message: RegExp, events?: Array<'INSERT' | 'UPDATE'>) => {
    const error = await run(condition, events).then(
      () => assert.fail(`${condition} was accepted`),
      (e: unknown) => e,
    );
    assert.ok(error instanceof PubSubError);
    assert.equal(error.code, 'pubsub.invalidCondition');
    assert.match(error.message, /Bad\.cond/);
    assert.ok(error.message.includes(JSON.stringify(condition)), error.message);
    assert.match(error.message, message);
  };
  await refused('OLD.balance > 1', /INSERT trigger's WHEN condition cannot reference OLD values/);
  await refused('NEW.balance >', /syntax error/);
  await refused(`NEW.balance > 'many'`, /invalid input syntax for type integer/);
  await refused('(select true)', /cannot use subquery in trigger WHEN condition/);
  await refused('true) execute function pg_sleep(); drop table accounts; --', /has a "\)" without its "\("/);
  await refused('NEW.balance > 0; drop table accounts', /contains ";"/);
  await refused(`NEW.balance > 0 -- ' `, /SQL comment/);
  await refused('NEW.nope > 1', /neither a field nor a column of Account\. Valid fields of Account: code, name, balance/);
  assert.equal((await run('NEW.name <> OLD.name and NEW.balance > 0', ['UPDATE'])).upToDate, false);
  // A role that may not read the table: the check falls back to the Prisma types of the columns.
  const asSnoop = async (condition: string) => {
    const registry = new Registry();
    registry.register({ id: 'Snoop.cond', channel: 'model.Account', durable: true, target: {}, method: 'm', delivery: {}, trigger: { model: 'Account', when: 'AFTER', events: ['UPDATE'], condition } });
    return generateMigration({ schema: schemaFile, migrationsDir: fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-cond-')), registry, databaseUrl: urlAs(SNOOP), check: true });
  };
  assert.equal((await asSnoop('NEW.balance > OLD.balance')).upToDate, false);
  await assert.rejects(asSnoop(`NEW.balance > 'x'`), /invalid input syntax for type integer/);
  assert.equal((await db.query(`select to_regclass('accounts') is not null as kept`))[0].kept, true);
});
