/**
 * Plugins: listener modules that add their own subcommands, `pubsub <plugin> <command>`, through a
 * `registerCommands(cmd, ctx)` export (azafea's `register_commands`). Also names the plugins for
 * `make-migration --only`.
 *
 * A module's plugin name is its `plugin` export, else the one channel its listeners declare. A module
 * claims its name when it exports `plugin` or `registerCommands`; two claims of one name, a claimed
 * name that is a built-in command, or `registerCommands` without a name are errors.
 */
import path from 'node:path';
import { Command, Option } from 'commander';
import pg from 'pg';
import { databaseUrlFromEnv, loadFileConfig, requireDatabaseUrl, type FileConfig } from '../config.js';
import { PubSubError } from '../errors.js';
import { lineLogger } from '../log.js';
import { getRegistry } from '../registry.js';
import type { Logger } from '../types.js';
import { exported, importListenerModules, type LoadedModule } from './load.js';

/** The configuration a plugin command runs with: the config file's settings (paths absolute) and the database URL. */
export type PluginConfig = Readonly<FileConfig & {
  /** Folder of the config file (or the working directory without one). */
  dir: string;
  /** --database-url, else DATABASE_URL, else PUBSUB_DATABASE_URL; undefined when none is set. */
  databaseUrl?: string;
}>;

/** What `registerCommands` gets besides the command: read `config` and call `pool()` in actions, after parsing. */
export interface PluginContext {
  /** The plugin's name: the command its subcommands hang under. */
  readonly name: string;
  /** The resolved configuration of the command being run. Throws before an action runs. */
  readonly config: PluginConfig;
  /**
   * A pg.Pool on `config.databaseUrl`, made on first call (the same pool after that) and ended by the
   * CLI once the action returned or threw. Throws `pubsub.config` when no database URL is set.
   */
  pool(): pg.Pool;
  /** The CLI's logger: `pubsub: …` lines, warnings and errors on stderr. */
  readonly log: Logger;
}

/**
 * The `registerCommands` export of a plugin module: add subcommands to `cmd` (`cmd.command('recount')…`).
 * An action's exit code is the process's: the number it returns (0 to 255), or a thrown PubSubError's
 * `exitCode`; any other error exits 1.
 */
export type RegisterCommands = (cmd: PluginCommand, ctx: PluginContext) => void | Promise<void>;

/** One plugin: every loaded module of one name, and the listeners they declare. */
export interface Plugin {
  name: string;
  modules: LoadedModule[];
  listeners: string[];
  /** The module that registers commands, and its function. */
  commands?: { module: string; register: RegisterCommands };
}

/** Options the CLI reads before parsing (to find the modules) and takes anywhere after a plugin's name; plugins may not define them. */
const RESERVED = ['-r', '--require', '-c', '--config', '--database-url'];
/** A plugin name is a command name: no leading dash, nothing a shell would split. */
const NAME = /^[A-Za-z0-9][A-Za-z0-9_.:-]*$/;

const claim = (m: LoadedModule) => exported(m.exports, 'plugin') !== undefined || exported(m.exports, 'registerCommands') !== undefined;

/** The plugin name of a module: its `plugin` export, else the one channel of the listeners it declares, else undefined. */
function nameOf(m: LoadedModule): string | undefined {
  const declared = exported(m.exports, 'plugin');
  if (declared !== undefined) {
    if (typeof declared !== 'string' || !NAME.test(declared)) {
      throw new PubSubError('pubsub.plugin', `--require ${m.module}: its "plugin" export must be a name such as 'orders' (letters, digits, "_", ".", ":", "-"; not starting with "-"), got ${JSON.stringify(declared)}.`);
    }
    return declared;
  }
  const channels = channelsOf(m);
  return channels.length === 1 && NAME.test(channels[0]!) ? channels[0] : undefined;
}

function channelsOf(m: LoadedModule): string[] {
  const mine = new Set(m.listeners);
  return getRegistry()
    .list()
    .filter((c) => c.listeners.some((l) => mine.has(l.id)))
    .map((c) => c.name)
    .sort();
}

