/**
 * The web dashboard: a Node `(req, res)` handler that serves a static page (page.ts, client.js) and a
 * JSON API under it: the status report, the dead letters with their payloads, and retry and purge.
 * Mount it in your own server, or run it alone with `startDashboard()` (`pubsub dashboard`).
 * Mutations are refused server-side in read-only mode, need a JSON body and a custom header (so no
 * cross-site form or simple request can trigger them), and every request passes `authorize` first.
 */
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import pg from 'pg';
import { databaseUrlFromEnv, requireDatabaseUrl } from '../config.js';
import { countDead, listDead, purgeDead, retryDead, type DeadFilter } from '../dead.js';
import { PubSubError } from '../errors.js';
import type { PrismaModel } from '../prisma-schema.js';
import type { Registry } from '../registry.js';
import { statusMonitor } from '../status.js';
import { PAGE_HTML, PAGE_CSS } from './page.js';

/** The header every mutation must carry; a cross-site form cannot set it, and a cross-site fetch that does is preflighted (and gets no CORS answer). */
export const DASHBOARD_HEADER = 'x-pubsub-dashboard';

/** What `authorize` allows a request: everything, reading only, or nothing (403). */
export type DashboardAccess = boolean | 'read-only';

export interface DashboardOptions {
  /** A pool of the caller's (not closed by `close()`); or `databaseUrl`. */
  pool?: pg.Pool;
  /** @defaultValue DATABASE_URL */
  databaseUrl?: string;
  /** Refuse retry and purge for everyone. @defaultValue false */
  readOnly?: boolean;
  /**
   * Decides each request (the page, its script and every API call): true, 'read-only', or false for 403.
   * Without it every request may do everything the options allow: put the handler behind your own auth.
   */
  authorize?: (req: http.IncomingMessage) => DashboardAccess | Promise<DashboardAccess>;
  /** Listeners whose triggers and subscriptions the status compares. @defaultValue the global registry */
  registry?: Registry;
  /** Prisma models, to compare trigger listeners' triggers (see `StatusOptions.models`). */
  models?: Map<string, PrismaModel>;
}

export interface DashboardHandler {
  (req: http.IncomingMessage, res: http.ServerResponse): void;
  /** Closes the pool the handler opened (not one passed as `pool`). */
  close(): Promise<void>;
}

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-store',
};

const clientJs = () => fs.readFileSync(new URL('./client.js', import.meta.url));

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function send(res: http.ServerResponse, status: number, type: string, body: string | Buffer) {
  res.writeHead(status, { 'content-type': type, ...SECURITY_HEADERS });
  res.end(body);
}
const json = (res: http.ServerResponse, status: number, value: unknown) => send(res, status, 'application/json; charset=utf-8', JSON.stringify(value));

async function readJson(req: http.IncomingMessage): Promise<Record<string, unknown>> {
  const type = String(req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/json' || req.headers[DASHBOARD_HEADER] !== '1') {
    throw new HttpError(403, `Refused: a retry or purge must be a JSON request (content-type: application/json) with the header ${DASHBOARD_HEADER}: 1.`);
  }
  let body = '';
  for await (const chunk of req) {
    body += chunk;
    if (body.length > 10_000) throw new HttpError(413, 'The request body is too large.');
  }
  try {
    const value = JSON.parse(body || '{}');
    if (value && typeof value === 'object' && !Array.isArray(value)) return value;
  } catch {
    // answered below
  }
  throw new HttpError(400, 'The request body must be a JSON object such as {"id": "42"} or {"all": true, "channel": "jobs"}.');
}

const optionalString = (value: unknown, name: string) => {
  if (value === undefined || value === null || value === '') return undefined;
  if (typeof value !== 'string') throw new HttpError(400, `"${name}" must be a string.`);
  return value;
};

/** The rows a retry or purge acts on: one id, or all (optionally of a channel and listener). */
function targetOf(body: Record<string, unknown>): DeadFilter {
  const id = optionalString(body.id, 'id');
  if (id !== undefined && !/^\d{1,19}$/.test(id)) throw new HttpError(400, '"id" must be a notification id (digits).');
  if (id === undefined && body.all !== true) throw new HttpError(400, 'Name a notification ("id"), or pass "all": true (optionally with "channel" and "listener").');
  const channel = optionalString(body.channel, 'channel');
  const listener = optionalString(body.listener, 'listener');
  return { ...(id && { id }), ...(channel && { channel }), ...(listener && { listener }) };
}

/** The path below the mount point: Express gives it in req.url, a plain server the whole path (the handler only looks at the end). */
function route(req: http.IncomingMessage): { path: string; query: URLSearchParams; redirect?: string } {
  const url = new URL(req.url ?? '/', 'http://x');
  const original = new URL((req as { originalUrl?: string }).originalUrl ?? req.url ?? '/', 'http://x');
  const known = /\/(api\/status|api\/dead|api\/dead\/retry|api\/dead\/purge|app\.js|style\.css)$/.exec(url.pathname);
  if (known) return { path: known[1]!, query: url.searchParams };
  // The page uses relative URLs, so it must be served at a path ending in "/".
  if (!original.pathname.endsWith('/')) return { path: '', query: url.searchParams, redirect: `${original.pathname}/${original.search}` };
  return { path: '', query: url.searchParams };
}

