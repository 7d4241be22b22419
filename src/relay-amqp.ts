/**
 * The RabbitMQ publisher of relays (relay.ts): amqplib on a confirm channel. A burst is published
 * back to back (waiting only when the socket's buffer is full) and each message is settled by its own
 * confirm: ack = the broker has it (persistent, in every queue it was routed to); nack, a return (no
 * queue bound, with `mandatory`), the channel closing, or no confirm within the timeout = not confirmed.
 * A lost connection is made again on the next burst, with backoff between failed attempts.
 */
import type * as Amqp from 'amqplib';
import createDebug from 'debug';
import { BrokerLink, RelayError, type Outgoing, type Publisher } from './relay.js';
import type { Logger } from './types.js';

const debug = createDebug('pubsub:relay:amqp');

/** A publisher factory over the loaded amqplib module. */
export function amqpPublisher(lib: unknown): (url: string, logger: Logger) => Publisher {
  return (url, logger) => new AmqpPublisher(lib as typeof Amqp, url, logger);
}

/**
 * A connection and a channel on it (`create`: a confirm channel to publish, a plain one to consume),
 * telling `events` when either closes and why the broker closed the channel. Shared by relays and bridges.
 */
export async function amqpChannel<C extends Amqp.Channel>(
  lib: typeof Amqp,
  url: string,
  connectionName: string,
  create: (connection: Amqp.ChannelModel) => Promise<C>,
  events: { lost(connection: Amqp.ChannelModel, why: string): void; channelError(message: string): void },
): Promise<{ connection: Amqp.ChannelModel; channel: C }> {
  const connection = await lib.connect(url, { timeout: 10_000, clientProperties: { connection_name: connectionName } });
  try {
    const channel = await create(connection);
    connection.on('error', (error: Error) => debug('connection error: %s', error.message));
    connection.on('close', () => events.lost(connection, 'connection closed'));
    channel.on('error', (error: Error) => {
      debug('channel error: %s', error.message);
      events.channelError(error.message);
    });
    channel.on('close', () => events.lost(connection, 'channel closed'));
    return { connection, channel };
  } catch (error) {
    void connection.close().catch(() => {});
    throw error;
  }
}

class AmqpPublisher extends BrokerLink<Amqp.ConfirmChannel> implements Publisher {
  private connection?: Amqp.ChannelModel;
  /** Why the broker closed the channel (a missing exchange, say): the confirms it fails are told it. */
  private channelError?: string;
  /** Message ids the broker returned (unroutable): their ack follows the return, and counts as a failure. */
  private readonly returned = new Set<string>();

  constructor(
    private readonly lib: typeof Amqp,
    url: string,
    logger: Logger,
  ) {
    super('RabbitMQ', url, logger);
  }

  protected async connect(): Promise<Amqp.ConfirmChannel> {
    const { connection, channel } = await amqpChannel(this.lib, this.url, 'pgpubsub relay', (c) => c.createConfirmChannel(), {
      lost: (c, why) => this.lost(c, why),
      channelError: (message) => (this.channelError = message),
    });
    channel.on('return', (msg: Amqp.Message) => this.returned.add(String(msg.properties.messageId)));
    this.channelError = undefined;
    this.connection = connection;
    return channel;
  }

  /** Forgets a connection that is gone; the next burst makes a new one. */
  private lost(connection: Amqp.ChannelModel, why: string): void {
    if (this.connection !== connection) return;
    if (!this.closed) this.logger.warn(`relay: RabbitMQ connection lost (${this.channelError ?? why}); unconfirmed messages are retried on a new connection`);
    this.connection = undefined;
    this.current = undefined;
    void connection.close().catch(() => {});
  }

  async publish(messages: Outgoing[], options: { exchange: string; mandatory: boolean; timeoutMs: number }): Promise<Array<Error | undefined>> {
    let channel: Amqp.ConfirmChannel;
    try {
      channel = await this.open();
    } catch (error) {
      return messages.map(() => error as Error);
    }
    const results: Array<Promise<Error | undefined>> = [];
    for (const m of messages) {
      let full = false;
      results.push(
        new Promise((resolve) => {
          try {
            const properties = { messageId: m.id, contentType: 'application/json', persistent: true, mandatory: options.mandatory, timestamp: Math.floor(m.createdAt / 1000), type: m.channel, appId: 'pgpubsub', ...(m.headers && { headers: m.headers }) };
            full = !channel.publish(options.exchange, m.destination, m.body, properties, (error: unknown) => {
              if (error) resolve(new RelayError('pubsub.relayNotConfirmed', `RabbitMQ did not confirm message ${m.id}: ${(error as Error).message ?? String(error)}${this.channelError ? ` (${this.channelError})` : ''}`, error));
              else if (this.returned.delete(m.id)) resolve(new RelayError('pubsub.relayNotConfirmed', `RabbitMQ returned message ${m.id}: no queue is bound to exchange "${options.exchange}" for routing key "${m.destination}" (mandatory)`));
              else resolve(undefined);
            });
          } catch (error) {
            resolve(new RelayError('pubsub.relayNotConfirmed', `could not publish message ${m.id} to RabbitMQ: ${(error as Error).message}`, error));
          }
        }),
      );
      // Back pressure: the socket's buffer is full; go on once it drained (or the channel is gone).
      if (full) await new Promise<void>((resolve) => {
        const done = () => {
          channel.off('drain', done);
          channel.off('close', done);
          resolve();
        };
        channel.on('drain', done);
        channel.on('close', done);
      });
    }
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), options.timeoutMs)));
    const settled = await Promise.race([Promise.all(results), timedOut]);
    clearTimeout(timer);
    if (settled !== 'timeout') return settled;
    // Confirms that may never come: this channel's late answers are not to be trusted for the next burst.
    if (this.connection) this.lost(this.connection, `no confirms within ${options.timeoutMs} ms`);
    const late = new RelayError('pubsub.relayNotConfirmed', `RabbitMQ did not confirm within ${options.timeoutMs} ms (timeoutMs); the message may have arrived and will be published again with the same message id`);
    return Promise.all(results.map((r) => Promise.race([r, Promise.resolve(late)])));
  }

  async close(): Promise<void> {
    this.closed = true;
    const connection = this.connection;
    this.connection = undefined;
    this.current = undefined;
    await connection?.close().catch(() => {});
  }
}
