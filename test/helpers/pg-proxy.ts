/**
 * A loopback TCP proxy in front of PostgreSQL that can misbehave on cue, for the failure paths of
 * the LISTEN connection: it recognizes the client's LISTEN statement in the byte stream and then
 * holds it, cuts the connection, or answers it with an error itself, as a proxy without LISTEN does.
 */
import net from 'node:net';

/** What to do with one connection when its LISTEN statement goes by. */
export type OnListen = 'pass' | 'hold' | 'cut' | 'refuse';

export interface ProxiedConnection {
  /** Stops forwarding in both directions without closing anything: a half-open connection. */
  blackhole(): void;
  /** Resolves when the client side of this connection is closed (e.g. destroyed by the client). */
  clientClosed: Promise<void>;
  /** Resolves when the LISTEN statement went by (after `hold`, `cut` or `refuse` took effect). */
  listenSeen: Promise<void>;
}

export interface Proxy {
  url(databaseUrl: string): string;
  /** Sets the behaviour of the next connection (later ones: 'pass'); resolves when it arrives. */
  next(onListen: OnListen): Promise<ProxiedConnection>;
  connections: ProxiedConnection[];
  close(): Promise<void>;
}

/** An ErrorResponse then ReadyForQuery, in the protocol's wire format. */
function errorReply(code: string, message: string): Buffer {
  const fields = Buffer.from(`SERROR\0VERROR\0C${code}\0M${message}\0\0`);
  const head = Buffer.alloc(5);
  head.write('E');
  head.writeInt32BE(4 + fields.length, 1);
  return Buffer.concat([head, fields, Buffer.from([0x5a, 0, 0, 0, 5, 0x49])]);
}

export async function startProxy(target: { host: string; port: number }): Promise<Proxy> {
  const plans: Array<{ onListen: OnListen; arrived(c: ProxiedConnection): void }> = [];
  const connections: ProxiedConnection[] = [];
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const plan = plans.shift();
    const onListen = plan?.onListen ?? 'pass';
    const upstream = net.connect(target.port, target.host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => sockets.delete(s));
    }
    let dark = false;
    let swallow = false;
    let seen!: () => void;
    const listenSeen = new Promise<void>((resolve) => (seen = resolve));
    const clientClosed = new Promise<void>((resolve) => client.on('close', () => resolve()));
    client.on('data', (chunk: Buffer) => {
      if (dark || swallow) return;
      // A simple-protocol Query message ('Q') whose text is pgpubsub's LISTEN statement.
      if (onListen !== 'pass' && chunk[0] === 0x51 && /^listen "/i.test(chunk.subarray(5).toString())) {
        swallow = true;
        if (onListen === 'cut') {
          client.destroy();
          upstream.destroy();
        } else if (onListen === 'refuse') {
          client.write(errorReply('0A000', 'LISTEN is not supported by this proxy'));
        }
        seen();
        return;
      }
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!dark) client.write(chunk);
    });
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.end());
    const connection = { blackhole: () => void (dark = true), clientClosed, listenSeen };
    connections.push(connection);
    plan?.arrived(connection);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    url(databaseUrl) {
      const u = new URL(databaseUrl);
      u.hostname = '127.0.0.1';
      u.port = String(port);
      return u.toString();
    },
    next: (onListen) => new Promise((arrived) => plans.push({ onListen, arrived })),
    connections,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
