// Typed models are compile-time checks, so their test is a compilation: test/typed registers the
// fixture's Prisma client through `Register` and holds `@ts-expect-error` lines for every mistake the
// compiler must catch. It is a project of its own because registering is global to a compilation,
// and the main project's tests use models that no generated client defines.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { ROOT } from '../helpers/cli.js';

const run = (args: string[]) => spawnSync(process.execPath, args, { cwd: ROOT, encoding: 'utf8' });

test('with a client registered, model names, fields and row types are checked by tsc (test/typed)', () => {
  // The lowercase and @@map'ped models of test/typed/schema.prisma (the fixture's client is built by `npm run build`).
  const generated = run(['scripts/prisma-generate.mjs', 'test/typed/schema.prisma']);
  assert.equal(generated.status, 0, generated.stdout + generated.stderr);
  const tsc = run([path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', 'test/typed', '--pretty', 'false']);
  assert.equal(tsc.status, 0, `tsc -p test/typed failed:\n${tsc.stdout}${tsc.stderr}`);
});
