/**
 * The seam between planning migrations and storing them: readMigrationState and writeMigration use only
 * what MigrationBackend offers, so a tool that keeps migrations another way (Prisma 8's ops.json) can be
 * added as a second backend. A backend kept in memory stands in for that second tool here.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { planMigration, readMigrationState, writeMigration, type MigrationBackend } from '../../src/migration.js';

function memoryBackend(): MigrationBackend & { migrations: Map<string, string> } {
  const migrations = new Map<string, string>();
  const refuse = () => Promise.reject(new Error('not a database'));
  return {
    dir: '(memory)',
    migrations,
    list: () => [...migrations.keys()].sort(),
    read: (name) => migrations.get(name)!,
    write(sql, name) {
      const key = `${String(migrations.size).padStart(4, '0')}_${name}`;
      migrations.set(key, sql);
      return key;
    },
    apply: refuse,
    markRolledBack: refuse,
    markApplied: refuse,
  };
}

test('make-migration reads its state from, and writes to, whatever backend it is given', () => {
  const backend = memoryBackend();
  assert.equal(readMigrationState(backend), null);
  backend.migrations.set('0000_init', 'create table t (id int);'); // the app's own migration: no state line
  assert.equal(readMigrationState(backend), null);

  const first = planMigration([], null, ['jobs Jobs.run'], { jobs: true })!;
  assert.equal(writeMigration(backend, first, 'pubsub'), '0001_pubsub');
  assert.deepEqual(readMigrationState(backend), first.state);

  const second = planMigration([], first.state, ['jobs Jobs.run', 'jobs Mail.send'], { jobs: true })!;
  writeMigration(backend, second, 'more');
  backend.migrations.set('0003_app', 'alter table t add column x int;');
  assert.deepEqual(readMigrationState(backend), second.state, 'the newest migration with a state line wins');
  assert.throws(() => writeMigration(backend, second, 'bad name'), /may only contain/);
});
