// The listeners the benchmark's workers run: no-ops, and latency probes that record when they start.
import { Listen, PostInsertListen, type TriggerPayload } from 'pgpubsub';

export class Item {
  n!: number;
}

export class Sample {
  /** performance.timeOrigin + performance.now() when sent (W4's publisher process); 0 when the in-process stamp `observed.sentAt` applies (W3). */
  sentAt!: number;
  pad?: string;
}

/** In-process observers (W3, W4). */
export const observed = { latencies: [] as number[], received: 0, sentAt: 0 };
const now = () => performance.timeOrigin + performance.now();

export class BenchListeners {
  @Listen('bench_drain')
  noop(_item: Item) {}

  @Listen('bench_latency')
  durable(sample: Sample) {
    observed.latencies.push(now() - (observed.sentAt || sample.sentAt));
  }

  @Listen('bench_fast', { durable: false })
  fast(sample: Sample) {
    observed.latencies.push(now() - (observed.sentAt || sample.sentAt));
    observed.received++;
  }

  @PostInsertListen('Reading')
  reading(_p: TriggerPayload<{ id: number; value: number; note: string }>) {}
}
