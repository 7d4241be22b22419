/**
 * `pubsub status` and the dashboard's figures: per channel and listener, what is pending, running,
 * failing and dead, how old the oldest unprocessed notification is and, while someone watches, how
 * many leave the table per minute; and whether the triggers, subscriptions and channel modes the
 * loaded listeners need are what the database holds. Reads only: it never writes to the database.
 */
import pg from 'pg';
import { databaseUrlFromEnv, requireDatabaseUrl } from './config.js';
import { PubSubError } from './errors.js';
import { channelModes, orderPaths, subscriptions, triggerDefinitions } from './migration.js';
import type { PrismaModel } from './prisma-schema.js';
import { getRegistry, type Registry } from './registry.js';
import { describeTiming, storedTiming, type Timing } from './timing.js';
import {
  LIBRARY_SCHEMA_VERSION,
  schemaVersionSql,
  statusChannelsSql,
  statusCountsSql,
  statusFunctionsSql,
  statusSchedulesSql,
  statusSubscriptionsSql,
  statusTriggersSql,
  statusWorkersSql,
  triggerFunctionSource,
  triggerNames,
  type TriggerDefinition,
} from './sql.js';

export interface StatusOptions {
  /** The database; or `pool`. @defaultValue DATABASE_URL */
  databaseUrl?: string;
  /** A pool of the caller's, used instead of `databaseUrl` (and not closed). */
  pool?: pg.Pool;
  /** The listeners whose triggers and subscriptions are compared with the database. @defaultValue the global registry */
  registry?: Registry;
  /**
   * The Prisma models (from `readPrismaSchema`), needed to compare trigger listeners' triggers. Without
   * them, triggers are not compared and `drift.notes` says so.
   */
  models?: Map<string, PrismaModel>;
}

/** One listener of one channel (`listener` null: rows stored before anyone subscribed, for every listener of the channel). */
export interface ListenerStatus {
  channel: string;
  listener: string | null;
  /** False for non-durable channels (nothing is stored, so every count is 0); null when the channel is not among the loaded listeners. */
  durable: boolean | null;
  /** Whether the loaded listener modules declare it; null when none were loaded. */
  loaded: boolean | null;
  /** Whether pubsub.subscription has it (durable channels; null for unassigned rows and non-durable channels). */
  subscribed: boolean | null;
  /** Stored, never attempted, not claimed right now. */
  pending: number;
  /** Claimed right now: locked by a worker's claim transaction, its listener running. */
  running: number;
  /** Attempted and failed at least once, waiting for the next attempt (not dead, not claimed now). */
  failing: number;
  /** Failed maxAttempts times: kept until retried or purged. */
  dead: number;
  /** Age of the oldest notification not processed yet and not dead (pending, running or failing), null when there is none. */
  oldestPendingSeconds: number | null;
  /** Notifications that left the table per minute, over `throughput.windowSeconds`; null before a second sample. */
  perMinute: number | null;
}

export interface WorkerStatus {
  /** `host:pid`, as the worker records its claims. */
  worker: string;
  /** Claim transactions in progress. */
  claims: number;
  rows: number;
  /** When its oldest claim in progress began. */
  since: Date;
}

export type TriggerState = 'ok' | 'missing' | 'differs' | 'disabled' | 'extra';

export interface TriggerStatus {
  state: TriggerState;
  trigger: string;
  function: string;
  table: string;
  schema?: string;
  /** Channel and model (expected triggers only). */
  channel?: string;
  model?: string;
  /** What differs, or what is missing. */
  detail?: string;
}

