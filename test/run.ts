/**
 * `npm test`: runs every compiled test file with node's test runner against real PostgreSQL: the
 * server named by DATABASE_URL, or else an embedded one started here (data in .pubsub/test-pgdata).
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { startEmbeddedPostgres } from '../src/embedded.js';
import { ROOT } from './helpers/cli.js';

const dist = path.join(ROOT, 'dist/test');
const files = ['unit', 'integration'].flatMap((dir) =>
  fs.readdirSync(path.join(dist, dir)).filter((f) => f.endsWith('.test.js')).sort().map((f) => path.join(dist, dir, f)),
);

let embedded: Awaited<ReturnType<typeof startEmbeddedPostgres>> | undefined;
if (!process.env.DATABASE_URL) {
  embedded = await startEmbeddedPostgres({ dir: path.join(ROOT, '.pubsub/test-pgdata') });
  console.log(`tests: embedded PostgreSQL on port ${embedded.port} (set DATABASE_URL to use another server)`);
}
const env = { ...process.env, DATABASE_URL: process.env.DATABASE_URL ?? embedded!.url };
const tap = path.join(ROOT, '.pubsub/test-results.tap');
fs.mkdirSync(path.dirname(tap), { recursive: true });
const args = ['--test', '--test-concurrency=2', '--test-reporter=spec', '--test-reporter-destination=stdout', '--test-reporter=tap', `--test-reporter-destination=${tap}`];
const child = spawn(process.execPath, [...args, ...process.argv.slice(2), ...files], { stdio: 'inherit', env });
const code = await new Promise<number>((resolve) => child.on('exit', (c) => resolve(c ?? 1)));
await embedded?.stop();
const count = (name: string) => Number(fs.readFileSync(tap, 'utf8').match(new RegExp(`^# ${name} (\\d+)$`, 'm'))?.[1] ?? 0);
console.log(`\ntests: ${count('pass')} passed, ${count('fail') + count('cancelled')} failed, ${count('skipped')} skipped`);
process.exit(code);
