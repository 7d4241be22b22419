/**
 * The NATS JetStream publisher of relays (relay.ts): the `nats` client. A burst is published at once
 * (every `js.publish` in flight together) and each message is settled by its own publish ack: the
 * stream stored it (or already had its `Nats-Msg-Id` within the duplicate window: `duplicate`, still
 * confirmed). No ack within the timeout, no stream for the subject, or a lost connection = not
 * confirmed. The client reconnects by itself; a connection that could not be made or was closed is
 * made again on the next burst, with backoff between failed attempts.
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

class NatsPublisher extends BrokerLink<Nats.NatsConnection> implements Publisher {
  constructor(
    private readonly lib: typeof Nats,
    url: string,
    logger: Logger,
  ) {
    super('NATS', url, logger);
  }

  protected async connect(): Promise<Nats.NatsConnection> {
    // noAsyncTraces: no stack captured per publish for a timeout that rarely happens (an Error built
    // per message was a fifth of the relay's CPU; our errors name the message and subject instead).
    const connection = await this.lib.connect({ servers: this.url, name: 'pgpubsub relay', maxReconnectAttempts: -1, reconnectTimeWait: 250, timeout: 10_000, noAsyncTraces: true });
    void connection.closed().then(() => {
      if (this.current === connection) this.current = undefined;
    });
    void (async () => {
      for await (const s of connection.status()) {
        if (s.type === 'disconnect') this.logger.warn(`relay: NATS connection lost; reconnecting (unconfirmed messages are retried)`);
        else if (s.type === 'reconnect') this.logger.info(`relay: reconnected to NATS`);
        else debug('status %s %o', s.type, s.data);
      }
    })().catch(() => {});
    return connection;
  }

  async publish(messages: Outgoing[], options: { timeoutMs: number }): Promise<Array<Error | undefined>> {
    let js: Nats.JetStreamClient;
    try {
      js = (await this.open()).jetstream({ timeout: options.timeoutMs });
    } catch (error) {
      return messages.map(() => error as Error);
    }
    return Promise.all(
      messages.map(async (m) => {
        try {
          const h = this.lib.headers();
          h.set('Content-Type', 'application/json');
          h.set('pubsub-channel', m.channel);
          if (m.headers) for (const [k, v] of Object.entries(m.headers)) h.set(k, v);
          const ack = await js.publish(m.destination, m.body, { msgID: m.id, headers: h, timeout: options.timeoutMs });
          if (ack.duplicate) debug('%s was a duplicate (stream %s already had it)', m.id, ack.stream);
          return undefined;
        } catch (error) {
          return new RelayError('pubsub.relayNotConfirmed', `JetStream did not acknowledge message ${m.id} on subject "${m.destination}": ${(error as Error).message}${(error as { code?: string }).code === '503' ? ' (no stream captures this subject?)' : ''}`, error);
        }
      }),
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    const connection = this.current;
    this.current = undefined;
    await connection?.close().catch(() => {});
  }
}
