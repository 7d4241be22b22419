/**
 * Prometheus metrics through prom-client, an optional peer dependency: imported only when metrics are
 * turned on, so the library installs and runs without it. Counters and histograms follow the worker's
 * events; what the database knows (pending notifications, dead letters, the oldest pending age, the
 * NOTIFY queue, the worker's open transactions) is read once per scrape, by one bounded statement on
 * its own connection, never per notification.
 */
import pg from 'pg';
import type * as Prom from 'prom-client';
import { PubSubError } from './errors.js';
import type { Observer } from './observe.js';
import { scrapeSql } from './sql.js';

/** The part of a prom-client `Registry` we use, so that our public types do not need prom-client's. */
export interface MetricsRegistry {
  readonly contentType: string;
  metrics(): Promise<string>;
  getSingleMetric(name: string): unknown;
  removeSingleMetric(name: string): void;
}

export interface MetricsOptions {
  /** Register into this prom-client Registry (e.g. your app's); default a new one, served on `/metrics`. */
  registry?: MetricsRegistry;
  /** Longest a scrape's database statement may run; a slower one leaves the database gauges out of that scrape. @defaultValue 2000 */
  scrapeTimeoutMs?: number;
}

/** A statement slower than this on a scrape is cancelled by the server. */
const SCRAPE_TIMEOUT_MS = 2000;

const PROCESSING_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];

/**
 * Imports prom-client, or says how to get it. `load` exists for the test that simulates its absence.
 * A missing package is the only error turned into advice; anything else it throws is passed on.
 */
export function loadPromClient(load?: () => Promise<unknown>): Promise<{ Registry: new () => MetricsRegistry }> {
  return loadProm(load);
}

/** loadPromClient with prom-client's own types, which must stay out of the published .d.ts (prom-client is optional). */
async function loadProm(load: () => Promise<unknown> = () => import('prom-client')): Promise<typeof Prom> {
  try {
    const mod = (await load()) as typeof Prom & { default?: typeof Prom };
    return mod.Registry ? mod : mod.default!;
  } catch (error) {
    const code = (error as { code?: string }).code;
    if (code !== 'ERR_MODULE_NOT_FOUND' && code !== 'MODULE_NOT_FOUND') throw error;
    throw new PubSubError('pubsub.missingDependency', 'Metrics need the prom-client package, which is not installed: run `npm install prom-client` (an optional peer dependency of pgpubsub), or turn metrics off.', { cause: error });
  }
}

export interface WorkerMetrics {
  readonly registry: MetricsRegistry;
  /** Takes our metrics out of the registry and closes the scrape connection. */
  close(): Promise<void>;
}

export interface MetricsSources {
  observer: Observer;
  /** The (channel, listener) pairs this worker serves: their series exist from the start. Rows stored before anyone subscribed show up as listener '' when there are any. */
  served: Array<{ channel: string; listener: string }>;
  /** Connection settings for the scrape's own connection. */
  connection: pg.PoolConfig;
  ready(): boolean;
  pollingFallback(): boolean;
}

interface Scrape {
  backlog: Array<{ channel: string; listener: string; pending: number; dead: number; oldest: number }>;
  queue_usage: number;
  oldest_xact: number;
}

