/**
 * examples/nestjs, run for real: its dependencies installed (from the npm cache when it has them;
 * skipped when they are newer than its package.json and lock), compiled with its own tsconfig, its
 * committed migrations applied to a fresh database with `pubsub migrate`, then the app bootstrapped in
 * this process (to look inside its container) and spawned as `node dist/main.js` (to stop it with
 * SIGTERM, as a deployment does).
 */
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ROOT, runCli } from '../helpers/cli.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

const EXAMPLE = path.join(ROOT, 'examples/nestjs');
/** The example is CommonJS; its modules and Nest come from its own folder. */
const load = createRequire(path.join(EXAMPLE, 'package.json'));

function run(command: string, args: string[]): void {
  const r = spawnSync(command, args, { cwd: EXAMPLE, encoding: 'utf8', env: { ...process.env, NO_UPDATE_NOTIFIER: '1' } });
  assert.equal(r.status, 0, `${command} ${args.join(' ')} failed:\n${r.stdout}\n${r.stderr}`);
}

/** Whether npm installed the example's dependencies after its package.json and lock last changed. */
function installed(): boolean {
  const mtime = (file: string) => fs.statSync(path.join(EXAMPLE, file), { throwIfNoEntry: false })?.mtimeMs ?? 0;
  return mtime('node_modules/.package-lock.json') > Math.max(mtime('package.json'), mtime('package-lock.json'));
}

/** Connections of the worker (application_name 'pubsub:worker') open on the database. */
async function workerConnections(db: TestDatabase): Promise<number> {
  const [row] = await db.query(`select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name = 'pubsub:worker'`);
  return row.n;
}

/** A closed connection's backend leaves pg_stat_activity a moment after the client is done: wait for it, briefly. */
const workerGone = (db: TestDatabase) => waitFor(async () => (await workerConnections(db)) === 0, 'no pubsub:worker connection left', 5000);

describe('examples/nestjs', { timeout: 300_000 }, () => {
  let db: TestDatabase;

  before(async () => {
    if (!installed()) {
      // `npm test` runs under npm: use that npm (npm_execpath), else the one on PATH.
      const npm = process.env.npm_execpath ? [process.execPath, process.env.npm_execpath] : ['npm'];
      // --ignore-scripts: installing the `file:../..` link would run pgpubsub's `prepare`, which
      // rebuilds dist/src while the other test files beside this one import from it. The example's
      // dependencies need no install scripts.
      run(npm[0]!, [...npm.slice(1), 'install', '--ignore-scripts', '--no-audit', '--no-fund', '--prefer-offline', '--loglevel=error']);
    }
    run(process.execPath, [path.join(EXAMPLE, 'node_modules/typescript/bin/tsc'), '-p', EXAMPLE]);
    db = await createTestDatabase();
    const migrate = await runCli(['migrate'], { DATABASE_URL: db.url }, EXAMPLE);
    assert.equal(migrate.code, 0, migrate.output);
  });
  after(() => db?.drop());

  test('its committed pubsub migration matches its listeners (make-migration --check)', async () => {
    const check = await runCli(['make-migration', '--check'], { DATABASE_URL: db.url }, EXAMPLE);
    assert.equal(check.code, 0, check.output);
  });

  test('in-process: injected providers see each notification once; app.close() stops the worker and leaves the rest stored', async () => {
    const server = process.env.DATABASE_URL;
    process.env.DATABASE_URL = db.url; // for the app's Database provider and notify()'s pool; the server's again for db.drop()
    load('reflect-metadata');
    const { NestFactory } = load('@nestjs/core');
    const { AppModule } = load('./dist/app.module.js');
    const { ReadCounter, ReadListener, ReadsService } = load('./dist/reads.js');
    const { AuthorsService } = load('./dist/authors.js');
    const app = await NestFactory.createApplicationContext(AppModule, { logger: false });
    try {
      assert.ok((await workerConnections(db)) > 0, 'the worker started with the app');
      // The listener the worker calls is the container's singleton, holding the container's ReadCounter.
      const counter = app.get(ReadCounter);
      assert.equal(app.get(ReadListener).counter, counter);

      await app.get(ReadsService).recordRead(7);
      const authors = app.get(AuthorsService);
      const grace = await authors.create(`Grace "O'Hara"`);
      await waitFor(() => counter.get(7) === 1, 'the read of post 7', 30_000);
      await waitFor(async () => (await authors.posts(grace.id)).length === 1, 'the first post of Grace', 30_000);
      await new Promise((r) => setTimeout(r, 300)); // room for a duplicate to show up
      assert.equal(counter.get(7), 1);
      assert.deepEqual(await authors.posts(grace.id), [`Welcome, Grace "O'Hara"! This is your first post.`]);
      assert.deepEqual(await db.query('select * from pubsub.notification'), []);
    } finally {
      await app.close();
      process.env.DATABASE_URL = server;
    }
    await workerGone(db);
    // Published with no worker running: stored, untouched (the spawned app below processes it).
    await db.query(`select pubsub.notify('post_reads', $1::jsonb)`, [JSON.stringify({ postId: 99, date: new Date() })]);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await db.query('select * from pubsub.notification')).length, 1);
  });

  test('a listener class that is not a provider stops the start with pubsub.config, naming it', async () => {
    const { NestFactory } = load('@nestjs/core');
    const { PubSubModule } = load('./dist/pubsub.module.js');
    const { ReadCounter } = load('./dist/reads.js');
    const { AuthorListener, WelcomeMessages } = load('./dist/authors.js');
    // ReadListener is left out of the providers.
    const broken = { module: class BrokenModule {}, imports: [PubSubModule.forRoot()], providers: [ReadCounter, WelcomeMessages, AuthorListener] };
    await assert.rejects(NestFactory.createApplicationContext(broken, { logger: false, abortOnError: false }), (error: Error & { code?: string }) => {
      assert.equal(error.code, 'pubsub.config');
      assert.match(error.message, /ReadListener\.onRead listens on "post_reads", but ReadListener is not a provider/);
      return true;
    });
    await workerGone(db);
  });

  test('spawned: `node dist/main.js` processes what was stored while it was down, then SIGTERM stops it cleanly', async () => {
    const child = spawn(process.execPath, ['dist/main.js'], { cwd: EXAMPLE, env: { ...process.env, DATABASE_URL: db.url, NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (out += d));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.on('exit', (code, signal) => resolve({ code, signal })));
    try {
      await waitFor(() => /worker running/.test(out) || child.exitCode !== null, `the app to start:\n${out}`, 30_000);
      assert.match(out, /ready: post 12 has 2 reads; Ada's posts: \["Welcome, Ada! This is your first post\."\]/);
      assert.equal(out.match(/post 12 read on/g)?.length, 2, out);
      assert.match(out, /post 99 read on .*: 1 read\(s\)/, 'the notification stored while no worker ran');
    } finally {
      child.kill('SIGTERM');
    }
    // Nest's shutdown hook closes the app, then raises the signal again to end the process.
    assert.deepEqual(await exited, { code: null, signal: 'SIGTERM' });
    assert.match(out, /worker stopped/);
    assert.doesNotMatch(out, /error/i, out);
    await workerGone(db);
    assert.deepEqual(await db.query('select * from pubsub.notification'), []);
  });
});
