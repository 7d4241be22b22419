/**
 * The RabbitMQ consumer of bridges (bridge.ts): amqplib, one connection and channel per bridge, manual
 * acks, prefetch = the batch size. Ack after the commit; a poison message is nacked without requeue
 * (to the queue's dead-letter exchange, if it has one; dropped otherwise). A lost connection or
 * channel, or a consumer the broker cancelled (the queue was deleted), is made again on the next take,
 * with backoff; the messages it had delivered unacked go back to the queue (redelivered).
 */
import type * as Amqp from 'amqplib';
import createDebug from 'debug';
import { BrokerSource, textHeaders, type Delivery, type Source } from './bridge.js';
import { amqpChannel } from './relay-amqp.js';
import type { Logger } from './types.js';

const debug = createDebug('pubsub:bridge:amqp');

export function amqpSource(lib: unknown, url: string, queue: string, prefetch: number, name: string, logger: Logger): Source {
  return new AmqpSource(lib as typeof Amqp, url, queue, prefetch, name, logger);
}

class AmqpSource extends BrokerSource<Amqp.Channel> {
  private connection?: Amqp.ChannelModel;
  private channelError?: string;

  constructor(
    private readonly lib: typeof Amqp,
    url: string,
    private readonly queue: string,
    private readonly prefetch: number,
    private readonly name: string,
    logger: Logger,
  ) {
    super('RabbitMQ', url, logger, name);
  }

  protected async connect(): Promise<Amqp.Channel> {
    const { connection, channel } = await amqpChannel(this.lib, this.url, `pgpubsub ${this.name}`, (c) => c.createChannel(), {
      lost: (c, why) => this.lost(c, why),
      channelError: (message) => (this.channelError = message),
    });
    try {
      this.channelError = undefined;
      await channel.prefetch(this.prefetch);
      this.connection = connection;
      await channel.consume(this.queue, (m) => {
        if (!m) this.lost(connection, `the broker cancelled the consumer of queue ${this.queue} (deleted?)`);
        else this.deliver(this.delivery(channel, m));
      });
      return channel;
    } catch (error) {
      if (this.connection === connection) this.connection = undefined;
      void connection.close().catch(() => {});
      throw error;
    }
  }

  private delivery(channel: Amqp.Channel, m: Amqp.ConsumeMessage): Delivery {
    const p = m.properties;
    const messageId = p.messageId === undefined || p.messageId === null ? undefined : String(p.messageId);
    const live = () => this.current === channel;
    const settle = (fn: () => void) => {
      if (!live()) return; // the channel is gone, and with it this delivery: the broker delivers the message again
      try {
        fn();
      } catch (error) {
        debug('could not settle %s: %s', messageId, (error as Error).message);
      }
    };
    return {
      key: messageId,
      body: m.content,
      meta: {
        ...(messageId !== undefined && { messageId }),
        headers: textHeaders(p.headers),
        queue: this.queue,
        exchange: m.fields.exchange,
        routingKey: m.fields.routingKey,
        redelivered: m.fields.redelivered,
        ...(p.type && { type: String(p.type) }),
      },
      live,
      ack: () => settle(() => channel.ack(m)),
      reject: () => settle(() => channel.nack(m, false, false)),
    };
  }

  private lost(connection: Amqp.ChannelModel, why: string): void {
    if (this.connection !== connection) return;
    if (!this.closed) this.logger.warn(`${this.role}: RabbitMQ connection lost (${this.channelError ?? why}); its unacked messages are delivered again, connecting again`);
    this.connection = undefined;
    this.forget();
    void connection.close().catch(() => {});
  }

  async close(): Promise<void> {
    this.closed = true;
    const connection = this.connection;
    this.connection = undefined;
    this.forget();
    await connection?.close().catch(() => {});
  }
}
