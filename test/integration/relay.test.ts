/**
 * Relays against the real brokers (RabbitMQ on 5672, NATS JetStream on 4222): rows leave only once the
 * broker confirmed them, with their id and context; ordering per key across two relay processes with a
 * failing key held back alone; a broker unreachable for a while; a relay SIGKILLed between publish and
 * delete (duplicates only with the same message id, none left in a JetStream stream). 0 lost in each.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { PubSubError, drainOnce, listen, relay, type Worker } from '../../src/index.js';
import { registerRelays, type RelayConfig } from '../../src/relay.js';
import { Forwarder, jetstream, rabbit, type JetStream, type Rabbit, type Received } from '../helpers/brokers.js';
import { startCli, type CliProcess } from '../helpers/cli.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

const tag = randomBytes(4).toString('hex');
const q = (name: string) => `pgpubsub-test-${tag}-${name}`;
const subject = (name: string) => `pgpubsub.test.${tag}.${name}`;
const streamName = (name: string) => `PGPUBSUB_TEST_${tag}_${name}`.toUpperCase();

// Relays declared in this process (subscribed by createTestDatabase) and, for the spawned ones, in a config file.
relay('r_basic_amqp', { to: 'amqp', routingKey: q('basic') });
relay('r_basic_nats', { to: 'nats', subject: subject('basic') });
// A long backoff: on a loaded machine a retry 200 ms later could fall inside the same drainOnce (two attempts).
relay('r_noexchange_amqp', { to: 'amqp', exchange: q('missing-exchange'), backoff: { baseMs: 60_000, maxMs: 60_000 } });
relay('r_nostream_nats', { to: 'nats', subject: subject('nostream'), backoff: { baseMs: 60_000, maxMs: 60_000 } });
relay('r_return_amqp', { to: 'amqp', routingKey: q('nobody'), backoff: { baseMs: 20, maxMs: 100 } });
const amqpDown = await Forwarder.create(5672);
const natsDown = await Forwarder.create(4222);
relay('r_down_amqp', { to: 'amqp', url: `amqp://guest:guest@127.0.0.1:${amqpDown.port}`, routingKey: q('down'), backoff: { baseMs: 50, maxMs: 400 } });
relay('r_down_nats', { to: 'nats', url: `nats://127.0.0.1:${natsDown.port}`, subject: subject('down'), backoff: { baseMs: 50, maxMs: 400 }, timeoutMs: 2000 });
const spawned: RelayConfig[] = [
  // Ordered per key; key "bad" routes where nothing takes it (a missing queue / a subject no stream captures) until the test makes it.
  { channel: 'r_order_amqp', to: 'amqp', routingKey: '{dest}', ordered: true, orderKey: 'key', batchSize: 50, backoff: { baseMs: 20, maxMs: 200 } },
  { channel: 'r_order_nats', to: 'nats', subject: '{dest}', ordered: true, orderKey: 'key', batchSize: 50, backoff: { baseMs: 20, maxMs: 200 }, timeoutMs: 2000 },
  { channel: 'r_kill_amqp', to: 'amqp', routingKey: q('kill'), batchSize: 100 },
  { channel: 'r_kill_nats', to: 'nats', subject: subject('kill'), batchSize: 100 },
];
registerRelays(spawned);
const configDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-relay-'));
fs.writeFileSync(path.join(configDir, 'pubsub.config.json'), JSON.stringify({ relay: spawned }));

let db: TestDatabase;
let mq: Rabbit;
let js: JetStream;
const running: CliProcess[] = [];
const workers: Worker[] = [];

before(async () => {
  db = await createTestDatabase({ library: true, subscribe: true });
  mq = await rabbit();
  js = await jetstream();
});

after(async () => {
  for (const p of running) await p.stop('SIGKILL');
  for (const w of workers) await w.close();
  await amqpDown.down();
  await natsDown.down();
  await mq.close();
  await js.close();
  await db.drop();
  fs.rmSync(configDir, { recursive: true, force: true });
});

const env = () => ({ DATABASE_URL: db.url, PUBSUB_AMQP_URL: 'amqp://guest:guest@127.0.0.1:5672', PUBSUB_NATS_URL: 'nats://127.0.0.1:4222' });
const relayCli = (channel: string) => {
  const p = startCli(['relay', '--channel', channel, '--poll-interval', '200'], env(), configDir);
  running.push(p);
  return p;
};
/** Stores `payloads` on `channel` in one transaction, with an optional context. */
const store = (channel: string, payloads: unknown[], context: unknown = null) =>
  db.query(`select pubsub.notify($1, p, $3::jsonb, true, false) from jsonb_array_elements($2::jsonb) p`, [channel, JSON.stringify(payloads), context === null ? null : JSON.stringify(context)]);
