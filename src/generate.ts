/** Finds the Prisma schema and migrations folder, then plans and writes a trigger migration. */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import pg from 'pg';
import { PubSubError, closestName } from './errors.js';
import { prismaMigrations } from './migrate.js';
import { channelModes, onlyPlugins, orderPaths, planMigration, readMigrationState, subscriptions, triggerDefinitions, writeMigration, type MigrationBackend } from './migration.js';
import { readPrismaSchema } from './prisma-schema.js';
import { Registry, getRegistry } from './registry.js';
import { conditionCheckSql, scratchTableSql, tableColumnsSql, tableReference, type TriggerDefinition } from './sql.js';

export interface GenerateOptions {
  /** Prisma schema file or folder; default from prisma.config.ts, package.json "prisma.schema", then prisma/schema.prisma. */
  schema?: string;
  /** Default from prisma.config.ts, else `migrations` next to the schema. */
  migrationsDir?: string;
  /** Folder name suffix. @defaultValue 'pubsub' */
  name?: string;
  /** Only compare: write nothing. */
  check?: boolean;
  /** Where relative defaults are looked up. @defaultValue process.cwd() */
  cwd?: string;
  registry?: Registry;
  /**
   * Roles that may call pubsub.notify() (durable `notify()`): the migration grants them EXECUTE, and
   * revokes it from roles dropped from the list. Keep the list in pubsub.config.json ("grantNotify").
   */
  grantNotify?: string[];
  /**
   * A database to check trigger conditions against (a scratch table in a rolled-back transaction).
   * Without one, or when it cannot be reached, conditions are only checked for syntax that could end
   * the WHEN clause.
   */
  databaseUrl?: string;
  /**
   * Plugin name → ids of the listeners its modules declare (the CLI's plugin names). Recorded in the
   * migration, so that a later `only` run knows what each plugin had.
   */
  plugins?: Record<string, string[]>;
  /**
   * Write only what these plugins (names of `plugins`) need: their triggers and subscriptions are
   * added, changed or removed; everything else the migrations record is left as it is. For services
   * that share a database and its migrations folder, each loading its own listener modules.
   */
  only?: string[];
}

export interface GenerateResult {
  /** The new folder, when one was written. */
  folder?: string;
  /** True when the migrations already match the listeners. */
  upToDate: boolean;
  summary: string[];
  migrationsDir: string;
  /** Things the user should know that did not stop the migration (e.g. conditions not checked by a server). */
  notes: string[];
}

/** Paths from the project's prisma.config.ts, when @prisma/config (installed with prisma) can read it. */
async function prismaConfigPaths(cwd: string): Promise<{ schema?: string; migrations?: string }> {
  let mod: { loadConfigFromFile?: Function };
  try {
    const resolved = createRequire(path.join(cwd, 'index.js')).resolve('@prisma/config');
    mod = await import(pathToFileURL(resolved).href);
  } catch {
    return {};
  }
  const { config, resolvedPath } = (await mod.loadConfigFromFile?.({ configRoot: cwd })) ?? {};
  if (!resolvedPath || !config) return {};
  return { schema: config.schema, migrations: config.migrations?.path };
}

export async function resolvePrismaPaths(options: { schema?: string; migrationsDir?: string; cwd?: string }): Promise<{ schema: string; migrationsDir: string }> {
  const cwd = options.cwd ?? process.cwd();
  const fromConfig = options.schema && options.migrationsDir ? {} : await prismaConfigPaths(cwd);
  let schema = options.schema ?? fromConfig.schema;
  if (!schema) {
    const pkgFile = path.join(cwd, 'package.json');
    const pkgSchema = fs.existsSync(pkgFile) ? JSON.parse(fs.readFileSync(pkgFile, 'utf8')).prisma?.schema : undefined;
    schema = pkgSchema ?? ['prisma/schema.prisma', 'prisma/schema', 'schema.prisma'].find((p) => fs.existsSync(path.join(cwd, p)));
  }
  if (!schema) {
    throw new PubSubError('pubsub.config', `No Prisma schema found under ${cwd}. Pass --schema <file>, or set "schema" in pubsub.config.json.`);
  }
  schema = path.resolve(cwd, schema);
  const base = fs.existsSync(schema) && fs.statSync(schema).isDirectory() ? schema : path.dirname(schema);
  const migrationsDir = path.resolve(cwd, options.migrationsDir ?? fromConfig.migrations ?? path.join(base, 'migrations'));
  return { schema, migrationsDir };
}

/**
 * How the migrations in `migrationsDir` are stored and applied. Only Prisma 7's folders of
 * migration.sql exist so far; this is the one place that would pick another backend.
 */
export function migrationBackend(migrationsDir: string): MigrationBackend {
  return prismaMigrations(migrationsDir);
}

/** The project's migrations, found as `resolvePrismaPaths` finds them. */
export async function resolveMigrations(options: { schema?: string; migrationsDir?: string; cwd?: string }): Promise<MigrationBackend> {
  // A folder given outright needs no schema to be found (`pubsub migrate resolve` outside the project).
  const dir = options.migrationsDir ? path.resolve(options.cwd ?? process.cwd(), options.migrationsDir) : (await resolvePrismaPaths(options)).migrationsDir;
  return migrationBackend(dir);
}