export interface DriftReport {
  /** True when everything compared matches; null when nothing was compared (no listener modules loaded). */
  ok: boolean | null;
  triggers: TriggerStatus[];
  /** Subscriptions the loaded listeners need but the database lacks (their notifications are not stored), and ones it has for listeners not loaded. */
  subscriptions: {
    missing: Array<{ channel: string; listener: string }>;
    extra: Array<{ channel: string; listener: string }>;
    /** Subscriptions whose writers store another order key path than the listener's (null: none, the worker keys the rows); `detail` says both in words. */
    orderKeys: Array<{ channel: string; listener: string; expected: string[] | null; installed: string[] | null; detail: string }>;
  };
  /** Channels whose mode in pubsub.channel is not what the loaded listeners declare (null: not recorded / not loaded). */
  channels: Array<{ name: string; expected: boolean | null; installed: boolean | null }>;
  /** What was not compared, and why. */
  notes: string[];
}

/** A schedule (@Every, @Cron), from pubsub.schedule and the loaded modules. */
export interface ScheduleStatus {
  name: string;
  kind: 'every' | 'cron';
  /** As the code says it: `every 5m`, `cron 0 * * * * (Europe/Paris)`. */
  when: string;
  /** The interval in ms, or the cron expression. */
  expression: string;
  timeZone: string | null;
  catchUp: string;
  /** The latest slot handed on (run, or published); null before the first. */
  lastSlot: Date | null;
  /** When it was handed on (the server's clock). */
  lastRunAt: Date | null;
  /** The next slot due; null when it cannot be told (a row written by another version). */
  nextSlot: Date | null;
  /** Slots handed on, and slots skipped (missed while no worker ran, by the catch-up policy). */
  runs: number;
  skipped: number;
  /** Whether the loaded modules declare it (null: none loaded); false also lists a schedule no worker has started yet as not recorded. */
  loaded: boolean | null;
  /** Whether a worker has recorded it in pubsub.schedule. */
  recorded: boolean;
}

export interface StatusReport {
  at: Date;
  library: { installed: number; expected: number };
  listeners: ListenerStatus[];
  totals: { pending: number; running: number; failing: number; dead: number };
  workers: WorkerStatus[];
  /** Schedules with their last and next slot. */
  schedules: ScheduleStatus[];
  throughput: {
    /** Seconds covered by the figures (at most 60); 0 before a second sample. */
    windowSeconds: number;
    /** All listeners, per minute; null before a second sample. */
    perMinute: number | null;
    /** Each interval between two samples of this process: its end, its length and how many left the table. */
    history: Array<{ at: Date; seconds: number; processed: number }>;
    note: string;
  };
  drift: DriftReport;
}

const THROUGHPUT_NOTE =
  'Measured by this process between its samples: notifications that left pubsub.notification (processed; a purge of dead ones counts too). pgpubsub keeps no count of processed notifications, so a single status has none.';
const WINDOW_MS = 60_000;
/** Intervals kept for the dashboard's chart. */
const HISTORY = 180;

interface CountRow {
  channel: string;
  listener: string | null;
  pending: number;
  running: number;
  failing: number;
  dead: number;
  oldest_seconds: number | null;
  up_to_previous: number;
  total: number;
  max_id: string | null;
}

interface Sample {
  at: number;
  maxId: string | null;
  totals: Map<string, number>;
}

const groupKey = (channel: string, listener: string | null) => `${channel}\n${listener ?? ''}`;

export interface StatusMonitor {
  /** Reads the database once more; throughput covers the samples of the last minute. */
  read(): Promise<StatusReport>;
  /** Closes the pool it opened (not one passed as `pool`). */
  close(): Promise<void>;
}

/**
 * A status reader that remembers its earlier samples, so that it can tell how many notifications left
 * the table between them: for each listener, the rows it had at the previous sample minus those it
 * still has with ids up to the previous highest id. Failed attempts put a row back with its own id, so
 * they do not count; rows whose writer committed after the previous sample with a lower id make it
 * count slightly less (never below 0).
 */