const stored = async (listener: string) => (await db.query<{ n: number }>(`select count(*)::int as n from pubsub.notification where listener = $1`, [listener]))[0]!.n;
const empty = (listener: string) => waitFor(async () => (await stored(listener)) === 0, `${listener}'s rows to be relayed`, 30_000);
const ids = (listener: string) => db.query<{ id: string }>(`select n.id::text as id from pubsub.notification n where n.listener = $1 order by n.id`, [listener]).then((r) => r.map((x) => x.id));
const relayOnly = async (channel: string) => {
  const w = await listen({ databaseUrl: db.url, channels: [channel], relays: 'only', pollIntervalMs: 50 });
  workers.push(w);
  return w;
};

describe('a relay publishes each row with its id and context, and deletes it once confirmed', () => {
  for (const to of ['amqp', 'nats'] as const) {
    test(`to ${to}`, async () => {
      const channel = `r_basic_${to}`;
      const listener = `relay.${to}.${channel}`;
      if (to === 'amqp') await mq.queue(q('basic'));
      else await js.stream(streamName('basic'), [subject('basic')]);
      const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
      await store(channel, [{ n: 1, text: 'héllo' }], { tenant: 'acme', $trace: { traceparent } });
      await store(channel, Array.from({ length: 499 }, (_, i) => ({ n: i + 2 })));
      const expected = await ids(listener);
      assert.equal(expected.length, 500);
      const summary = await drainOnce({ databaseUrl: db.url, channels: [channel], relays: 'only' });
      assert.equal(summary.processed, 500);
      assert.equal(await stored(listener), 0);
      const got = to === 'amqp' ? await mq.drain(q('basic')) : await js.read(streamName('basic'));
      assert.equal(got.length, 500);
      assert.deepEqual(got.map((m) => m.id), expected.map((id) => `${listener}:${id}`), 'one message per row, its id the listener and notification id, in write order');
      assert.deepEqual(got.map((m) => m.body.n), Array.from({ length: 500 }, (_, i) => i + 1));
      const first = got[0]!;
      assert.deepEqual(first.body, { n: 1, text: 'héllo' });
      assert.equal(first.contentType, 'application/json');
      assert.equal(first.channel, channel);
      assert.deepEqual(JSON.parse(first.headers['pubsub-context']!), { tenant: 'acme' }, 'the context, without the trace key');
      assert.equal(first.headers.traceparent, traceparent);
      assert.equal(got[1]!.headers['pubsub-context'], undefined);
    });
  }

  test('a missing exchange or stream: the attempt fails saying why, the row stays for a retry', async () => {
    await store('r_noexchange_amqp', [{ n: 1 }]);
    await store('r_nostream_nats', [{ n: 1 }]);
    for (const [channel, why] of [['r_noexchange_amqp', /NOT_FOUND - no exchange/], ['r_nostream_nats', /no stream captures this subject/]] as const) {
      const summary = await drainOnce({ databaseUrl: db.url, channels: [channel], relays: 'only' });
      assert.deepEqual([summary.processed, summary.failed, summary.waiting], [0, 1, 1]);
      const [row] = await db.query(`select attempts, last_error from pubsub.notification where channel = $1`, [channel]);
      assert.equal(row.attempts, 1);
      assert.match(row.last_error, why);
    }
  });

  test('a message RabbitMQ returns (no queue bound, mandatory) is not confirmed: the row stays, its attempts counted', async () => {
    const listener = 'relay.amqp.r_return_amqp';
    await store('r_return_amqp', [{ n: 1 }, { n: 2 }]);
    await relayOnly('r_return_amqp');
    await waitFor(async () => (await db.query(`select 1 from pubsub.notification where listener = $1 and attempts >= 3`, [listener])).length === 2, 'three failed attempts each');
    const rows = await db.query(`select last_error from pubsub.notification where listener = $1`, [listener]);
    assert.equal(rows.length, 2);
    assert.match(rows[0].last_error, /returned message .* no queue is bound/);
    await mq.queue(q('nobody')); // now something takes them
    await empty(listener);
    await workers.pop()!.close();
    assert.deepEqual((await mq.drain(q('nobody'))).map((m) => m.body.n).sort(), [1, 2]);
  });
});

