/**
 * The real brokers for relay tests and chaos: RabbitMQ (AMQP_URL, default amqp://guest:guest@127.0.0.1:5672)
 * and NATS JetStream (NATS_URL, default nats://127.0.0.1:4222); read everything a queue or stream holds;
 * a TCP forwarder that can be taken down and brought back on the same port (a broker unreachable for a while),
 * or drop what the client sends.
 */
import net from 'node:net';
import amqp from 'amqplib';
import { connect as natsConnect, type NatsConnection } from 'nats';

export const AMQP_URL = process.env.AMQP_URL ?? 'amqp://guest:guest@127.0.0.1:5672';
export const NATS_URL = process.env.NATS_URL ?? 'nats://127.0.0.1:4222';

/** One message as a consumer sees it. */
export interface Received {
  id: string;
  /** The pgpubsub channel: AMQP `type`, NATS header `pubsub-channel`. */
  channel: string;
  body: any;
  headers: Record<string, string>;
  contentType?: string;
  destination: string;
}

export interface Rabbit {
  connection: amqp.ChannelModel;
  channel: amqp.Channel;
  /** Declares a durable queue (deleted by close()). */
  queue(name: string): Promise<void>;
  /** Takes every message the queue holds now, in queue order. */
  drain(queue: string): Promise<Received[]>;
  count(queue: string): Promise<number>;
  close(): Promise<void>;
}

export async function rabbit(url = AMQP_URL): Promise<Rabbit> {
  const connection = await amqp.connect(url);
  const channel = await connection.createChannel();
  const declared = new Set<string>();
  return {
    connection,
    channel,
    async queue(name) {
      await channel.assertQueue(name, { durable: true });
      declared.add(name);
    },
    async drain(queue) {
      const out: Received[] = [];
      for (;;) {
        const m = await channel.get(queue, { noAck: true });
        if (!m) return out;
        const headers = Object.fromEntries(Object.entries(m.properties.headers ?? {}).map(([k, v]) => [k, String(v)]));
        out.push({ id: m.properties.messageId, channel: m.properties.type, body: JSON.parse(m.content.toString()), headers, contentType: m.properties.contentType, destination: m.fields.routingKey });
      }
    },
    async count(queue) {
      return (await channel.checkQueue(queue)).messageCount;
    },
    async close() {
      for (const q of declared) await channel.deleteQueue(q).catch(() => {});
      await connection.close().catch(() => {});
    },
  };
}

export interface JetStream {
  nc: NatsConnection;
  /** Adds a stream capturing `subjects` (deleted by close()). */
  stream(name: string, subjects: string[]): Promise<void>;
  /** Every message the stream holds, in stream order. */
  read(stream: string): Promise<Received[]>;
  count(stream: string): Promise<number>;
  close(): Promise<void>;
}

export async function jetstream(url = NATS_URL): Promise<JetStream> {
  const nc = await natsConnect({ servers: url });
  const jsm = await nc.jetstreamManager();
  const added = new Set<string>();
  const count = async (stream: string) => (await jsm.streams.info(stream)).state.messages;
  return {
    nc,
    async stream(name, subjects) {
      await jsm.streams.add({ name, subjects });
      added.add(name);
    },
    async read(stream) {
      const info = await jsm.streams.info(stream);
      const out: Received[] = [];
      for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
        const m = await jsm.streams.getMessage(stream, { seq });
        const headers: Record<string, string> = {};
        for (const [k] of m.header ?? []) headers[k] = m.header!.get(k);
        out.push({ id: headers['Nats-Msg-Id']!, channel: headers['pubsub-channel']!, body: m.json(), headers, contentType: headers['Content-Type']!, destination: m.subject });
      }
      return out;
    },
    count,
    async close() {
      for (const s of added) await jsm.streams.delete(s).catch(() => {});
      await nc.close();
    },
  };
}

/** A loopback TCP forwarder to `target` on a fixed port, that can be taken down (every connection cut, nothing listening) and brought back. */
export class Forwarder {
  private server?: net.Server;
  private readonly sockets = new Set<net.Socket>();
  /** While set, what a client sends is dropped when this returns true for the chunk (acks that never reach the broker, say). */
  dropFromClient?: (chunk: Buffer) => boolean;
  private constructor(readonly port: number, private readonly target: number) {}

  /** A forwarder on a free port, down until up(). */
  static async create(target: number): Promise<Forwarder> {
    const probe = net.createServer();
    await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
    const port = (probe.address() as net.AddressInfo).port;
    await new Promise((resolve) => probe.close(resolve));
    return new Forwarder(port, target);
  }

  async up(): Promise<void> {
    if (this.server) return;
    const server = net.createServer((client) => {
      const upstream = net.connect(this.target, '127.0.0.1');
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on('close', () => this.sockets.delete(s));
        s.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.on('data', (chunk: Buffer) => {
        if (!this.dropFromClient?.(chunk)) upstream.write(chunk);
      });
      client.on('end', () => upstream.end());
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(this.port, '127.0.0.1', resolve));
    this.server = server;
  }

  async down(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    for (const s of this.sockets) s.destroy();
    if (server) await new Promise((resolve) => server.close(resolve));
  }
}
