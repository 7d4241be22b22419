/** Imports the user's modules named on the command line or in the config file: listeners (--require) and the Prisma factory (--prisma). */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { PubSubError } from '../errors.js';
import { getRegistry } from '../registry.js';
import type { PrismaFactory } from '../types.js';

/** Imports one compiled module; `flag` names where it was given, for the error. */
async function importModule(module: string, flag: string): Promise<Record<string, unknown>> {
  const file = path.resolve(module);
  if (/\.(c|m)?tsx?$/.test(file) && !file.endsWith('.d.ts')) {
    throw new PubSubError(
      'pubsub.config',
      `${flag} ${module}: pubsub loads compiled JavaScript. Compile with tsc (emitDecoratorMetadata on) and give the .js file; esbuild and tsx drop the metadata listeners need.`,
    );
  }
  try {
    return await import(pathToFileURL(file).href);
  } catch (cause) {
    if (cause instanceof PubSubError) throw cause;
    throw new PubSubError('pubsub.config', `${flag} ${module}: cannot load it: ${(cause as Error).message}`, { cause });
  }
}

/** A listener module's `shutdown` export, run by `pubsub listen` after the worker closed. */
export interface ShutdownHook {
  module: string;
  shutdown: () => unknown;
}

/** One imported listener module: what it exports, and which listeners it declared. */
export interface LoadedModule {
  /** As given (--require or "require" of the config file). */
  module: string;
  exports: Record<string, unknown>;
  /** Ids of the listeners registered while it was first imported: the ones it declares. */
  listeners: string[];
}

/** By resolved path: a module imported again (by another command of this process) keeps what it declared the first time. */
const imported = new Map<string, LoadedModule>();

/** An export by name, or the same name on the default export (CommonJS `module.exports` too). */
export function exported(exports: Record<string, unknown>, name: string): unknown {
  return exports[name] ?? (exports.default as Record<string, unknown> | undefined)?.[name];
}

/** Imports the listener modules in order, once each, noting the listeners each one declared. */
export async function importListenerModules(modules: string[]): Promise<LoadedModule[]> {
  const result: LoadedModule[] = [];
  for (const module of modules) {
    const key = path.resolve(module);
    let loaded = imported.get(key);
    if (!loaded) {
      const before = new Set(getRegistry().listenerIds);
      const exports = await importModule(module, '--require');
      loaded = { module, exports, listeners: [...getRegistry().listenerIds].filter((id) => !before.has(id)) };
      imported.set(key, loaded);
    }
    if (!result.includes(loaded)) result.push(loaded);
  }
  return result;
}

/** Imports the listener modules; returns their `shutdown` exports (named, or on the default export), once each. */
export async function loadModules(modules: string[]): Promise<ShutdownHook[]> {
  const hooks: ShutdownHook[] = [];
  for (const { module, exports } of await importListenerModules(modules)) {
    const shutdown = exported(exports, 'shutdown');
    if (shutdown === undefined) continue;
    if (typeof shutdown !== 'function') {
      throw new PubSubError('pubsub.config', `--require ${module}: its "shutdown" export must be a function (\`export async function shutdown() { await pool.end(); }\`), got ${typeof shutdown}.`);
    }
    if (!hooks.some((h) => h.shutdown === shutdown)) hooks.push({ module, shutdown: shutdown as () => unknown });
  }
  return hooks;
}

/** The `prisma` factory of a module: its export named `prisma`, else its default export (CommonJS `module.exports` too). */
export async function loadPrismaFactory(module: string): Promise<PrismaFactory> {
  const exports = await importModule(module, '--prisma');
  const fallback = exports.default as Record<string, unknown> | undefined;
  const factory = exports.prisma ?? fallback?.prisma ?? fallback;
  if (typeof factory !== 'function') {
    throw new PubSubError(
      'pubsub.config',
      `--prisma ${module}: export the function that builds your client, as \`export const prisma = (adapter) => new PrismaClient({ adapter })\` or \`export default\`; the module exports ${Object.keys(exports).join(', ') || 'nothing'}.`,
    );
  }
  return factory as PrismaFactory;
}
