// Plugins through the real CLI: `pubsub <plugin> <command>` (help, validation, exit codes, the pool),
// broken plugins, and `make-migration --only` on a database shared by two plugins.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { ROOT, runCli } from '../helpers/cli.js';

const fixture = (f: string) => path.join(ROOT, 'dist/test/fixtures/listeners', f);
let db: TestDatabase;
let project: string;

before(async () => {
  db = await createTestDatabase();
  // A project whose config file names the plugin modules: how `pubsub --help` finds them.
  project = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-plugins-'));
  fs.writeFileSync(path.join(project, 'pubsub.config.json'), JSON.stringify({ require: [fixture('plugin-orders.js'), fixture('plugin-reports.js')] }));
});
after(() => db?.drop());

const inProject = (args: string[], env: Record<string, string> = {}) => runCli(args, { DATABASE_URL: db.url, ...env }, project);

describe('plugin commands', () => {
  test('pubsub --help lists the plugins of the config file; pubsub <plugin> --help shows their commands and options', async () => {
    const help = await inProject(['--help']);
    assert.equal(help.code, 0, help.output);
    assert.match(help.output, /^ {2}orders \[options\]\s+Commands of the orders plugin/m);
    assert.match(help.output, /^ {2}reports \[options\]/m, 'named after its one channel');
    assert.match(help.output, /^ {2}listen \[options\]/m, 'the built-in commands are still there');

    const orders = await inProject(['orders', '--help']);
    assert.equal(orders.code, 0, orders.output);
    assert.match(orders.output, /Usage: pubsub orders/);
    assert.match(orders.output, /exit-with \[options\]\s+Exit with the given code/);
    assert.match(orders.output, /ping \[options\] <label>/);
    const leaf = await inProject(['orders', 'exit-with', '--help']);
    assert.match(leaf.output, /--code <n>\s+the exit code/);
    assert.match(leaf.output, /--database-url <url>/, 'the CLI options are there too');
    assert.equal((await inProject(['help', 'orders'])).code, 0);
  });

  test('options and arguments are validated by commander, with its messages and exit code', async () => {
    const missing = await inProject(['orders', 'exit-with']);
    assert.equal(missing.code, 1);
    assert.match(missing.output, /error: required option '--code <n>' not specified/);
    const bad = await inProject(['orders', 'exit-with', '--code', 'seven']);
    assert.equal(bad.code, 1);
    assert.match(bad.output, /error: option '--code <n>' argument 'seven' is invalid\. Expected a whole number\./);
    const unknown = await inProject(['orders', 'exit-with', '--code', '1', '--force']);
    assert.equal(unknown.code, 1);
    assert.match(unknown.output, /error: unknown option '--force'/);
    const noArgument = await inProject(['orders', 'ping']);
    assert.equal(noArgument.code, 1);
    assert.match(noArgument.output, /error: missing required argument 'label'/);
    const noCommand = await inProject(['orders', 'recount']);
    assert.equal(noCommand.code, 1);
    assert.match(noCommand.output, /error: unknown command 'recount'/);
  });

  test("the action's exit code is the process's: a returned number, or a thrown PubSubError's exitCode", async () => {
    assert.equal((await inProject(['orders', 'exit-with', '--code', '0'])).code, 0);
    assert.equal((await inProject(['orders', 'exit-with', '--code', '7'])).code, 7);
    const failed = await inProject(['orders', 'fail']);
    assert.equal(failed.code, 4);
    assert.match(failed.output, /pubsub: orders fail: failed on purpose/);
    const outOfRange = await inProject(['orders', 'exit-with', '--code', '300']);
    assert.equal(outOfRange.code, 1);
    assert.match(outOfRange.output, /orders exit-with: the action returned 300; return an exit code from 0 to 255/);
  });

  test('the action gets the resolved config and a working pool on the database URL (DATABASE_URL, or --database-url anywhere after the plugin), ended after it', async () => {
    const name = new URL(db.url).pathname.slice(1);
    const viaEnv = await inProject(['orders', 'ping', 'env', '--twice']);
    assert.equal(viaEnv.code, 0, viaEnv.output);
    assert.match(viaEnv.output, new RegExp(`env: db=${name} dir=${project} name=orders`));
    // Another database by flag, before and after the subcommand; the process exits, so the pool was ended.
    const other = await createTestDatabase();
    try {
      const otherName = new URL(other.url).pathname.slice(1);
      for (const args of [['orders', '--database-url', other.url, 'ping', 'flag'], ['orders', 'ping', 'flag', '--database-url', other.url]]) {
        const viaFlag = await inProject(args);
        assert.equal(viaFlag.code, 0, viaFlag.output);
        assert.match(viaFlag.output, new RegExp(`flag: db=${otherName} `));
      }
    } finally {
      await other.drop();
    }
    const noDatabase = await runCli(['orders', 'ping', 'x'], { DATABASE_URL: '', PUBSUB_DATABASE_URL: '' }, project);
    assert.equal(noDatabase.code, 1);
    assert.match(noDatabase.output, /No database: set DATABASE_URL/);
  });

  test('the database ends a connection: an idle one is logged and replaced; the one an action uses fails the command with exit 1', async () => {
    const survive = await inProject(['orders', 'survive']);
    assert.equal(survive.code, 0, survive.output);
    assert.match(survive.output, /pubsub: orders: an idle database connection failed: terminating connection due to administrator command/);
    assert.match(survive.output, /after: 1/);
    const cut = await inProject(['orders', 'cut']);
    assert.equal(cut.code, 1, cut.output);
    assert.match(cut.output, /terminating connection due to administrator command/);
  });

  test('-r/--require anywhere after the plugin name finds modules without a config file', async () => {
    const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-plugins-bare-'));
    const run = await runCli(['reports', 'hello', '-r', fixture('plugin-reports.js')], {}, cwd);
    assert.equal(run.code, 0, run.output);
    assert.match(run.output, /hello from reports/);
    const eq = await runCli(['reports', `--require=${fixture('plugin-reports.js')}`, 'hello'], {}, cwd);
    assert.equal(eq.code, 0, eq.output);
    const help = await runCli(['--help', '-r', fixture('plugin-reports.js')], {}, cwd);
    assert.match(help.output, /^ {2}reports \[options\]/m);
    const none = await runCli(['reports', 'hello'], {}, cwd);
    assert.equal(none.code, 1);
    assert.match(none.output, /error: unknown command 'reports'/);
  });
});

