/**
 * The worker: composes the parts that receive notifications and run their listeners.
 * - connection.ts: the LISTEN session (wake-ups, non-durable payloads), reconnected forever;
 * - wakeup.ts: the sleep/wake handshake with writers, a small state machine on that session;
 * - broadcast.ts: non-durable deliveries, at most once, in arrival order;
 * - drain.ts: claims of stored notifications, fair across units, each attempt settled;
 * - transaction.ts: the claim transaction and `ctx.tx`, every round trip bounded;
 * - attempts.ts: attempts counted whatever ends them, retries with the stored bytes, dead letters;
 * - scheduler.ts: schedules (@Every, @Cron), each slot handed on once across all workers.
 * This file owns the run loop (when to drain, when to sleep) and the lifecycle: start (waits for the
 * server and for LISTEN), close (lets running listeners finish, then releases every connection).
 */
import pg from 'pg';
import { AttemptLedger } from './attempts.js';
import { Broadcast } from './broadcast.js';
import { WORKER_LIMITS, requireDatabaseUrl, wholeNumber } from './config.js';
import { KEEPALIVE_DELAY_MS, createListenConnection, type ListenConnection } from './connection.js';
import { Dispatcher } from './dispatch.js';
import { Drain } from './drain.js';
import { PubSubError, closestName } from './errors.js';
import { ReadinessTracker, startHealthServer, type HealthServer, type HttpOptions, type Readiness } from './http.js';
import { logEvents, toLog } from './log.js';
import { createMetrics, type MetricsOptions, type MetricsRegistry, type WorkerMetrics } from './metrics.js';
import { Observer, type WorkerEventName, type WorkerEvents } from './observe.js';
import type { ModelShape } from './payload.js';
import { PrismaBinding } from './prisma.js';
import { RelayHub } from './relay.js';
import { getRegistry, type ChannelDefinition, type ListenerDefinition, type Registry, type ScheduleDefinition } from './registry.js';
import { Scheduler } from './scheduler.js';
import { LIBRARY_SCHEMA_VERSION, autovacuumSql, backlogSql, modelsSql, schemaVersionSql, subscriptionsOfSql } from './sql.js';
import type { Logger, PrismaFactory } from './types.js';
import { Wakeup } from './wakeup.js';
import { Maintenance, type MaintainOptions } from './maintain.js';

export { retryDelaySeconds } from './attempts.js';

