/**
 * Bridges against the real brokers (RabbitMQ on 5672, NATS JetStream on 4222) and PostgreSQL: broker
 * messages become durable notifications processed once by a typed listener; the database unreachable
 * (nothing acked, nothing lost); a bridge SIGKILLed after its commit with its acks lost (the
 * redelivered messages are not stored twice); poison messages rejected without blocking the next
 * ones; the broker connection cut (reconnect, nothing lost).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { AckPolicy, headers as natsHeaders, nanos, type JetStreamManager } from 'nats';
import { Listen, PubSubError, bridge, listen, startBridges, type Bridges, type NotificationContext, type Worker } from '../../src/index.js';
import { registerBridges, type BridgeConfig } from '../../src/bridge.js';
import { loadFileConfig } from '../../src/config.js';
import { bridgeStoreSql } from '../../src/sql.js';
import { AMQP_URL, Forwarder, NATS_URL, jetstream, rabbit, type JetStream, type Rabbit } from '../helpers/brokers.js';
import { ROOT, startCli, type CliProcess } from '../helpers/cli.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

const tag = randomBytes(4).toString('hex');
const q = (name: string) => `pgpubsub-bridge-${tag}-${name}`;
const streamName = (name: string) => `PGPUBSUB_BRIDGE_${tag}_${name}`.toUpperCase();
const subject = (name: string) => `pgpubsub.bridge.${tag}.${name}`;

class OrderIn {
  id!: number;
  note?: string;
}

/** What the typed listeners saw: channel → payloads with their contexts. */
const seen = new Map<string, Array<{ order: OrderIn; context: any }>>();
class BridgedOrders {
  @Listen('b_happy_amqp')
  amqp(order: OrderIn, ctx: NotificationContext) {
    BridgedOrders.record(order, ctx);
  }

  @Listen('b_happy_nats')
  nats(order: OrderIn, ctx: NotificationContext) {
    BridgedOrders.record(order, ctx);
  }

  static record(order: OrderIn, ctx: NotificationContext) {
    assert.ok(order instanceof OrderIn, 'the payload is an instance of the listener parameter class');
    const list = seen.get(ctx.channel) ?? [];
    list.push({ order, context: ctx.context });
    seen.set(ctx.channel, list);
  }
}
void BridgedOrders;

bridge({ from: 'amqp', queue: q('happy'), channel: 'b_happy_amqp', url: AMQP_URL });
bridge({ from: 'nats', stream: streamName('happy'), consumer: 'pgpubsub', channel: 'b_happy_nats', url: NATS_URL });

const amqpCut = await Forwarder.create(5672);
const natsCut = await Forwarder.create(4222);
// Run by spawned `pubsub bridge` processes, from a config file.
const spawned: BridgeConfig[] = [
  { from: 'amqp', queue: q('dbdown'), channel: 'b_dbdown' },
  { from: 'amqp', queue: q('kill'), channel: 'b_kill_amqp', url: `amqp://guest:guest@127.0.0.1:${amqpCut.port}`, name: 'kill-amqp' },
  { from: 'nats', stream: streamName('kill'), consumer: 'pgpubsub', channel: 'b_kill_nats', url: `nats://127.0.0.1:${natsCut.port}`, name: 'kill-nats' },
  { from: 'amqp', queue: q('poison'), channel: 'b_poison_amqp', batchSize: 10 },
  { from: 'nats', stream: streamName('poison'), consumer: 'pgpubsub', channel: 'b_poison_nats', batchSize: 10 },
  { from: 'amqp', queue: q('cut'), channel: 'b_cut_amqp', url: `amqp://guest:guest@127.0.0.1:${amqpCut.port}`, name: 'cut-amqp', batchSize: 50 },
  { from: 'nats', stream: streamName('cut'), consumer: 'pgpubsub', channel: 'b_cut_nats', url: `nats://127.0.0.1:${natsCut.port}`, name: 'cut-nats', batchSize: 50 },
];
const configDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-bridge-'));
fs.writeFileSync(path.join(configDir, 'pubsub.config.json'), JSON.stringify({ bridge: spawned }));

let db: TestDatabase;
/** A forwarder to the test database's server (embedded, or DATABASE_URL's), to take it away. */
let pgDown: Forwarder;
let mq: Rabbit;
let js: JetStream;
let jsm: JetStreamManager;
const queues: string[] = [];
const running: CliProcess[] = [];