export async function createMetrics(sources: MetricsSources, options: MetricsOptions = {}): Promise<WorkerMetrics> {
  const prom = await loadProm();
  const registry = (options.registry ?? new prom.Registry()) as Prom.Registry;
  const timeoutMs = options.scrapeTimeoutMs ?? SCRAPE_TIMEOUT_MS;
  const names: string[] = [];
  const registers = [registry];
  const labelNames = ['channel', 'listener'] as const;
  /** Our metric names are fixed: a second worker on the same registry would collide, and should hear why. */
  const named = (name: string) => {
    if (registry.getSingleMetric(name)) {
      for (const n of names) registry.removeSingleMetric(n);
      throw new PubSubError('pubsub.config', `listen(): metrics: the registry already has a metric named ${name}. Give each worker its own registry (metrics: { registry }), or close the other worker first.`);
    }
    names.push(name);
    return name;
  };
  const counter = (name: string, help: string) => new prom.Counter({ name: named(name), help, labelNames, registers });

  const processed = counter('pgpubsub_processed_total', 'Notifications whose listener succeeded (committed).');
  const failed = counter('pgpubsub_failed_total', 'Failed attempts, one per notification: a throw, a timeout, or a lost transaction.');
  const retried = counter('pgpubsub_retried_total', 'Failed notifications kept for a later attempt.');
  const dead = counter('pgpubsub_dead_lettered_total', 'Notifications dead-lettered after their last attempt.');
  const processing = new prom.Histogram({ name: named('pgpubsub_processing_seconds'), help: 'How long an attempt ran (a whole batch for a batch listener).', labelNames, buckets: PROCESSING_BUCKETS, registers });
  const latency = new prom.Histogram({
    name: named('pgpubsub_latency_seconds'),
    help: 'First attempts: from the start of the transaction that stored the notification to its claim (server clock).',
    labelNames,
    buckets: LATENCY_BUCKETS,
    registers,
  });
  const claimFailures = new prom.Counter({ name: named('pgpubsub_claim_failures_total'), help: 'Claims that could not finish (a database error); the unit backs off.', registers });
  const reconnects = new prom.Counter({ name: named('pgpubsub_reconnects_total'), help: 'Times the LISTEN connection was lost and LISTEN was put back.', registers });

  const label = (e: { channel: string; listener: string | null }) => ({ channel: e.channel, listener: e.listener ?? '' });
  const undo = [
    sources.observer.on('processed', (e) => {
      processed.inc(label(e), e.ids.length);
      processing.observe(label(e), e.durationMs / 1000);
      if (e.attempt === 1) for (const ms of e.latencyMs) latency.observe(label(e), ms / 1000);
    }),
    sources.observer.on('failed', (e) => {
      failed.inc(label(e));
      if (e.durationMs !== undefined) processing.observe(label(e), e.durationMs / 1000);
    }),
    sources.observer.on('retried', (e) => retried.inc(label(e))),
    sources.observer.on('dead', (e) => dead.inc(label(e))),
    sources.observer.on('claimFailed', () => claimFailures.inc()),
    sources.observer.on('reconnected', () => reconnects.inc()),
  ];
  // Series exist from the start at 0, so that rate() and increase() see the first event.
  for (const s of sources.served) for (const c of [processed, failed, retried, dead]) c.inc(s, 0);

  const pool = new pg.Pool({ ...sources.connection, max: 1, application_name: 'pubsub:metrics', statement_timeout: timeoutMs, query_timeout: timeoutMs + 1000 });
  pool.on('error', () => {}); // an idle scrape connection closed by the server is simply replaced
  let inFlight: Promise<Scrape | undefined> | undefined;
  /** Every gauge collects at once (prom-client collects in parallel): they share the one statement in flight. */
  const scrape = (): Promise<Scrape | undefined> => {
    if (inFlight) return inFlight;
    const channels = [...new Set(sources.served.map((s) => s.channel))];
    inFlight = pool
      .query<Scrape>(scrapeSql, [channels])
      .then(
        (r) => r.rows[0],
        () => undefined, // too slow or unreachable: the database gauges are left out, scrape_database_ok says so
      )
      .finally(() => (inFlight = undefined));
    return inFlight;
  };
  const gauge = (name: string, help: string, labels: readonly string[], collect: (g: Prom.Gauge<string>, s: Scrape | undefined) => void) =>
    new prom.Gauge({
      name: named(name),
      help,
      labelNames: labels,
      registers,
      async collect() {
        const s = await scrape();
        this.reset();
        collect(this, s);
      },
    });
  const perListener = (key: 'pending' | 'dead' | 'oldest') => (g: Prom.Gauge<string>, s: Scrape | undefined) => {
    if (!s) return;
    for (const served of sources.served) g.set(served, 0);
    for (const row of s.backlog) g.set({ channel: row.channel, listener: row.listener }, row[key]);
  };
  gauge('pgpubsub_pending', 'Stored notifications not yet processed (due or waiting for a retry), per listener this worker serves.', labelNames, perListener('pending'));
  gauge('pgpubsub_dead_letters', 'Dead-lettered notifications stored now (`pubsub dead list`).', labelNames, perListener('dead'));
  gauge('pgpubsub_oldest_pending_age_seconds', 'Age of the oldest pending notification (0 when none).', labelNames, perListener('oldest'));
  gauge('pgpubsub_notification_queue_usage', "pg_notification_queue_usage(): the fraction of the server's NOTIFY queue in use.", [], (g, s) => s && g.set(s.queue_usage));
  gauge('pgpubsub_oldest_transaction_age_seconds', "Age of the oldest open transaction of any worker's connections (application_name 'pubsub:worker').", [], (g, s) => s && g.set(s.oldest_xact));
  gauge('pgpubsub_scrape_database_ok', "1 when this scrape's database statement answered in time, else 0 (the database gauges are then missing).", [], (g, s) => g.set(s ? 1 : 0));
  gauge('pgpubsub_polling_fallback', '1 while wake-ups cannot arrive (LISTEN refused or deaf) and the worker only polls.', [], (g) => g.set(sources.pollingFallback() ? 1 : 0));
  gauge('pgpubsub_ready', '1 when the worker is ready (see /readyz).', [], (g) => g.set(sources.ready() ? 1 : 0));

  return {
    registry: registry as MetricsRegistry,
    async close() {
      for (const u of undo) u();
      for (const name of names) registry.removeSingleMetric(name);
      await pool.end().catch(() => {});
    },
  };
}