export interface WorkerOptions {
  /** Channels to serve; default every registered channel. */
  channels?: string[];
  /** Default DATABASE_URL. */
  databaseUrl?: string;
  /**
   * Session connection for LISTEN, when `databaseUrl` goes through a transaction pooler such as
   * PgBouncer. @defaultValue databaseUrl
   */
  listenUrl?: string;
  /** Pool the claims take their connections from; default a pool of `concurrency + 1` on `databaseUrl`. */
  pool?: pg.Pool;
  /**
   * Notifications claimed per listener per transaction. Claims grow up to 5× while full batches
   * finish in under 25 ms, and fall back when one takes over 100 ms. @defaultValue 100
   */
  batchSize?: number;
  /**
   * Claiming transactions run at once, each on its own connection. 1 is fastest for quick listeners
   * (two loops would step over each other's locked rows); raise it for listeners that wait on I/O.
   * @defaultValue 1
   */
  concurrency?: number;
  /** How often to look for stored work without a wake-up (retries; the only way without LISTEN). @defaultValue 2000 */
  pollIntervalMs?: number;
  /**
   * Keep pubsub.notification small under churn: vacuum it when dead rows pile up, and rebuild its indexes
   * (REINDEX CONCURRENTLY) when a long transaction left them bloated; one worker at a time, every
   * `intervalMs` (see maintain.ts). Needs the table's owner. @defaultValue false
   */
  maintain?: boolean | MaintainOptions;
  /** false: never LISTEN, only poll (for PgBouncer transaction pooling without a session URL). @defaultValue true */
  listen?: boolean;
  /** Serve only notifications whose context contains these fields, e.g. `{ tenant: 'acme' }`. */
  context?: Record<string, unknown>;
  /** Builds the object whose method is called; default `new Class()` once per class. */
  instance?: (cls: Function) => object;
  /**
   * Where the worker logs: an `{ info, warn, error }` object (messages), or a pino logger (fields:
   * channel, listener, id, attempt, err). Default: nothing, except through `DEBUG=pubsub:*`.
   */
  logger?: Logger;
  /** Serve `/healthz`, `/readyz` (and `/metrics` when metrics are on) on this port. */
  http?: HttpOptions;
  /**
   * Prometheus metrics (`pgpubsub_*`) through prom-client, which must then be installed (an optional
   * peer dependency). true: a registry of the worker's own, served on `/metrics` when `http` is set;
   * or `{ registry }` to add them to yours.
   */
  metrics?: boolean | MetricsOptions;
  registry?: Registry;
  /**
   * Longest wait for an answer to any statement the worker itself sends (claims, commits, records).
   * A connection that does not answer in time is dropped: a half-open socket (a frozen proxy, a dead
   * NAT entry) is detected within this bound, and the server frees its claimed rows once the session
   * has sat idle in its transaction for the listeners' timeout plus 5 s. @defaultValue 10000
   */
  roundTripMs?: number;
  /**
   * Your PrismaClient, built on the adapter pgpubsub passes (`@prisma/adapter-pg`, an optional peer
   * dependency), for `ctx.prisma`: `(adapter) => new PrismaClient({ adapter })`. Called once at start
   * (a check without the database) and then once per listener call running at the same time, not per
   * notification. Register the client's type with `declare module 'pgpubsub' { interface Register { client: PrismaClient } }`.
   * The schema of a `?schema=` in `databaseUrl` is passed to the adapter, as Prisma does.
   */
  prisma?: PrismaFactory;
  /** @internal Tests: the schedules' clock (ms since the epoch) instead of the database server's. */
  scheduleClock?: () => number;
  /**
   * Relays to brokers (`@Relay`, `relay()`, "relay" in pubsub.config.json): served beside the
   * listeners (true), not at all (false), or alone ('only', what `pubsub relay` runs). @defaultValue true
   */
  relays?: boolean | 'only';
}

export interface Worker {
  readonly channels: string[];
  /** Calls `fn` on every `event` (see WorkerEvents); returns the function that stops it. */
  on<K extends WorkerEventName>(event: K, fn: (event: WorkerEvents[K]) => void): () => void;
  /** What `/readyz` answers: whether the worker is ready and, if not, why. */
  readiness(): Promise<Readiness>;
  /** Where `/healthz`, `/readyz` and `/metrics` are served, with `http`. */
  readonly http?: { port: number; host: string };
  /** The registry holding the worker's metrics, with `metrics`. */
  readonly metrics?: MetricsRegistry;
  /** Stops listening, lets running listeners finish, then releases every connection. */
  close(): Promise<void>;
}

function selectChannels(registry: Registry, names?: string[]): ChannelDefinition[] {
  const all = registry.list();
  if (all.length === 0 && registry.schedules.size === 0) {
    throw new PubSubError(
      'pubsub.noListenersLoaded',
      'No listeners are registered. Load the compiled modules that declare them first (`--require dist/listeners.js`, or "require" in pubsub.config.json).',
    );
  }
  if (!names?.length) return all;
  return names.flatMap((name) => {
    const def = registry.get(name);
    if (!def && name.startsWith('schedule:') && registry.schedules.has(name.slice('schedule:'.length))) return []; // a publishing schedule
    if (!def) {
      throw new PubSubError('pubsub.unknownChannel', `No listener is registered for channel "${name}". Registered: ${all.map((c) => c.name).join(', ')}.`);
    }
    return [def];
  });
}

/** The schedules a worker runs: all of them, or those named `schedule:<name>` among its channels. */
function selectSchedules(registry: Registry, names?: string[]): ScheduleDefinition[] {
  return [...registry.schedules.values()].filter((s) => !names?.length || names.includes(`schedule:${s.name}`));
}

