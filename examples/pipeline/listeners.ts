// tglib's "Advanced Usage" (periodic producers feeding N consumers), made safe for many workers: each
// slot of a pipeline's period is produced once across all worker processes, its jobs go on a durable
// channel in the same transaction, and any number of consumers take them, each job exactly once, with
// retries and dead letters. See README.md here.
import { Every, Listen, defineChannel, notify, type NotificationContext } from 'pgpubsub';
import { serviceConfig } from './config.js';

/** One job of a pipeline, as tglib's Job dataclass. */
export class Job {
  name!: string;
  /** The slot the pipeline ran for (tglib's start_time_ms): the same on a retry, so results can be keyed by it. */
  startTimeMs!: number;
  params!: Record<string, unknown>;
}

export const pipelineJobs = defineChannel('pipeline_jobs', Job);

const pipeline = serviceConfig.pipelines.test_pipeline;

/**
 * tglib's produce(): every `period` seconds the pipeline's enabled jobs go on the queue. Here the queue
 * is the durable channel, written in the slot's own transaction: if the worker dies half-way, no job
 * is enqueued and the slot runs again; it never runs twice.
 */
export class PipelineProducers {
  @Every(pipeline.period * 1000, { name: 'test_pipeline' })
  async testPipeline(slot: Date, ctx: NotificationContext) {
    for (const job of pipeline.jobs.filter((j) => j.enabled)) {
      await notify(pipelineJobs, { name: job.name, startTimeMs: slot.getTime(), params: job.params }, { client: ctx.tx });
    }
  }
}

/** tglib's second example (the Topology Fetcher) needs no method: publish one job per hour. */
@Every('1h', { publish: pipelineJobs, name: 'topology_fetcher', payload: (slot) => ({ name: 'save_topology', startTimeMs: slot.getTime(), params: {} }) })
export class TopologyFetcher {}

/** A stand-in for Prometheus: metric name → latest value. */
export const metrics = new Map<string, number>([['foo', 37]]);

/** tglib's jobs.py: the functions the consumers run, by name. */
const jobs: Record<string, (startTimeMs: number, params: Record<string, unknown>) => Promise<void> | void> = {
  add_x(startTimeMs, params) {
    const { metric_name: name, x } = params as { metric_name: string; x: number };
    const value = (metrics.get(name) ?? 0) + x;
    metrics.set(`${name}_plus_${x}`, value);
    console.log(`[pipeline] add_x: ${name}_plus_${x} = ${value} at ${new Date(startTimeMs).toISOString()}`);
  },
  save_topology(startTimeMs) {
    console.log(`[pipeline] save_topology at ${new Date(startTimeMs).toISOString()}`);
  },
};

/**
 * tglib's consume(): N of them are `pubsub listen --concurrency N` (in one process) or
 * `--processes N`, on as many machines as you like; each job runs once.
 */
export class PipelineConsumers {
  @Listen(pipelineJobs, { maxAttempts: 5 })
  async run(job: Job) {
    const fn = jobs[job.name];
    if (!fn) throw new Error(`no job named ${job.name}`); // retried, then dead-lettered: see \`pubsub dead list\`
    await fn(job.startTimeMs, job.params);
  }
}
