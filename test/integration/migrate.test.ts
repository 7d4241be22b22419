// `pubsub migrate` and `pubsub migrate resolve` through the real CLI: failed migrations, and Prisma's `?schema=`.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { ROOT, runCli } from '../helpers/cli.js';

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase();
});
after(() => db?.drop());

function migrationsDir(migrations: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-migrate-'));
  for (const [name, sql] of Object.entries(migrations)) {
    fs.mkdirSync(path.join(dir, name));
    fs.writeFileSync(path.join(dir, name, 'migration.sql'), sql);
  }
  return dir;
}

test('gh: a failed migration is cleared with `migrate resolve --rolled-back` (then retried) or `--applied` (then skipped), as Prisma does', async () => {
  const dir = migrationsDir({
    '001_ok': 'create table one (id int);',
    '002_bad': 'create table two (id int);\nselect 1/0;',
    '003_later': 'create table three (id int);',
  });
  const cli = (...args: string[]) => runCli([...args, '--migrations-dir', dir], { DATABASE_URL: db.url });
  const failed = await cli('migrate');
  assert.equal(failed.code, 1);
  assert.match(failed.output, /Migration 002_bad failed: division by zero/);
  const blocked = await cli('migrate');
  assert.equal(blocked.code, 1);
  assert.match(blocked.output, /002_bad failed earlier and is not resolved.*pubsub migrate resolve --rolled-back 002_bad/);

  const refusals: Array<[string[], RegExp]> = [
    [['--rolled-back', '002'], /Migration 002 cannot be marked rolled back: it was never applied to this database\. Is that the whole folder name/],
    [['--rolled-back', '001_ok'], /Migration 001_ok cannot be marked rolled back: it did not fail/],
    [['--applied', '001_ok'], /Migration 001_ok is already recorded as applied/],
    [['--applied', '009_nope'], /Migration 009_nope cannot be marked applied: there is no .*009_nope.migration\.sql/],
    [[], /pass either --rolled-back <name> or --applied <name>/],
    [['--applied', '002_bad', '--rolled-back', '002_bad'], /pass either --rolled-back <name> or --applied <name>/],
  ];
  for (const [args, message] of refusals) {
    const r = await cli('migrate', 'resolve', ...args);
    assert.equal(r.code, 1, r.output);
    assert.match(r.output, message);
  }

  // Fix the migration, mark the failed attempt rolled back, and deploy again: it runs, and so does the next one.
  fs.writeFileSync(path.join(dir, '002_bad', 'migration.sql'), 'create table two (id int);');
  const resolved = await cli('migrate', 'resolve', '--rolled-back', '002_bad');
  assert.equal(resolved.code, 0, resolved.output);
  assert.match(resolved.output, /002_bad is marked rolled back/);
  const retried = await cli('migrate');
  assert.equal(retried.code, 0, retried.output);
  assert.match(retried.output, /applied 002_bad, 003_later/);
  const rows = await db.query(`select migration_name, finished_at is not null as finished, rolled_back_at is not null as rolled_back from _prisma_migrations where migration_name = '002_bad' order by started_at`);
  assert.deepEqual(rows, [
    { migration_name: '002_bad', finished: false, rolled_back: true },
    { migration_name: '002_bad', finished: true, rolled_back: false },
  ]);

  // A migration that failed and was then completed by hand: --applied records it without running it.
  fs.mkdirSync(path.join(dir, '004_manual'));
  fs.writeFileSync(path.join(dir, '004_manual', 'migration.sql'), 'create table four (id int);\ncreate table four_b (id int) tablespace nowhere;');
  assert.equal((await cli('migrate')).code, 1);
  await db.query('create table four (id int); create table four_b (id int)');
  const applied = await cli('migrate', 'resolve', '--applied', '004_manual');
  assert.equal(applied.code, 0, applied.output);
  assert.match(applied.output, /004_manual is recorded as applied \(it was not run\)/);
  const after = await cli('migrate');
  assert.equal(after.code, 0, after.output);
  assert.match(after.output, /no pending migrations/);
  const four = await db.query(`select finished_at is not null as finished, rolled_back_at is not null as rolled_back, applied_steps_count from _prisma_migrations where migration_name = '004_manual' order by started_at`);
  assert.deepEqual(four, [
    { finished: false, rolled_back: true, applied_steps_count: 0 },
    { finished: true, rolled_back: false, applied_steps_count: 0 },
  ]);
});

test("gh: `pubsub migrate` honours Prisma's ?schema=: it creates the schema, keeps _prisma_migrations there and runs the migrations in it", async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-schema-'));
  const migrations = path.join(dir, 'migrations');
  fs.cpSync(path.join(ROOT, 'test/fixtures/prisma/migrations'), migrations, { recursive: true });
  const made = await runCli(['make-migration', '--schema', path.join(ROOT, 'test/fixtures/prisma/schema.prisma'), '--migrations-dir', migrations, '--require', path.join(ROOT, 'dist/test/fixtures/listeners/articles.js')]);
  assert.equal(made.code, 0, made.output);
  const url = new URL(db.url);
  url.searchParams.set('schema', 'app');
  const migrate = await runCli(['migrate', '--migrations-dir', migrations], { DATABASE_URL: url.toString() });
  assert.equal(migrate.code, 0, migrate.output);
  const tables = await db.query(`select table_schema, table_name from information_schema.tables where table_name in ('_prisma_migrations', 'Article') order by table_schema, table_name`);
  assert.deepEqual(tables.map((t) => `${t.table_schema}.${t.table_name}`).filter((t) => !t.startsWith('public._prisma')), ['app.Article', 'app._prisma_migrations']);
  assert.equal((await db.query(`select count(*)::int as n from app._prisma_migrations where finished_at is not null`))[0].n, 2);
  // The trigger was created on app."Article", the table the unqualified name meant under that search_path.
  await db.query(`insert into app."Article" (body) values ('hello')`);
  assert.equal((await db.query('select count(*)::int as n from pubsub.notification'))[0].n, 1);
});