/** An option of listen(): `fallback` when unset, else a whole number from `min` to `max`. */
const option = (name: keyof WorkerOptions, min: number, max: number, fallback: number, value: unknown) =>
  value === undefined ? fallback : wholeNumber(value, `listen(): ${name}`, min, max);

/** Prisma's `?schema=` in a database URL, which its adapter needs as an option. */
function schemaOf(url: string): string | undefined {
  try {
    return new URL(url).searchParams.get('schema') ?? undefined;
  } catch {
    return undefined;
  }
}

/** Errors that mean "the server is not (yet) reachable", as opposed to a refusal that will not go away. */
function unreachable(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return true; // ECONNREFUSED, timeouts, resets
  return code.startsWith('08') || code === '57P03' || code === '57P01' || code === '57P02';
}

/**
 * Starts a worker for the registered listeners. Resolves once the worker listens (so a non-durable
 * message sent afterwards reaches it); while the server is unreachable it waits, saying so.
 *
 * @example
 * const worker = await listen({ channels: ['post_reads_per_date'] });
 * process.on('SIGTERM', () => worker.close());
 */
export async function listen(options: WorkerOptions = {}): Promise<Worker> {
  return start(options, false);
}

/** What `drainOnce()` did. */
export interface DrainSummary {
  /** Notifications whose listener succeeded (committed). */
  processed: number;
  /** Attempts that failed: `retried` are kept for a later attempt, `dead` were dead-lettered. */
  failed: number;
  retried: number;
  dead: number;
  /** Stored for the served listeners but not due yet (retries waiting out their backoff), at the end. */
  waiting: number;
  /** The drain was stopped by `signal` before everything due was claimed. */
  stopped: boolean;
}

export interface DrainOnceOptions extends Omit<WorkerOptions, 'listen' | 'listenUrl' | 'pollIntervalMs' | 'http' | 'metrics'> {
  /** Called as notifications are settled: `done` of `total` (what was due at the start, plus what became due since). */
  onProgress?: (done: number, total: number) => void;
  /** Stops claiming; what runs finishes, and the summary says `stopped`. */
  signal?: AbortSignal;
}

/** Gate tries that find a writer committing, made again at once (a round trip each) before waiting 1, 2, 4 … ms. */
const GATE_RETRIES_AT_ONCE = 3;
/** Writes claimed without going idle after which the worker counts as busy and lets writers skip the NOTIFY. */
const BUSY_WRITES = 10;

/** Claims that may fail in a row (a database error) before drainOnce() gives up with `pubsub.drainFailed`. */
const ONCE_CLAIM_FAILURES = 5;

/**
 * Runs the listeners on every stored notification that is due, then returns: for a cron job, a
 * deploy step or a test. No LISTEN, no polling; failures are retried by a later drain (or worker) once
 * their backoff is over, and counted in `waiting`. A claim that keeps failing (the database is gone)
 * throws `pubsub.drainFailed` after a few tries with backoff.
 *
 * @example
 * const { processed, failed } = await drainOnce({ channels: ['post_reads_per_date'] });
 */
export async function drainOnce(options: DrainOnceOptions = {}): Promise<DrainSummary> {
  const worker = await start({ ...options, listen: false }, true);
  try {
    return await worker.drainDue(options.onProgress, options.signal);
  } finally {
    await worker.close();
  }
}

/** A worker of drainOnce(): it claims only when told to drain. */
interface OnceWorker extends Worker {
  drainDue(onProgress?: DrainOnceOptions['onProgress'], signal?: AbortSignal): Promise<DrainSummary>;
}

