// The listeners the benchmark's workers run: no-ops, latency probes that record when they start, and one
// insert per call through ctx.tx or ctx.prisma (W7).
import { Listen, PostInsertListen, Relay, type NotificationContext, type TriggerPayload } from 'pgpubsub';

/** W8: relays to the brokers on this machine (a queue and a stream that run.ts declares). */
export const RELAY_QUEUE = 'pgpubsub-bench-relay';
export const RELAY_SUBJECT = 'pgpubsub.bench.relay';
@Relay('bench_relay_amqp', { to: 'amqp', routingKey: RELAY_QUEUE })
@Relay('bench_relay_nats', { to: 'nats', subject: RELAY_SUBJECT })
@Relay('bench_relay_amqp_2k', { to: 'amqp', routingKey: RELAY_QUEUE, batchSize: 2000 })
@Relay('bench_relay_nats_2k', { to: 'nats', subject: RELAY_SUBJECT, batchSize: 2000 })
export class BenchRelays {}

export class Item {
  n!: number;
}

export class Sample {
  /** performance.timeOrigin + performance.now() when sent (W4's publisher process). */
  sentAt?: number;
  /** W3: the sample's index; its start is reported to `observed.arrived` instead. */
  i?: number;
  pad?: string;
}

/**
 * W3's clock: CLOCK_MONOTONIC in ms, one clock for every process of the machine (Linux), so a stamp
 * taken by a sender process compares with one taken here.
 */
export const clock = () => Number(process.hrtime.bigint()) / 1e6;

/** In-process observers: W4 counts and measures from the payload's stamp; W3 is told each sample's start. */
export const observed = { latencies: [] as number[], received: 0, arrived: (_i: number, _at: number) => {} };
const now = () => performance.timeOrigin + performance.now();
function started(sample: Sample) {
  if (sample.i !== undefined) observed.arrived(sample.i, clock());
  else observed.latencies.push(now() - sample.sentAt!);
}

export class Keyed {
  n!: number;
  key!: number;
}

/** W9: calls of the no-op and fan-out listeners in this process, printed at exit for the bench to add up per process. */
let calls = 0;
process.on('exit', () => {
  if (calls) console.log(`bench calls: ${calls}`);
  flushLatencies();
});

/**
 * W11: commit → processed latencies in a log histogram (bucket b holds latencies up to 0.01 ms × 2^(b/8),
 * ~9% wide), printed once a second as `bench latencies: {"b": count, …}` for the bench to merge per minute.
 */
const latencyBuckets = new Map<number, number>();
let latencyTimer: NodeJS.Timeout | undefined;
export const bucketMs = (b: number) => 0.01 * 2 ** (b / 8);
function recordLatency(ms: number) {
  const b = Math.max(0, Math.ceil(8 * Math.log2(Math.max(ms, 0.01) / 0.01)));
  latencyBuckets.set(b, (latencyBuckets.get(b) ?? 0) + 1);
  latencyTimer ??= setInterval(flushLatencies, 1000).unref();
}
function flushLatencies() {
  if (!latencyBuckets.size) return;
  console.log(`bench latencies: ${JSON.stringify(Object.fromEntries(latencyBuckets))}`);
  latencyBuckets.clear();
}

/** Ordered runs (W10): the last n seen per key; a smaller one is an ordering violation, printed for the bench to find. */
const lastOfKey = new Map<number, number>();

export class BenchListeners {
  @Listen('bench_ordered', { ordered: true, orderKey: (k: Keyed) => String(k.key) })
  ordered(k: Keyed) {
    if ((lastOfKey.get(k.key) ?? 0) >= k.n) console.log(`ORDER VIOLATION: key ${k.key} got ${k.n} after ${lastOfKey.get(k.key)}`);
    lastOfKey.set(k.key, k.n);
  }

  /** W10: the same, keyed by a payload field path: pubsub.notify() stores each row's key with it. */
  @Listen('bench_ordered_path', { ordered: true, orderKey: 'key' })
  orderedPath(k: Keyed) {
    if ((lastOfKey.get(k.key) ?? 0) >= k.n) console.log(`ORDER VIOLATION: key ${k.key} got ${k.n} after ${lastOfKey.get(k.key)}`);
    lastOfKey.set(k.key, k.n);
  }

  @Listen('bench_drain')
  noop(_item: Item) {
    calls++;
  }

  @Listen('bench_fanout')
  first(_item: Item) {
    calls++;
  }

  @Listen('bench_fanout')
  second(_item: Item) {
    calls++;
  }

  @Listen('bench_fanout')
  third(_item: Item) {
    calls++;
  }

  @Listen('bench_lasting')
  lasting(sample: Sample) {
    recordLatency(now() - sample.sentAt!);
  }

  @Listen('bench_latency')
  durable(sample: Sample) {
    started(sample);
  }

  @Listen('bench_fast', { durable: false })
  fast(sample: Sample) {
    started(sample);
    observed.received++;
  }

  @Listen('bench_tx_insert')
  async sqlInsert(item: Item, ctx: NotificationContext) {
    await ctx.tx!.query('insert into authors (name) values ($1)', [`tx-${item.n}`]);
  }

  @Listen('bench_prisma_insert')
  async prismaInsert(item: Item, ctx: NotificationContext) {
    await ctx.prisma.author.create({ data: { name: `prisma-${item.n}` } });
  }

  @PostInsertListen('Reading')
  reading(_p: TriggerPayload<{ id: number; value: number; note: string }>) {}
}

type ReadingRow = TriggerPayload<{ id: number; value: number; note: string }>;

/** W6: a channel with 3 durable listeners, and one with 10 (each write stores a row per listener). */
export class BenchFanout3 {
  @PostInsertListen('Reading3') a(_p: ReadingRow) {}
  @PostInsertListen('Reading3') b(_p: ReadingRow) {}
  @PostInsertListen('Reading3') c(_p: ReadingRow) {}
}

export class BenchFanout10 {
  @PostInsertListen('Reading10') l0(_p: ReadingRow) {}
  @PostInsertListen('Reading10') l1(_p: ReadingRow) {}
  @PostInsertListen('Reading10') l2(_p: ReadingRow) {}
  @PostInsertListen('Reading10') l3(_p: ReadingRow) {}
  @PostInsertListen('Reading10') l4(_p: ReadingRow) {}
  @PostInsertListen('Reading10') l5(_p: ReadingRow) {}
  @PostInsertListen('Reading10') l6(_p: ReadingRow) {}
  @PostInsertListen('Reading10') l7(_p: ReadingRow) {}
  @PostInsertListen('Reading10') l8(_p: ReadingRow) {}
  @PostInsertListen('Reading10') l9(_p: ReadingRow) {}
}
