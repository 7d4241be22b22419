// Typed models at runtime: `columns` on the shortcut decorators becomes an `UPDATE OF` trigger that
// fires only for those fields, and a worker refuses to start for a model no migration installed.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  PostInsertListen,
  PostSaveListen,
  PostUpdateListen,
  applyMigrations,
  generateMigration,
  listen,
  type TriggerPayload,
  type Worker,
} from '../../src/index.js';
import type { Account } from '../fixtures/generated/prisma/client.js';
import { ROOT } from '../helpers/cli.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

const calls: Array<{ listener: string; op: string; new: Account }> = [];

class AccountColumns {
  @PostUpdateListen('Account', { columns: ['balance'], channel: 'balances' })
  balance(p: TriggerPayload<Account, 'UPDATE'>) {
    calls.push({ listener: 'balance', op: p.op, new: p.new });
  }

  // `name` is @map("display name"): the trigger names the column, the listener the field.
  @PostSaveListen('Account', { columns: ['name'], channel: 'names' })
  named(p: TriggerPayload<Account, 'INSERT' | 'UPDATE'>) {
    calls.push({ listener: 'named', op: p.op, new: p.new });
  }
}

const quiet = { info() {}, warn() {}, error: console.error };
let db: TestDatabase;
let worker: Worker;
let migration: string;

before(async () => {
  assert.ok(AccountColumns);
  db = await createTestDatabase();
  const migrationsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-typed-'));
  fs.cpSync(path.join(ROOT, 'test/fixtures/prisma/migrations'), migrationsDir, { recursive: true });
  const generated = await generateMigration({ schema: path.join(ROOT, 'test/fixtures/prisma/schema.prisma'), migrationsDir });
  migration = fs.readFileSync(path.join(generated.folder!, 'migration.sql'), 'utf8');
  await applyMigrations(db.url, migrationsDir);
  worker = await listen({ databaseUrl: db.url, pollIntervalMs: 100, channels: ['balances', 'names'], logger: quiet });
});

after(async () => {
  await worker?.close();
  await db?.drop();
});

/** Notifications an UPDATE stored, per channel, seen inside its own transaction (before any worker can take them). */
async function stored(update: string): Promise<Record<string, number>> {
  const client = await db.pool.connect();
  try {
    await client.query('begin');
    await client.query(update);
    const { rows } = await client.query(`select channel, count(*)::int as n from pubsub.notification where channel in ('balances', 'names') group by channel`);
    await client.query('commit');
    return Object.fromEntries(rows.map((r) => [r.channel, r.n]));
  } finally {
    client.release();
  }
}

const settled = () => waitFor(async () => (await db.query(`select count(*)::int as n from pubsub.notification`))[0].n === 0, 'every notification processed');

test('columns on PostUpdateListen and PostSaveListen become UPDATE OF triggers on the mapped columns', async () => {
  assert.match(migration, /AFTER UPDATE OF "balance" on "accounts"/);
  assert.match(migration, /AFTER INSERT OR UPDATE OF "display name" on "accounts"/);
  const defs = (await db.query<{ def: string }>(`select pg_get_triggerdef(oid) as def from pg_trigger where tgrelid = 'accounts'::regclass order by tgname`)).map((r) => r.def);
  assert.ok(defs.some((d) => /AFTER UPDATE OF balance ON public\.accounts/.test(d)), defs.join('\n'));
  assert.ok(defs.some((d) => /AFTER INSERT OR UPDATE OF "display name" ON public\.accounts/.test(d)), defs.join('\n'));
});

test('an UPDATE OF trigger fires only when one of its columns is written; INSERT is unaffected', async () => {
  assert.deepEqual(await stored(`insert into accounts (account_code, "display name", balance) values ('a1', 'Ann', 0)`), { names: 1 });
  await settled();
  assert.deepEqual(await stored(`update accounts set "display name" = 'Anna' where account_code = 'a1'`), { names: 1 });
  await settled();
  assert.deepEqual(await stored(`update accounts set balance = 10 where account_code = 'a1'`), { balances: 1 });
  await settled();
  // In the SET list is what counts, not a changed value (PostgreSQL's UPDATE OF).
  assert.deepEqual(await stored(`update accounts set balance = balance where account_code = 'a1'`), { balances: 1 });
  await settled();
  assert.deepEqual(
    calls.map((c) => [c.listener, c.op, c.new.name, c.new.balance]),
    [
      ['named', 'INSERT', 'Ann', 0],
      ['named', 'UPDATE', 'Anna', 0],
      ['balance', 'UPDATE', 'Anna', 10],
      ['balance', 'UPDATE', 'Anna', 10],
    ],
  );
});

test('a worker refuses to start for a model that no migration installed, naming the listeners, the likely model and the fix', async () => {
  class Typos {
    @PostInsertListen('Acount', { channel: 'typo' })
    durable(_p: TriggerPayload) {}

    @PostUpdateListen('accounts', { channel: 'typo_fast', durable: false })
    fast(_p: TriggerPayload) {}
  }
  assert.ok(Typos);
  const workerSessions = async () => (await db.query(`select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name = 'pubsub:worker'`))[0].n;
  const running = await workerSessions();
  const refused = async (channels: string[], message: RegExp) => {
    const error = await listen({ databaseUrl: db.url, channels, logger: quiet }).then(
      (started) => started.close().then(() => assert.fail(`a worker started for ${channels.join(', ')}`)),
      (e) => e,
    );
    assert.equal(error.code, 'pubsub.unknownModel', error.stack);
    assert.match(error.message, message);
  };
  await refused(
    ['typo', 'typo_fast'],
    /^Typos\.durable listens to model "Acount" \(did you mean "Account"\?\); Typos\.fast listens to model "accounts" \(did you mean "Account"\?\), but no trigger migration applied to this database has installed these models\. Models its migrations recorded: Account\. Fix the model name as schema\.prisma writes it, or run `pubsub make-migration` and apply the migration/,
  );
  // A worker with only non-durable trigger channels checks too: its triggers come from the same migrations.
  await refused(['typo_fast'], /^Typos\.fast listens to model "accounts" \(did you mean "Account"\?\), but .* installed that model\./);
  await waitFor(async () => (await workerSessions()) <= running, 'the refused workers to close their connections');
});