async function start(options: WorkerOptions, once: false): Promise<Worker>;
async function start(options: WorkerOptions, once: true): Promise<OnceWorker>;
async function start(options: WorkerOptions, once: boolean): Promise<Worker | OnceWorker> {
  const registry = options.registry ?? getRegistry();
  const logger = toLog(options.logger);
  // The same bounds as the CLI's flags and the config file.
  const limit = (name: 'batchSize' | 'concurrency' | 'pollIntervalMs', fallback: number) => option(name, WORKER_LIMITS[name].min, WORKER_LIMITS[name].max, fallback, options[name]);
  const batchSize = limit('batchSize', 100);
  const concurrency = limit('concurrency', 1);
  const pollIntervalMs = limit('pollIntervalMs', 2000);
  const roundTripMs = option('roundTripMs', 100, 3_600_000, 10_000, options.roundTripMs);
  const maintainMs = typeof options.maintain === 'object' ? options.maintain.intervalMs : undefined;
  const maintainEveryMs = options.maintain && (maintainMs === undefined ? 30_000 : wholeNumber(maintainMs, 'listen(): maintain.intervalMs', 10, 86_400_000));
  if (options.http) wholeNumber(options.http.port, 'listen(): http.port', 0, 65_535);
  const serves = (l: ListenerDefinition) => (options.relays === 'only' ? !!l.relay : options.relays === false ? !l.relay : true);
  const channels = selectChannels(registry, options.channels).filter((c) => c.listeners.some(serves));
  if (options.relays === 'only' && !channels.length) throw new PubSubError('pubsub.noListenersLoaded', 'No relays are registered for the channels served. Declare them with @Relay or relay() in a module named by --require, or as "relay" in pubsub.config.json.');
  const schedules = once || options.relays === 'only' ? [] : selectSchedules(registry, options.channels);
  const databaseUrl = requireDatabaseUrl(options.databaseUrl);
  const durable = channels.filter((c) => c.durable);
  const byId = new Map<string, ListenerDefinition>(durable.flatMap((c) => c.listeners.filter(serves).map((l) => [l.id, l] as const)));

  const settings = { connectionString: databaseUrl, application_name: 'pubsub:worker', keepAlive: true, keepAliveInitialDelayMillis: KEEPALIVE_DELAY_MS, connectionTimeoutMillis: roundTripMs };
  const observer = new Observer();
  logEvents(observer, logger);
  const listeners = [...byId.values()];
  const health = new ReadinessTracker(observer, { listens: options.listen !== false, recheck: () => unsubscribed(control, listeners) });
  // Metrics and HTTP first: a missing prom-client or a taken port fails before any connection, and
  // /healthz answers while the worker still waits for the server.
  let metrics: WorkerMetrics | undefined;
  let server: HealthServer | undefined;
  const stopOperations = async () => {
    await server?.close();
    await metrics?.close();
  };
  try {
    if (options.metrics) {
      const served = listeners.map((l) => ({ channel: l.channel, listener: l.id }));
      metrics = await createMetrics({ observer, served, connection: settings, ready: () => health.ready, pollingFallback: () => health.pollingFallback }, options.metrics === true ? {} : options.metrics);
    }
    if (options.http) server = await startHealthServer(options.http, { live: () => !health.closing, readiness: () => health.readiness(), ...(metrics && { metrics: metrics.registry }) });
  } catch (error) {
    await stopOperations();
    throw error;
  }
  /** Connections whose every statement is the worker's own, so pg's query_timeout bounds them (never a listener's). */
  const bounded = { ...settings, query_timeout: roundTripMs };
  const pool = options.pool ?? new pg.Pool({ ...settings, max: concurrency + 1 });
  const control = new pg.Pool({ ...bounded, max: 2 });
  // An idle pooled connection that the server closes emits 'error' on the pool; without a listener that kills the process.
  const idleClosed = (error: Error) => logger.warn(`an idle database connection was closed (${error.message}); it will be replaced`);
  if (!options.pool) pool.on('error', idleClosed);
  control.on('error', idleClosed);
  const endPools = async () => {
    await control.end().catch(() => {});
    if (!options.pool) await pool.end().catch(() => {});
  };

  const triggers = channels.flatMap((c) => c.listeners.filter((l) => l.trigger));
  let models = new Map<string, ModelShape>();
  let prisma: PrismaBinding | undefined;
  let dispatcher: Dispatcher;
  let relays: RelayHub | undefined;
  try {
    if (listeners.some((l) => l.relay)) relays = await RelayHub.load(listeners.filter((l) => l.relay), logger); // a missing broker client fails the start
    if (options.prisma !== undefined) prisma = await PrismaBinding.create(options.prisma, { schema: schemaOf(databaseUrl) });
    if (durable.length || triggers.length || schedules.length) ({ models, missing: health.missing } = await prepare(control, listeners, triggers, logger, !!options.maintain));
    dispatcher = new Dispatcher([...channels.flatMap((c) => c.listeners.filter(serves))], models, logger, options.instance);
    dispatcher.resolveReceivers(); // a class the container cannot build fails the start, not every attempt
  } catch (error) {
    await prisma?.close();
    await endPools();
    await stopOperations();
    throw error;
  }

  const ledger = new AttemptLedger(control, bounded);
  // Rows stored before anyone subscribed run every listener of their channel; relays take only their own rows.
  const drainChannels = durable.filter((c) => c.listeners.some((l) => byId.has(l.id) && !l.relay)).map((c) => c.name);
  const context = options.context ? JSON.stringify(options.context) : null;
  const broadcast = new Broadcast(registry, dispatcher, options.context, logger);
  const timers = new Set<NodeJS.Timeout>();
  const later = (fn: () => void, ms: number) => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      fn();
    }, ms);
    timers.add(timer);
  };
  const drain = new Drain({
    pool,
    control,
    ledger,
    dispatcher,
    registry,
    byId,
    channels: drainChannels,
    context,
    batchSize,
    roundTripMs,
    logger,
    ...(prisma && { prisma }),
    observer,
    retry: (ms) => later(kick, ms),
    claimed: (writes) => claimedWrites(writes),
    ...(relays && { relays }),
  });
  let caughtUp = false;
  const catchUpOver = () => {
    if (!caughtUp) observer.emit('caughtUp', {});
    caughtUp = true;
  };
  if (durable.length === 0) catchUpOver();

  let closing = false;
  let dirty = false;
  let running: Promise<void> | undefined;
  let wakeup: Wakeup | undefined;
  /** Writes (transactions) claimed since the worker was last idle, and the wake-up that this made it ask for. */
  let writesSinceIdle = 0;
  let waking: Promise<void> | undefined;
  /**
   * Told how many writes each claim took rows of. While we hold the sleep lock, every writer NOTIFYs,
   * so each commit reaches us as it happens, with no handshake round trip before the claim: we keep
   * holding it while writes come one at a time, and let writers skip the NOTIFY once they overlap (one
   * claim found two) or keep coming (BUSY_WRITES since we were last idle), before the claim's
   * listeners run.
   */
  const claimedWrites = (writes: number) => {
    writesSinceIdle += writes;
    if ((writes > 1 || writesSinceIdle >= BUSY_WRITES) && wakeup && wakeup.state !== 'awake' && wakeup.state !== 'deaf') waking = wakeup.wake();
  };
  /** Gate tries in a row that found a writer still committing: the first few again at once, then after a wait that doubles (we hold the sleep lock meanwhile, so later writers wake us anyway). */
  let gateRetries = 0;

  function kick(): void {
    if (closing || once || durable.length === 0) return; // drainOnce() runs its own rounds
    dirty = true;
    running ??= run().finally(() => {
      running = undefined;
      writesSinceIdle = 0; // idle now
    });
  }

  /**
   * Drains while there is work; then falls asleep through the handshake, or leaves it to polling. Every
   * way out checks `dirty` first: a NOTIFY that arrived while the loop awaited the handshake is drained.
   */
  async function run(): Promise<void> {
    while (!closing) {
      if (dirty) {
        dirty = false;
        await Promise.all(Array.from({ length: concurrency }, () => drain.round()));
        catchUpOver();
        continue;
      }
      if (!wakeup) return;
      await waking; // the state below is the one after a wake-up asked for during the drain
      if (wakeup.state === 'looking') await wakeup.slept(); // the drain after the last look is over, and we did not turn busy
      else {
        const next = await wakeup.settle();
        if (next === 'drain') dirty = true; // the last look found rows
        if (next === 'retry') {
          gateRetries++;
          if (gateRetries <= GATE_RETRIES_AT_ONCE) continue;
          later(kick, Math.min(2 ** (gateRetries - GATE_RETRIES_AT_ONCE - 1), pollIntervalMs)); // 1, 2, 4 … ms
        } else gateRetries = 0;
      }
      if (!dirty) return;
    }
  }

  /** drainOnce(): rounds until one claims nothing and no unit waits out a claim's backoff. */
  async function drainDue(onProgress?: DrainOnceOptions['onProgress'], signal?: AbortSignal): Promise<DrainSummary> {
    const summary: DrainSummary = { processed: 0, failed: 0, retried: 0, dead: 0, waiting: 0, stopped: false };
    const count = (key: 'processed' | 'failed' | 'retried' | 'dead') => (e: { ids: string[] }) => void (summary[key] += e.ids.length);
    const off = [observer.on('processed', count('processed')), observer.on('failed', count('failed')), observer.on('retried', count('retried')), observer.on('dead', count('dead'))];
    const backlogValues = [listeners.map((l) => l.id), durable.map((c) => c.name), context];
    const backlog = async () => (await control.query<{ due: number; waiting: number }>(backlogSql, backlogValues)).rows[0]!;
    const stop = () => {
      summary.stopped = true;
      drain.closing = true;
    };
    if (signal?.aborted) stop();
    signal?.addEventListener('abort', stop, { once: true });
    try {
      let total = (await backlog()).due;
      const report = () => {
        const done = summary.processed + summary.failed;
        total = Math.max(total, done);
        onProgress?.(done, total);
      };
      const reporting = onProgress ? [observer.on('processed', report), observer.on('failed', report)] : [];
      off.push(...reporting);
      onProgress?.(0, total);
      while (!drain.closing) {
        const claimed = (await Promise.all(Array.from({ length: concurrency }, () => drain.round()))).reduce((a, b) => a + b, 0);
        if (claimed > 0) continue;
        const backoff = drain.backoff();
        if (!backoff) break;
        if (backoff.failures >= ONCE_CLAIM_FAILURES) {
          throw new PubSubError('pubsub.drainFailed', `Claims kept failing (${backoff.failures} in a row), so the drain stopped with notifications still due; they stay stored for the next drain or worker. The last error: ${backoff.error}`);
        }
        await new Promise((r) => setTimeout(r, Math.max(0, backoff.retryAt - Date.now())));
      }
      summary.waiting = (await backlog()).waiting;
      return summary;
    } finally {
      for (const f of off) f();
      signal?.removeEventListener('abort', stop);
    }
  }
  if (once) {
    let draining: Promise<DrainSummary> | undefined;
    const worker: OnceWorker = {
      channels: channels.map((c) => c.name),
      on: (event, fn) => observer.on(event, fn),
      readiness: () => health.readiness(),
      drainDue(onProgress?: DrainOnceOptions['onProgress'], signal?: AbortSignal) {
        return (draining ??= drainDue(onProgress, signal));
      },
      async close() {
        drain.closing = true;
        for (const timer of timers) clearTimeout(timer);
        await draining?.catch(() => {});
        await broadcast.settled();
        await prisma?.close();
        await relays?.close();
        await ledger.close();
        await endPools();
      },
    };
    return worker;
  }

  let connection: ListenConnection | undefined;
  if (options.listen !== false) {
    const probeChannel = `pubsub_probe_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
    let probeTimer: NodeJS.Timeout | undefined;
    let warnedDeaf = false;
    const deaf = (why: string) => {
      void wakeup?.reset(false); // writers need not notify a worker that cannot hear them
      if (!warnedDeaf) logger.warn(`${why}; falling back to polling every ${pollIntervalMs} ms (deliveries are unchanged, only slower). Set --listen-url to a session connection to get wake-ups back.`);
      warnedDeaf = true;
      observer.emit('pollingFallback', { reason: why });
    };
    let ready!: () => void;
    const listening = new Promise<void>((resolve) => (ready = resolve));
    const names = channels.map((c) => c.name);
    let lost = false;
    connection = createListenConnection({
      connectionString: options.listenUrl ?? databaseUrl,
      channels: [...names, probeChannel],
      onNotification: (channel, text) => {
        if (channel === probeChannel) {
          clearTimeout(probeTimer);
          void wakeup?.reset(true).then(kick); // now it may fall asleep and be woken
          return;
        }
        if (text !== '' && !registry.get(channel)?.durable) return broadcast.deliver(channel, text);
        kick(); // on a durable channel any NOTIFY is a wake-up, whatever it carries
      },
      onConnected: () => {
        void wakeup?.reset(false); // a new session holds no locks; asleep only once its test NOTIFY came back
        logger.info(`listening on ${names.join(', ') || '(no channel: schedules only)'}`);
        observer.emit('listening', { reconnect: lost });
        if (lost) observer.emit('reconnected', {});
        lost = false;
        ready();
        kick(); // catch up on everything stored while we were not listening
        // A transaction pooler accepts LISTEN but never delivers: check that a NOTIFY really arrives.
        clearTimeout(probeTimer);
        probeTimer = setTimeout(() => deaf('a test NOTIFY did not arrive on the LISTEN connection (PgBouncer in transaction mode?)'), 5000);
        control.query('select pg_notify($1, $2)', [probeChannel, 'probe']).catch(() => {});
      },
      onDisconnected: (error, retryInMs) => {
        void wakeup?.reset(false);
        logger.warn(`LISTEN connection lost or not yet made (${error.message}); connecting again in ${retryInMs} ms`);
        lost = true;
        observer.emit('disconnected', { error, retryInMs });
      },
      onListenRefused: (error) => {
        deaf(`the server refused LISTEN (${error.message})`);
        ready();
      },
    });
    wakeup = new Wakeup(connection, { channels: durable.map((c) => c.name), listeners: [...byId.keys()], unassigned: drainChannels, context }, logger);
    await listening;
  } else {
    logger.info(`polling ${channels.map((c) => c.name).join(', ')} every ${pollIntervalMs} ms (LISTEN disabled)`);
    kick();
  }
  const poll = setInterval(kick, pollIntervalMs);
  const maintenance = maintainEveryMs ? new Maintenance(bounded, control, maintainEveryMs, logger) : undefined;
  maintenance?.start();
  let scheduler: Scheduler | undefined;
  let schedulePool: pg.Pool | undefined;
  if (schedules.length) {
    schedulePool = new pg.Pool({ ...bounded, application_name: 'pubsub:schedule', max: 1, idleTimeoutMillis: 0 }); // its connection holds the running locks
    schedulePool.on('error', idleClosed);
    scheduler = new Scheduler({ schedules, pool: schedulePool, logger, ...(options.scheduleClock && { now: options.scheduleClock }) });
    scheduler.start();
  }

  return {
    channels: channels.map((c) => c.name),
    on: (event, fn) => observer.on(event, fn),
    readiness: () => health.readiness(),
    ...(server && { http: { port: server.port, host: server.host } }),
    ...(metrics && { metrics: metrics.registry }),
    async close() {
      if (closing) return;
      closing = true;
      health.closing = true;
      drain.closing = true;
      clearInterval(poll);
      await maintenance?.close();
      await scheduler?.close();
      await schedulePool?.end().catch(() => {});
      for (const timer of timers) clearTimeout(timer);
      await connection?.close();
      await running;
      await broadcast.settled();
      await prisma?.close();
      await relays?.close();
      await ledger.close();
      await endPools();
      await stopOperations();
    },
  };
}

/**
 * Waits for the server (retrying with backoff while it is unreachable: starting, restarting,
 * recovering), then checks the library's tables and the subscriptions of `listeners` (durable), and
 * reads the models' shapes, which every model of `triggers` must have.
 */
async function prepare(db: pg.Pool, listeners: ListenerDefinition[], triggers: ListenerDefinition[], logger: Logger, maintain: boolean): Promise<{ models: Map<string, ModelShape>; missing: Array<{ channel: string; listener: string }> }> {
  for (let failures = 0; ; failures++) {
    try {
      const version = (await db.query<{ version: number }>(schemaVersionSql)).rows[0]!.version;
      if (version < LIBRARY_SCHEMA_VERSION) {
        throw new PubSubError(
          'pubsub.schemaMissing',
          version === 0
            ? 'The pubsub tables are missing from this database. Run `pubsub make-migration`, then apply it with `prisma migrate deploy` (or `pubsub migrate`).'
            : `The pubsub tables are at version ${version}; this pgpubsub needs version ${LIBRARY_SCHEMA_VERSION}. Run \`pubsub make-migration\` and apply the migration it writes; notifications already stored are kept.`,
        );
      }
      const missing = await unsubscribed(db, listeners);
      for (const m of missing) {
        logger.warn(`${m.listener} is not subscribed to "${m.channel}" in this database, so nothing is stored for it. Run \`pubsub make-migration\` and apply the migration.`);
      }
      if (listeners.length && !maintain && !(await db.query<{ on: boolean }>(autovacuumSql)).rows[0]!.on) {
        logger.warn('autovacuum is off for pubsub.notification (server setting or table option): every processed notification leaves a dead row that only VACUUM removes, and claims slow down as they pile up. Turn autovacuum on, run `VACUUM pubsub.notification` every minute or so, or let the workers do it (--maintain, as the table owner).');
      }
      const models = new Map<string, ModelShape>((await db.query(modelsSql)).rows.map((r) => [r.name, r]));
      checkModels(triggers, models);
      return { models, missing };
    } catch (error) {
      if (error instanceof PubSubError || !unreachable(error)) throw error instanceof PubSubError ? error : new PubSubError('pubsub.config', `The database refused the worker: ${(error as Error).message}`, { cause: error });
      const ms = Math.round(Math.min(10_000, 100 * 2 ** failures) * (0.5 + Math.random() / 2));
      logger.warn(`waiting for PostgreSQL to accept connections (${(error as Error).message || (error as { code?: string }).code}); trying again in ${ms} ms`);
      await new Promise((r) => setTimeout(r, ms));
    }
  }
}

