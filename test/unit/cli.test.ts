import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildProgram, main } from '../../src/cli/program.js';

test('unknown options and bad numbers are rejected with commander exit codes', async () => {
  const program = buildProgram();
  program.commands.forEach((c) => c.exitOverride().configureOutput({ writeErr: () => {} }));
  await assert.rejects(program.parseAsync(['node', 'pubsub', 'listen', '--nope']), (e: any) => e.code === 'commander.unknownOption' && e.exitCode === 1);
  await assert.rejects(program.parseAsync(['node', 'pubsub', 'listen', '--batch-size', 'abc']), (e: any) => /positive whole number/.test(e.message));
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
