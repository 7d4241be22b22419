// ctx.prisma without a database: the check the worker makes at start (it fails if @prisma/adapter-pg
// or PrismaClient change how they use the pool), the config key, and the types `Register` gives.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { createRequire } from 'node:module';
import type { LoosePrismaClient, NotificationContext, PrismaAdapter, PrismaClientOf, PrismaFactory } from '../../src/index.js';
import { loadFileConfig } from '../../src/config.js';
import { ADAPTER_RANGE, PrismaBinding, withPrisma } from '../../src/prisma.js';
import { PrismaClient } from '../../examples/generated/prisma/client.js';

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;

test('types: Register { client } types ctx.prisma; unregistered it is loose', () => {
  const registered: Equal<PrismaClientOf<{ client: PrismaClient }>, PrismaClient> = true;
  const loose: Equal<PrismaClientOf<{}>, LoosePrismaClient> = true;
  const ctx: Equal<NotificationContext['prisma'], PrismaClientOf<{}>> = true; // this program registers none
  // The adapter pgpubsub passes is what PrismaClient takes, and a factory returning the client fits the option.
  const factory: PrismaFactory = (adapter: PrismaAdapter) => new PrismaClient({ adapter });
  assert.ok(registered && loose && ctx && factory);
});

test(`the installed @prisma/adapter-pg (${ADAPTER_RANGE}) and PrismaClient pass the check the worker makes at start`, async () => {
  const entry = createRequire(import.meta.url).resolve('@prisma/adapter-pg');
  const version = JSON.parse(fs.readFileSync(path.join(path.dirname(entry), '../package.json'), 'utf8')).version as string;
  assert.match(version, /^7\.(1\d|[2-9]\d)\./, `pinned range ${ADAPTER_RANGE}; found ${version}`);
  const binding = await PrismaBinding.create((adapter: PrismaAdapter) => new PrismaClient({ adapter }));
  await binding.close();
});

test('@prisma/adapter-pg missing: pubsub.config says to install it', async () => {
  await assert.rejects(PrismaBinding.create(() => ({}), { from: [path.join(os.tmpdir(), 'nowhere', 'package.json')] }), (e: Error & { code?: string }) => e.code === 'pubsub.config' && /needs @prisma\/adapter-pg, which is not installed: `npm install @prisma\/adapter-pg`/.test(e.message));
});

test('ctx.prisma is a lazy, non-enumerable getter: spreading or logging ctx builds nothing', () => {
  let built = 0;
  const ctx = withPrisma({ channel: 'c', durable: true, attempt: 0 }, () => ({ built: ++built }));
  assert.deepEqual({ ...ctx }, { channel: 'c', durable: true, attempt: 0 });
  assert.equal(built, 0);
  assert.equal(ctx.prisma, ctx.prisma);
  assert.equal(built, 1);
});

test('"prisma" in pubsub.config.json: a path relative to the file; anything but a string is refused', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-prisma-config-'));
  const write = (config: unknown) => fs.writeFileSync(path.join(dir, 'pubsub.config.json'), JSON.stringify(config));
  write({ prisma: 'dist/prisma.js' });
  assert.equal(loadFileConfig(dir).prisma, path.join(dir, 'dist/prisma.js'));
  write({ prisma: 5 });
  assert.throws(() => loadFileConfig(dir), /"prisma" must be a non-empty string, got 5/);
  fs.rmSync(dir, { recursive: true });
});
