// The failure path: every way an attempt can end is counted and contained. Each test makes one fault
// happen against a real server and checks that nothing is lost, duplicated or stuck, that the
// neighbours of the failing notification run once, and that the log names listener and notification.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  Listen,
  PostInsertListen,
  applyMigrations,
  generateMigration,
  getRegistry,
  listen,
  notify,
  type NotificationContext,
  type TriggerPayload,
  type Worker,
} from '../../src/index.js';
import type { Everything } from '../fixtures/generated/prisma/client.js';
import { ROOT, startCli, type CliProcess } from '../helpers/cli.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';
import { startProxy, targetOf } from '../helpers/proxy.js';

class Ev {
  n!: number;
  key?: string;
  fail?: boolean;
  hang?: boolean;
  sleep?: boolean;
  bad?: boolean;
}

const calls = new Map<string, number>();
const bump = (k: string) => calls.set(k, (calls.get(k) ?? 0) + 1);
const callsOf = (k: string) => calls.get(k) ?? 0;
const logged: string[] = [];
const logger = {
  info() {},
  warn: (m: string) => void logged.push(m),
  error: (m: string, e?: unknown) => void logged.push(`${m} ${e instanceof Error ? e.message : String(e ?? '')}`),
};
let db: TestDatabase;
const effect = (ctx: NotificationContext, listener: string, n: string | number) => ctx.tx!.query('insert into effects (listener, n) values ($1, $2)', [listener, String(n)]);
const originals = new Map<string, string>();

class Typed {
  @PostInsertListen('Everything', { maxAttempts: 5, backoff: { baseMs: 300, maxMs: 300 } })
  async inserted(p: TriggerPayload<Everything>, ctx: NotificationContext) {
    const row = p.new!;
    bump(`typed:${row.text}`);
    // Another connection still sees the stored row (our claim has not committed): its exact text.
    const [stored] = await db.query<{ payload: string }>('select payload::text as payload from pubsub.notification where id = $1', [ctx.id]);
    if (ctx.attempt === 0) originals.set(row.text, stored!.payload);
    else assert.equal(stored!.payload, originals.get(row.text), 'the retried payload is byte for byte the one first stored');
    await effect(ctx, 'typed', row.text);
    if (row.text.startsWith('fail') && ctx.attempt === 0) {
      row.big = 1n; // in-place edits must not reach the retry
      row.bytes![0] = 99;
      throw new Error(`typed listener fails ${row.text}`);
    }
  }
}

class Swallowing {
  @Listen('swallow', { maxAttempts: 2, backoff: { baseMs: 50, maxMs: 50 } })
  async swallow(e: Ev, ctx: NotificationContext) {
    bump(`swallow:${e.n}`);
    try {
      await ctx.tx!.query('insert into uniq (k) values ($1)', [e.key]);
    } catch {
      // "insert, ignore duplicate key": leaves the transaction aborted
    }
    if (e.fail) throw new Error(`swallow ${e.n} fails`);
  }

  @Listen('recover')
  async recover(e: Ev, ctx: NotificationContext) {
    bump(`recover:${e.n}`);
    await ctx.tx!.query('savepoint mine');
    try {
      await ctx.tx!.query('insert into uniq (k) values ($1)', [e.key]);
      await ctx.tx!.query('release savepoint mine');
    } catch {
      await ctx.tx!.query('rollback to savepoint mine');
    }
    await effect(ctx, 'recover', e.n);
  }
}

class Ending {
  @Listen('terminated', { backoff: { baseMs: 50, maxMs: 100 } })
  async terminated(e: Ev, ctx: NotificationContext) {
    bump(`terminated:${e.n}`);
    await effect(ctx, 'terminated', e.n);
    if (e.fail && ctx.attempt === 0) {
      await db.query(`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and application_name = 'pubsub:worker' and state like 'idle in transaction%'`);
      await ctx.tx!.query('select 1');
    }
  }

