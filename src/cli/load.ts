/** Imports the user's listener modules named by --require, so that their decorators run. */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { PubSubError } from '../errors.js';

export async function loadModules(modules: string[]): Promise<void> {
  for (const module of modules) {
    const file = path.resolve(module);
    if (/\.(c|m)?tsx?$/.test(file) && !file.endsWith('.d.ts')) {
      throw new PubSubError(
        'pubsub.config',
        `--require ${module}: pubsub loads compiled JavaScript. Compile with tsc (emitDecoratorMetadata on) and require the .js file; esbuild and tsx drop the metadata listeners need.`,
      );
    }
    try {
      await import(pathToFileURL(file).href);
    } catch (cause) {
      if (cause instanceof PubSubError) throw cause;
      throw new PubSubError('pubsub.config', `--require ${module}: cannot load it: ${(cause as Error).message}`, { cause });
    }
  }
}
