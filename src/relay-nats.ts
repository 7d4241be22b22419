/**
 * The NATS JetStream publisher of relays (relay.ts): the `nats` client. A burst is published at once
 * and each message is settled by its own publish ack: the stream stored it (or already had its
 * `Nats-Msg-Id` within the duplicate window: `duplicate`, still confirmed). No ack within the timeout,
 * no stream for the subject, or a lost connection = not confirmed. The client reconnects by itself; a
 * connection that could not be made or was closed is made again on the next burst, with backoff
 * between failed attempts.
 *
 * The acks come back on one reply subscription per connection (`<inbox>.<n>`), as Go's
 * PublishAsync does, instead of one `js.publish` request each: a request builds a deferred, a timer
 * and, even when it succeeds, an Error with a stack, and that was most of the relay's CPU.
 */
import type * as Nats from 'nats';
import createDebug from 'debug';
import { BrokerLink, RelayError, type Outgoing, type Publisher } from './relay.js';
import type { Logger } from './types.js';

const debug = createDebug('pubsub:relay:nats');

/** A publisher factory over the loaded nats module. */
export function natsPublisher(lib: unknown): (url: string, logger: Logger) => Publisher {
  return (url, logger) => new NatsPublisher(lib as typeof Nats, url, logger);
}

/** Settles one message: undefined once the stream acknowledged it, else why not. */
type Settle = (error?: Error) => void;

interface Link {
  nc: Nats.NatsConnection;
  inbox: string;
  /** Messages published on this connection and not yet acknowledged, by reply token. */
  waiting: Map<string, Settle>;
}

class NatsPublisher extends BrokerLink<Link> implements Publisher {
  private sent = 0;

  constructor(
    private readonly lib: typeof Nats,
    url: string,
    logger: Logger,
  ) {
    super('NATS', url, logger);
  }

  protected async connect(): Promise<Link> {
    const nc = await this.lib.connect({ servers: this.url, name: 'pgpubsub relay', maxReconnectAttempts: -1, reconnectTimeWait: 250, timeout: 10_000 });
    const link: Link = { nc, inbox: this.lib.createInbox(), waiting: new Map() };
    // A connection lost with messages in flight: their acks may never come, so they are not confirmed (retried, maybe duplicates the stream drops).
    const fail = (why: string) => {
      for (const settle of link.waiting.values()) settle(new Error(why));
      link.waiting.clear();
    };
    nc.subscribe(`${link.inbox}.*`, {
      callback: (_error, msg) => {
        const token = msg.subject.slice(link.inbox.length + 1);
        const settle = link.waiting.get(token);
        if (!settle) return; // late: its burst timed out
        link.waiting.delete(token);
        settle(ackError(msg));
      },
    });
    void nc.closed().then(() => {
      if (this.current === link) this.current = undefined;
      fail('the NATS connection closed');
    });
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect') {
          this.logger.warn(`relay: NATS connection lost; reconnecting (unconfirmed messages are retried)`);
          fail('the NATS connection was lost before the ack');
        } else if (s.type === 'reconnect') this.logger.info(`relay: reconnected to NATS`);
        else debug('status %s %o', s.type, s.data);
      }
    })().catch(() => {});
    return link;
  }

  async publish(messages: Outgoing[], options: { timeoutMs: number }): Promise<Array<Error | undefined>> {
    let link: Link;
    try {
      link = await this.open();
    } catch (error) {
      return messages.map(() => error as Error);
    }
    const tokens: string[] = [];
    const results = messages.map(
      (m) =>
        new Promise<Error | undefined>((resolve) => {
          const token = String(++this.sent);
          tokens.push(token);
          const settle: Settle = (error) =>
            resolve(error && new RelayError('pubsub.relayNotConfirmed', `JetStream did not acknowledge message ${m.id} on subject "${m.destination}": ${error.message}`, error));
          try {
            const h = this.lib.headers();
            h.set('Nats-Msg-Id', m.id);
            h.set('Content-Type', 'application/json');
            h.set('pubsub-channel', m.channel);
            if (m.headers) for (const [k, v] of Object.entries(m.headers)) h.set(k, v);
            link.waiting.set(token, settle);
            link.nc.publish(m.destination, m.body, { reply: `${link.inbox}.${token}`, headers: h });
          } catch (error) {
            link.waiting.delete(token);
            settle(error as Error);
          }
        }),
    );
    const timer = setTimeout(() => {
      for (const token of tokens) {
        const settle = link.waiting.get(token);
        link.waiting.delete(token);
        settle?.(new Error(`no ack within ${options.timeoutMs} ms`));
      }
    }, options.timeoutMs);
    try {
      return await Promise.all(results);
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    const link = this.current;
    this.current = undefined;
    await link?.nc.close().catch(() => {});
  }
}

/** A JetStream publish ack: undefined when the stream stored the message (or had it: a duplicate), else why not. */
function ackError(msg: Nats.Msg): Error | undefined {
  if (msg.headers?.code === 503) return new Error('no responders (no stream captures this subject?)');
  if (msg.headers?.hasError) return new Error(`${msg.headers.code} ${msg.headers.description}`);
  let ack: { stream?: string; duplicate?: boolean; error?: { code?: number; description?: string } };
  try {
    ack = JSON.parse(Buffer.from(msg.data).toString('utf8'));
  } catch {
    return new Error('an ack that is not JSON');
  }
  if (ack.error) return new Error(`${ack.error.code ?? ''} ${ack.error.description ?? 'error'}`.trim());
  if (!ack.stream) return new Error('an ack without a stream');
  if (ack.duplicate) debug('a duplicate (stream %s already had it)', ack.stream);
  return undefined;
}
