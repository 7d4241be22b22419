// Property-based tests of the failure path (fast-check) against a real server: random rows of a model
// with every Prisma scalar and list type (nulls included) go through a real trigger, each with a random
// fault plan (throw before or after a ctx.tx write, a timeout, a swallowed ctx.tx error, the claim's
// connection killed, a payload that cannot be decoded), and every run must end with each notification
// processed exactly once or dead-lettered after exactly maxAttempts, the stored payload byte for byte
// the same at every attempt, and rows without faults processed once.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import { PostInsertListen, applyMigrations, generateMigration, listen, type NotificationContext, type TriggerPayload, type Worker } from '../../src/index.js';
import type { Everything } from '../fixtures/generated/prisma/client.js';
import { ROOT } from '../helpers/cli.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

const MAX_ATTEMPTS = 4;
type Fault = 'throwBefore' | 'throwAfter' | 'timeout' | 'swallow' | 'kill' | 'decode';
/** How a row fails: `times` first attempts fail with `fault` (times ≥ MAX_ATTEMPTS: always). */
interface Plan {
  fault: Fault | 'none';
  times: number;
}

const plans = new Map<string, Plan>();
const calls = new Map<string, number>();
const firstText = new Map<string, string>();
const mismatches: string[] = [];
let db: TestDatabase;
let worker: Worker;

class Faulty {
  @PostInsertListen('Everything', { maxAttempts: MAX_ATTEMPTS, timeoutMs: 400, backoff: { baseMs: 10, maxMs: 20 } })
  async inserted(p: TriggerPayload<Everything>, ctx: NotificationContext) {
    const key = p.new!.text;
    calls.set(key, (calls.get(key) ?? 0) + 1);
    const [stored] = await db.query<{ payload: string }>('select payload::text as payload from pubsub.notification where id = $1', [ctx.id]);
    if (!firstText.has(key)) firstText.set(key, stored!.payload);
    else if (firstText.get(key) !== stored!.payload) mismatches.push(key);
    const plan = plans.get(key) ?? { fault: 'none', times: 0 };
    const failing = ctx.attempt < plan.times;
    if (failing && plan.fault === 'throwBefore') throw new Error(`planned failure of ${key}`);
    await ctx.tx!.query('insert into effects (k) values ($1)', [key]);
    if (!failing) return;
    if (plan.fault === 'throwAfter') throw new Error(`planned failure of ${key}`);
    if (plan.fault === 'timeout') await new Promise(() => {});
    if (plan.fault === 'swallow') await ctx.tx!.query('select 1/0').catch(() => {});
    if (plan.fault === 'kill') {
      await db.query(`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and application_name = 'pubsub:worker' and state like 'idle in transaction%'`);
      await ctx.tx!.query('select 1');
    }
  }
}

const safeText = fc.string({ maxLength: 12 }).map((s) => s.replace(/\0/g, ''));
const row = fc.record({
  big: fc.bigInt(-(2n ** 63n), 2n ** 63n - 1n),
  dec: fc.tuple(fc.bigInt(-(10n ** 20n), 10n ** 20n), fc.integer({ min: 0, max: 999_999_999 })).map(([a, b]) => `${a}.${String(b).padStart(9, '0')}`),
  at: fc.date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('2100-01-01T00:00:00Z'), noInvalidDate: true }),
  day: fc.option(fc.date({ min: new Date('1970-01-01T00:00:00Z'), max: new Date('2100-01-01T00:00:00Z'), noInvalidDate: true })),
  bytes: fc.option(fc.uint8Array({ maxLength: 16 })),
  json: fc.option(fc.jsonValue({ maxDepth: 3 }).map((v) => JSON.parse(JSON.stringify(v).replace(/\\u0000/g, '')))),
  mood: fc.constantFrom('HAPPY', 'SAD'),
  ratio: fc.oneof(fc.double(), fc.constantFrom(Number.NaN, Infinity, -Infinity)),
  flag: fc.boolean(),
  tags: fc.array(fc.option(safeText), { maxLength: 3 }),
  bigs: fc.array(fc.bigInt(-(2n ** 63n), 2n ** 63n - 1n), { maxLength: 3 }),
  plan: fc.oneof(
    { weight: 3, arbitrary: fc.constant<Plan>({ fault: 'none', times: 0 }) },
    { weight: 4, arbitrary: fc.record({ fault: fc.constantFrom<Fault>('throwBefore', 'throwAfter', 'timeout', 'swallow', 'decode'), times: fc.integer({ min: 1, max: MAX_ATTEMPTS + 1 }) }) },
  ),
});