describe('ordered relays: per key in commit order across two relay processes; a failing key holds back only itself', () => {
  for (const to of ['amqp', 'nats'] as const) {
    test(`to ${to}`, async () => {
      const channel = `r_order_${to}`;
      const listener = `relay.${to}.${channel}`;
      const good = to === 'amqp' ? q('order') : subject('order');
      const bad = to === 'amqp' ? q('order-bad') : subject('order-bad');
      if (to === 'amqp') await mq.queue(good);
      else await js.stream(streamName('order'), [good]);
      const keys = ['a', 'b', 'c', 'd', 'e'];
      const seq = new Map<string, number>();
      const next = (key: string, dest: string) => {
        seq.set(key, (seq.get(key) ?? 0) + 1);
        return { key, seq: seq.get(key), dest };
      };
      const batch = () => [...keys.map((k) => next(k, good)), next('bad', bad), ...keys.map((k) => next(k, good))];
      for (let i = 0; i < 20; i++) await store(channel, batch()); // written before the relays start
      const relays = [relayCli(channel), relayCli(channel)];
      await Promise.all(relays.map((p) => p.waitForOutput(/listening on/)));
      for (let i = 0; i < 40; i++) await store(channel, batch()); // and while they run
      const total = 60 * (keys.length * 2 + 1);
      const badTotal = 60;
      await waitFor(async () => (await stored(listener)) === badTotal, 'every good key relayed', 60_000);
      const first = to === 'amqp' ? await mq.drain(good) : await js.read(streamName('order'));
      assert.equal(first.length, total - badTotal, 'every row of the good keys, once');
      for (const key of keys) {
        const seqs = first.filter((m) => m.body.key === key).map((m) => m.body.seq);
        assert.deepEqual(seqs, Array.from({ length: 120 }, (_, i) => i + 1), `key ${key} in commit order`);
      }
      const held = await db.query<{ attempts: number; seq: number }>(`select attempts, (payload->>'seq')::int as seq from pubsub.notification where listener = $1 order by id`, [listener]);
      assert.equal(held.length, badTotal, 'the failing key lost nothing');
      assert.ok(held[0]!.attempts >= 1, 'its head was tried');
      assert.ok(held.slice(1).every((r) => r.attempts === 0), 'the rest of the key waits behind its head');
      // The destination appears: the held key goes out, in order.
      if (to === 'amqp') await mq.queue(bad);
      else await js.stream(streamName('orderbad'), [bad]);
      await empty(listener);
      const late = to === 'amqp' ? await mq.drain(bad) : await js.read(streamName('orderbad'));
      assert.deepEqual(late.map((m) => m.body.seq), Array.from({ length: badTotal }, (_, i) => i + 1));
      for (const p of relays) assert.equal(await p.stop(), 0);
    });
  }
});

describe('a broker unreachable for a while: rows stay stored with their attempts counted, and go out once it is back', () => {
  for (const to of ['amqp', 'nats'] as const) {
    test(`to ${to}`, async () => {
      const channel = `r_down_${to}`;
      const listener = `relay.${to}.${channel}`;
      const forwarder = to === 'amqp' ? amqpDown : natsDown;
      if (to === 'amqp') await mq.queue(q('down'));
      else await js.stream(streamName('down'), [subject('down')]);
      await store(channel, Array.from({ length: 300 }, (_, i) => ({ n: i })));
      await relayOnly(channel);
      await waitFor(async () => (await db.query(`select 1 from pubsub.notification where listener = $1 and attempts >= 2`, [listener])).length === 300, 'two failed attempts on every row');
      const [row] = await db.query(`select last_error from pubsub.notification where listener = $1 limit 1`, [listener]);
      assert.match(row.last_error, /unreachable/);
      await forwarder.up();
      await empty(listener);
      await store(channel, [{ n: 300 }]);
      await empty(listener);
      // The connection is cut again mid-run and comes back: still nothing lost.
      await forwarder.down();
      await store(channel, Array.from({ length: 100 }, (_, i) => ({ n: 301 + i })));
      await waitFor(async () => (await db.query(`select 1 from pubsub.notification where listener = $1 and attempts >= 1`, [listener])).length > 0, 'a failed attempt while down');
      await forwarder.up();
      await empty(listener);
      const got = to === 'amqp' ? await mq.drain(q('down')) : await js.read(streamName('down'));
      const seen = new Set(got.map((m) => m.body.n));
      assert.equal(seen.size, 401, '0 lost');
      assert.equal(got.length, new Set(got.map((m) => m.id)).size, 'nothing was confirmed twice');
      await workers.pop()!.close();
    });
  }
});

