/**
 * The JetStream consumer of bridges (bridge.ts): the `nats` client consuming a durable pull consumer
 * (created by you, ack policy explicit), up to the batch size pulled at a time. Ack after the commit;
 * a poison message is terminated (`term`: never delivered again; JetStream publishes an advisory). The
 * de-duplication key is the message's Nats-Msg-Id, else its stream sequence (with the stream's creation
 * time, so a stream made again does not look like the old one). The client reconnects by itself;
 * a connection that could not be made or was closed is made again on the next take, with backoff.
 */
import type * as Nats from 'nats';
import createDebug from 'debug';
import { BrokerSource, type Delivery, type Source } from './bridge.js';
import type { Logger } from './types.js';

const debug = createDebug('pubsub:bridge:nats');

export function natsSource(lib: unknown, url: string, stream: string, consumer: string, batchSize: number, name: string, logger: Logger): Source {
  return new NatsSource(lib as typeof Nats, url, stream, consumer, batchSize, name, logger);
}

class NatsSource extends BrokerSource<Nats.NatsConnection> {
  /** The consumer's messages on the current connection: stopped before the connection is closed (else the client keeps pulling on a closed one). */
  private messages?: Nats.ConsumerMessages;

  constructor(
    private readonly lib: typeof Nats,
    url: string,
    private readonly stream: string,
    private readonly consumer: string,
    private readonly batchSize: number,
    private readonly name: string,
    logger: Logger,
  ) {
    super('NATS', url, logger, name);
  }

  protected async connect(): Promise<Nats.NatsConnection> {
    const nc = await this.lib.connect({ servers: this.url, name: `pgpubsub ${this.name}`, maxReconnectAttempts: -1, reconnectTimeWait: 250, timeout: 10_000 });
    try {
      const created = (await (await nc.jetstreamManager()).streams.info(this.stream)).created;
      // Pull requests that expire after 5 s: a closed bridge leaves no timer running longer than that.
      const messages = await (await nc.jetstream().consumers.get(this.stream, this.consumer)).consume({ max_messages: this.batchSize, expires: 5_000 });
      this.messages = messages;
      void (async () => {
        for await (const m of messages) this.deliver(this.delivery(m, created));
        this.lost(nc, `the consumer ${this.consumer} of stream ${this.stream} stopped`);
      })().catch((error: Error) => this.lost(nc, error.message));
      void nc.closed().then(() => this.lost(nc, 'connection closed'));
      void (async () => {
        for await (const s of nc.status()) {
          if (s.type === 'disconnect') this.logger.warn(`${this.role}: NATS connection lost; reconnecting (unacked messages are delivered again after their ack wait)`);
          else if (s.type === 'reconnect') this.logger.info(`${this.role}: reconnected to NATS`);
          else debug('status %s %o', s.type, s.data);
        }
      })().catch(() => {});
      return nc;
    } catch (error) {
      await nc.close().catch(() => {});
      throw error;
    }
  }

  private delivery(m: Nats.JsMsg, created: string): Delivery {
    const headers: Record<string, string> = {};
    for (const [k] of m.headers ?? []) headers[k] = m.headers!.get(k);
    const messageId = headers['Nats-Msg-Id'] || undefined;
    const settle = (fn: () => void) => {
      try {
        fn();
      } catch (error) {
        debug('could not settle %s: %s', m.seq, (error as Error).message); // a closed connection: delivered again after the ack wait
      }
    };
    return {
      key: messageId ?? `${created}/${m.seq}`,
      body: m.data,
      meta: { ...(messageId && { messageId }), headers, stream: this.stream, seq: m.seq, subject: m.subject, redelivered: m.redelivered },
      live: () => true, // an ack after a reconnect still counts; a late one is only a redelivery, which is de-duplicated
      ack: () => settle(() => m.ack()),
      reject: () => settle(() => m.term()), // no reason: servers before 2.10 ignore a "+TERM reason" (logged here instead)
      working: () => settle(() => m.working()),
    };
  }

  private lost(nc: Nats.NatsConnection, why: string): void {
    if (this.current !== nc) return;
    if (!this.closed) this.logger.warn(`${this.role}: NATS consumer lost (${why}); connecting again`);
    void this.end(nc);
  }

  private async end(nc: Nats.NatsConnection | undefined): Promise<void> {
    const messages = this.messages;
    this.messages = undefined;
    this.forget();
    await messages?.close().catch(() => {});
    await nc?.close().catch(() => {});
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.end(this.current);
  }
}