before(async () => {
  assert.ok(Faulty);
  db = await createTestDatabase();
  const migrationsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-property-'));
  fs.cpSync(path.join(ROOT, 'test/fixtures/prisma/migrations'), migrationsDir, { recursive: true });
  await generateMigration({ schema: path.join(ROOT, 'test/fixtures/prisma/schema.prisma'), migrationsDir, name: 'pubsub' });
  await applyMigrations(db.url, migrationsDir);
  await db.query('create table effects (k text not null)');
  worker = await listen({ databaseUrl: db.url, pollIntervalMs: 50, roundTripMs: 2000, logger: { info() {}, warn() {}, error() {} } });
});

after(async () => {
  await worker?.close();
  await db?.drop();
});

let run = 0;
test('random rows × random faults: each notification processed exactly once or dead after maxAttempts, payload bytes unchanged, clean rows once', async () => {
  await fc.assert(
    fc.asyncProperty(fc.array(row, { minLength: 4, maxLength: 12 }), fc.boolean(), async (rows, withKill) => {
      run++;
      const keys = rows.map((_, i) => `r${run}-${i}`);
      rows.forEach((r, i) => plans.set(keys[i]!, r.plan.fault === 'decode' ? { fault: 'none', times: 0 } : r.plan));
      // At most one killed connection per run, on its first attempt: a clean row can lose one attempt to it, never MAX_ATTEMPTS.
      if (withKill) plans.set(keys[0]!, { fault: 'kill', times: 1 });
      const client = await db.pool.connect();
      try {
        await client.query('begin');
        for (const [i, r] of rows.entries()) {
          await client.query(
            `insert into everything (big, dec, at_time, day, bytes, json, mood, ratio, flag, text, tags, bigs)
             values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)`,
            [r.big.toString(), r.dec, r.at, r.day, r.bytes && Buffer.from(r.bytes), r.json === null ? null : JSON.stringify(r.json), r.mood, r.ratio, r.flag, keys[i], r.tags, r.bigs.map(String)],
          );
        }
        // A payload that cannot be decoded: its BigInt field is not a number (as a bad writer or a hand-made row would leave it).
        const undecodable = keys.filter((_, i) => rows[i]!.plan.fault === 'decode' && !(withKill && i === 0));
        await client.query(
          `update pubsub.notification set payload = jsonb_set(payload, '{new,big}', '"not a number"') where payload->'new'->>'text' = any($1)`,
          [undecodable],
        );
        await client.query('commit');
      } finally {
        client.release();
      }
      const expectDead = new Set(keys.filter((k, i) => (rows[i]!.plan.fault === 'decode' && !(withKill && i === 0)) || (plans.get(k)!.fault !== 'none' && plans.get(k)!.times >= MAX_ATTEMPTS)));
      await waitFor(async () => {
        const left = await db.query(`select payload->'new'->>'text' as k, dead_at from pubsub.notification where payload->'new'->>'text' = any($1)`, [keys]);
        return left.every((r) => r.dead_at) && left.length === expectDead.size;
      }, `run ${run}: every row done or dead`, 20_000);
      const effects = new Map((await db.query(`select k, count(*)::int as n from effects where k = any($1) group by k`, [keys])).map((r) => [r.k, r.n]));
      const dead = new Map((await db.query(`select payload->'new'->>'text' as k, attempts from pubsub.notification where payload->'new'->>'text' = any($1)`, [keys])).map((r) => [r.k, r.attempts]));
      for (const k of keys) {
        if (expectDead.has(k)) {
          assert.equal(dead.get(k), MAX_ATTEMPTS, `${k} (${JSON.stringify(plans.get(k))}) is dead after exactly ${MAX_ATTEMPTS} attempts`);
          assert.equal(effects.get(k) ?? 0, 0, `${k}: a dead notification left no writes`);
        } else {
          assert.equal(effects.get(k), 1, `${k} (${JSON.stringify(plans.get(k))}) processed exactly once`);
          if (plans.get(k)!.fault === 'none') assert.ok((calls.get(k) ?? 0) <= (withKill ? 2 : 1), `clean row ${k} ran ${calls.get(k)} times`);
        }
      }
      assert.deepEqual(mismatches, [], 'the stored payload was the same text at every attempt');
    }),
    { numRuns: 10, endOnFailure: true },
  );
});
