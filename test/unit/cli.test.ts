import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { loadFileConfig } from '../../src/config.js';
import { runCli } from '../helpers/cli.js';
import { buildProgram, main } from '../../src/cli/program.js';

test('unknown options and bad numbers are rejected with commander exit codes', async () => {
  const program = buildProgram();
  program.commands.forEach((c) => c.exitOverride().configureOutput({ writeErr: () => {} }));
  await assert.rejects(program.parseAsync(['node', 'pubsub', 'listen', '--nope']), (e: any) => e.code === 'commander.unknownOption' && e.exitCode === 1);
  await assert.rejects(program.parseAsync(['node', 'pubsub', 'listen', '--batch-size', 'abc']), (e: any) => e.code === 'commander.invalidArgument' && /whole number from 1 to 10000/.test(e.message));
});

test('listen says what is wrong when no listeners can be loaded', async () => {
  const errors: string[] = [];
  const original = console.error;
  console.error = (m: string) => errors.push(m);
  try {
    assert.equal(await main(['node', 'pubsub', 'listen', '--config', 'missing.json']), 1);
    assert.equal(await main(['node', 'pubsub', 'listen', '--require', 'dist/src/errors.js']), 2);
    assert.match(errors.join('\n'), /No listeners are registered/);
    assert.equal(await main(['node', 'pubsub', 'listen', '--require', 'src/listeners.ts']), 1);
    assert.match(errors.join('\n'), /pubsub loads compiled JavaScript/);
  } finally {
    console.error = original;
  }
});

test('bad numbers on the command line are refused with a message naming the option (they used to exit 1 silently)', async () => {
  for (const [flag, value] of [['--batch-size', '0'], ['--batch-size', '10001'], ['--batch-size', '1.5'], ['--batch-size', '1e3'], ['--concurrency', '-1'], ['--poll-interval', '99999999999']]) {
    const r = await runCli(['listen', flag!, value!, '--require', 'dist/test/fixtures/listeners/jobs.js'], { DATABASE_URL: 'postgres://nobody@127.0.0.1:1/none' });
    assert.equal(r.code, 1, r.output);
    assert.match(r.output, new RegExp(`option '${flag} <\\w+>' argument '${value!.replace('.', '\\.')}' is invalid\\. It must be a whole number from \\d+ to \\d+`), r.output);
  }
  const context = await runCli(['listen', '--context', '[1]']);
  assert.equal(context.code, 1);
  assert.match(context.output, /argument '\[1\]' is invalid\. Expected a JSON object/);
});

test('pubsub.config.json goes through the same checks as the flags: bounds, types, unknown keys', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-config-'));
  const write = (config: unknown) => fs.writeFileSync(path.join(dir, 'pubsub.config.json'), JSON.stringify(config));
  write({ require: ['a.js'], batchSize: 500, concurrency: 4, pollIntervalMs: 100, maintain: true });
  assert.deepEqual(loadFileConfig(dir), { dir, require: [path.join(dir, 'a.js')], batchSize: 500, concurrency: 4, pollIntervalMs: 100, maintain: true });
  const refused: Array<[unknown, RegExp]> = [
    [{ batchSize: 0 }, /"batchSize" must be a whole number from 1 to 10000, got 0/],
    [{ batchSize: 1e6 }, /"batchSize" must be a whole number from 1 to 10000, got 1000000/],
    [{ concurrency: 2.5 }, /"concurrency" must be a whole number from 1 to 1000, got 2.5/],
    [{ pollIntervalMs: '100' }, /"pollIntervalMs" must be a whole number from 10 to 86400000, got "100"/],
    [{ batchsize: 10 }, /"batchsize" is not a setting; the settings are require, schema, migrationsDir, migrations, channels, grantNotify, batchSize/],
    [{ require: 'a.js' }, /"require" must be an array of non-empty strings/],
    [{ maintain: 'yes' }, /"maintain" must be true or false, got "yes"/],
    [[], /must be a JSON object/],
    [{ migrationsDir: 'a', migrations: 'b' }, /sets both "migrationsDir" and "migrations" \(its old name\); keep only "migrationsDir"/],
  ];
  // `migrationsDir` is named like --migrations-dir; the old key `migrations` is still read.
  for (const key of ['migrationsDir', 'migrations']) {
    write({ [key]: 'db/migrations' });
    assert.equal(loadFileConfig(dir).migrationsDir, path.join(dir, 'db/migrations'), key);
  }
  for (const [config, message] of refused) {
    write(config);
    assert.throws(() => loadFileConfig(dir), (e: any) => e.code === 'pubsub.config' && message.test(e.message), JSON.stringify(config));
  }
  fs.rmSync(path.join(dir, 'pubsub.config.json'));
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ pubsub: { concurrency: 0 } }));
  assert.throws(() => loadFileConfig(dir), /package\.json "pubsub": "concurrency" must be a whole number/);
  write({ batchSize: 0 });
  const r = await runCli(['listen', '--require', 'dist/test/fixtures/listeners/jobs.js'], {}, dir);
  assert.equal(r.code, 1);
  assert.match(r.output, /pubsub: .*pubsub\.config\.json: "batchSize" must be a whole number from 1 to 10000, got 0\./);
});
