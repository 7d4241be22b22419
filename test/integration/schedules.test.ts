// Schedules (issue 10, point 3), against real PostgreSQL. Spawned workers (`pubsub listen`): three
// workers and a one-second schedule for 30 s, one of them SIGKILLed in the middle of a run and
// restarted → every slot ran exactly once; every worker down for three slots → each catch-up policy;
// `pubsub status --json` lists the schedules. In-process: a failing run retries and dead-letters while
// later slots go on; a cron expression in a time zone across both DST changes, with an injected clock.
// Assertions read the database; slots may run late, never twice, never not at all.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { Cron, Every, getRegistry, listen, type NotificationContext, type StatusReport } from '../../src/index.js';
import { Scheduler } from '../../src/scheduler.js';
import { ROOT, alive, runCli, startCli, type CliProcess } from '../helpers/cli.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

const TICKS = path.join(ROOT, 'dist/test/fixtures/listeners/schedule-ticks.js');
const CATCH_UP = path.join(ROOT, 'dist/test/fixtures/listeners/schedule-catch-up.js');
const quiet = { info() {}, warn() {}, error() {} };
const SECOND = 1000;

class Failing {
  @Every('1s', { name: 'failing.tick', maxAttempts: 2, backoff: { baseMs: 50, maxMs: 50 } })
  tick(slot: Date) {
    throw new Error(`slot ${slot.toISOString()} fails`);
  }
}

class DaylightSaving {
  @Cron('30 2 * * *', { tz: 'Europe/Paris', name: 'dst.paris' })
  paris() {}

  @Cron('30 2 * * *', { tz: 'America/New_York', name: 'dst.newYork' })
  newYork() {}
}

let db: TestDatabase;
before(async () => {
  assert.ok(Failing && DaylightSaving);
  db = await createTestDatabase({ library: true });
  await db.query('create table ticks (slot timestamptz not null, pid int not null, attempt int not null, same_slot boolean not null)');
  await db.query('create table catch_runs (schedule text not null, slot timestamptz not null)');
  await db.query('create table published (slot timestamptz not null)');
  await db.query(`insert into pubsub.subscription (channel, listener) values ('tick_published', 'Published.record')`);
});
after(() => db?.drop());

const one = async <R = any>(sql: string, values?: unknown[]) => (await db.query<R & pg.QueryResultRow>(sql, values))[0]!;
const serverNow = async () => (await one<{ now: number }>(`select (extract(epoch from clock_timestamp()) * 1000)::float8 as now`)).now;

function worker(fixture: string, env: Record<string, string> = {}): CliProcess {
  return startCli(['listen', '--require', fixture, '--poll-interval', '200'], { DATABASE_URL: db.url, ...env });
}

/** Rows of `table` (a slot column) ran once each, one second apart; returns their times. */
async function onceEach(table: string): Promise<number[]> {
  const times = (await db.query<{ slot: Date }>(`select slot from ${table} order by slot`)).map((r) => r.slot.getTime());
  assert.equal(new Set(times).size, times.length, `${table}: no slot twice`);
  for (let i = 1; i < times.length; i++) assert.equal(times[i]! - times[i - 1]!, SECOND, `${table}: no gap after ${new Date(times[i - 1]!).toISOString()}`);
  assert.ok(times.length >= 28, `${table}: ${times.length} slots over 30 s`);
  return times;
}

