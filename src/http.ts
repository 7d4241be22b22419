/**
 * The worker's HTTP endpoints, on plain node:http: `/healthz` (the process is alive and not closing),
 * `/readyz` (200 only while the worker is ready, else 503 with a JSON body that says why) and
 * `/metrics` (Prometheus text, when metrics are on). Anything else is 404.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { PubSubError } from './errors.js';
import type { MetricsRegistry } from './metrics.js';
import type { Observer } from './observe.js';

export interface HttpOptions {
  /** 0 picks a free port (read it from `worker.http.port`). */
  port: number;
  /** @defaultValue '0.0.0.0' (every interface, for probes from outside a container) */
  host?: string;
}

/** Why the worker is or is not ready: the body of `/readyz`. */
export interface Readiness {
  ready: boolean;
  /** One sentence per reason it is not ready (empty when ready). */
  reasons: string[];
  [detail: string]: unknown;
}

export interface HealthServer {
  readonly port: number;
  readonly host: string;
  close(): Promise<void>;
}

export interface HealthSources {
  live(): boolean;
  readiness(): Promise<Readiness>;
  metrics?: MetricsRegistry;
}

export async function startHealthServer(options: HttpOptions, sources: HealthSources): Promise<HealthServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const reply = (status: number, body: string, type = 'application/json') => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') return reply(405, JSON.stringify({ error: 'GET only' }));
    if (path === '/healthz') {
      const live = sources.live();
      return reply(live ? 200 : 503, JSON.stringify({ live }));
    }
    if (path === '/readyz') {
      sources.readiness().then(
        (r) => reply(r.ready ? 200 : 503, JSON.stringify(r)),
        (error: Error) => reply(503, JSON.stringify({ ready: false, reasons: [`readiness could not be checked: ${error.message}`] })),
      );
      return;
    }
    if (path === '/metrics' && sources.metrics) {
      const registry = sources.metrics;
      registry.metrics().then(
        (text) => reply(200, text, registry.contentType),
        (error: Error) => reply(500, `# metrics failed: ${error.message}\n`, 'text/plain'),
      );
      return;
    }
    reply(404, JSON.stringify({ error: 'not found', paths: ['/healthz', '/readyz', ...(sources.metrics ? ['/metrics'] : [])] }));
  });
  // Probes hold no state: do not let an idle keep-alive socket delay close().
  server.keepAliveTimeout = 1000;
  const host = options.host ?? '0.0.0.0';
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(new PubSubError('pubsub.config', `listen(): http: cannot serve on ${host}:${options.port} (${error.code ?? error.message}); choose another port or host.`, { cause: error })),
    );
    server.listen(options.port, host, resolve);
  });
  const port = (server.address() as AddressInfo).port;
  return {
    port,
    host,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

export interface ReadinessOptions {
  /** Whether the worker LISTENs (false: it polls only, and needs no connection to be ready). */
  listens: boolean;
  /** Reads the loaded listeners without a subscription in the database again (the migration may have been applied since). */
  recheck(): Promise<Array<{ channel: string; listener: string }>>;
}

/** Missing subscriptions are looked for again at most this often, while there are any. */
const RECHECK_MS = 5000;

/**
 * Readiness, from the worker's events: ready once LISTEN is committed (or the worker polls by choice
 * or by fallback) and the start-up catch-up is over; not ready while the LISTEN connection
 * reconnects, while the worker closes, or while a loaded listener has no subscription in the database
 * (nothing would ever be stored for it: a listener deployed before its migration).
 */
export class ReadinessTracker {
  private listening = false;
  private lostBecause: string | undefined;
  private fallback: string | undefined;
  private caughtUp = false;
  closing = false;
  /** Loaded listeners without a subscription in the database, as last found. */
  missing: Array<{ channel: string; listener: string }> = [];
  private checkedAt = Date.now();

  constructor(
    observer: Observer,
    private readonly o: ReadinessOptions,
  ) {
    observer.on('listening', () => {
      this.listening = true;
      this.lostBecause = undefined;
      this.fallback = undefined;
    });
    observer.on('disconnected', (e) => {
      this.listening = false;
      this.lostBecause = e.error.message;
    });
    observer.on('pollingFallback', (e) => (this.fallback = e.reason));
    observer.on('caughtUp', () => (this.caughtUp = true));
  }

  get pollingFallback(): boolean {
    return this.fallback !== undefined;
  }

  /** The state as last known, without a round trip. */
  get ready(): boolean {
    return this.reasons().length === 0;
  }

  private reasons(): string[] {
    const reasons: string[] = [];
    if (this.closing) reasons.push('the worker is closing');
    if (this.o.listens && !this.listening && !this.fallback) {
      reasons.push(this.lostBecause ? `the LISTEN connection is reconnecting (${this.lostBecause})` : 'LISTEN is not in place yet');
    }
    if (!this.caughtUp) reasons.push('the start-up catch-up (claiming what was stored while no worker ran) is not over yet');
    for (const m of this.missing) {
      reasons.push(`${m.listener} is not subscribed to "${m.channel}" in this database, so nothing is stored for it: run \`pubsub make-migration\` and apply the migration`);
    }
    return reasons;
  }

  async readiness(): Promise<Readiness> {
    if (this.missing.length && Date.now() - this.checkedAt >= RECHECK_MS) {
      this.checkedAt = Date.now();
      this.missing = await this.o.recheck();
    }
    const reasons = this.reasons();
    return {
      ready: reasons.length === 0,
      reasons,
      listening: this.listening,
      pollingFallback: this.fallback ?? null,
      caughtUp: this.caughtUp,
      missingSubscriptions: this.missing,
    };
  }
}