  @Listen('idle', { maxAttempts: 2, backoff: { baseMs: 50, maxMs: 100 } })
  async idle(e: Ev, ctx: NotificationContext) {
    bump(`idle:${e.n}`);
    await effect(ctx, 'idle', e.n);
    if (e.hang) {
      // As a DBA's setting would: the server ends a session idle in its transaction for 300 ms.
      await ctx.tx!.query(`set local idle_in_transaction_session_timeout = '300ms'`);
      await new Promise((r) => setTimeout(r, 800));
    }
  }

  @Listen('deferred', { maxAttempts: 2, backoff: { baseMs: 50, maxMs: 100 } })
  async deferred(e: Ev, ctx: NotificationContext) {
    bump(`deferred:${e.n}`);
    await ctx.tx!.query('insert into parent (id) values ($1)', [e.n]);
    await ctx.tx!.query('insert into child (parent) values ($1)', [e.bad ? -e.n : e.n]); // checked at COMMIT
    await effect(ctx, 'deferred', e.n);
  }
}

class Timeouts {
  @Listen('ordered_slow', { ordered: true, orderKey: (e: Ev) => e.key!, timeoutMs: 300, backoff: { baseMs: 50, maxMs: 100 } })
  async ordered(e: Ev, ctx: NotificationContext) {
    bump(`ordered:${e.n}`);
    await effect(ctx, 'ordered', e.n);
    if (e.hang && ctx.attempt === 0) await new Promise(() => {}); // never settles
  }

  @Listen('sleepy', { timeoutMs: 300, backoff: { baseMs: 50, maxMs: 100 } })
  async sleepy(e: Ev, ctx: NotificationContext) {
    bump(`sleepy:${e.n}`);
    await effect(ctx, 'sleepy', e.n);
    if (e.sleep && ctx.attempt === 0) await ctx.tx!.query('select pg_sleep(30)'); // cancelled at the timeout
  }
}

/** What each first attempt of `signalled` saw of ctx.signal once its time limit had passed. */
const signalsSeen: string[] = [];

class Signals {
  @Listen('signalled', { timeoutMs: 300, backoff: { baseMs: 50, maxMs: 100 } })
  async signalled(e: Ev, ctx: NotificationContext) {
    bump(`signalled:${e.n}`);
    if (ctx.attempt > 0) return;
    if (e.key === 'early') {
      const signal = ctx.signal!; // read at once: aborted when the time limit passes
      await new Promise((resolve) => signal.addEventListener('abort', resolve));
      signalsSeen.push(`early ${signal.aborted} ${(signal.reason as Error).message}`);
    } else {
      await new Promise((resolve) => setTimeout(resolve, 700)); // past the limit, before reading it
      signalsSeen.push(`late ${ctx.signal!.aborted} ${(ctx.signal!.reason as Error).message}`);
    }
  }
}

class Stuck {
  @Listen('stuck', { maxAttempts: 1000, backoff: { baseMs: 20, maxMs: 40 } })
  async stuck(e: Ev, ctx: NotificationContext) {
    bump(`stuck:${e.n}`);
    // Every attempt loses its transaction: its backend ends itself (only its own: ending every idle claim
    // session also ended concurrent claims of 'flowing' now and then, whose rows then waited with these).
    await ctx.tx!.query('select pg_terminate_backend(pg_backend_pid())');
  }

  @Listen('flowing')
  flowing(e: Ev) {
    bump(`flowing:${e.n}`);
  }
}

class Forged {
  @Listen('forged')
  forged(e: Ev) {
    bump(`forged:${e.n}`);
  }
}

class Broadcasts {
  @Listen('nondurable', { durable: false })
  heard(e: Ev) {
    bump(`nondurable:${e.n}`);
  }
}

let worker: Worker;
let migrationsDir: string;
/** The registered channel name of a custom channel, or of the model's insert trigger. */
const channelOf = (name: string) => getRegistry().list().find((c) => c.name === name || c.listeners.some((l) => l.trigger?.model === name))!.name;
const effects = async (listener: string) =>
  (await db.query<{ n: string; count: number }>('select n, count(*)::int as count from effects where listener = $1 group by n order by n', [listener])).map((r) => `${r.n}:${r.count}`);
