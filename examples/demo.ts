/**
 * `npm run demo`: both scenarios of the design notes against a real PostgreSQL, then exit 0.
 * With no DATABASE_URL it starts an embedded PostgreSQL (data in .pubsub/pgdata), applies the
 * committed migrations with `pubsub migrate`, starts `pubsub listen` as a child process, produces
 * events, and waits until the worker has run every callback.
 */
import { spawn } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { PrismaPg } from '@prisma/adapter-pg';
import pg from 'pg';
import { disconnect, notify, startEmbeddedPostgres } from 'pgpubsub';
import { PrismaClient } from './generated/prisma/client.js';
import { postReads } from './post-reads/listeners.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const cli = path.join(root, 'dist/src/cli/main.js');
const step = (text: string) => console.log(`\n▶ ${text}`);

async function main(): Promise<number> {
  console.log('pgpubsub demo: typed, durable pub/sub on PostgreSQL');
  let url = process.env.DATABASE_URL;
  const embedded = url ? undefined : await startEmbeddedPostgres({ dir: path.join(root, '.pubsub/pgdata') });
  if (embedded) {
    const admin = new pg.Client(embedded.url);
    await admin.connect();
    await admin.query('drop database if exists pubsub_demo with (force)');
    await admin.query('create database pubsub_demo');
    await admin.end();
    url = embedded.urlFor('pubsub_demo');
    step(`PostgreSQL: embedded server on port ${embedded.port}, data in ${path.relative(root, embedded.dir)}, fresh database pubsub_demo`);
  } else {
    step('PostgreSQL: the server in DATABASE_URL');
  }
  const env = { ...process.env, DATABASE_URL: url! };
  process.env.DATABASE_URL = url; // for notify()'s default pool

  const run = (args: string[], prefix: string) => {
    const child = spawn(process.execPath, [cli, ...args], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const show = (chunk: Buffer) => {
      output += chunk;
      for (const line of String(chunk).split('\n').filter(Boolean)) console.log(`  ${prefix} | ${line}`);
    };
    child.stdout.on('data', show);
    child.stderr.on('data', show);
    const exited = new Promise<number>((resolve) => child.on('exit', (code) => resolve(code ?? 1)));
    return { child, exited, output: () => output };
  };
  const waitFor = async (check: () => boolean | Promise<boolean>, what: string) => {
    for (const deadline = Date.now() + 30_000; !(await check()); await new Promise((r) => setTimeout(r, 50))) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    }
  };

  step('pubsub migrate: apply prisma/migrations (the app tables, then the migration `pubsub make-migration` wrote)');
  if ((await run(['migrate'], 'migrate').exited) !== 0) return 1;

  step('pubsub listen: start a worker process with the listeners of pubsub.config.json');
  const worker = run(['listen'], 'worker');
  try {
    await waitFor(() => /listening on/.test(worker.output()), 'the worker to listen');

    step('Scenario 1, custom channel: notify(postReads, { postId, date }) three times; the third in a transaction that rolls back');
    const prisma = new PrismaClient({ adapter: new PrismaPg({ connectionString: url! }) });
    await notify(postReads, { postId: 12, date: new Date() });
    await prisma.$transaction((tx) => notify(postReads, { postId: 12, date: new Date() }, { client: tx }));
    await prisma
      .$transaction(async (tx) => {
        await notify(postReads, { postId: 99, date: new Date() }, { client: tx });
        throw new Error('rolled back on purpose');
      })
      .catch(() => {});
    await waitFor(() => (worker.output().match(/\[post-reads\]/g) ?? []).length >= 2, 'two post reads');

    step('Scenario 2, trigger channel: prisma.author.create() twice; the AFTER INSERT trigger notifies the worker');
    const authors = await Promise.all(['Paul', `Zoë O'Brien`].map((name) => prisma.author.create({ data: { name } })));
    await waitFor(async () => (await prisma.post.count({ where: { authorId: { in: authors.map((a) => a.id) } } })) === 2, 'the first posts');
    await new Promise((r) => setTimeout(r, 300)); // time for a wrongly delivered rolled-back read to show up
    const reads = (worker.output().match(/\[post-reads\]/g) ?? []).length;
    const posts = await prisma.post.findMany({ include: { author: true }, orderBy: { id: 'asc' } });
    await prisma.$disconnect();
    await disconnect();

    step('Result');
    console.log(`  post reads processed: ${reads} (the rolled-back one never arrived)`);
    for (const p of posts) console.log(`  post ${p.id} by ${p.author.name}: "${p.content}"`);
    if (reads !== 2 || posts.length !== 2) throw new Error('unexpected result');
  } finally {
    step('Stop the worker with SIGTERM');
    worker.child.kill('SIGTERM');
    const code = await worker.exited;
    console.log(`  worker exited with code ${code}`);
    await embedded?.stop();
  }
  console.log('\n✔ demo finished: both scenarios worked');
  return 0;
}

main().then(
  (code) => process.exit(code),
  (error) => {
    console.error(`\n✖ demo failed: ${error instanceof Error ? error.message : error}`);
    process.exit(1);
  },
);
