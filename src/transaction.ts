/**
 * The claim transaction: one pooled connection holding the transaction in which a batch of durable
 * notifications is claimed, processed and settled, and `ctx.tx`, the listener's guarded view of it.
 *
 * What it promises the failure path:
 * - One statement at a time, in call order (our own FIFO: pg's client-side queue is deprecated), so a
 *   listener's concurrent queries, its savepoint and ours never interleave.
 * - Every round trip the library makes is bounded: a connection that does not answer in `roundTripMs`
 *   (a frozen proxy, a dead NAT entry) is destroyed, and the transaction is lost.
 * - Every listener call that touches `ctx.tx` (or `ctx.prisma`, prisma.ts) runs in its own savepoint,
 *   released only when the listener left its transaction usable: a listener that swallowed a failed
 *   query fails its attempt. Transactions the listener opens itself (Prisma's `$transaction`) are
 *   savepoints nested inside it.
 * - COMMIT is checked: an aborted transaction that COMMIT silently rolls back is a lost batch.
 * Once lost, every later call fails with the loss; the caller hands the claim to the attempt ledger.
 */
import type pg from 'pg';
import { destroySocket } from './connection.js';
import { PubSubError } from './errors.js';
import type { Transaction } from './types.js';

type Query = string | pg.QueryConfig;

export class TransactionLostError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'TransactionLostError';
  }
}

export class ClaimTransaction {
  /** Why the transaction is gone (an error, the connection's end, a watchdog); set once. */
  lost: Error | undefined;
  /** The server process behind this connection, read in the claim (the right one behind PgBouncer too). */
  serverPid: number | undefined;
  private tail: Promise<unknown> = Promise.resolve();
  private readonly onError = (error: Error) => this.lose(new TransactionLostError(`the claim's connection failed: ${error.message}`, { cause: error }));
  private readonly onEnd = () => this.lose(new TransactionLostError('the server closed the claim\'s connection'));

  constructor(
    private readonly client: pg.PoolClient,
    private readonly roundTripMs: number,
  ) {
    // A checked-out client has no pool listener: without ours an error would crash the process.
    client.on('error', this.onError);
    client.on('end', this.onEnd);
  }

  /** Marks the transaction lost and destroys the socket (also a half-open one that would never answer). */
  lose(error: Error): void {
    if (this.lost) return;
    this.lost = error;
    destroySocket(this.client);
  }

  /**
   * Runs one statement after every earlier one. `bounded` (library statements): fails and loses the
   * connection if no answer comes in time. Listener statements are bounded by the listener's timeout.
   */
  run<R extends pg.QueryResultRow = any>(query: Query, values?: unknown[], bounded = true): Promise<pg.QueryResult<R>> {
    const result = this.tail.then(() => this.exec<R>(query, values, bounded));
    this.tail = result.catch(() => {});
    return result;
  }

  /** Several statements in one simple-protocol round trip; one result per statement. */
  async runScript(sql: string): Promise<pg.QueryResult[]> {
    const results = (await this.run(sql)) as unknown as pg.QueryResult[] | pg.QueryResult;
    return Array.isArray(results) ? results : [results];
  }