const pending = async (channel: string) => db.query('select id::text, attempts, dead_at, isolated, last_error from pubsub.notification where channel = $1 order by id', [channel]);
async function sendAll(channel: string, events: Ev[]): Promise<void> {
  const client = await db.pool.connect();
  try {
    await client.query('begin');
    for (const e of events) await notify(channel, e, { client });
    await client.query('commit');
  } finally {
    client.release();
  }
}

before(async () => {
  assert.ok(Typed && Swallowing && Ending && Timeouts && Signals && Stuck && Forged && Broadcasts);
  db = await createTestDatabase();
  migrationsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-failure-'));
  fs.cpSync(path.join(ROOT, 'test/fixtures/prisma/migrations'), migrationsDir, { recursive: true });
  await generateMigration({ schema: path.join(ROOT, 'test/fixtures/prisma/schema.prisma'), migrationsDir, name: 'pubsub' });
  await applyMigrations(db.url, migrationsDir);
  await db.query(`create table effects (listener text not null, n text not null);
    create table uniq (k text primary key); insert into uniq values ('taken');
    create table parent (id int primary key);
    create table child (parent int references parent deferrable initially deferred);
    insert into pubsub.subscription (channel, listener) values ('crash_jobs', 'CrashListeners.run');`);
  worker = await listen({ databaseUrl: db.url, pollIntervalMs: 100, roundTripMs: 2000, logger, channels: ['Everything', 'swallow', 'recover', 'terminated', 'idle', 'deferred', 'ordered_slow', 'sleepy', 'signalled', 'forged', 'nondurable'].map(channelOf) });
});

after(async () => {
  await worker?.close();
  await db?.drop();
});

test('a trigger listener that fails on a row with BigInt and Bytes fields: retried with the exact stored payload, neighbours run once, its own error logged', async () => {
  const texts = Array.from({ length: 20 }, (_, i) => (i === 7 ? 'fail-7' : `ok-${i}`));
  await db.query(
    `insert into everything (big, dec, at_time, bytes, mood, ratio, flag, text, tags, bigs)
     select 9223372036854775807, 1.5, now(), '\\x00fffe', 'SAD', 0.1, true, t, '{}', '{-9223372036854775808}' from unnest($1::text[]) t`,
    [texts],
  );
  await waitFor(async () => (await effects('typed')).length === 20 && (await db.query(`select 1 from pubsub.notification where channel <> 'crash_jobs'`)).length === 0, 'all 20 rows processed', 15_000);
  assert.deepEqual((await effects('typed')).sort(), texts.map((t) => `${t}:1`).sort());
  for (const t of texts) assert.equal(callsOf(`typed:${t}`), t === 'fail-7' ? 2 : 1, `${t} ran ${callsOf(`typed:${t}`)} times`);
  assert.ok(logged.some((l) => /Everything.*fail.*notification \d+ \(attempt 1\); kept for a retry.*typed listener fails fail-7/s.test(l) || /notification \d+ \(attempt 1\).*typed listener fails fail-7/s.test(l)), logged.join('\n'));
});

test('a listener that swallows a ctx.tx error fails its attempt, says why, and dead-letters without a hot loop; one that recovers with its own savepoint succeeds', async () => {
  await sendAll('swallow', [{ n: 1, key: 'taken' }, { n: 2, key: 'free-2' }, { n: 3, key: 'taken', fail: true }, { n: 4, key: 'free-4' }]);
  await sendAll('recover', [{ n: 1, key: 'taken' }, { n: 2, key: 'free-r2' }]);
  await waitFor(async () => (await pending('swallow')).filter((r) => r.dead_at).length === 2, 'both swallowing notifications dead-lettered', 10_000);
  await new Promise((r) => setTimeout(r, 300));
  const rows = await pending('swallow');
  assert.equal(rows.length, 2, 'the two clean ones are done');
  assert.match(rows[0].last_error, /left its transaction aborted/);
  assert.match(rows[1].last_error, /swallow 3 fails/);
  assert.equal(callsOf('swallow:1'), 2, 'two attempts, no more');
  assert.equal(callsOf('swallow:3'), 2);
  assert.equal(callsOf('swallow:2'), 1);
  assert.equal(callsOf('swallow:4'), 1);
  assert.deepEqual((await db.query(`select k from uniq order by k`)).map((r) => r.k), ['free-2', 'free-4', 'free-r2', 'taken']);
  await waitFor(async () => (await effects('recover')).length === 2, 'both recovering notifications');
  assert.deepEqual([callsOf('recover:1'), callsOf('recover:2')], [1, 1]);
  assert.ok(logged.some((l) => /Swallowing.swallow failed on channel "swallow", notification \d+ \(attempt 1\).*left its transaction aborted/s.test(l)), logged.join('\n'));
});

