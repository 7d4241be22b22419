/**
 * Chaos for relays (`npm run chaos`, scenarios r1–r4): two `pubsub relay` processes relay two ordered
 * channels, one to RabbitMQ and one to NATS JetStream (through TCP forwarders), while a writer commits
 * notifications on both with a ledger row in the same transaction (some rolled back) and one fault
 * runs: the broker restarted (its own commands), the broker unreachable for a while, relays SIGKILLed
 * (between publish and delete among other moments), PostgreSQL restarted. Then the relays drain and
 * the brokers are read back. Passes when, per broker: 0 lost, 0 phantom (a rolled-back notification
 * published), per key the first copies in commit order (what a consumer that drops message ids it has
 * seen gets), duplicates only with the message id of their first copy, and none at all in the
 * JetStream stream (its Msg-Id window is longer than a scenario).
 */
import { execFileSync, execSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import pg from 'pg';
import type { EmbeddedPostgres } from '../src/embedded.js';
import { librarySchemaSql, subscriptionsSql } from '../src/sql.js';
import { Forwarder, jetstream, rabbit, type Received } from '../test/helpers/brokers.js';
import { between, now, sleep, until, Workers } from './harness.js';

export interface RelayResult {
  key: string;
  fault: string;
  passed: boolean;
  failures: string[];
  committed: number;
  drained: boolean;
  drainMs: number | null;
  brokers: Record<string, { received: number; lost: number; phantom: number; duplicates: number; sameIdDuplicates: number; outOfOrder: number }>;
  relayDeaths: { killedBySuite: number; other: number };
  notes: Record<string, unknown>;
}

interface Context {
  server: EmbeddedPostgres;
  forwarders: { amqp: Forwarder; nats: Forwarder };
  relays: Workers;
  loadMs: number;
  stopped(): boolean;
  notes: Record<string, unknown>;
}

const KEYS = 8;
const ROLLBACK_RATE = 0.05;

/** RabbitMQ's node stopped and started again (the app: queues and connections go, durable messages stay). */
async function restartRabbit(ctx: Context): Promise<void> {
  const t0 = now();
  execFileSync('rabbitmqctl', ['stop_app'], { stdio: 'ignore' });
  await sleep(1000);
  execFileSync('rabbitmqctl', ['start_app'], { stdio: 'ignore' });
  ctx.notes.rabbit_restart_ms = Math.round(now() - t0);
}

/** nats-server stopped (SIGTERM to its pid) and started again with the same JetStream store. */
async function restartNats(ctx: Context): Promise<void> {
  const t0 = now();
  const pid = Number(execSync('pgrep -x nats-server || true').toString().trim().split('\n')[0]);
  if (pid) {
    process.kill(pid, 'SIGTERM');
    await until(() => !fs.existsSync(`/proc/${pid}`), 15_000, 50);
  }
  await sleep(1000);
  startNats();
  const up = await until(async () => {
    try {
      const js = await jetstream();
      await js.close();
      return true;
    } catch {
      return false;
    }
  }, 30_000, 200);
  if (!up) throw new Error('nats-server did not come back within 30 s');
  ctx.notes.nats_restart_ms = Math.round(now() - t0);
}

/** The machine's NATS with JetStream, as it is started here (also: left running when we finish, whatever happens). */
export function startNats(): void {
  execSync('start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log', { stdio: 'ignore' });
}

/** Leaves both brokers running: called whatever happened to a scenario. */
export function ensureBrokers(): void {
  if (!execSync('pgrep -x nats-server || true').toString().trim()) startNats();
  try {
    execFileSync('rabbitmqctl', ['start_app'], { stdio: 'ignore' });
  } catch {
    execSync('rabbitmq-server -detached', { stdio: 'ignore' });
  }
}

const scenarios: Array<{ key: string; fault: string; faults(ctx: Context): Promise<void> }> = [
  {
    key: 'r1',
    fault: 'broker restarted mid-relay (RabbitMQ at 1/3, NATS at 2/3)',
    async faults(ctx) {
      const start = now();
      await sleep(start + ctx.loadMs / 3 - now());
      await restartRabbit(ctx);
      await sleep(start + (ctx.loadMs * 2) / 3 - now());
      await restartNats(ctx);
    },
  },
  {
    key: 'r2',
    fault: 'both brokers unreachable for half the load',
    async faults(ctx) {
      await sleep(ctx.loadMs / 4);
      await Promise.all([ctx.forwarders.amqp.down(), ctx.forwarders.nats.down()]);
      await sleep(ctx.loadMs / 2);
      await Promise.all([ctx.forwarders.amqp.up(), ctx.forwarders.nats.up()]);
    },
  },
  {
    key: 'r3',
    fault: 'SIGKILL a random relay every 1–3 s',
    async faults(ctx) {
      while (!ctx.stopped()) {
        await sleep(between(1000, 3000));
        if (!ctx.stopped()) ctx.relays.killRandom();
      }
    },
  },
  {
    key: 'r4',
    fault: 'PostgreSQL restart -m immediate, then -m fast',
    async faults(ctx) {
      const start = now();
      for (const [at, mode] of [[1 / 3, 'immediate'], [2 / 3, 'fast']] as const) {
        await sleep(start + ctx.loadMs * at - now());
        await ctx.server.restart(mode);
      }
    },
  },
];

/** The writer: transactions of 1–5 items on both channels, a ledger row with each, some rolled back; retried across restarts. */
async function write(url: string, ctx: { stopped(): boolean }): Promise<number> {
  let n = 0;
  let client: pg.Client | undefined;
  while (!ctx.stopped()) {
    try {
      if (!client) {
        client = new pg.Client(url);
        client.on('error', () => {});
        await client.connect();
      }
      const items = Array.from({ length: 1 + Math.floor(Math.random() * 5) }, () => ({ n: ++n, key: `k${Math.floor(Math.random() * KEYS)}` }));
      await client.query('begin');
      await client.query('insert into relay_ledger (n) select unnest($1::int[])', [items.map((i) => i.n)]);
      for (const ch of ['relay_amqp', 'relay_nats']) await client.query(`select pubsub.notify($1, p, null, true, false) from jsonb_array_elements($2::jsonb) p`, [ch, JSON.stringify(items)]);
      await client.query(Math.random() < ROLLBACK_RATE ? 'rollback' : 'commit');
      await sleep(5);
    } catch {
      await client?.end().catch(() => {});
      client = undefined;
      await sleep(200);
    }
  }
  await client?.end().catch(() => {});
  return n;
}

/** Lost, phantom, duplicates and order of what a broker holds, against the ledger. */
function check(got: Received[], committed: Set<number>) {
  const firstId = new Map<number, string>();
  let duplicates = 0;
  let sameIdDuplicates = 0;
  let phantom = 0;
  let outOfOrder = 0;
  const last = new Map<string, number>();
  for (const m of got) {
    const { n, key } = m.body as { n: number; key: string };
    if (!committed.has(n)) phantom++;
    if (firstId.has(n)) {
      duplicates++;
      if (firstId.get(n) === m.id) sameIdDuplicates++;
      continue; // a consumer drops a message id it has seen: order is what remains
    }
    firstId.set(n, m.id);
    if ((last.get(key) ?? 0) > n) outOfOrder++;
    last.set(key, Math.max(last.get(key) ?? 0, n));
  }
  const lost = [...committed].filter((n) => !firstId.has(n)).length;
  return { received: got.length, lost, phantom, duplicates, sameIdDuplicates, outOfOrder };
}

export async function runRelayScenarios(server: EmbeddedPostgres, options: { quick: boolean; only?: string[]; work: string; cli: string }): Promise<RelayResult[]> {
  const results: RelayResult[] = [];
  const loadMs = options.quick ? 6000 : 30_000;
  const drainMs = options.quick ? 60_000 : 180_000;
  for (const s of scenarios.filter((x) => !options.only || options.only.includes(x.key))) {
    const t0 = now();
    console.log(`\n(${s.key}) relays: ${s.fault}…`);
    const tag = randomBytes(3).toString('hex');
    const queue = `pgpubsub-chaos-${s.key}-${tag}`;
    const subject = `pgpubsub.chaos.${s.key}.${tag}`;
    const streamName = `PGPUBSUB_CHAOS_${s.key}_${tag}`.toUpperCase();
    const database = `chaos_relay_${s.key}`;
    const admin = new pg.Client(server.url);
    await admin.connect();
    await admin.query(`drop database if exists ${database} with (force)`);
    await admin.query(`create database ${database}`);
    await admin.end();
    const url = new URL(server.url);
    url.pathname = `/${database}`;
    const db = new pg.Pool({ connectionString: url.toString(), max: 3 });
    db.on('error', () => {});
    await db.query(librarySchemaSql(0));
    await db.query(subscriptionsSql([{ channel: 'relay_amqp', listener: 'relay.amqp.relay_amqp' }, { channel: 'relay_nats', listener: 'relay.nats.relay_nats' }], []));
    await db.query('create table relay_ledger (n int primary key)');
    const mq = await rabbit();
    await mq.queue(queue);
    const js = await jetstream();
    await js.stream(streamName, [subject]);
    const forwarders = { amqp: await Forwarder.create(5672), nats: await Forwarder.create(4222) };
    await forwarders.amqp.up();
    await forwarders.nats.up();
    const logDir = path.join(options.work, `relay-${s.key}`);
    fs.rmSync(logDir, { recursive: true, force: true });
    fs.mkdirSync(logDir, { recursive: true });
    const backoff = { baseMs: 50, maxMs: 1000 };
    fs.writeFileSync(
      path.join(logDir, 'pubsub.config.json'),
      JSON.stringify({
        pollIntervalMs: 500,
        relay: [
          { channel: 'relay_amqp', to: 'amqp', url: `amqp://guest:guest@127.0.0.1:${forwarders.amqp.port}`, routingKey: queue, ordered: true, orderKey: 'key', batchSize: 200, backoff, timeoutMs: 5000 },
          { channel: 'relay_nats', to: 'nats', url: `nats://127.0.0.1:${forwarders.nats.port}`, subject, ordered: true, orderKey: 'key', batchSize: 200, backoff, timeoutMs: 5000 },
        ],
      }),
    );
    const relays = new Workers({ cli: options.cli, command: 'relay', count: 2, urlOf: () => url.toString(), logDir, env: process.env });
    const notes: Record<string, unknown> = {};
    const failures: string[] = [];
    let drained = false;
    let drainTime: number | null = null;
    const brokers: RelayResult['brokers'] = {};
    let committed = 0;
    try {
      relays.start();
      if (!(await relays.ready(30_000))) throw new Error('the relays did not start');
      let stopped = false;
      const ctx: Context = { server, forwarders, relays, loadMs, stopped: () => stopped, notes };
      const writing = write(url.toString(), ctx);
      const faults = s.faults(ctx).catch((error: Error) => void failures.push(`fault: ${error.message}`));
      await sleep(loadMs);
      stopped = true;
      await faults;
      await writing;
      await Promise.all([forwarders.amqp.up(), forwarders.nats.up()]);
      const t1 = now();
      drained = await until(async () => (await db.query('select (select count(*) from pubsub.notification) + (select count(*) from pubsub.fanout) as n')).rows[0].n === '0', drainMs, 100);
      drainTime = drained ? Math.round(now() - t1) : null;
      if (!drained) failures.push(`not drained within ${drainMs / 1000} s`);
      await relays.stop();
      const ledger = new Set<number>((await db.query('select n from relay_ledger')).rows.map((r) => r.n));
      committed = ledger.size;
      const mq2 = await rabbit(); // the first connection may have been closed by the restart
      brokers.amqp = check(await mq2.drain(queue), ledger);
      await mq2.channel.deleteQueue(queue).catch(() => {});
      await mq2.close();
      brokers.nats = check(await js.read(streamName), ledger);
      for (const [name, b] of Object.entries(brokers)) {
        if (b.lost) failures.push(`${name}: ${b.lost} lost`);
        if (b.phantom) failures.push(`${name}: ${b.phantom} phantom`);
        if (b.outOfOrder) failures.push(`${name}: ${b.outOfOrder} out of order`);
        if (b.duplicates !== b.sameIdDuplicates) failures.push(`${name}: ${b.duplicates - b.sameIdDuplicates} duplicates with another message id`);
      }
      if (brokers.nats!.duplicates) failures.push(`nats: ${brokers.nats!.duplicates} duplicates in the stream (Msg-Id de-duplication)`);
    } catch (error) {
      failures.push(`crashed: ${(error as Error).message}`);
    } finally {
      await relays.stop();
      ensureBrokers();
      await forwarders.amqp.down();
      await forwarders.nats.down();
      await mq.close().catch(() => {});
      await js.close().catch(() => {});
      await db.end();
    }
    const r: RelayResult = { key: s.key, fault: s.fault, passed: !failures.length, failures, committed, drained, drainMs: drainTime, brokers, relayDeaths: { killedBySuite: relays.killed, other: relays.died }, notes };
    results.push(r);
    const b = (name: string) => {
      const x = brokers[name];
      return x ? `${name}: ${x.received} received, lost ${x.lost}, phantom ${x.phantom}, duplicates ${x.duplicates} (same id ${x.sameIdDuplicates}), out of order ${x.outOfOrder}` : `${name}: —`;
    };
    console.log(`(${s.key}) ${r.passed ? 'pass' : `FAIL (${failures.join(', ')})`} in ${((now() - t0) / 1000).toFixed(1)} s: ${committed} committed; ${b('amqp')}; ${b('nats')}; drain ${drainTime ?? '—'} ms, relay deaths ${relays.killed}+${relays.died}, notes ${JSON.stringify(notes)}`);
  }
  return results;
}

/** The relay scenarios as a Markdown table. */
export function relayTable(results: RelayResult[]): string {
  const head = ['scenario', 'fault', 'committed', 'RabbitMQ received / lost / dup (same id) / out of order', 'JetStream received / lost / dup / out of order', 'drain', 'result'];
  const cell = (x?: RelayResult['brokers'][string]) => (x ? `${x.received} / ${x.lost} / ${x.duplicates} (${x.sameIdDuplicates}) / ${x.outOfOrder}` : '—');
  const rows = results.map((r) => [r.key, r.fault, String(r.committed), cell(r.brokers.amqp), cell(r.brokers.nats), r.drainMs === null ? '—' : `${(r.drainMs / 1000).toFixed(1)} s`, r.passed ? 'pass' : `FAIL: ${r.failures.join(', ')}`]);
  return [head, head.map(() => '---'), ...rows].map((cells) => `| ${cells.join(' | ')} |`).join('\n');
}