/**
 * Every model a trigger listener names must have its shape recorded (pubsub.model), which the migration
 * that installs its triggers does: a model missing there is misspelt, or its migration was never
 * made or applied, and the listener would wait forever for a trigger that does not exist.
 */
function checkModels(triggers: ListenerDefinition[], models: Map<string, ModelShape>): void {
  const unknown = triggers.filter((l) => !models.has(l.trigger!.model));
  if (!unknown.length) return;
  const known = [...models.keys()].sort();
  const which = unknown.map((l) => {
    const close = closestName(l.trigger!.model, known);
    return `${l.id} listens to model "${l.trigger!.model}"${close ? ` (did you mean "${close}"?)` : ''}`;
  });
  throw new PubSubError(
    'pubsub.unknownModel',
    `${which.join('; ')}, but no trigger migration applied to this database has installed ${unknown.length > 1 ? 'these models' : 'that model'}. Models its migrations recorded: ${known.join(', ') || '(none)'}. Fix the model name as schema.prisma writes it, or run \`pubsub make-migration\` and apply the migration it writes (prisma migrate deploy, or pubsub migrate) before starting the worker.`,
  );
}

/** The loaded listeners that the database does not subscribe to their channel (a listener deployed before its migration). */
async function unsubscribed(db: pg.Pool, all: ListenerDefinition[]): Promise<Array<{ channel: string; listener: string }>> {
  const listeners = all.filter((l) => !l.schedule); // the scheduler stores their slots itself, for them alone
  if (!listeners.length) return [];
  const subscribed = new Set((await db.query(subscriptionsOfSql, [listeners.map((l) => l.id)])).rows.map((r) => `${r.channel}\n${r.listener}`));
  return listeners.filter((l) => !subscribed.has(`${l.channel}\n${l.id}`)).map((l) => ({ channel: l.channel, listener: l.id }));
}