test('three workers, one-second schedules for 30 s, a worker SIGKILLed mid-run and one mid-publication, both restarted: every slot exactly once', { timeout: 120_000 }, async () => {
  const sideEffects = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-ticks-')), 'runs.log');
  fs.writeFileSync(sideEffects, '');
  const env = { SIDE_EFFECTS: sideEffects };
  const workers = [worker(TICKS, env), worker(TICKS, env), worker(TICKS, env)];
  /** Kills a live worker as soon as it starts a run or a publication (its line is written, its transaction open); returns the slot. */
  const killDuring = async (what: 'run' | 'publish') => {
    const seen = fs.readFileSync(sideEffects, 'utf8').length;
    const live = new Set(workers.filter((w) => w.child.exitCode === null && w.child.signalCode === null).map((w) => String(w.child.pid)));
    const line = await waitFor(
      () => fs.readFileSync(sideEffects, 'utf8').slice(seen).split('\n').find((l) => l.startsWith(`${what} `) && live.has(l.split(' ')[2]!)),
      `a ${what} started by a worker`,
      30_000,
    );
    const [, slot, pid] = line!.split(' ');
    const victim = workers.find((w) => String(w.child.pid) === pid)!;
    victim.child.kill('SIGKILL');
    await victim.exited;
    workers.push(worker(TICKS, env));
    await workers.at(-1)!.waitForOutput(/listening on/, 30_000);
    return new Date(slot!).getTime();
  };
  try {
    await Promise.all(workers.map((w) => w.waitForOutput(/listening on/, 30_000)));
    const started = await serverNow();
    await waitFor(async () => (await one('select count(*)::int as n from ticks')).n >= 3, 'the first runs', 30_000);
    const killedRun = await killDuring('run');
    const killedPublication = await killDuring('publish');

    await waitFor(async () => (await serverNow()) - started >= 30 * SECOND, '30 s of schedule', 60_000);
    for (const w of workers) if (w.child.exitCode === null && w.child.signalCode === null) assert.equal(await w.stop(), 0, w.output());
    // What was handed on and not run yet (stored for the schedule's listener) is drained once.
    const drained = await runCli(['listen', '--once', '--require', TICKS], { DATABASE_URL: db.url, ...env });
    assert.equal(drained.code, 0, drained.output);

    const ticks = await onceEach('ticks');
    const rows = await db.query<{ slot: Date; attempt: number; same_slot: boolean }>('select slot, attempt, same_slot from ticks');
    assert.ok(rows.every((r) => r.same_slot), 'ctx.slot is the slot the method receives');
    const killed = rows.filter((r) => r.slot.getTime() === killedRun);
    assert.equal(killed.length, 1, 'the slot whose run was killed ran once, in another worker');
    assert.ok(killed[0]!.attempt >= 1, 'its lost attempt was counted');
    const published = await onceEach('published');
    assert.ok(published.includes(killedPublication), 'the slot whose publication was killed was published by another worker');
    const schedules = await db.query(`select name, runs::int as runs, skipped::int as skipped, last_slot from pubsub.schedule order by name`);
    assert.deepEqual(schedules, [
      { name: 'Ticks.publish', runs: published.length, skipped: 0, last_slot: new Date(published.at(-1)!) },
      { name: 'Ticks.tick', runs: ticks.length, skipped: 0, last_slot: new Date(ticks.at(-1)!) },
    ], 'every slot handed on ran');
    assert.equal((await one(`select count(*)::int as n from pubsub.notification`)).n, 0, 'nothing left, nothing dead');
    assert.equal((await one(`select count(*)::int as n from pubsub.subscription where channel like 'schedule:%'`)).n, 0, 'a schedule needs no subscription');
  } finally {
    for (const w of workers) if (w.child.pid && alive(w.child.pid)) w.child.kill('SIGKILL');
  }
});

test('every worker down for three slots: catchUp none skips them, last runs the latest, all runs each', { timeout: 120_000 }, async () => {
  const runs = async (schedule: string) => (await db.query<{ slot: Date }>('select slot from catch_runs where schedule = $1 order by slot', [schedule])).map((r) => r.slot.getTime());
  const first = worker(CATCH_UP);
  await waitFor(async () => (await one(`select min(n)::int as n from (select count(*) as n from catch_runs group by schedule) c having count(*) = 3`))?.n >= 2, 'two runs of each schedule', 30_000);
  assert.equal(await first.stop(), 0, first.output());
  const before = new Map<string, number>();
  for (const name of ['none', 'last', 'all']) {
    const row = await one<{ covered: number }>(`select (extract(epoch from covered_until) * 1000)::float8 as covered from pubsub.schedule where name = $1`, [`CatchUp.${name}`]);
    before.set(name, row.covered);
  }
  const down = Math.max(...before.values());
  await waitFor(async () => (await serverNow()) > down + 3.5 * SECOND, 'three slots with no worker', 10_000);

  // Three workers start together: none of them was running when those slots passed.
  const workers = [worker(CATCH_UP), worker(CATCH_UP), worker(CATCH_UP)];
  let since: number;
  try {
    await waitFor(async () => (await db.query(`select 1 from pg_stat_activity where application_name = 'pubsub:schedule' and datname = current_database()`)).length === 3, 'the three workers running the schedules', 30_000);
    // Running since the earliest of their connections: slots before it were missed.
    since = (await one<{ since: number }>(`select (extract(epoch from min(backend_start)) * 1000)::float8 as since from pg_stat_activity where application_name = 'pubsub:schedule' and datname = current_database()`)).since;
    await waitFor(async () => (await one(`select count(*)::int as n from catch_runs where slot > to_timestamp($1 / 1000.0)`, [since + 2 * SECOND])).n >= 3, 'two more slots after the restart', 30_000);
    for (const w of workers) assert.equal(await w.stop(), 0, w.output());
  } finally {
    for (const w of workers) if (w.child.pid && alive(w.child.pid)) w.child.kill('SIGKILL');
  }
  const drained = await runCli(['listen', '--once', '--require', CATCH_UP], { DATABASE_URL: db.url });
  assert.equal(drained.code, 0, drained.output);

  const firstAttended = Math.ceil(since / SECOND) * SECOND;
  for (const name of ['none', 'last', 'all']) {
    const covered = before.get(name)!;
    const slots = await runs(name);
    assert.equal(new Set(slots).size, slots.length, `${name}: no slot ran twice`);
    const range = (from: number, to: number) => Array.from({ length: Math.max(0, (to - from) / SECOND + 1) }, (_, i) => from + i * SECOND);
    const missed = range(covered + SECOND, firstAttended - SECOND);
    assert.ok(missed.length >= 3, `${name}: ${missed.length} slots passed while no worker ran`);
    const last = slots.at(-1)!;
    const expected = ({ none: [], last: [missed.at(-1)!], all: missed } as Record<string, number[]>)[name]!.concat(range(firstAttended, last));
    assert.deepEqual(slots.filter((s) => s > covered).map((s) => new Date(s).toISOString()), expected.map((s) => new Date(s).toISOString()), `${name}: the slots after the restart`);
    assert.ok(slots.filter((s) => s <= covered).every((s, i, all) => i === 0 || s - all[i - 1]! === SECOND), `${name}: no gap before the stop`);
    const { skipped } = await one<{ skipped: number }>(`select skipped::int as skipped from pubsub.schedule where name = $1`, [`CatchUp.${name}`]);
    assert.equal(skipped, { none: missed.length, last: missed.length - 1, all: 0 }[name], `${name}: skipped`);
  }
});