describe('a relay SIGKILLed between publish and delete: the rows stay, go out again with the same message ids', () => {
  for (const to of ['amqp', 'nats'] as const) {
    test(`to ${to}`, async () => {
      const channel = `r_kill_${to}`;
      const listener = `relay.${to}.${channel}`;
      if (to === 'amqp') await mq.queue(q('kill'));
      else await js.stream(streamName('kill'), [subject('kill')]);
      const count = () => (to === 'amqp' ? mq.count(q('kill')) : js.count(streamName('kill')));
      // The claim's commit deletes its record in pubsub.claim: hold that delete on a lock we own, so the relay
      // stops after the broker confirmed its first burst and before the rows are deleted.
      const lock = new pg.Client(db.url);
      await lock.connect();
      await lock.query(`select pg_advisory_lock(4242)`);
      await db.query(`create or replace function relay_test_hold() returns trigger language plpgsql as $$ begin perform pg_advisory_lock(4242); perform pg_advisory_unlock(4242); return old; end $$`);
      await db.query(`create trigger hold before delete on pubsub.claim for each row execute function relay_test_hold()`);
      try {
        await store(channel, Array.from({ length: 300 }, (_, i) => ({ n: i })));
        const first = relayCli(channel);
        await waitFor(async () => (await count()) >= 100, 'the first burst at the broker', 30_000);
        assert.equal(await stored(listener), 300, 'nothing deleted yet: the claim has not committed');
        first.child.kill('SIGKILL');
        await first.exited;
        // The killed relay's session waits on our lock: end it as the server would on its own (a crash, a timeout).
        await db.query(`select pg_terminate_backend(pid) from pg_stat_activity where datname = current_database() and application_name = 'pubsub:worker'`);
      } finally {
        await db.query(`drop trigger if exists hold on pubsub.claim`);
        await lock.end();
      }
      assert.equal(await stored(listener), 300, 'the rows of the killed relay are all still stored');
      const second = relayCli(channel);
      await empty(listener);
      assert.equal(await second.stop(), 0);
      const got = to === 'amqp' ? await mq.drain(q('kill')) : await js.read(streamName('kill'));
      const unique = new Map(got.map((m) => [m.id, m.body.n]));
      assert.equal(unique.size, 300, '0 lost');
      for (const m of got) assert.equal(unique.get(m.id), m.body.n, 'a duplicate carries the message id of its first copy');
      if (to === 'nats') assert.equal(got.length, 300, 'JetStream dropped the duplicates (Nats-Msg-Id within its window)');
      // RabbitMQ holds twice what was published before the kill: the first burst, and whatever other bursts in flight side by side had sent; each copy with its message_id.
      else assert.ok(got.length >= 400 && got.length <= 600, `${got.length} messages: the first burst (at least) twice`);
    });
  }
});

test('bad relay options fail at declaration, naming the fix', () => {
  const code = (fn: () => void, pattern: RegExp) => assert.throws(fn, (e: unknown) => e instanceof PubSubError && e.code === 'pubsub.config' && pattern.test(e.message));
  code(() => relay('x_bad', { to: 'kafka' as never }), /"to" must be 'amqp'/);
  code(() => relay('x_bad', { to: 'nats', exchange: 'e' }), /exchange is an AMQP option/);
  code(() => relay('x_bad', { to: 'amqp', orderKey: 'k' }), /orderKey needs ordered: true/);
  code(() => relay('x_bad', { to: 'amqp', batchSize: 0 }), /batchSize must be a whole number/);
  code(() => relay('x_bad', { to: 'amqp', rounting: 'x' } as never), /unknown option "rounting"/);
  code(() => registerRelays([{ channel: 'x_bad', to: 'amqp', routingKey: (() => 'k') as never }]), /must be a string/);
});