test('the example: the posts plugin of the repository’s config counts reads with its listener and `pubsub posts recount` rebuilds the counts', async () => {
  const demo = await createTestDatabase();
  const env = { DATABASE_URL: demo.url };
  try {
    const migrate = await runCli(['migrate'], env); // prisma/migrations, from the repository's pubsub.config.json
    assert.equal(migrate.code, 0, migrate.output);
    for (const [postId, date] of [[1, '2026-01-02T10:00:00Z'], [1, '2026-01-02T23:00:00Z'], [2, '2025-12-31T12:00:00Z']] as const) {
      await demo.query(`select pubsub.notify('post_reads_per_date', $1::jsonb)`, [JSON.stringify({ postId, date })]);
    }
    const drained = await runCli(['listen', '--once'], env);
    assert.equal(drained.code, 0, drained.output);
    const counts = async () => (await demo.query(`select to_char(day, 'YYYY-MM-DD') as day, post_id, reads from post_read_counts order by 1, 2`)).map((r) => `${r.day} ${r.post_id} ${r.reads}`);
    assert.deepEqual(await counts(), ['2025-12-31 2 1', '2026-01-02 1 2']);

    assert.equal((await runCli(['posts', 'recount', '--since', '2026-01-01', '--check'], env)).code, 0, 'the counts match the reads');
    await demo.query(`update post_read_counts set reads = 99`); // a cache gone wrong
    const check = await runCli(['posts', 'recount', '--since', '2026-01-01', '--check'], env);
    assert.equal(check.code, 1, check.output);
    assert.match(check.output, /1 count\(s\) since 2026-01-01 differ from the reads/);
    const recount = await runCli(['posts', 'recount', '--since', '2026-01-01'], env);
    assert.equal(recount.code, 0, recount.output);
    assert.deepEqual(await counts(), ['2025-12-31 2 99', '2026-01-02 1 2'], 'days before --since are left alone');
    const bad = await runCli(['posts', 'recount', '--since', 'yesterday'], env);
    assert.equal(bad.code, 1);
    assert.match(bad.output, /error: option '--since <day>' argument 'yesterday' is invalid\. Expected a day such as 2026-01-01\./);
  } finally {
    await demo.drop();
  }
});