/** A Node request handler for the dashboard: mount it at any path (`/pubsub/` …) of your server. */
export function dashboardHandler(options: DashboardOptions = {}): DashboardHandler {
  const own = !options.pool;
  const pool = options.pool ?? new pg.Pool({ connectionString: requireDatabaseUrl(options.databaseUrl ?? databaseUrlFromEnv()), max: 3 });
  if (own) pool.on('error', () => {});
  const monitor = statusMonitor({ pool, ...(options.registry && { registry: options.registry }), ...(options.models && { models: options.models }) });
  // Every open page polls; one sample serves them all. A sample scans pubsub.notification (about 1 s
  // per million rows), so samples are at least 5 times as far apart as the last one took, and 1 s.
  let cached: { at: number; report: Promise<unknown> } | undefined;
  let spacing = 1000;
  const report = () => {
    if (!cached || Date.now() - cached.at > spacing) {
      const started = Date.now();
      const pending = monitor.read();
      cached = { at: started, report: pending };
      pending.then(
        () => (spacing = Math.max(1000, (Date.now() - started) * 5)),
        () => (cached = undefined),
      );
    }
    return cached.report;
  };

  async function handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const access = options.authorize ? await options.authorize(req) : true;
    if (access === false) return json(res, 403, { error: 'Not authorized.' });
    const readOnly = !!options.readOnly || access === 'read-only';
    const { path, query, redirect } = route(req);
    const method = req.method ?? 'GET';
    const mutation = path === 'api/dead/retry' || path === 'api/dead/purge';
    if (mutation ? method !== 'POST' : method !== 'GET' && method !== 'HEAD') {
      res.setHeader('allow', mutation ? 'POST' : 'GET, HEAD');
      return json(res, 405, { error: `${method} is not allowed here.` });
    }
    if (redirect) {
      res.writeHead(301, { location: redirect, ...SECURITY_HEADERS });
      return void res.end();
    }
    switch (path) {
      case '':
        return send(res, 200, 'text/html; charset=utf-8', PAGE_HTML);
      case 'app.js':
        return send(res, 200, 'text/javascript; charset=utf-8', clientJs());
      case 'style.css':
        return send(res, 200, 'text/css; charset=utf-8', PAGE_CSS);
      case 'api/status':
        return json(res, 200, { readOnly, report: await report() });
      case 'api/dead': {
        const filter: DeadFilter = {};
        const channel = query.get('channel');
        const listener = query.get('listener');
        if (channel) filter.channel = channel;
        if (listener) filter.listener = listener;
        const limit = Math.min(Math.max(Number(query.get('limit')) || 50, 1), 1000);
        const [rows, total] = await Promise.all([listDead(pool, filter, limit, { payloads: true }), countDead(pool, filter)]);
        return json(res, 200, { rows, total, limit });
      }
      default: {
        const body = await readJson(req);
        if (readOnly) throw new HttpError(403, 'The dashboard is read-only: retry and purge are refused.');
        const target = targetOf(body);
        const count = await (path === 'api/dead/retry' ? retryDead : purgeDead)(pool, target);
        cached = undefined;
        return json(res, 200, { count });
      }
    }
  }

  const handler = ((req, res) => {
    handle(req, res).catch((error: unknown) => {
      if (res.headersSent) return void res.destroy();
      if (error instanceof HttpError) return json(res, error.status, { error: error.message });
      // Database errors (a missing grant, the server down) and a throwing authorize are the operator's to see; they carry no payload.
      const message = error instanceof PubSubError ? error.message : `Failed: ${(error as Error).message}`;
      json(res, 500, { error: message });
    });
  }) as DashboardHandler;
  handler.close = async () => {
    await monitor.close();
    if (own) await pool.end();
  };
  return handler;
}

export interface DashboardServer {
  /** http://host:port/ */
  url: string;
  server: http.Server;
  close(): Promise<void>;
}

/** The dashboard on its own HTTP server. @defaultValue host 127.0.0.1, port 8080 */
export async function startDashboard(options: DashboardOptions & { port?: number; host?: string } = {}): Promise<DashboardServer> {
  const handler = dashboardHandler(options);
  const host = options.host ?? '127.0.0.1';
  const loopback = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(host);
  const server = http.createServer((req, res) => {
    // DNS rebinding: a web page whose name resolves to 127.0.0.1 is same-origin with a dashboard on
    // loopback, custom header or not. Such a request names the page's host, not a loopback one.
    const name = (req.headers.host ?? '').replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1');
    if (loopback && !/^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(name)) {
      res.writeHead(421, { 'content-type': 'text/plain; charset=utf-8' });
      return void res.end('This dashboard answers only to a loopback host name (localhost, 127.0.0.1, [::1]).');
    }
    handler(req, res);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 8080, host, resolve);
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://${host.includes(':') ? `[${host}]` : host}:${port}/`,
    server,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
      await handler.close();
    },
  };
}