before(async () => {
  db = await createTestDatabase({ library: true, subscribe: true });
  pgDown = await Forwarder.create(Number(new URL(db.url).port || 5432));
  mq = await rabbit();
  js = await jetstream();
  jsm = await js.nc.jetstreamManager();
  await amqpCut.up();
  await natsCut.up();
});

after(async () => {
  for (const p of running) await p.stop('SIGKILL');
  for (const f of [pgDown, amqpCut, natsCut]) await f.down();
  for (const name of queues) await mq.channel.deleteQueue(name).catch(() => {});
  await mq.close();
  await js.close();
  await db.drop();
  fs.rmSync(configDir, { recursive: true, force: true });
});

const env = (databaseUrl = db.url) => ({ DATABASE_URL: databaseUrl, PUBSUB_AMQP_URL: 'amqp://guest:guest@127.0.0.1:5672', PUBSUB_NATS_URL: 'nats://127.0.0.1:4222' });
const bridgeCli = (name: string, databaseUrl?: string) => {
  const p = startCli(['bridge', '--name', name], env(databaseUrl), configDir);
  running.push(p);
  return p;
};

/** A durable queue (with a dead-letter queue `<name>-dead` behind it). */
async function queue(name: string): Promise<void> {
  await mq.channel.assertQueue(`${name}-dead`, { durable: true });
  await mq.channel.assertQueue(name, { durable: true, arguments: { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': `${name}-dead` } });
  queues.push(name, `${name}-dead`);
}
/** A stream and its durable pull consumer "pgpubsub" (explicit acks; short ack wait; at most `pending` unacked). */
async function stream(name: string, pending = 1000): Promise<void> {
  await js.stream(name, [subject(name.toLowerCase())]);
  await jsm.consumers.add(name, { durable_name: 'pgpubsub', ack_policy: AckPolicy.Explicit, ack_wait: nanos(2000), max_ack_pending: pending });
}
/** Publishes confirmed to a queue: bodies as given (objects as JSON), message ids `<prefix>-<i>`. */
async function toQueue(name: string, bodies: unknown[], prefix = name): Promise<void> {
  const ch = await mq.connection.createConfirmChannel();
  bodies.forEach((b, i) => ch.sendToQueue(name, Buffer.isBuffer(b) ? b : Buffer.from(typeof b === 'string' ? b : JSON.stringify(b)), { messageId: `${prefix}-${i}`, persistent: true, headers: { source: 'test', n: i } }));
  await ch.waitForConfirms();
  await ch.close();
}
/** Publishes to a stream, acked: bodies as given, Nats-Msg-Id `<prefix>-<i>`. */
async function toStream(name: string, bodies: unknown[], prefix = name): Promise<void> {
  const client = js.nc.jetstream();
  for (let i = 0; i < bodies.length; i += 100) {
    await Promise.all(
      bodies.slice(i, i + 100).map((b, j) => {
        const h = natsHeaders();
        h.set('source', 'test');
        return client.publish(subject(name.toLowerCase()), Buffer.isBuffer(b) ? b : Buffer.from(typeof b === 'string' ? b : JSON.stringify(b)), { msgID: `${prefix}-${i + j}`, headers: h });
      }),
    );
  }
}
const storedOn = (channel: string) => db.query<{ id: number; message_id: string }>(`select (payload->>'id')::int as id, context->'bridge'->>'messageId' as message_id from pubsub.notification where channel = $1 order by id`, [channel]);
const countOn = async (channel: string) => (await db.query<{ n: number }>(`select count(*)::int as n from pubsub.notification where channel = $1`, [channel]))[0]!.n;
const ready = async (name: string) => (await mq.channel.checkQueue(name)).messageCount;
const orders = (n: number, from = 0) => Array.from({ length: n }, (_, i) => ({ id: from + i }));
/** Each id from 0 to n-1 exactly once. */
function exactlyOnce(rows: Array<{ id: number }>, n: number, what: string): void {
  assert.equal(rows.length, n, `${what}: ${rows.length} notifications, expected ${n}`);
  assert.deepEqual([...new Set(rows.map((r) => r.id))].sort((a, b) => a - b), Array.from({ length: n }, (_, i) => i), `${what}: each message once`);
}

describe('1,000 broker messages become 1,000 notifications, each processed once by a typed listener', () => {
  for (const from of ['amqp', 'nats'] as const) {
    test(`from ${from}`, async () => {
      const channel = `b_happy_${from}`;
      if (from === 'amqp') await queue(q('happy'));
      else await stream(streamName('happy'));
      const relayed = { tenant: 'acme' };
      if (from === 'amqp') {
        const ch = await mq.connection.createConfirmChannel();
        for (let i = 0; i < 1000; i++) ch.sendToQueue(q('happy'), Buffer.from(JSON.stringify({ id: i, note: 'é' })), { messageId: `m-${i}`, headers: { 'pubsub-context': JSON.stringify(relayed), n: i } });
        await ch.waitForConfirms();
        await ch.close();
      } else {
        const client = js.nc.jetstream();
        for (let i = 0; i < 1000; i += 100) {
          await Promise.all(orders(100, i).map((o) => {
            const h = natsHeaders();
            h.set('pubsub-context', JSON.stringify(relayed));
            return client.publish(subject(streamName('happy').toLowerCase()), Buffer.from(JSON.stringify({ ...o, note: 'é' })), { msgID: `m-${o.id}`, headers: h });
          }));
        }
      }
      const bridges: Bridges = await startBridges({ databaseUrl: db.url, names: [from === 'amqp' ? `bridge.amqp.${q('happy')}` : `bridge.nats.${streamName('happy')}.pgpubsub`] });
      const worker: Worker = await listen({ databaseUrl: db.url, channels: [channel], pollIntervalMs: 100 });
      try {
        await waitFor(() => (seen.get(channel)?.length ?? 0) >= 1000, '1000 processed', 60_000);
        await waitFor(async () => (await countOn(channel)) === 0, 'every notification processed and deleted');
        await new Promise((r) => setTimeout(r, 300)); // anything processed twice would show now
      } finally {
        await bridges.close();
        await worker.close();
      }
      const got = seen.get(channel)!;
      exactlyOnce(got.map((g) => g.order), 1000, from);
      const first = got.find((g) => g.order.id === 0)!;
      assert.equal(first.order.note, 'é');
      assert.equal(first.context.tenant, 'acme', "a relayed message's pubsub-context header is the notification's context");
      assert.equal(first.context.bridge.messageId, 'm-0');
      assert.equal(first.context.bridge.name, from === 'amqp' ? `bridge.amqp.${q('happy')}` : `bridge.nats.${streamName('happy')}.pgpubsub`);
      if (from === 'amqp') {
        assert.equal(first.context.bridge.headers.n, '0');
        assert.equal(first.context.bridge.queue, q('happy'));
        assert.equal(await ready(q('happy')), 0, 'every message acked');
      } else {
        assert.equal(first.context.bridge.stream, streamName('happy'));
        assert.equal(typeof first.context.bridge.seq, 'number');
        const info = await jsm.consumers.info(streamName('happy'), 'pgpubsub');
        assert.deepEqual([info.num_pending, info.num_ack_pending], [0, 0], 'every message acked');
      }
    });
  }
});

test('the database unreachable: nothing is acked, the messages wait in the broker, and are stored once it is back', async () => {
  await queue(q('dbdown'));
  await pgDown.up();
  const through = new URL(db.url);
  through.port = String(pgDown.port);
  const p = bridgeCli(`bridge.amqp.${q('dbdown')}`, through.toString());
  await p.waitForOutput(/running 1 bridge/);
  await pgDown.down();
  await toQueue(q('dbdown'), orders(250));
  await p.waitForOutput(/cannot store \d+ message\(s\) .*they stay unacked in the broker/, 30_000);
  assert.equal(await countOn('b_dbdown'), 0);
  assert.equal(await ready(q('dbdown')), 150, 'the prefetch (100) held unacked, the rest ready: nothing acked');
  await pgDown.up();
  await waitFor(async () => (await countOn('b_dbdown')) === 250, 'all 250 stored', 30_000);
  await waitFor(async () => (await ready(q('dbdown'))) === 0, 'all acked');
  assert.equal(await p.stop(), 0);
  exactlyOnce(await storedOn('b_dbdown'), 250, 'database down');
  assert.match(p.output(), /stored again after \d+ failed attempt/);
});

describe('a bridge SIGKILLed after its commit, its acks lost: the redelivered messages are not stored twice', () => {
  for (const from of ['amqp', 'nats'] as const) {
    test(`from ${from}`, async () => {
      const channel = `b_kill_${from}`;
      const forwarder = from === 'amqp' ? amqpCut : natsCut;
      if (from === 'amqp') await queue(q('kill'));
      else await stream(streamName('kill'), 100);
      const first = bridgeCli(`kill-${from}`);
      await first.waitForOutput(/running 1 bridge/);
      if (from === 'amqp') await waitFor(async () => (await mq.channel.checkQueue(q('kill'))).consumerCount === 1, 'the bridge consuming');
      // From now on its acks never reach the broker (RabbitMQ: everything it sends; NATS: its acks), as if it died right after each commit.
      forwarder.dropFromClient = from === 'amqp' ? () => true : (chunk) => chunk.includes('$JS.ACK');
      if (from === 'amqp') await toQueue(q('kill'), orders(300));
      else await toStream(streamName('kill'), orders(300));
      await waitFor(async () => (await countOn(channel)) >= 100, 'the first batch stored', 30_000);
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(await countOn(channel), 100, 'no more than the prefetch (RabbitMQ) / max_ack_pending (JetStream) without acks');
      first.child.kill('SIGKILL');
      await first.exited;
      forwarder.dropFromClient = undefined;
      const second = bridgeCli(`kill-${from}`);
      await waitFor(async () => (await countOn(channel)) >= 300, 'the rest stored', 30_000);
      if (from === 'amqp') await waitFor(async () => (await ready(q('kill'))) === 0 && (await mq.channel.checkQueue(q('kill'))).consumerCount === 1, 'all acked');
      else await waitFor(async () => ((i) => i.num_pending + i.num_ack_pending === 0)(await jsm.consumers.info(streamName('kill'), 'pgpubsub')), 'all acked', 15_000);
      await second.waitForOutput(/redelivered message\(s\) already stored/);
      await new Promise((r) => setTimeout(r, 500));
      assert.equal(await second.stop(), 0);
      exactlyOnce(await storedOn(channel), 300, `killed ${from} bridge`);
      const seenIds = await db.query<{ n: number }>(`select count(*)::int as n from pubsub.bridge_seen where bridge = $1`, [`kill-${from}`]);
      assert.equal(seenIds[0]!.n, 300, 'one recorded id per message');
    });
  }
});

describe('poison messages are rejected to the dead letters without blocking the next ones', () => {
  for (const from of ['amqp', 'nats'] as const) {
    test(`from ${from}`, async () => {
      const channel = `b_poison_${from}`;
      if (from === 'amqp') await queue(q('poison'));
      else await stream(streamName('poison'));
      const bodies = [{ id: 0 }, 'not json {', { id: 1 }, Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), '{"id": 99, "bad": "\\u0000"}', { id: 2 }, ...orders(20, 3)];
      if (from === 'amqp') await toQueue(q('poison'), bodies);
      else await toStream(streamName('poison'), bodies);
      const p = bridgeCli(from === 'amqp' ? `bridge.amqp.${q('poison')}` : `bridge.nats.${streamName('poison')}.pgpubsub`);
      await waitFor(async () => (await countOn(channel)) === 23, 'every good message stored', 30_000);
      const rows = await storedOn(channel);
      assert.deepEqual(rows.map((r) => r.id), Array.from({ length: 23 }, (_, i) => i), 'the good ones, in broker order');
      if (from === 'amqp') {
        await waitFor(async () => (await ready(`${q('poison')}-dead`)) === 3, 'the three poison messages in the dead-letter queue');
        assert.equal(await ready(q('poison')), 0);
      } else {
        await waitFor(async () => ((i) => i.num_pending + i.num_ack_pending === 0)(await jsm.consumers.info(streamName('poison'), 'pgpubsub')), 'all settled (acked or terminated)');
      }
      assert.equal(await p.stop(), 0);
      const out = p.output();
      assert.match(out, /-1 rejected to the broker's dead letters, not stored: its body is not JSON/);
      assert.match(out, /-3 rejected .*not UTF-8/);
      assert.match(out, /-4 rejected .*PostgreSQL refused it: unsupported Unicode escape sequence/);
    });
  }
});

describe('the broker connection cut mid-stream: the bridge reconnects, nothing lost or stored twice', () => {
  for (const from of ['amqp', 'nats'] as const) {
    test(`from ${from}`, async () => {
      const channel = `b_cut_${from}`;
      const forwarder = from === 'amqp' ? amqpCut : natsCut;
      if (from === 'amqp') await queue(q('cut'));
      else await stream(streamName('cut'));
      const p = bridgeCli(`cut-${from}`);
      await p.waitForOutput(/running 1 bridge/);
      const publish = (n: number, start: number) => (from === 'amqp' ? toQueue(q('cut'), orders(n, start), `c${start}`) : toStream(streamName('cut'), orders(n, start), `c${start}`));
      await publish(300, 0);
      await waitFor(async () => (await countOn(channel)) > 0, 'some stored');
      await forwarder.down();
      await publish(300, 300);
      await new Promise((r) => setTimeout(r, 1000));
      await forwarder.up();
      await waitFor(async () => (await countOn(channel)) >= 600, 'all 600 stored', 60_000);
      await new Promise((r) => setTimeout(r, from === 'nats' ? 2500 : 500)); // past JetStream's ack wait: a redelivery would show now
      assert.equal(await p.stop(), 0);
      exactlyOnce(await storedOn(channel), 600, `${from} cut`);
      assert.match(p.output(), /connection lost|connected to .* again|reconnected/);
    });
  }
});

test('pubsub listen runs the bridges of its config file beside the listeners', async () => {
  await queue(q('listen'));
  await db.query('create table seen (n int, pid int)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-bridge-listen-'));
  fs.writeFileSync(path.join(dir, 'pubsub.config.json'), JSON.stringify({ require: [path.join(ROOT, 'dist/test/fixtures/listeners/jobs.js')], bridge: [{ from: 'amqp', queue: q('listen'), channel: 'jobs' }] }));
  const p = startCli(['listen', '--poll-interval', '200'], env(), dir);
  running.push(p);
  try {
    await p.waitForOutput(/listening on/);
    await toQueue(q('listen'), Array.from({ length: 50 }, (_, n) => ({ n })));
    await waitFor(async () => (await db.query('select count(*)::int as n from seen'))[0].n === 50, 'the 50 messages processed by the listener', 30_000);
    assert.equal(await p.stop(), 0);
    assert.equal((await db.query('select count(distinct n)::int as n from seen'))[0].n, 50);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a role granted only USAGE on the schema and EXECUTE on pubsub.bridge_store() stores, and reads nothing', async () => {
  const role = `pubsub_bridge_${tag}`;
  await db.query(`create role ${role}`);
  const c = await db.pool.connect();
  try {
    await c.query(`grant usage on schema pubsub to ${role}; grant execute on function pubsub.bridge_store(text, text, text[], text[], text[], float8) to ${role}`);
    await c.query(`set role ${role}`);
    const { rows } = await c.query(bridgeStoreSql, ['role-test', 'b_role', ['r-1', 'r-1'], ['{"id": 1}', '{"id": 1}'], ['{}', '{}'], 3600]);
    assert.equal(rows[0].ids.filter((id: string | null) => id !== null).length, 1, 'stored once');
    await assert.rejects(c.query('select * from pubsub.notification'), /permission denied/);
    await assert.rejects(c.query(`select pubsub.notify('b_role', '{}'::jsonb)`), /permission denied/);
  } finally {
    await c.query('reset role');
    c.release();
    await db.query(`drop owned by ${role}; drop role ${role}`);
  }
  assert.equal(await countOn('b_role'), 1);
});

test('bad bridge options fail at declaration, naming the fix', () => {
  const code = (fn: () => void, pattern: RegExp) => assert.throws(fn, (e: unknown) => e instanceof PubSubError && e.code === 'pubsub.config' && pattern.test(e.message));
  code(() => bridge({ from: 'kafka' as never, channel: 'x' }), /"from" must be 'amqp'/);
  code(() => bridge({ from: 'amqp', channel: 'x' }), /queue must be a non-empty string such as "orders-in"/);
  code(() => bridge({ from: 'nats', stream: 'S', channel: 'x' }), /consumer must be a non-empty string/);
  code(() => bridge({ from: 'nats', stream: 'S', consumer: 'c', queue: 'q', channel: 'x' }), /queue is an AMQP option; with from: 'nats' give stream and consumer/);
  code(() => bridge({ from: 'amqp', queue: 'q', channel: 'x', batchSize: 0 }), /batchSize must be a whole number from 1 to 10000/);
  code(() => bridge({ from: 'amqp', queue: 'q', channel: 'x', dedupeDays: 0 }), /dedupeDays must be/);
  code(() => bridge({ from: 'amqp', queue: 'q', chanel: 'x' } as never), /unknown option "chanel"/);
  code(() => bridge({ from: 'amqp', queue: 'q w', channel: 'x' }), /give one with "name"/);
  code(() => bridge({ from: 'amqp', queue: q('happy'), channel: 'x' }), /declared twice/);
  code(() => registerBridges({ from: 'amqp' }), /"bridge" must be a list/);
  code(() => registerBridges([{ from: 'amqp', queue: 'q' }], 'f.json'), /f.json: "bridge"\[0\]: "channel" is missing/);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-bridge-config-'));
  fs.writeFileSync(path.join(dir, 'pubsub.config.json'), JSON.stringify({ bridge: { from: 'amqp' } }));
  code(() => loadFileConfig(dir), /"bridge" must be a list of bridges such as/);
  fs.rmSync(dir, { recursive: true });
});
