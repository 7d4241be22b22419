/**
 * A loopback TCP proxy in front of PostgreSQL that can go half-open: `freeze()` stops forwarding in
 * both directions without closing any socket (a frozen middlebox, a dead NAT entry), `cut()` closes
 * every connection, `close()` stops it.
 */
import net from 'node:net';

export interface Proxy {
  port: number;
  /** A database URL like `url` that goes through the proxy. */
  via(url: string): string;
  freeze(): void;
  thaw(): void;
  cut(): void;
  close(): Promise<void>;
}

export async function startProxy(target: { host: string; port: number }, port = 0): Promise<Proxy> {
  let frozen = false;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => s.destroy());
    }
    // Data that arrives while frozen is dropped, as a black hole would.
    client.on('data', (d) => void (!frozen && upstream.write(d)));
    upstream.on('data', (d) => void (!frozen && client.write(d)));
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const actual = (server.address() as net.AddressInfo).port;
  return {
    port: actual,
    via(url) {
      const u = new URL(url);
      u.hostname = '127.0.0.1';
      u.port = String(actual);
      return u.toString();
    },
    freeze: () => void (frozen = true),
    thaw: () => void (frozen = false),
    cut() {
      for (const s of sockets) s.destroy();
    },
    close() {
      for (const s of sockets) s.destroy();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** Host and port of a PostgreSQL URL (the proxy's target). */
export function targetOf(url: string): { host: string; port: number } {
  const u = new URL(url);
  return { host: u.hostname || '127.0.0.1', port: Number(u.port || 5432) };
}
