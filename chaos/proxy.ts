/**
 * A loopback TCP proxy that can go half-open: after freeze(), it stops forwarding in both directions
 * and stops reading, but closes nothing, and no longer passes a close from one side to the other.
 * Both peers see a healthy socket that never answers, as behind a NAT or firewall that dropped the
 * flow. Connections opened after freeze() are forwarded normally.
 */
import net from 'node:net';

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
  frozen: boolean;
}

/**
 * A DELETE that removed rows, then (after the claim script's last statement) ReadyForQuery with
 * transaction status 'T': the worker's claim came back non-empty and its transaction is open. Read as
 * latin1 so that every byte is one character.
 */
const CLAIMED_IN_TRANSACTION = /DELETE [1-9][0-9]*\x00[\s\S]*Z\x00\x00\x00\x05T/;

export class HalfOpenProxy {
  private readonly pairs = new Set<Pair>();
  private armed?: () => void;
  /** When the connections were frozen (performance.now()), and which upstream local ports they had. */
  frozenAt?: number;
  frozenPorts: number[] = [];

  private constructor(private readonly server: net.Server, readonly port: number, private readonly target: number) {}

  static async start(targetPort: number): Promise<HalfOpenProxy> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => server.once('error', reject).listen(0, '127.0.0.1', resolve));
    const proxy = new HalfOpenProxy(server, (server.address() as net.AddressInfo).port, targetPort);
    server.on('connection', (client) => proxy.accept(client));
    return proxy;
  }

  private accept(client: net.Socket): void {
    const upstream = net.connect(this.target, '127.0.0.1');
    const pair: Pair = { client, upstream, frozen: false };
    this.pairs.add(pair);
    client.on('data', (d) => {
      if (!pair.frozen) upstream.write(d);
    });
    upstream.on('data', (d) => {
      if (pair.frozen) return;
      client.write(d);
      if (this.armed && CLAIMED_IN_TRANSACTION.test(d.toString('latin1'))) this.armed();
    });
    const end = () => {
      if (pair.frozen) return; // half-open: nobody learns that the other side went away
      client.destroy();
      upstream.destroy();
      this.pairs.delete(pair);
    };
    for (const s of [client, upstream]) s.on('error', end).on('close', end);
  }

  /** Stops forwarding on every open connection, now. */
  freeze(): void {
    this.armed = undefined;
    this.frozenAt = performance.now();
    for (const pair of this.pairs) {
      pair.frozen = true;
      pair.client.pause();
      pair.upstream.pause();
      if (pair.upstream.localPort) this.frozenPorts.push(pair.upstream.localPort);
    }
  }

  /**
   * Freezes right after the server answers a claim that took rows, inside its open transaction (the
   * worker holds claimed rows and will never be heard again), or after `timeoutMs` regardless. Resolves with whether a transaction was caught.
   */
  freezeInTransaction(timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.freeze();
        resolve(false);
      }, timeoutMs);
      this.armed = () => {
        clearTimeout(timer);
        this.freeze();
        resolve(true);
      };
    });
  }

  /** Destroys every connection (the server then sees them close) and stops accepting. */
  async close(): Promise<void> {
    this.armed = undefined;
    for (const pair of this.pairs) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
    this.pairs.clear();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