describe('broken plugins', () => {
  const withBad = (kind: string, args: string[]) => runCli([...args, '-r', fixture('plugin-orders.js'), '-r', fixture('plugin-bad.js')], { PLUGIN_CASE: kind, DATABASE_URL: db.url });

  test('two modules claiming one name: a clear error naming both', async () => {
    const run = await withBad('duplicate', ['orders', 'exit-with', '--code', '0']);
    assert.equal(run.code, 1);
    assert.match(run.output, /The plugin name "orders" is claimed by two modules, .*plugin-orders\.js and .*plugin-bad\.js/);
  });

  test('a plugin named like a built-in command: a clear error', async () => {
    const run = await withBad('builtin', ['orders', 'exit-with', '--code', '0']);
    assert.equal(run.code, 1);
    assert.match(run.output, /plugin-bad\.js: the plugin name "status" is a built-in command of pubsub/);
  });

  test('registerCommands that throws: an error naming the module; --help still works and warns', async () => {
    const run = await withBad('throws', ['broken', 'anything']);
    assert.equal(run.code, 1);
    assert.match(run.output, /--require .*plugin-bad\.js: registerCommands of the broken plugin failed: no API token configured/);
    const help = await withBad('throws', ['--help']);
    assert.equal(help.code, 0, help.output);
    assert.match(help.output, /pubsub: plugin commands are not shown: .*plugin-bad\.js: registerCommands of the broken plugin failed/);
    assert.match(help.output, /^ {2}orders \[options\]/m, 'the working plugin is listed');
    assert.doesNotMatch(help.output, /^ {2}broken/m);
  });

  test('a plugin option that pubsub reads itself (-c): a clear error', async () => {
    const run = await withBad('reserved', ['reserved', 'count']);
    assert.equal(run.code, 1);
    assert.match(run.output, /registerCommands of the reserved plugin failed: count defines -c, which pubsub reads itself \(-r, --require, -c, --config, --database-url\)/);
  });

  test('registerCommands with no name to derive (listeners on two channels): asks for export const plugin', async () => {
    const run = await withBad('unnamed', ['orders', 'exit-with', '--code', '0']);
    assert.equal(run.code, 1);
    assert.match(run.output, /plugin-bad\.js exports registerCommands but has no plugin name: its listeners declare the channels bad\.one, bad\.two\. Name it: `export const plugin = 'orders';`/);
  });

  test('a module that cannot be loaded: --help warns and lists the built-in commands; a plugin command fails naming the module', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-plugins-missing-'));
    fs.writeFileSync(path.join(dir, 'pubsub.config.json'), JSON.stringify({ require: ['dist/not-built.js'] }));
    const help = await runCli(['--help'], {}, dir);
    assert.equal(help.code, 0, help.output);
    assert.match(help.output, /plugin commands are not shown: --require .*dist\/not-built\.js: cannot load it/);
    assert.match(help.output, /^ {2}listen \[options\]/m);
    const run = await runCli(['orders', 'ping', 'x'], {}, dir);
    assert.equal(run.code, 1);
    assert.match(run.output, /--require .*dist\/not-built\.js: cannot load it/);
    // Built-in commands that load no module are not affected.
    assert.equal((await runCli(['dead', 'list', '--help'], {}, dir)).code, 0);
  });
});