test('a killed backend mid-batch: the lost attempt is counted, the batch is isolated, each notification processed exactly once', async () => {
  await sendAll('terminated', [1, 2, 3, 4, 5].map((n) => ({ n, fail: n === 3 })));
  await waitFor(async () => (await effects('terminated')).length === 5 && (await pending('terminated')).length === 0, 'all five processed', 15_000);
  assert.deepEqual(await effects('terminated'), ['1:1', '2:1', '3:1', '4:1', '5:1']);
  for (const n of [1, 2, 4, 5]) assert.ok(callsOf(`terminated:${n}`) <= 2, `neighbour ${n} ran ${callsOf(`terminated:${n}`)} times`);
  assert.ok(logged.some((l) => /lost an attempt on channel "terminated", notification \d+ \(attempt 1\)/.test(l)), logged.join('\n'));
});

test('a listener outliving idle_in_transaction_session_timeout: counted, dead-lettered after maxAttempts, neighbours complete once', async () => {
  await sendAll('idle', [1, 2, 3, 4].map((n) => ({ n, hang: n === 2 })));
  await waitFor(async () => {
    const rows = await pending('idle');
    return rows.length === 1 && rows[0].dead_at;
  }, 'the slow one dead, the others done', 20_000);
  const [dead] = await pending('idle');
  assert.equal(dead.attempts, 2);
  assert.ok(dead.isolated);
  assert.match(dead.last_error, /transaction was lost/);
  assert.deepEqual(await effects('idle'), ['1:1', '3:1', '4:1']);
});

test('a COMMIT that fails (a deferred constraint) loses the batch: counted, the culprit isolated and dead-lettered, the others committed once', async () => {
  await sendAll('deferred', [1, 2, 3, 4].map((n) => ({ n, bad: n === 3 })));
  await waitFor(async () => {
    const rows = await pending('deferred');
    return rows.length === 1 && rows[0].dead_at;
  }, 'the culprit dead, the others done', 20_000);
  assert.deepEqual(await effects('deferred'), ['1:1', '2:1', '4:1']);
  for (const n of [1, 2, 4]) assert.ok(callsOf(`deferred:${n}`) <= 2);
});

test('a timeout in an ordered unit fails only that attempt: listeners that already succeeded in the claim are not re-run', async () => {
  await sendAll('ordered_slow', ['a', 'b', 'c', 'd', 'e'].map((key, i) => ({ n: i + 1, key, hang: key === 'c' })));
  await waitFor(async () => (await effects('ordered')).length === 5 && (await pending('ordered_slow')).length === 0, 'all five', 15_000);
  assert.deepEqual(await effects('ordered'), ['1:1', '2:1', '3:1', '4:1', '5:1']);
  assert.deepEqual([1, 2, 3, 4, 5].map((n) => callsOf(`ordered:${n}`)), [1, 1, 2, 1, 1]);
});

test('a timeout while the listener’s statement runs cancels that statement; the claim goes on and the others commit once', async () => {
  await sendAll('sleepy', [1, 2, 3].map((n) => ({ n, sleep: n === 2 })));
  await waitFor(async () => (await effects('sleepy')).length === 3 && (await pending('sleepy')).length === 0, 'all three', 15_000);
  assert.deepEqual([1, 2, 3].map((n) => callsOf(`sleepy:${n}`)), [1, 2, 1]);
  assert.deepEqual(await effects('sleepy'), ['1:1', '2:1', '3:1']);
  assert.ok(logged.some((l) => /Timeouts.sleepy on notification \d+ timed out after 300 ms/.test(l)), logged.join('\n'));
  assert.equal((await db.query(`select count(*)::int as n from pg_stat_activity where query like '%pg_sleep(30)%' and state = 'active' and pid <> pg_backend_pid()`))[0].n, 0);
});

