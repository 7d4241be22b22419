/**
 * The package as a user gets it: this repository, as the working tree stands, committed to a scratch
 * clone and installed with `npm install git+file://…` into an empty app that has only Node and npm.
 * The app compiles its listeners with tsc to CommonJS (NestJS's default), generates and applies the
 * migration with `npx pubsub`, runs a worker through `require('pgpubsub')` and one through
 * `npx pubsub listen`, publishes from an ES module, and receives a Decimal without @prisma/client.
 */
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { ROOT, alive } from '../helpers/cli.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

interface Result {
  code: number | null;
  stdout: string;
  output: string;
}

/** Runs a command to completion; `output` is stdout and stderr interleaved, for failure messages. */
function run(command: string, args: string[], cwd: string, env: Record<string, string> = {}, timeoutMs = 300_000): Promise<Result> {
  const child = spawn(command, args, { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let output = '';
  child.stdout!.on('data', (d) => ((stdout += d), (output += d)));
  child.stderr!.on('data', (d) => (output += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, output });
    });
  });
}

async function ok(command: string, args: string[], cwd: string, env: Record<string, string> = {}): Promise<Result> {
  const result = await run(command, args, cwd, env);
  assert.equal(result.code, 0, `${command} ${args.join(' ')} in ${cwd} exited ${result.code}:\n${result.output}`);
  return result;
}

/**
 * A clone of this repository whose last commit is the working tree as it is now (tracked files as
 * edited, new files not ignored), so the test installs what is on disk, not only what was committed.
 */
async function snapshot(dir: string): Promise<string> {
  await ok('git', ['clone', '-q', '--no-hardlinks', ROOT, dir], path.dirname(dir));
  const { stdout } = await ok('git', ['ls-files', '-z', '--cached', '--others', '--exclude-standard'], ROOT);
  for (const file of stdout.split('\0').filter(Boolean)) {
    const to = path.join(dir, file);
    fs.rmSync(to, { force: true });
    if (!fs.existsSync(path.join(ROOT, file))) continue; // deleted in the working tree
    fs.mkdirSync(path.dirname(to), { recursive: true });
    fs.copyFileSync(path.join(ROOT, file), to);
  }
  await ok('git', ['add', '-A'], dir);
  await ok('git', ['-c', 'user.name=pgpubsub test', '-c', 'user.email=test@localhost', 'commit', '-q', '--allow-empty', '-m', 'working tree'], dir);
  return (await ok('git', ['rev-parse', 'HEAD'], dir)).stdout.trim();
}