describe('make-migration --only', () => {
  const schema = path.join(ROOT, 'test/fixtures/prisma/schema.prisma');

  test('two plugins on one database: --only orders after changing orders touches only orders; mail keeps its triggers and subscriptions', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-only-'));
    const migrations = path.join(dir, 'migrations');
    fs.cpSync(path.join(ROOT, 'test/fixtures/prisma/migrations'), migrations, { recursive: true });
    const base = ['--schema', schema, '--migrations-dir', migrations];
    const target = await createTestDatabase();
    const env = { DATABASE_URL: target.url };
    try {
      const both = await runCli(['make-migration', ...base, '-r', fixture('plugin-orders.js'), '-r', fixture('plugin-mail.js')], env);
      assert.equal(both.code, 0, both.output);
      assert.equal((await runCli(['migrate', '--migrations-dir', migrations], env)).code, 0);
      const subscriptions = async () => (await target.query('select channel, listener from pubsub.subscription order by 1, 2')).map((r) => `${r.channel} ${r.listener}`);
      const triggers = async () => (await target.query(`select tgname from pg_trigger where tgrelid = '"Article"'::regclass and not tgisinternal order by 1`)).map((r) => r.tgname);
      const before = { subscriptions: await subscriptions(), triggers: await triggers() };
      assert.deepEqual(before.subscriptions, [
        'mail.send MailListeners.send',
        'model.Article MailListeners.articleCreated',
        'model.Article MailListeners.articleDeleted',
        'model.Article OrdersListeners.articleCreated',
        'orders.placed OrdersListeners.placed',
      ]);
      assert.equal(before.triggers.length, 2, 'insert (shared by both plugins) and delete');

      // The orders service alone, after its change: only orders' part is written.
      const only = await runCli(['make-migration', ...base, '--only', 'orders', '-r', fixture('plugin-orders-v2.js'), '--name', 'orders'], env);
      assert.equal(only.code, 0, only.output);
      assert.doesNotMatch(only.output, /MailListeners|mail\.send|remove trigger/, only.output);
      assert.match(only.output, /unsubscribe OrdersListeners\.articleCreated from model\.Article/);
      assert.match(only.output, /subscribe OrdersListeners\.shipped to orders\.shipped/);
      assert.match(only.output, /add trigger _900_pubsub_after_update_\w+ on Article/);
      assert.match(only.output, /update trigger _900_pubsub_after_insert_\w+ on Article/, 'the shared trigger loses orders, keeps mail');
      const migrate = await runCli(['migrate', '--migrations-dir', migrations], env);
      assert.equal(migrate.code, 0, migrate.output);
      assert.match(migrate.output, /applied \d+_orders/);

      assert.deepEqual(await subscriptions(), [
        'mail.send MailListeners.send',
        'model.Article MailListeners.articleCreated',
        'model.Article MailListeners.articleDeleted',
        'model.Article OrdersListeners.articleUpdated',
        'orders.placed OrdersListeners.placed',
        'orders.shipped OrdersListeners.shipped',
      ]);
      const after = await triggers();
      assert.equal(after.length, 3);
      assert.ok(before.triggers.every((t) => after.includes(t)), 'mail’s triggers are still there');
      // What the triggers do now: insert → mail only; update → orders; delete → mail.
      await target.query(`insert into "Article" (body) values ('hello')`);
      await target.query(`update "Article" set body = 'hello again'`);
      await target.query(`delete from "Article"`);
      const stored = await target.query('select channel, listener from pubsub.notification order by id');
      assert.deepEqual(
        stored.map((r) => `${r.channel} ${r.listener}`),
        ['model.Article MailListeners.articleCreated', 'model.Article OrdersListeners.articleUpdated', 'model.Article MailListeners.articleDeleted'],
      );

      // The same result as one run loading every module: nothing left to write.
      const full = await runCli(['make-migration', ...base, '--check', '-r', fixture('plugin-orders-v2.js'), '-r', fixture('plugin-mail.js')], env);
      assert.equal(full.code, 0, full.output);
      assert.match(full.output, /up to date/);
      // A plain run loading only orders would remove mail: it says so.
      const subset = await runCli(['make-migration', ...base, '--check', '-r', fixture('plugin-orders-v2.js')], env);
      assert.equal(subset.code, 1);
      assert.match(subset.output, /the plugin mail \(.*\) is recorded in the migrations but not loaded: this migration unsubscribes its listeners and drops its triggers/);
      // An unknown plugin name.
      const typo = await runCli(['make-migration', ...base, '--only', 'order', '-r', fixture('plugin-orders-v2.js')], env);
      assert.equal(typo.code, 1);
      assert.match(typo.output, /--only order: no loaded module is the plugin "order"\. Did you mean "orders"\?/);
    } finally {
      await target.drop();
    }
  });
});