export function statusMonitor(options: StatusOptions = {}): StatusMonitor {
  const own = !options.pool;
  const pool = options.pool ?? new pg.Pool({ connectionString: requireDatabaseUrl(options.databaseUrl ?? databaseUrlFromEnv()), max: 1 });
  if (own) pool.on('error', () => {});
  const registry = options.registry ?? getRegistry();
  let previous: Sample | undefined;
  const intervals: Array<{ at: number; seconds: number; processed: Map<string, number> }> = [];

  async function sample(): Promise<StatusReport> {
    const client = await pool.connect();
    let counts: CountRow[];
    let at: number;
    let installed: number;
    let workers: WorkerStatus[];
    let drift: DriftReport;
    let subscribed: Set<string>;
    let scheduleRows: ScheduleRow[];
    let readable: boolean;
    try {
      installed = (await client.query<{ version: number }>(schemaVersionSql)).rows[0]!.version;
      if (installed < LIBRARY_SCHEMA_VERSION) {
        throw new PubSubError(
          'pubsub.schemaMissing',
          installed === 0
            ? 'This database has no pubsub tables. Run `pubsub make-migration` and apply the migration.'
            : `This database has version ${installed} of the pubsub tables; this pgpubsub needs ${LIBRARY_SCHEMA_VERSION}. Run \`pubsub make-migration\` and apply the migration.`,
        );
      }
      // One snapshot for every figure, so they add up.
      await client.query('begin transaction isolation level repeatable read read only');
      at = Date.now(); // the snapshot is taken by the next statement
      counts = (await client.query<CountRow>(statusCountsSql, [previous?.maxId ?? null])).rows;
      workers = (await client.query<WorkerStatus>(statusWorkersSql)).rows;
      // A role granted only what older versions documented still gets the rest of the report.
      readable = (await client.query<{ ok: boolean }>(`select has_table_privilege('pubsub.schedule', 'select') as ok`)).rows[0]!.ok;
      scheduleRows = readable ? (await client.query<ScheduleRow>(statusSchedulesSql)).rows : [];
      ({ subscribed, ...drift } = await compare(client, registry, options.models));
      if (!readable) drift.notes.push('Schedules were not read: this role may not read pubsub.schedule (grant select on pubsub.schedule).');
      await client.query('commit');
    } catch (error) {
      await client.query('rollback').catch(() => {});
      throw error;
    } finally {
      client.release();
    }

    const totals = new Map(counts.map((r) => [groupKey(r.channel, r.listener), r.total]));
    if (previous) {
      const upTo = new Map(counts.map((r) => [groupKey(r.channel, r.listener), r.up_to_previous]));
      const processed = new Map<string, number>();
      for (const [key, before] of previous.totals) processed.set(key, Math.max(0, before - (upTo.get(key) ?? 0)));
      intervals.push({ at, seconds: (at - previous.at) / 1000, processed });
      if (intervals.length > HISTORY) intervals.shift();
    }
    const maxIds = counts.filter((r) => r.max_id !== null).map((r) => BigInt(r.max_id!)); // null: only writes waiting to be moved
    previous = { at, maxId: maxIds.length ? String(maxIds.reduce((a, b) => (a > b ? a : b))) : (previous?.maxId ?? null), totals };

    const recent = intervals.filter((i) => i.at > at - WINDOW_MS);
    const windowSeconds = recent.reduce((s, i) => s + i.seconds, 0);
    const perMinute = (key?: string) => {
      if (!recent.length || windowSeconds <= 0) return null;
      let n = 0;
      for (const i of recent) for (const [k, v] of i.processed) if (key === undefined || k === key) n += v;
      return Math.round((n / windowSeconds) * 60 * 10) / 10;
    };

    const listeners = listenerRows(counts, registry, subscribed, perMinute);
    const sum = (f: 'pending' | 'running' | 'failing' | 'dead') => listeners.reduce((s, l) => s + l[f], 0);
    return {
      at: new Date(at),
      library: { installed, expected: LIBRARY_SCHEMA_VERSION },
      listeners,
      totals: { pending: sum('pending'), running: sum('running'), failing: sum('failing'), dead: sum('dead') },
      workers,
      schedules: readable ? scheduleStatus(scheduleRows, registry, at) : [],
      throughput: {
        windowSeconds: Math.round(windowSeconds * 10) / 10,
        perMinute: perMinute(),
        history: intervals.map((i) => ({ at: new Date(i.at), seconds: i.seconds, processed: [...i.processed.values()].reduce((a, b) => a + b, 0) })),
        note: THROUGHPUT_NOTE,
      },
      drift,
    };
  }

  // One sample at a time: two reads from the same previous sample would count its interval twice.
  let last: Promise<unknown> = Promise.resolve();
  const read = () => {
    const next = last.then(sample, sample);
    last = next.catch(() => {});
    return next;
  };
  return { read, close: async () => (own ? pool.end() : undefined) };
}