const APP_FILES: Record<string, string> = {
  'package.json': JSON.stringify({ name: 'package-test-app', version: '1.0.0', private: true }),
  'tsconfig.json': JSON.stringify({
    compilerOptions: { target: 'ES2022', module: 'commonjs', strict: true, experimentalDecorators: true, emitDecoratorMetadata: true, rootDir: 'src', outDir: 'dist' },
    include: ['src'],
  }),
  'src/listeners.ts': `
import { Listen, PostInsertListen, Type, defineChannel } from 'pgpubsub';
import type { NotificationContext, TriggerPayload } from 'pgpubsub';

export class Greeting {
  text!: string;
  @Type(() => Date) at!: Date;
}
export const greetings = defineChannel('package_greetings', Greeting);

interface Decimal { toFixed(digits: number): string; plus(value: string): unknown }
interface Price { id: number; amount: Decimal }

/** What this process's listeners handled; main.cjs waits on it. */
export const handled: string[] = [];

export class Listeners {
  @Listen(greetings)
  async greet(greeting: Greeting, ctx: NotificationContext) {
    const what = \`\${greeting.text} \${greeting.at instanceof Date}\`;
    await ctx.tx!.query('insert into seen (what) values ($1)', [what]);
    handled.push(what);
  }

  @PostInsertListen('Price')
  async price(payload: TriggerPayload<Price>, ctx: NotificationContext) {
    const amount = payload.new!.amount;
    const what = \`\${amount.constructor.name} \${amount.toFixed(10)} \${String(amount.plus('0.1'))}\`;
    await ctx.tx!.query('insert into seen (what) values ($1)', [what]);
    handled.push(what);
  }
}
`,
  'prisma/schema.prisma': `
datasource db {
  provider = "postgresql"
}

model Price {
  id     Int     @id @default(autoincrement())
  amount Decimal @db.Decimal(30, 10)
}
`,
  'prisma/migrations/20240101000000_init/migration.sql': `
create table "Price" (id serial primary key, amount decimal(30, 10) not null);
create table seen (id serial primary key, what text not null);
`,
  'pubsub.config.json': JSON.stringify({ require: ['dist/listeners.js'], schema: 'prisma/schema.prisma', migrations: 'prisma/migrations' }),
  // A CommonJS program: require('pgpubsub') loads the ES module (Node 20.19+ and 22.12+ do this without a flag).
  'main.cjs': `
const { listen, notify, disconnect } = require('pgpubsub');
const { greetings, handled } = require('./dist/listeners.js');

async function main() {
  const worker = await listen({ databaseUrl: process.env.DATABASE_URL, pollIntervalMs: 100 });
  await notify(greetings, { text: 'hello from require', at: new Date() });
  while (handled.length < 2) await new Promise((r) => setTimeout(r, 20));
  await worker.close();
  await disconnect();
}
main().catch((error) => {
  console.error(error);
  process.exitCode = 1;
});
`,
  // An ES module publishing with notify(); the npx worker below receives it.
  'publish.mjs': `
import { disconnect, notify } from 'pgpubsub';
import listeners from './dist/listeners.js';

await notify(listeners.greetings, { text: 'hello from import', at: new Date() });
await disconnect();
`,
};