test('pubsub status --json lists the schedules with their last and next slot; their listeners need no subscription', async () => {
  const { code, output } = await runCli(['status', '--json', '--require', CATCH_UP, '--require', TICKS], { DATABASE_URL: db.url });
  assert.equal(code, 0, output);
  const report = JSON.parse(output) as StatusReport;
  const names = report.schedules.map((s) => s.name);
  assert.deepEqual(names, ['CatchUp.all', 'CatchUp.last', 'CatchUp.none', 'Ticks.publish', 'Ticks.tick']);
  for (const s of report.schedules) {
    assert.equal(s.when, 'every 1s');
    assert.ok(s.lastSlot && s.nextSlot, `${s.name}: last and next slot`);
    assert.equal(new Date(s.nextSlot).getTime() % SECOND, 0);
    assert.ok(new Date(s.nextSlot) > new Date(s.lastSlot), s.name);
    assert.equal(s.loaded, true);
    assert.equal(s.recorded, true);
    assert.ok(s.runs > 0);
  }
  assert.equal(report.schedules.find((s) => s.name === 'CatchUp.all')!.catchUp, 'all');
  assert.deepEqual(report.drift.subscriptions.missing, [], 'schedule listeners are not reported as unsubscribed');
  const tick = report.listeners.find((l) => l.listener === 'Ticks.tick')!;
  assert.equal(tick.channel, 'schedule:Ticks.tick');
  assert.equal(tick.subscribed, null);
  const text = await runCli(['status', '--require', CATCH_UP], { DATABASE_URL: db.url });
  assert.match(text.output, /SCHEDULE\s+WHEN\s+CATCH UP\s+LAST SLOT\s+NEXT SLOT\s+RUNS\s+SKIPPED/);
  assert.match(text.output, /CatchUp\.none\s+every 1s\s+none\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ/);
  assert.match(text.output, /Ticks\.tick \(not loaded\)/);
  assert.match(text.output, /Ticks\.publish \(not loaded\)/);
  assert.doesNotMatch(text.output, /not subscribed/);
});

test('a failing scheduled run is retried, then dead-lettered, while the next slots go on', { timeout: 60_000 }, async () => {
  const worker = await listen({ databaseUrl: db.url, channels: ['schedule:failing.tick'], logger: quiet, pollIntervalMs: 100 });
  try {
    const dead = await waitFor(
      async () => {
        const rows = await db.query<{ attempts: number; last_error: string; slot: string }>(`select attempts, last_error, payload #>> '{}' as slot from pubsub.notification where listener = 'failing.tick' and dead_at is not null order by id`);
        return rows.length >= 2 ? rows : null;
      },
      'two dead slots',
      30_000,
    );
    assert.ok(dead!.every((r) => r.attempts === 2), 'each tried maxAttempts times');
    assert.match(dead![0]!.last_error, /slot \S+ fails/);
    assert.notEqual(dead![0]!.slot, dead![1]!.slot, 'one dead letter per slot');
    assert.equal(await worker.readiness().then((r) => r.ready), true, 'a schedule listener is not reported as unsubscribed');
  } finally {
    await worker.close();
  }
});