test('ctx.signal is aborted at the time limit, whether the listener read it before or only after the limit passed', async () => {
  await sendAll('signalled', [{ n: 1, key: 'early' }, { n: 2, key: 'late' }]);
  await waitFor(async () => signalsSeen.length === 2 && (await pending('signalled')).length === 0, 'both attempts over and retried', 15_000);
  assert.deepEqual(signalsSeen.map((s) => s.replace(/ on notification \d+/, '').replace(/;.*/, '')).sort(), ['early true Signals.signalled timed out after 300 ms', 'late true Signals.signalled timed out after 300 ms']);
  assert.deepEqual([1, 2].map((n) => callsOf(`signalled:${n}`)), [2, 2]);
});

test('with --concurrency 4, a unit whose claims keep losing their transaction backs off alone: other channels flow at once', async () => {
  const w = await listen({ databaseUrl: db.url, channels: ['stuck', 'flowing'], concurrency: 4, pollIntervalMs: 100, roundTripMs: 2000, logger });
  try {
    await sendAll('stuck', [1, 2, 3].map((n) => ({ n })));
    await waitFor(() => callsOf('stuck:1') >= 2, 'the stuck notification to lose attempts');
    for (let n = 1; n <= 10; n++) {
      await sendAll('flowing', [{ n }]);
      await waitFor(() => callsOf(`flowing:${n}`) === 1, `flowing ${n} while the other unit keeps failing`, 3000);
    }
    const stuck = await pending('stuck');
    assert.ok(stuck.every((r) => r.attempts >= 1 && r.isolated && /transaction was lost/.test(r.last_error)), JSON.stringify(stuck));
  } finally {
    await w.close();
    await db.query(`delete from pubsub.notification where channel = 'stuck'`);
  }
});

test('on a durable channel a NOTIFY is only a wake-up: a forged payload never reaches the listener', async () => {
  await db.query(`select pg_notify('forged', '{"n": 666}')`);
  await sendAll('forged', [{ n: 1 }]);
  await waitFor(() => callsOf('forged:1') === 1, 'the stored one');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(callsOf('forged:666'), 0);
});

test('listen() resolves once LISTEN is in place: a non-durable message sent right after it arrives', async () => {
  const second = await listen({ databaseUrl: db.url, channels: ['nondurable'], logger });
  try {
    await notify('nondurable', { n: 42 }, { client: db.pool });
    await waitFor(() => callsOf('nondurable:42') >= 1, 'the message sent right after listen()');
  } finally {
    await second.close();
  }
});

test('listen() started while the server is unreachable waits for it, saying so, then works', async () => {
  const free = net.createServer();
  await new Promise<void>((r) => free.listen(0, '127.0.0.1', r));
  const port = (free.address() as net.AddressInfo).port;
  await new Promise((r) => free.close(r));
  const seen: string[] = [];
  const url = new URL(db.url);
  url.hostname = '127.0.0.1';
  url.port = String(port);
  const starting = listen({ databaseUrl: url.toString(), channels: ['forged'], logger: { info() {}, warn: (m) => void seen.push(m), error: (m) => void seen.push(m) } });
  await waitFor(() => seen.some((m) => /waiting for PostgreSQL/.test(m)), 'a message that it waits');
  const proxy = await startProxy(targetOf(db.url), port);
  try {
    const late = await starting;
    await sendAll('forged', [{ n: 2 }]);
    await waitFor(() => callsOf('forged:2') === 1, 'processing once the server is reachable');
    await late.close();
  } finally {
    await proxy.close();
  }
});

