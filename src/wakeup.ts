/**
 * The worker's side of the wake-up handshake with writers (pubsub.wake() in sql.ts), on the LISTEN
 * session. Writers NOTIFY a channel only while one of its workers is asleep, which spares busy
 * writers the NOTIFY (every notifying commit of the cluster queues on one lock).
 *
 * States (moves only through the methods below, one at a time):
 *   deaf     LISTEN is not known to work on this session (not yet probed, or refused): never hold the
 *            sleep lock (through a transaction pooler it would land on a shared server connection);
 *            the worker polls.
 *   awake    draining; the sleep lock is not held, writers do not notify.
 *   settling the sleep lock is held; waiting until the gate is free, i.e. every writer that looked
 *            for a sleeper before we took the lock has committed. The gate is only ever tried, never
 *            waited for, so no writer queues behind the worker.
 *   looking  the gate was free and the last look after it found rows: the worker drains them, then
 *            sleeps, or wakes if it turned busy.
 *   asleep   the sleep lock is held and the last look found nothing: every later writer wakes us.
 *            A NOTIFY leaves us asleep: the worker drains with the lock held and wakes only once it
 *            is busy (worker.ts), so a quiet channel's next commit reaches it at once, with no
 *            handshake round trip in between.
 * Registering, trying the gate and the last look are one round trip (settleSql), so a worker that
 * just finished a notification is asleep, and reached by the next writer's NOTIFY, one round trip
 * after its commit.
 */
import type { ListenConnection } from './connection.js';
import { settleSql, wakeSql, type LookTarget } from './sql.js';
import type { Logger } from './types.js';

export type WakeState = 'deaf' | 'awake' | 'settling' | 'looking' | 'asleep';

export class Wakeup {
  state: WakeState = 'deaf';
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly connection: ListenConnection,
    private readonly target: LookTarget,
    private readonly logger: Logger,
  ) {}

  /** Runs one step after the previous one: the LISTEN session takes one statement at a time. */
  private step<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.chain.then(fn);
    this.chain = result.catch(() => {});
    return result;
  }

  /** A new session (holds no locks) whose LISTEN is proven (a test NOTIFY came back), or not. */
  reset(listening: boolean): Promise<void> {
    return this.step(async () => {
      this.state = listening ? 'awake' : 'deaf';
    });
  }

  /** Work was found or announced: let writers stop notifying. */
  wake(): Promise<void> {
    return this.step(async () => {
      if (this.state === 'awake' || this.state === 'deaf') return;
      this.state = 'awake';
      // Drops every session lock of this session (only sleep locks live there).
      await this.connection.query(wakeSql).catch((e) => this.logger.warn(`could not wake up: ${(e as Error).message}`));
    });
  }

  /**
   * The drain found nothing: register as asleep (if not yet), try the gate, and if it is free look at the
   * table once more. Returns 'asleep' (nothing was left: a NOTIFY wakes us), 'drain' (the last look
   * found rows: drain them, then `wake()` or `slept()`), 'retry' (a writer is still committing: try
   * again soon) or 'poll' (cannot sleep here; polling brings us back).
   */
  settle(): Promise<'asleep' | 'drain' | 'retry' | 'poll'> {
    return this.step(async () => {
      if (this.state === 'deaf' || this.state === 'asleep') return 'poll';
      const register = this.state === 'awake';
      const results = await this.connection.script(settleSql(this.target, register)).catch((e) => {
        this.logger.warn(`could not register as asleep: ${(e as Error).message}`);
        return undefined;
      });
      if (!results) return 'poll'; // disconnected: the reconnect resets us
      this.state = 'settling';
      const [gate, , look] = results.slice(-3);
      if (!gate?.rows[0]?.clear) return 'retry';
      if (look?.rows[0]?.found) {
        this.state = 'looking';
        return 'drain';
      }
      this.state = 'asleep';
      return 'asleep';
    });
  }

  /** The last look found nothing: asleep until a NOTIFY. */
  slept(): Promise<void> {
    return this.step(async () => {
      if (this.state === 'looking') this.state = 'asleep';
    });
  }
}