test('cron in a time zone across both DST changes (injected clock): a skipped 02:30 runs at 03:30, a repeated one runs once', { timeout: 60_000 }, async () => {
  const pool = new pg.Pool({ connectionString: db.url, max: 1, idleTimeoutMillis: 0 });
  let clock = 0;
  const registry = getRegistry();
  const paris = registry.schedules.get('dst.paris')!;
  const newYork = registry.schedules.get('dst.newYork')!;
  const ran = new Map<string, string[]>([['dst.paris', []], ['dst.newYork', []]]);
  /** A worker running from `from` to `to`, ticking both every hour (through the skipped and the repeated hour): what each hands on. */
  const walk = async (from: string, to: string) => {
    const scheduler = new Scheduler({ schedules: [paris, newYork], pool, logger: quiet, now: () => clock });
    for (clock = Date.parse(from); clock <= Date.parse(to); clock += 3600 * SECOND) {
      for (const s of [paris, newYork]) ran.get(s.name)!.push(...(await scheduler.tick(s)).ran.map((d) => d.toISOString()));
    }
    await scheduler.close();
  };
  try {
    await walk('2026-03-06T12:00:00Z', '2026-03-10T12:00:00Z'); // New York springs forward on 8 March
    await walk('2026-03-27T12:00:00Z', '2026-03-31T12:00:00Z'); // Paris on 29 March; the days in between are missed (catchUp 'last')
    await walk('2026-10-23T12:00:00Z', '2026-10-27T12:00:00Z'); // Paris falls back on 25 October
    await walk('2026-10-30T12:00:00Z', '2026-11-03T12:00:00Z'); // New York on 1 November
  } finally {
    await pool.end();
  }
  assert.deepEqual(ran.get('dst.paris'), [
    '2026-03-07T01:30:00.000Z', '2026-03-08T01:30:00.000Z', '2026-03-09T01:30:00.000Z', '2026-03-10T01:30:00.000Z',
    '2026-03-27T01:30:00.000Z', // the latest of the days missed between two walks (catchUp 'last')
    '2026-03-28T01:30:00.000Z', // 02:30 CET
    '2026-03-29T01:30:00.000Z', // spring forward: 02:30 does not exist, runs at 03:30 CEST
    '2026-03-30T00:30:00.000Z', '2026-03-31T00:30:00.000Z', // 02:30 CEST
    '2026-10-23T00:30:00.000Z', '2026-10-24T00:30:00.000Z', // 02:30 CEST
    '2026-10-25T00:30:00.000Z', // fall back: 02:30 happens twice, runs once, the first time (CEST)
    '2026-10-26T01:30:00.000Z', '2026-10-27T01:30:00.000Z', // 02:30 CET
    '2026-10-30T01:30:00.000Z', '2026-10-31T01:30:00.000Z', '2026-11-01T01:30:00.000Z', '2026-11-02T01:30:00.000Z', '2026-11-03T01:30:00.000Z',
  ]);
  assert.deepEqual(ran.get('dst.newYork'), [
    '2026-03-07T07:30:00.000Z', // 02:30 EST
    '2026-03-08T07:30:00.000Z', // spring forward: 02:30 does not exist, runs at 03:30 EDT
    '2026-03-09T06:30:00.000Z', '2026-03-10T06:30:00.000Z', // 02:30 EDT
    '2026-03-27T06:30:00.000Z', '2026-03-28T06:30:00.000Z', '2026-03-29T06:30:00.000Z', '2026-03-30T06:30:00.000Z', '2026-03-31T06:30:00.000Z',
    '2026-10-23T06:30:00.000Z', '2026-10-24T06:30:00.000Z', '2026-10-25T06:30:00.000Z', '2026-10-26T06:30:00.000Z', '2026-10-27T06:30:00.000Z',
    '2026-10-30T06:30:00.000Z', '2026-10-31T06:30:00.000Z',
    '2026-11-01T07:30:00.000Z', // fall back (01:00–02:00 repeats): 02:30 EST, once
    '2026-11-02T07:30:00.000Z', '2026-11-03T07:30:00.000Z',
  ]);
  const stored = await db.query(`select listener, count(*)::int as n from pubsub.notification where channel like 'schedule:dst.%' group by listener order by listener`);
  assert.deepEqual(stored, [{ listener: 'dst.newYork', n: 19 }, { listener: 'dst.paris', n: 19 }], 'each slot stored once for its method');
  // Skipped: 16 of the 17 days from 11 to 27 March, 205 of the 206 from 1 April to 23 October, 2 of 28–30 October.
  const row = await one(`select runs::int as runs, skipped::int as skipped, last_slot from pubsub.schedule where name = 'dst.paris'`);
  assert.deepEqual(row, { runs: 19, skipped: 16 + 205 + 2, last_slot: new Date('2026-11-03T01:30:00.000Z') });
});