/** The figures once (no throughput: that takes two samples, see `statusMonitor`). */
export async function status(options: StatusOptions = {}): Promise<StatusReport> {
  const monitor = statusMonitor(options);
  try {
    return await monitor.read();
  } finally {
    await monitor.close();
  }
}

/** Rows of the database and listeners of the registry, merged: a loaded listener with nothing stored still shows. */
function listenerRows(counts: CountRow[], registry: Registry, subscribed: Set<string>, perMinute: (key: string) => number | null): ListenerStatus[] {
  const rows = new Map<string, ListenerStatus>();
  const base = (channel: string, listener: string | null): ListenerStatus => {
    const def = registry.get(channel);
    const durable = def ? def.durable : null;
    return {
      channel,
      listener,
      durable,
      loaded: registry.list().length === 0 ? null : !!def && (listener === null || def.listeners.some((l) => l.id === listener)),
      subscribed: listener === null || durable === false || def?.kind === 'schedule' ? null : subscribed.has(`${channel} ${listener}`),
      pending: 0,
      running: 0,
      failing: 0,
      dead: 0,
      oldestPendingSeconds: null,
      perMinute: perMinute(groupKey(channel, listener)),
    };
  };
  for (const c of registry.list()) for (const l of c.listeners) rows.set(groupKey(c.name, l.id), base(c.name, l.id));
  for (const r of counts) {
    const key = groupKey(r.channel, r.listener);
    rows.set(key, {
      ...(rows.get(key) ?? base(r.channel, r.listener)),
      pending: r.pending,
      running: r.running,
      failing: r.failing,
      dead: r.dead,
      oldestPendingSeconds: r.oldest_seconds === null ? null : Math.round(r.oldest_seconds * 10) / 10,
    });
  }
  return [...rows.values()].sort((a, b) => (a.channel === b.channel ? (a.listener ?? '').localeCompare(b.listener ?? '') : a.channel.localeCompare(b.channel)));
}

interface ScheduleRow {
  name: string;
  kind: string;
  expression: string;
  time_zone: string | null;
  catch_up: string;
  runs: number;
  skipped: number;
  covered_until: number;
  last_slot: number | null;
  last_run_at: Date | null;
  now: number;
}

/** Recorded schedules with their next slot, and loaded ones no worker has recorded yet. */
function scheduleStatus(rows: ScheduleRow[], registry: Registry, at: number): ScheduleStatus[] {
  const loadedAny = registry.list().length > 0 || registry.schedules.size > 0;
  const entry = (name: string, timing: Timing | undefined, fields: Omit<ScheduleStatus, 'name' | 'when' | 'nextSlot' | 'loaded'>, from: number): ScheduleStatus => {
    const next = timing?.next(from);
    return {
      name,
      when: timing ? describeTiming(timing) : `${fields.kind} ${fields.expression}`,
      ...fields,
      nextSlot: next === undefined || next === Infinity ? null : new Date(next),
      loaded: loadedAny ? registry.schedules.has(name) : null,
    };
  };
  const out = rows.map((r) =>
    entry(
      r.name,
      storedTiming(r.kind, r.expression, r.time_zone),
      {
        kind: r.kind as 'every' | 'cron',
        expression: r.expression,
        timeZone: r.time_zone,
        catchUp: r.catch_up,
        lastSlot: r.last_slot === null ? null : new Date(r.last_slot),
        lastRunAt: r.last_run_at,
        runs: r.runs,
        skipped: r.skipped,
        recorded: true,
      },
      Math.max(r.covered_until, r.now),
    ),
  );
  for (const s of registry.schedules.values()) {
    if (rows.some((r) => r.name === s.name)) continue;
    const t = s.timing;
    out.push(entry(s.name, t, { kind: t.kind, expression: t.expression, timeZone: t.timeZone, catchUp: s.catchUp, lastSlot: null, lastRunAt: null, runs: 0, skipped: 0, recorded: false }, at));
  }
  return out.sort((a, b) => a.name.localeCompare(b.name));
}