  private async exec<R extends pg.QueryResultRow>(query: Query, values: unknown[] | undefined, bounded: boolean): Promise<pg.QueryResult<R>> {
    if (this.lost) throw this.lost;
    if (!bounded) return this.client.query<R>(query as string, values);
    let timer: NodeJS.Timeout | undefined;
    const watchdog = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new TransactionLostError(`PostgreSQL did not answer within ${this.roundTripMs} ms; the connection is dropped (half-open?)`);
        this.lose(error);
        reject(error);
      }, this.roundTripMs);
    });
    try {
      return await Promise.race([this.client.query<R>(query as string, values), watchdog]);
    } catch (error) {
      // The server ended the connection (57P01, 25P03 idle timeout, a restart): nothing more will run on it.
      if (!this.lost && isConnectionError(error)) this.lose(new TransactionLostError(`the claim's connection was ended: ${(error as Error).message}`, { cause: error }));
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Waits until every queued statement settled, for at most `ms`; false if it did not. */
  async drained(ms = this.roundTripMs): Promise<boolean> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
    try {
      return await Promise.race([this.tail.then(() => true), timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Commits; a COMMIT that the server turned into a ROLLBACK (an aborted transaction) is a loss. */
  async commit(script = 'commit'): Promise<void> {
    const results = await this.runScript(script);
    const last = results[results.length - 1];
    if (last?.command !== 'COMMIT') {
      const error = new TransactionLostError(`COMMIT was refused (the server answered ${last?.command ?? 'nothing'}): the transaction had been aborted`);
      this.lose(error);
      throw error;
    }
  }

  /** A fresh guarded view of the transaction for one listener call. */
  scope(what: string): ListenerScope {
    return new ListenerScope(this, what);
  }

  /** Gives the connection back; a lost one is destroyed by the pool. */
  release(): void {
    this.client.off('error', this.onError);
    this.client.off('end', this.onEnd);
    // Late errors of a destroyed socket must still find a listener.
    if (this.lost) this.client.on('error', () => {});
    this.client.release(this.lost);
  }
}

/** Class 08 (connection exception), 57P01–57P03 (shutdown, crash), 25P03 (idle in transaction timeout), or no SQLSTATE at all. */
function isConnectionError(error: unknown): boolean {
  const code = (error as { code?: unknown })?.code;
  if (typeof code !== 'string' || !/^[0-9A-Z]{5}$/.test(code)) return true;
  return code.startsWith('08') || code.startsWith('57P') || code === '25P03';
}

const SAVEPOINT = 'pubsub_listener';

/**
 * What a listener gets as `ctx.tx`: queries only while its attempt runs, each after the savepoint
 * that isolates this call's writes, with the failures it sees remembered so that `finish()` can tell
 * whether the transaction is still usable.
 */
export class ListenerScope implements Transaction {
  private active = true;
  private savepoint = false;
  private inFlight = 0;
  /** Savepoints of transactions the listener opened inside this call (`nested()`), innermost last. */
  private readonly open: string[] = [];
  private opened = 0;
  private readonly closers: Array<() => void> = [];
  /** The first query of this call that failed (the listener may have swallowed it). */
  failure: unknown;

  constructor(
    private readonly tx: ClaimTransaction,
    /** Names the listener call in errors. */
    readonly what: string,
  ) {}

  /** False once the attempt is over: every further query is refused. */
  get usable(): boolean {
    return this.active;
  }

  query<R extends pg.QueryResultRow = any>(text: Query, values?: unknown[]): Promise<pg.QueryResult<R>> {
    if (!this.active) {
      return Promise.reject(
        new PubSubError('pubsub.invalidClient', `ctx.tx of ${this.what} was used after its attempt ended (it returned, failed or timed out); its transaction is no longer yours.`),
      );
    }
    if (!this.savepoint) {
      this.savepoint = true;
      void this.tx.run(`savepoint ${SAVEPOINT}`).catch(() => {}); // its failure fails the query queued behind it
    }
    this.inFlight++;
    return this.tx.run<R>(text, values, false).then(
      (result) => {
        this.inFlight--;
        return result;
      },
      (error) => {
        this.inFlight--;
        this.failure ??= error;
        throw error;
      },
    );
  }

  /**
   * Opens a transaction of the listener's own, as a savepoint inside this call's (Prisma's BEGIN).
   * Its `end(keep)` releases it (COMMIT) or rolls it back (ROLLBACK); callers nest them strictly.
   */
  async nested(): Promise<{ end(keep: boolean): Promise<void> }> {
    const name = `pubsub_nested_${this.opened++}`;
    await this.query(`savepoint ${name}`);
    this.open.push(name);
    return {
      end: async (keep) => {
        if (this.open.at(-1) !== name) throw new PubSubError('pubsub.invalidClient', `${this.what}: a transaction ended out of order (${name} is not the innermost open one).`);
        // A release refused (the savepoint is aborted) leaves it open, for the rollback that follows.
        await this.query(keep ? `release savepoint ${name}` : `rollback to savepoint ${name}; release savepoint ${name}`);
        this.open.pop();
      },
    };
  }

  /** True while a statement of this listener is running on the server. */
  get busy(): boolean {
    return this.inFlight > 0;
  }

  /** Runs `fn` once, when the attempt is over (returned, failed or timed out). */
  onClose(fn: () => void): void {
    if (this.active) this.closers.push(fn);
    else fn();
  }

  /** Refuses further queries (the attempt is over, whatever the listener still does). */
  close(): void {
    if (!this.active) return;
    this.active = false;
    for (const fn of this.closers.splice(0)) fn();
  }

  /**
   * The listener returned: keep its writes if its transaction is usable. Throws when a query it made
   * failed and left the transaction aborted, or when it returned with a transaction of its own still
   * open (after rolling its writes back).
   */
  async finish(): Promise<void> {
    this.close();
    if (!this.savepoint) return;
    if (this.open.length) {
      const open = this.open.length;
      await this.undo();
      throw new PubSubError(
        'pubsub.transactionAborted',
        `${this.what} returned while ${open === 1 ? 'a transaction it opened was' : `${open} transactions it opened were`} still open (a ctx.prisma.$transaction(…) not awaited?), so its writes were rolled back and the attempt counts as failed. Await every transaction before returning.`,
      );
    }
    this.savepoint = false; // settled here, one way or the other
    try {
      await this.tx.run(`release savepoint ${SAVEPOINT}`);
      return;
    } catch (error) {
      if ((error as { code?: string }).code !== '25P02') throw error; // anything else: the transaction is lost
    }
    await this.tx.runScript(`rollback to savepoint ${SAVEPOINT}; release savepoint ${SAVEPOINT}`);
    const reason = this.failure instanceof Error ? this.failure.message : String(this.failure);
    throw new PubSubError(
      'pubsub.transactionAborted',
      `${this.what} returned normally, but a query it made through ctx.tx or ctx.prisma failed ("${reason}") and left its transaction aborted, so its writes could not be kept and the attempt counts as failed. Let the error propagate, avoid it in SQL (e.g. \`insert … on conflict do nothing\`), or recover with a savepoint around the statement (ctx.prisma.$transaction does that).`,
      { cause: this.failure },
    );
  }

  /** The attempt failed: undo this call's writes (and with them every savepoint opened inside). */
  async undo(): Promise<void> {
    this.close();
    this.open.length = 0;
    if (!this.savepoint) return;
    this.savepoint = false;
    await this.tx.runScript(`rollback to savepoint ${SAVEPOINT}; release savepoint ${SAVEPOINT}`);
  }
}