/**
 * Writes `<migrations>/<timestamp>_<name>/migration.sql` with the library's tables (first time) and
 * the trigger functions and triggers added, changed or removed since the previous generated
 * migration. Deterministic; writes nothing when nothing changed; never edits an existing folder.
 */
export async function generateMigration(options: GenerateOptions = {}): Promise<GenerateResult> {
  const { schema, migrationsDir } = await resolvePrismaPaths(options);
  const migrations = migrationBackend(migrationsDir);
  const registry = options.registry ?? getRegistry();
  const models = readPrismaSchema(schema);
  const previous = readMigrationState(migrations);
  const plugins = options.plugins ?? {};
  const loose: string[] = [];
  let plan;
  let defs;
  if (options.only?.length) {
    for (const name of options.only) {
      if (plugins[name]) continue;
      const close = closestName(name, Object.keys(plugins));
      throw new PubSubError(
        'pubsub.plugin',
        `--only ${name}: no loaded module is the plugin "${name}".${close ? ` Did you mean "${close}"?` : ''} Plugins loaded: ${Object.keys(plugins).join(', ') || '(none)'}. A module's plugin name is its \`export const plugin\`, else the one channel its listeners declare.`,
      );
    }
    const selected = Object.fromEntries(options.only.map((name) => [name, plugins[name]!]));
    const ids = new Set(Object.values(selected).flat());
    const subset = new Registry();
    for (const channel of registry.list()) for (const listener of channel.listeners) if (ids.has(listener.id)) subset.register(listener);
    const narrowed = onlyPlugins(previous, { plugins: selected, defs: triggerDefinitions(subset, models), subscribed: subscriptions(subset), channels: channelModes(subset), orderPaths: orderPaths(subset) }, models, options.grantNotify);
    defs = narrowed.defs;
    loose.push(...narrowed.notes);
    plan = planMigration(defs, previous, narrowed.subscribed, narrowed.channels, narrowed.notifyRoles, narrowed.keep, narrowed.orderPaths);
  } else {
    defs = triggerDefinitions(registry, models);
    const loaded = new Set(registry.listenerIds);
    for (const [name, ids] of Object.entries(previous?.plugins ?? {})) {
      if (plugins[name] || ids.some((id) => loaded.has(id))) continue;
      loose.push(
        `the plugin ${name} (${ids.join(', ')}) is recorded in the migrations but not loaded: this migration unsubscribes its listeners and drops its triggers. If another service still runs it, delete the new folder and run make-migration --only <your plugins>, or load its module too.`,
      );
    }
    plan = planMigration(defs, previous, subscriptions(registry), channelModes(registry), options.grantNotify, { plugins }, orderPaths(registry));
  }
  const notes = [...loose, ...(await checkConditions(defs, options.databaseUrl))];
  if (!plan) return { upToDate: true, summary: [], migrationsDir, notes };
  if (options.check) return { upToDate: false, summary: plan.summary, migrationsDir, notes };
  const folder = writeMigration(migrations, plan, options.name);
  return { folder, upToDate: false, summary: plan.summary, migrationsDir, notes };
}

/**
 * Lets PostgreSQL judge each trigger condition: creates the trigger, with the same events and WHEN
 * clause, on a scratch table with the model's columns, in a transaction that is rolled back. The
 * condition has already passed conditionSql (one expression, no `;`, comments or dollar quotes), and
 * the statement goes through the extended protocol, which refuses more than one statement anyway.
 */
async function checkConditions(defs: TriggerDefinition[], databaseUrl: string | undefined): Promise<string[]> {
  const checked = defs.filter((d) => d.spec.condition);
  if (!checked.length) return [];
  if (!databaseUrl) return ['trigger conditions were checked for syntax only: set DATABASE_URL (or --database-url) to have PostgreSQL check them'];
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 5000 });
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (cause) {
    return [`trigger conditions were checked for syntax only: cannot connect to the database (${(cause as Error).message})`];
  }
  try {
    for (const [i, def] of checked.entries()) {
      const check = conditionCheckSql(def); // throws pubsub.invalidCondition before anything is sent
      await client.query(`begin; set local statement_timeout = '5s'; set local lock_timeout = '1s'`);
      try {
        // The real table's column types (enums, native types) when it already has every column of the model.
        const { rows } = await client.query<{ columns: string[] }>(tableColumnsSql, [tableReference(def.model)]);
        const like = def.model.fields.every((f) => rows[0]!.columns.includes(f.column));
        await client.query(scratchTableSql(def.model, like));
        await client.query({ name: `pubsub_condition_check_${i}`, text: check, values: [] });
      } catch (cause) {
        const message = (cause as Error).message;
        throw new PubSubError(
          'pubsub.invalidCondition',
          `${def.listeners.join(', ')}: PostgreSQL refuses the condition ${JSON.stringify(def.spec.condition)} on ${def.model.name} (${def.spec.when} ${def.spec.events.join(' OR ')}): ${message}. Write one SQL boolean expression over NEW./OLD. fields (OLD is not available on INSERT, nor NEW on DELETE).`,
          { cause },
        );
      } finally {
        await client.query('rollback').catch(() => {});
      }
    }
  } finally {
    await client.end().catch(() => {});
  }
  return [];
}