interface TriggerRow {
  trigger: string;
  schema: string;
  table: string;
  function_schema: string;
  function: string;
  source: string;
  enabled: string;
  type: number;
  has_condition: boolean;
  columns: string[];
}

const TG_ROW = 1;
const TG_BEFORE = 2;
const TG_EVENT = { INSERT: 4, DELETE: 8, UPDATE: 16 } as const;

/** What differs between the trigger `def` needs and the one installed, or an empty list. */
function triggerDifferences(def: TriggerDefinition, row: TriggerRow): string[] {
  const { functionName } = triggerNames(def);
  const out: string[] = [];
  if (row.function_schema !== 'pubsub' || row.function !== functionName) out.push(`it runs ${row.function_schema}.${row.function}(), not pubsub.${functionName}()`);
  const type = TG_ROW | (def.spec.when === 'BEFORE' ? TG_BEFORE : 0) | def.spec.events.reduce((t, e) => t | TG_EVENT[e], 0);
  if ((row.type & 0x7f) !== type) out.push('its timing or events differ');
  const columns = (def.spec.columns ?? []).map((name) => def.model.fields.find((f) => f.name === name)?.column ?? name).sort();
  const installed = [...row.columns].sort();
  if (columns.join('\n') !== installed.join('\n')) out.push(`it fires on UPDATE OF ${installed.join(', ') || '(any column)'}, not ${columns.join(', ') || '(any column)'}`);
  if (row.has_condition !== !!def.spec.condition) out.push(def.spec.condition ? 'its WHEN condition is missing' : 'it has a WHEN condition the listeners do not');
  if (row.source !== triggerFunctionSource(def)) out.push('its function body differs from what the listeners need (listeners, channel, selected fields or model changed)');
  return out;
}

/** An order key path as the listeners write it: `field path "a.b"`, `one key`, or `no key stored (the worker keys the rows)`. */
function describeOrderPath(path: string[] | null): string {
  if (path === null) return 'no key stored (the worker keys the rows)';
  return path.length ? `field path ${JSON.stringify(path.join('.'))}` : 'one key';
}