/** The plugins of the loaded modules, checked; `builtIns` are the CLI's own command names. */
export function resolvePlugins(modules: LoadedModule[], builtIns: string[]): Plugin[] {
  const plugins = new Map<string, Plugin>();
  const claimedBy = new Map<string, string>();
  for (const m of modules) {
    const register = exported(m.exports, 'registerCommands');
    if (register !== undefined && typeof register !== 'function') {
      throw new PubSubError('pubsub.plugin', `--require ${m.module}: its "registerCommands" export must be a function \`(cmd, ctx) => { cmd.command('…')… }\`, got ${typeof register}.`);
    }
    const name = nameOf(m);
    if (!name) {
      if (!register) continue;
      const channels = channelsOf(m);
      throw new PubSubError(
        'pubsub.plugin',
        `--require ${m.module} exports registerCommands but has no plugin name: its listeners declare ${channels.length ? `the channels ${channels.join(', ')}` : 'no channel'}. Name it: \`export const plugin = 'orders';\`.`,
      );
    }
    if (claim(m)) {
      const other = claimedBy.get(name);
      if (other) throw new PubSubError('pubsub.plugin', `The plugin name "${name}" is claimed by two modules, ${other} and ${m.module}. Give one of them another \`export const plugin = '…'\`.`);
      if (builtIns.includes(name)) {
        throw new PubSubError('pubsub.plugin', `--require ${m.module}: the plugin name "${name}" is a built-in command of pubsub (${builtIns.join(', ')}). Choose another: \`export const plugin = '…'\`.`);
      }
      claimedBy.set(name, m.module);
    }
    const plugin = plugins.get(name) ?? { name, modules: [], listeners: [] };
    plugin.modules.push(m);
    plugin.listeners = [...new Set([...plugin.listeners, ...m.listeners])].sort();
    if (register) plugin.commands = { module: m.module, register: register as RegisterCommands };
    plugins.set(name, plugin);
  }
  return [...plugins.values()];
}

/** The CLI's own command names (and aliases), and commander's implicit `help`. */
export const builtInCommands = (program: Command) => [...program.commands.flatMap((c) => [c.name(), ...c.aliases()]), 'help'];

/** The modules and config file named in argv, wherever they are (`-r x`, `--require x`, `--require=x`, `-rx`), and the operands. */
export function scanArgv(args: string[]): { require: string[]; config?: string; operands: string[] } {
  const found: { require: string[]; config?: string; operands: string[] } = { require: [], operands: [] };
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (arg === '--') {
      found.operands.push(...args.slice(i + 1));
      break;
    }
    const match = /^(?:(-r|--require|-c|--config)(?:=(.*))?|(-r|-c)(.+))$/.exec(arg);
    if (match) {
      const flag = match[1] ?? match[3]!;
      const value = match[2] ?? match[4] ?? args[++i];
      if (value === undefined) continue; // commander reports the missing value
      if (flag === '-r' || flag === '--require') found.require.push(value);
      else found.config = value;
    } else if (!arg.startsWith('-')) found.operands.push(arg);
  }
  return found;
}

/** What plugin commands left for `main()`: the exit code an action returned, and the pools to end. */
export interface PluginRun {
  exitCode?: number;
  close(): Promise<void>;
}

/**
 * The command a plugin's `registerCommands` gets: commander's Command, whose subcommands (made with
 * `cmd.command()`) may return their exit code from the action.
 */
export class PluginCommand extends Command {
  constructor(
    name: string | undefined,
    private readonly run: { exitCode?: number },
  ) {
    super(name);
  }

  override createCommand(name?: string): PluginCommand {
    return new PluginCommand(name, this.run);
  }

  /** As commander's, but a returned number (0 to 255) becomes the process's exit code. */
  override action(fn: (this: this, ...args: any[]) => void | number | Promise<void | number>): this {
    const run = this.run;
    return super.action(async function (this: PluginCommand, ...args: unknown[]) {
      const code: unknown = await (fn as (...a: unknown[]) => unknown).apply(this, args);
      if (code === undefined) return;
      if (typeof code !== 'number' || !Number.isInteger(code) || code < 0 || code > 255) {
        throw new PubSubError('pubsub.plugin', `${this.parent?.name()} ${this.name()}: the action returned ${JSON.stringify(code)}; return an exit code from 0 to 255, or nothing for 0.`);
      }
      run.exitCode = code;
    } as (this: this, ...args: any[]) => Promise<void>);
  }
}