let tmp: string;
let app: string;
let db: TestDatabase;
let env: Record<string, string>;
/** Process group of `npx pubsub listen`: an orphaned worker stays in it, so cleanup finds it. */
let group: number | undefined;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pgpubsub-package-'));
  const repo = path.join(tmp, 'repo');
  const sha = await snapshot(repo);
  app = path.join(tmp, 'app');
  for (const [file, text] of Object.entries(APP_FILES)) {
    fs.mkdirSync(path.dirname(path.join(app, file)), { recursive: true });
    fs.writeFileSync(path.join(app, file), text);
  }
  const t0 = Date.now();
  // From the local npm cache when it has everything; npm clones the repository, installs its dev
  // dependencies there and runs `prepare` (the library's build), then packs and installs the result.
  // At the lowest CPU priority: test files that run beside this one measure timings.
  await ok('nice', ['-n', '19', 'npm', 'install', '--no-audit', '--no-fund', '--prefer-offline', `git+file://${repo}#${sha}`], app);
  console.log(`# npm install from git took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  db = await createTestDatabase();
  env = { DATABASE_URL: db.url };
});

after(async () => {
  try {
    if (group) process.kill(-group, 'SIGKILL');
  } catch {
    // every process of the group is gone
  }
  await db?.drop();
  if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
});

test('the installed package holds the compiled library, its types, README and LICENSE, and nothing else', () => {
  const root = path.join(app, 'node_modules/pgpubsub');
  const files = fs.readdirSync(root, { recursive: true, withFileTypes: true }).filter((d) => d.isFile()).map((d) => path.relative(root, path.join(d.parentPath, d.name)));
  const unexpected = files.filter((f) => !['package.json', 'README.md', 'LICENSE'].includes(f) && !/^dist\/src\/.+\.(js|d\.ts)$/.test(f));
  assert.deepEqual(unexpected, []);
  for (const f of ['dist/src/index.js', 'dist/src/index.d.ts', 'dist/src/cli/main.js', 'LICENSE']) assert.ok(files.includes(f), `${f} is missing`);
  assert.ok(!fs.existsSync(path.join(app, 'node_modules/@prisma/client')), '@prisma/client must not come with pgpubsub');
});

test('the pubsub bin is executable, starts with its shebang, and npx pubsub --help works', async () => {
  const bin = fs.realpathSync(path.join(app, 'node_modules/.bin/pubsub'));
  assert.equal(bin, path.join(fs.realpathSync(app), 'node_modules/pgpubsub/dist/src/cli/main.js'));
  assert.ok(fs.statSync(bin).mode & 0o100, 'the bin is not executable');
  assert.equal(fs.readFileSync(bin, 'utf8').split('\n')[0], '#!/usr/bin/env node');
  const { stdout } = await ok('npx', ['pubsub', '--help'], app);
  assert.match(stdout, /make-migration/);
});

test('a CommonJS app compiled by tsc generates and applies its migration, then runs a worker with require()', async () => {
  // The app's own tsc run (module commonjs) against the installed .d.ts files, strict, without skipLibCheck.
  await ok(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', '.'], app);
  const made = await ok('npx', ['pubsub', 'make-migration'], app, env);
  assert.match(made.output, /wrote .*_pubsub\/migration\.sql/);
  const applied = await ok('npx', ['pubsub', 'migrate'], app, env);
  assert.match(applied.output, /applied 20240101000000_init, \d+_pubsub/);
  await db.query(`insert into "Price" (amount) values ('123456789.0123456789')`);
  await ok(process.execPath, ['main.cjs'], app, env);
  const seen = (await db.query<{ what: string }>('select what from seen order by what')).map((r) => r.what);
  // Decimal arrives exact, as decimal.js (pgpubsub's dependency), without @prisma/client installed.
  assert.deepEqual(seen, ['Decimal 123456789.0123456789 123456789.1123456789', 'hello from require true']);
});

/** Process ids of `pid` and all its descendants, from ps. */
async function processTree(pid: number): Promise<number[]> {
  const { stdout } = await ok('ps', ['-A', '-o', 'pid=,ppid='], tmp);
  const children = new Map<number, number[]>();
  for (const line of stdout.trim().split('\n')) {
    const [p, pp] = line.trim().split(/\s+/).map(Number) as [number, number];
    children.set(pp, [...(children.get(pp) ?? []), p]);
  }
  const tree = [pid];
  for (let i = 0; i < tree.length; i++) tree.push(...(children.get(tree[i]!) ?? []));
  return tree;
}


const sessions = async () =>
  Number((await db.query<{ n: string }>(`select count(*) as n from pg_stat_activity where datname = current_database() and application_name like 'pubsub:%'`))[0]!.n);

test('an ES module publishes; `npx pubsub listen` handles it, and SIGTERM to npx stops the worker and releases its connections', async () => {
  await ok(process.execPath, ['publish.mjs'], app, env);
  // Its own process group, as under a process manager: the SIGTERM goes to npx alone.
  const npx: ChildProcess = spawn('npx', ['pubsub', 'listen'], { cwd: app, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  let output = '';
  npx.stdout!.on('data', (d) => (output += d));
  npx.stderr!.on('data', (d) => (output += d));
  const exited = new Promise<number | null>((resolve) => npx.on('exit', (code) => resolve(code)));
  group = npx.pid;
  await waitFor(() => /listening on/.test(output), `the worker to listen:\n${output}`, 30_000);
  await waitFor(async () => (await db.query(`select 1 from seen where what = 'hello from import true'`)).length, `the notification from publish.mjs:\n${output}`);
  const tree = await processTree(npx.pid!);
  assert.ok(tree.length > 1, 'npx runs the worker as a child process');
  assert.ok((await sessions()) > 0, 'the worker holds connections');

  npx.kill('SIGTERM');
  await exited;
  await waitFor(() => tree.every((pid) => !alive(pid)), `every process under npx to exit (left: ${tree.filter(alive).join(', ')}):\n${output}`, 15_000);
  await waitFor(async () => (await sessions()) === 0, 'the worker\'s connections to close', 10_000);
  // npx passed the SIGTERM to its shell only; the worker saw the shell go and shut down as on SIGTERM.
  assert.match(output, /parent exited: finishing running listeners\n(.*\n)*pubsub: stopped/);
});