/** Compares the triggers, subscriptions and channel modes the registry needs with those the database holds. */
async function compare(client: pg.ClientBase, registry: Registry, models: Map<string, PrismaModel> | undefined): Promise<DriftReport & { subscribed: Set<string> }> {
  const report: DriftReport & { subscribed: Set<string> } = { ok: true, triggers: [], subscriptions: { missing: [], extra: [], orderKeys: [] }, channels: [], notes: [], subscribed: new Set() };
  const dbSubscriptions = (await client.query<{ channel: string; listener: string; order_path: string[] | null }>(statusSubscriptionsSql)).rows;
  for (const s of dbSubscriptions) report.subscribed.add(`${s.channel} ${s.listener}`);
  if (registry.list().length === 0) {
    report.notes.push('No listener modules were loaded (--require, or "require" in pubsub.config.json), so triggers, subscriptions and channel modes were not compared.');
    return { ...report, ok: null };
  }

  const expected = subscriptions(registry);
  const need = new Set(expected);
  report.subscriptions.missing = expected.filter((s) => !report.subscribed.has(s)).map(pair);
  report.subscriptions.extra = dbSubscriptions.filter((s) => !need.has(`${s.channel} ${s.listener}`)).map(({ channel, listener }) => ({ channel, listener }));
  const paths = orderPaths(registry);
  for (const s of dbSubscriptions) {
    const key = `${s.channel} ${s.listener}`;
    const expected = paths[key] ?? null;
    if (need.has(key) && JSON.stringify(expected) !== JSON.stringify(s.order_path)) {
      const detail = `${describeOrderPath(expected)} in the listeners, ${describeOrderPath(s.order_path)} in the database`;
      report.subscriptions.orderKeys.push({ channel: s.channel, listener: s.listener, expected, installed: s.order_path, detail });
    }
  }

  const modes = channelModes(registry);
  const installedModes = new Map((await client.query<{ name: string; durable: boolean }>(statusChannelsSql)).rows.map((r) => [r.name, r.durable]));
  for (const [name, durable] of Object.entries(modes)) {
    if (installedModes.get(name) !== durable) report.channels.push({ name, expected: durable, installed: installedModes.get(name) ?? null });
  }

  const triggerListeners = registry.list().some((c) => c.kind === 'trigger');
  if (triggerListeners && !models) {
    report.notes.push('Triggers were not compared: no Prisma schema (pass --schema, or set "schema" in pubsub.config.json).');
  } else {
    // With no trigger listeners loaded, every pgpubsub trigger in the database is extra.
    let defs: TriggerDefinition[];
    try {
      defs = models ? triggerDefinitions(registry, models) : [];
    } catch (error) {
      // The schema does not fit the listeners (a model it lacks): the rest of the report still holds.
      if (!(error instanceof PubSubError)) throw error;
      report.notes.push(`Triggers were not compared: ${error.message}`);
      defs = [];
    }
    const installed = (await client.query<TriggerRow>(statusTriggersSql)).rows;
    const functions = new Set((await client.query<{ function: string }>(statusFunctionsSql)).rows.map((r) => r.function));
    const matched = new Set<TriggerRow>();
    for (const def of defs) {
      const { functionName, triggerName } = triggerNames(def);
      const row = installed.find((r) => r.trigger === triggerName && r.table === def.model.table && (!def.model.schema || r.schema === def.model.schema));
      const entry: TriggerStatus = {
        state: 'ok',
        trigger: triggerName,
        function: functionName,
        table: def.model.table,
        ...(def.model.schema && { schema: def.model.schema }),
        channel: def.channel,
        model: def.model.name,
      };
      if (!row) {
        entry.state = 'missing';
        entry.detail = functions.has(functionName) ? 'its function exists, the trigger does not' : 'neither the trigger nor its function exists';
      } else {
        matched.add(row);
        const differences = triggerDifferences(def, row);
        if (differences.length) Object.assign(entry, { state: 'differs', detail: differences.join('; ') });
        else if (row.enabled === 'D') Object.assign(entry, { state: 'disabled', detail: 'the trigger is disabled (ALTER TABLE … DISABLE TRIGGER)' });
      }
      report.triggers.push(entry);
    }
    for (const row of installed) {
      if (matched.has(row) || !row.trigger.startsWith('_900_pubsub_')) continue;
      report.triggers.push({ state: 'extra', trigger: row.trigger, function: row.function, table: row.table, schema: row.schema, detail: 'no loaded listener needs it' });
    }
  }
  if (report.subscriptions.extra.length || report.triggers.some((t) => t.state === 'extra')) {
    report.notes.push('Extra triggers and subscriptions may belong to listeners not loaded here: load every listener module (as make-migration does) before acting on them.');
  }
  report.ok =
    report.triggers.every((t) => t.state === 'ok') && !report.subscriptions.missing.length && !report.subscriptions.extra.length && !report.subscriptions.orderKeys.length && !report.channels.length;
  return report;
}

const pair = (s: string) => ({ channel: s.slice(0, s.indexOf(' ')), listener: s.slice(s.indexOf(' ') + 1) });