const commonOptions = () => [
  new Option('-r, --require <module>', 'compiled module that declares listeners (repeatable)').argParser((v: string, p: string[] = []) => [...p, v]),
  new Option('-c, --config <file>', 'config file (default pubsub.config.json, or "pubsub" in package.json)'),
  new Option('--database-url <url>', 'PostgreSQL URL (default DATABASE_URL)'),
];

/** Every command under `command`, itself included. */
const tree = (command: Command): Command[] => [command, ...command.commands.flatMap(tree)];

/**
 * Adds each plugin's command group to `program`. `pubsub posts recount` loads the modules (from
 * -r/--require anywhere in argv, else the config file's "require") and fails on any plugin error;
 * `pubsub --help` (or no command) shows the plugins it can load and warns about the others; a
 * built-in command loads nothing here.
 */
export async function addPluginCommands(program: Command, argv: string[]): Promise<PluginRun> {
  const pools: pg.Pool[] = [];
  const run: PluginRun = { close: async () => void (await Promise.all(pools.splice(0).map((p) => p.end().catch(() => {})))) };
  const builtIns = builtInCommands(program);
  const scan = scanArgv(argv.slice(2));
  const [first, second] = scan.operands;
  const help = first === undefined || (first === 'help' && second === undefined);
  if (!help && builtIns.includes(first === 'help' ? second! : first!)) return run;
  const log = lineLogger();
  let plugins: Plugin[];
  try {
    const modules = scan.require.length ? scan.require : (loadFileConfig(process.cwd(), scan.config).require ?? []);
    plugins = resolvePlugins(await importListenerModules(modules), builtIns);
  } catch (error) {
    if (!help) throw error;
    log.warn(`plugin commands are not shown: ${(error as Error).message}`);
    return run;
  }
  for (const plugin of plugins.filter((p) => p.commands)) {
    const { module, register } = plugin.commands!;
    let config: PluginConfig | undefined;
    let pool: pg.Pool | undefined;
    const ctx: PluginContext = {
      name: plugin.name,
      get config() {
        if (!config) throw new PubSubError('pubsub.plugin', `${plugin.name}: ctx.config is known once the command line is parsed; read it in an action.`);
        return config;
      },
      pool() {
        if (!pool) {
          pool = new pg.Pool({ connectionString: requireDatabaseUrl(ctx.config.databaseUrl) });
          pool.on('error', (error) => log.warn(`${plugin.name}: an idle database connection failed: ${error.message}`));
          pools.push(pool);
        }
        return pool;
      },
      log,
    };
    const group = new PluginCommand(plugin.name, run).copyInheritedSettings(program).description(`Commands of the ${plugin.name} plugin (${path.relative(process.cwd(), path.resolve(module))}).`);
    for (const option of commonOptions()) group.addOption(option);
    group.hook('preAction', (_, action) => {
      const flags = action.optsWithGlobals<{ config?: string; databaseUrl?: string }>();
      const databaseUrl = flags.databaseUrl ?? databaseUrlFromEnv();
      config = Object.freeze({ ...loadFileConfig(process.cwd(), flags.config), ...(databaseUrl && { databaseUrl }) });
    });
    program.addCommand(group);
    try {
      await register(group, ctx);
      for (const command of tree(group).slice(1)) {
        command.exitOverride(); // also for commands made with `new Command()` and added
        if (command.commands.length) continue;
        const taken = RESERVED.filter((flag) => command.options.some((o) => o.short === flag || o.long === flag));
        if (taken.length) throw new Error(`${command.name()} defines ${taken.join(', ')}, which pubsub reads itself (${RESERVED.join(', ')}); name the option otherwise`);
        for (const option of commonOptions()) command.addOption(option);
      }
    } catch (cause) {
      (program.commands as Command[]).splice(program.commands.indexOf(group), 1);
      const error = new PubSubError('pubsub.plugin', `--require ${module}: registerCommands of the ${plugin.name} plugin failed: ${(cause as Error)?.message ?? cause}`, { cause });
      if (!help) throw error;
      log.warn(`plugin commands are not shown: ${error.message}`);
    }
  }
  return run;
}
