/**
 * Upkeep of pubsub.notification: the worker's `maintain` option (`pubsub listen --maintain`).
 *
 * Every processed notification leaves a dead row and dead index entries. Autovacuum removes the rows,
 * but a long transaction (its xmin) stops it, and once that transaction is over the indexes keep their
 * peak size: vacuum frees index pages for reuse and never gives them back, so every claim walks the
 * bloated indexes from then on (bench W11: 207 MB of indexes for 20 MB before, for good). Every
 * interval, one worker of the database at a time (an advisory lock):
 * - drops the indexes an interrupted rebuild left behind (invalid `…_ccnew` or `…_ccold`), which every
 *   write still updates;
 * - vacuums the table once dead rows pile up (over 10,000 and over a fifth of the live rows), and
 *   pubsub.fanout with it (writes for several listeners, moved out as their rows are made);
 * - rebuilds its indexes with REINDEX CONCURRENTLY (writers and claims go on) once they are over 32 MB
 *   and over 512 bytes per live row (a row's entries take about 60), at most once every four intervals.
 * Neither runs while a transaction older than the interval is open in the database: vacuum could not
 * remove what it still sees, and the rebuild would wait for it (the rebuild gives up after one interval
 * of waiting anyway, lock_timeout; its leftovers go at the next pass). It needs the table's owner (or
 * MAINTAIN on PostgreSQL 17): without it, it says so once and does nothing.
 */
import pg from 'pg';
import { destroySocket } from './connection.js';
import { MAINTAIN_LOCK, ident, maintenanceStateSql } from './sql.js';
import type { Logger } from './types.js';

export interface MaintainOptions {
  /** How often to look. @defaultValue 30000 */
  intervalMs?: number;
}

interface State {
  allowed: boolean;
  live: number;
  dead: number;
  heap: number;
  indexes: number;
  oldest_s: number;
  leftovers: string[];
}

const MB = 1024 * 1024;
const mb = (bytes: number) => `${(bytes / MB).toFixed(1)} MB`;

export class Maintenance {
  private timer: NodeJS.Timeout | undefined;
  private client: pg.Client | undefined;
  private pass: Promise<void> | undefined;
  private stopped = false;
  private rebuiltAt = -Infinity;

  constructor(
    private readonly connection: pg.ClientConfig,
    private readonly control: pg.Pool,
    private readonly intervalMs: number,
    private readonly logger: Logger,
  ) {}

  start(): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.pass = this.once()
        .catch((error) => {
          if (!this.stopped) this.logger.warn(`maintenance of pubsub.notification failed (trying again in ${this.intervalMs} ms): ${(error as Error).message}`);
          if (this.client) destroySocket(this.client);
          this.client = undefined;
        })
        .finally(() => {
          this.pass = undefined;
          this.start();
        });
    }, this.intervalMs);
  }

  /** One look, and what it calls for. */
  async once(): Promise<void> {
    const c = await this.connect();
    if (!(await c.query<{ locked: boolean }>(`select pg_try_advisory_lock(${MAINTAIN_LOCK}, 0) as locked`)).rows[0]!.locked) return; // another worker's turn
    try {
      let s = await this.state(c);
      if (!s.allowed) {
        this.stopped = true;
        this.logger.warn('maintenance of pubsub.notification needs its owner (or MAINTAIN on PostgreSQL 17), which this worker\'s role is not: it is off. Run the worker as the owner, or leave it to autovacuum and rebuild the indexes yourself (REINDEX TABLE CONCURRENTLY pubsub.notification) after long transactions.');
        return;
      }
      for (const name of s.leftovers) {
        await c.query(`drop index concurrently if exists pubsub.${ident(name)}`);
        this.logger.info(`maintenance: dropped ${name}, an index left invalid by an interrupted rebuild of pubsub.notification`);
      }
      const quiet = s.oldest_s * 1000 < this.intervalMs;
      if (quiet && s.dead > 10_000 && s.dead > s.live / 5) {
        const started = Date.now();
        await c.query('vacuum (skip_locked) pubsub.notification, pubsub.fanout');
        s = await this.state(c);
        this.logger.info(`maintenance: vacuumed pubsub.notification in ${Date.now() - started} ms (table ${mb(s.heap)}, indexes ${mb(s.indexes)})`);
      }
      if (quiet && s.indexes > Math.max(32 * MB, 512 * s.live) && Date.now() - this.rebuiltAt >= 4 * this.intervalMs) {
        const started = Date.now();
        this.rebuiltAt = started;
        await c.query('reindex table concurrently pubsub.notification');
        const after = await this.state(c);
        this.logger.info(`maintenance: rebuilt the indexes of pubsub.notification in ${Date.now() - started} ms: ${mb(s.indexes)} → ${mb(after.indexes)}`);
      }
    } finally {
      await c.query(`select pg_advisory_unlock(${MAINTAIN_LOCK}, 0)`);
    }
  }

  private async state(c: pg.Client): Promise<State> {
    return (await c.query<State>(maintenanceStateSql)).rows[0]!;
  }

  private async connect(): Promise<pg.Client> {
    if (this.client) return this.client;
    const c = new pg.Client({ ...this.connection, application_name: 'pubsub:maintain', query_timeout: undefined });
    c.on('error', () => {
      if (this.client === c) this.client = undefined;
    });
    await c.connect();
    // A rebuild that must wait longer than an interval for older transactions gives up (lock_timeout).
    await c.query(`select set_config('lock_timeout', $1, false)`, [String(this.intervalMs)]);
    this.client = c;
    return c;
  }

  /** Stops; a vacuum or rebuild under way is cancelled (a rebuild's leftovers go at the next pass of any worker). */
  async close(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    const c = this.client;
    const pid = (c as unknown as { processID?: number } | undefined)?.processID;
    if (this.pass && pid) await this.control.query('select pg_cancel_backend($1)', [pid]).catch(() => {});
    await this.pass;
    this.client = undefined;
    await c?.end().catch(() => {});
  }
}