test('a claim connection that goes half-open is detected within the round-trip bound; its rows are processed once after the path closes', async () => {
  const proxy = await startProxy(targetOf(db.url));
  const seen: string[] = [];
  class HalfOpen {
    @Listen('halfopen', { timeoutMs: 500, backoff: { baseMs: 50, maxMs: 100 } })
    async run(e: Ev, ctx: NotificationContext) {
      bump(`halfopen:${e.n}`);
      await effect(ctx, 'halfopen', e.n);
      if (e.hang && ctx.attempt === 0) {
        proxy.freeze();
        frozenAt = Date.now();
        await ctx.tx!.query('select 1');
      }
    }
  }
  assert.ok(HalfOpen);
  let frozenAt = 0;
  await db.query(`insert into pubsub.subscription values ('halfopen', 'HalfOpen.run')`);
  const w = await listen({
    databaseUrl: proxy.via(db.url),
    listenUrl: db.url,
    channels: ['halfopen'],
    roundTripMs: 500,
    pollIntervalMs: 100,
    logger: { info() {}, warn: (m) => void seen.push(m), error: (m) => void seen.push(`${Date.now()} ${m}`) },
  });
  try {
    await sendAll('halfopen', [1, 2, 3].map((n) => ({ n, hang: n === 2 })));
    await waitFor(() => seen.some((m) => /claim of HalfOpen.run could not finish/.test(m)), 'the worker to notice', 10_000);
    const noticed = Number(seen.find((m) => /could not finish/.test(m))!.split(' ')[0]);
    const detection = noticed - frozenAt;
    assert.ok(detection < 3000, `detected after ${detection} ms`);
    proxy.cut(); // the path closes: the server ends the stuck session and frees its rows
    proxy.thaw();
    await waitFor(async () => (await effects('halfopen')).length === 3 && (await pending('halfopen')).length === 0, 'all three once the path is back', 20_000);
    assert.deepEqual(await effects('halfopen'), ['1:1', '2:1', '3:1']);
  } finally {
    await w.close();
    await proxy.close();
  }
});

test('a notification that kills its worker process is dead-lettered after maxAttempts; its batch neighbours complete once (real CLI, restarted after each crash)', async () => {
  const side = path.join(os.tmpdir(), `pubsub-side-${process.pid}-${Date.now()}`);
  fs.writeFileSync(side, '');
  const events = Array.from({ length: 30 }, (_, i) => ({ n: i + 1, ...(i + 1 === 7 && { crash: 'exit' }), ...(i + 1 === 15 && { crash: 'kill' }) }));
  const client = await db.pool.connect();
  await client.query('begin');
  for (const e of events) await notify('crash_jobs', e, { client, durable: true });
  await client.query('commit');
  client.release();
  // The fixture writes to a table named effects (n, attempt): give it its own schema.
  await db.query('create schema crash; create table crash.effects (n int not null, attempt int not null)');
  const url = new URL(db.url);
  url.searchParams.set('options', '-c search_path=crash,public');
  let starts = 0;
  let cli: CliProcess | undefined;
  const deadline = Date.now() + 60_000;
  try {
    for (;;) {
      const rows = await db.query(`select dead_at from pubsub.notification where channel = 'crash_jobs'`);
      if (rows.length === 2 && rows.every((r) => r.dead_at)) break;
      assert.ok(Date.now() < deadline, `not drained in 60 s after ${starts} starts: ${JSON.stringify(rows.length)} rows left`);
      if (!cli || cli.child.exitCode !== null || cli.child.signalCode !== null) {
        starts++;
        cli = startCli(['listen', '--require', path.join(ROOT, 'dist/test/fixtures/listeners/crash.js'), '--poll-interval', '100'], { DATABASE_URL: url.toString(), SIDE_EFFECTS: side });
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await cli?.stop();
  }
  const done = (await db.query('select n, count(*)::int as c from crash.effects group by n order by n')).map((r) => `${r.n}:${r.c}`);
  assert.deepEqual(done, events.filter((e) => !e.crash).map((e) => `${e.n}:1`));
  const dead = await db.query(`select attempts, isolated, last_error from pubsub.notification where channel = 'crash_jobs' order by id`);
  assert.deepEqual(dead.map((r) => r.attempts), [3, 3]);
  const sideEffects = fs.readFileSync(side, 'utf8').trim().split('\n').map(Number);
  for (const e of events.filter((x) => !x.crash)) {
    const runs = sideEffects.filter((n) => n === e.n).length;
    assert.ok(runs >= 1 && runs <= 3, `neighbour ${e.n} ran ${runs} times outside its transaction`);
  }
  assert.ok(starts <= 8, `${starts} worker starts`);
  fs.rmSync(side, { force: true });
});
