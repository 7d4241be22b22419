/** Finds the Prisma schema and migrations folder, then plans and writes a trigger migration. */
import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { PubSubError } from './errors.js';
import { channelModes, planMigration, readMigrationState, subscriptions, triggerDefinitions, writeMigration } from './migration.js';
import { readPrismaSchema } from './prisma-schema.js';
import { getRegistry, type Registry } from './registry.js';

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
}

export interface GenerateResult {
  /** The new folder, when one was written. */
  folder?: string;
  /** True when the migrations already match the listeners. */
  upToDate: boolean;
  summary: string[];
  migrationsDir: string;
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
 * Writes `<migrations>/<timestamp>_<name>/migration.sql` with the library's tables (first time) and
 * the trigger functions and triggers added, changed or removed since the previous generated
 * migration. Deterministic; writes nothing when nothing changed; never edits an existing folder.
 */
export async function generateMigration(options: GenerateOptions = {}): Promise<GenerateResult> {
  const { schema, migrationsDir } = await resolvePrismaPaths(options);
  const registry = options.registry ?? getRegistry();
  const defs = triggerDefinitions(registry, readPrismaSchema(schema));
  const plan = planMigration(defs, readMigrationState(migrationsDir), subscriptions(registry), channelModes(registry));
  if (!plan) return { upToDate: true, summary: [], migrationsDir };
  if (options.check) return { upToDate: false, summary: plan.summary, migrationsDir };
  const folder = writeMigration(migrationsDir, plan, options.name);
  return { folder, upToDate: false, summary: plan.summary, migrationsDir };
}
