// The dashboard over real HTTP and in a real headless browser (Debian's chromium driven by
// playwright-core): the page shows what the database holds, a retry from the page makes a dead
// notification run again in a real worker, read-only mode and cross-site posts are refused by the
// server, the auth hook decides every request, and a hostile payload is shown as text.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { Listen, dashboardHandler, listen, notify, startDashboard, type DashboardServer, type NotificationContext, type Worker } from '../../src/index.js';
import { Registry } from '../../src/registry.js';
import { startCli } from '../helpers/cli.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

/** Debian's chromium; PUBSUB_CHROMIUM names another (or a missing one, to see the skip). */
const CHROMIUM = process.env.PUBSUB_CHROMIUM ?? '/usr/bin/chromium';
const HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">';

class Order {
  n!: number;
  html?: string;
}
/** Attempts per n; an n in `failing` throws. */
const runs = new Map<number, number>();
const failing = new Set<number>();
class OrderListeners {
  @Listen('dash_orders', { maxAttempts: 1 })
  handle(order: Order, _ctx: NotificationContext) {
    runs.set(order.n, (runs.get(order.n) ?? 0) + 1);
    if (failing.has(order.n)) throw new Error(`order ${order.n} failed: ${HOSTILE}`);
  }
}
void OrderListeners;

let db: TestDatabase;
let worker: Worker;
/** The user's own server, with the dashboard mounted under /ops/ behind its auth hook. */
let app: http.Server;
let appUrl: string;
let readOnly: DashboardServer;
let handler: ReturnType<typeof dashboardHandler>;
const quiet = { info() {}, warn() {}, error() {} };

before(async () => {
  db = await createTestDatabase({ library: true, subscribe: true });
  failing.add(1).add(2).add(3);
  for (let n = 1; n <= 5; n++) await notify('dash_orders', n === 2 ? { n, html: HOSTILE } : { n }, { client: db.pool });
  worker = await listen({ databaseUrl: db.url, logger: quiet, pollIntervalMs: 200 });
  await waitFor(async () => (await db.query('select count(*)::int as n from pubsub.notification where dead_at is not null'))[0].n === 3, 'three dead');
  await waitFor(async () => (await db.query('select count(*)::int as n from pubsub.notification'))[0].n === 3, 'the two others done');
  // Work no worker takes (nobody listens to it here): pending rows.
  for (let n = 0; n < 4; n++) await notify('dash_idle', { n }, { client: db.pool });

  handler = dashboardHandler({
    pool: db.pool,
    registry: new Registry(),
    authorize: (req) => (req.headers.cookie?.includes('session=admin') ? true : req.headers.cookie?.includes('session=viewer') ? 'read-only' : false),
  });
  app = http.createServer((req, res) => (req.url?.startsWith('/ops/') || req.url === '/ops' ? handler(req, res) : (res.writeHead(404), res.end('not here'))));
  await new Promise<void>((resolve) => app.listen(0, '127.0.0.1', resolve));
  appUrl = `http://127.0.0.1:${(app.address() as AddressInfo).port}/ops/`;
  readOnly = await startDashboard({ databaseUrl: db.url, port: 0, readOnly: true, registry: new Registry() });
});
after(async () => {
  await worker?.close();
  await readOnly?.close();
  app?.closeAllConnections();
  await new Promise((resolve) => app?.close(resolve));
  await handler?.close();
  await db?.drop();
});

const deadIds = async () => (await db.query<{ id: string }>(`select id::text as id from pubsub.notification where dead_at is not null order by id`)).map((r) => r.id);
const post = (url: string, body: string, headers: Record<string, string>) => fetch(url, { method: 'POST', body, headers });

test('the API: auth hook per request, mutations only as JSON with the custom header, read-only refused server-side', async () => {
  const admin = { cookie: 'session=admin' };
  assert.equal((await fetch(`${appUrl}api/status`)).status, 403, 'no session: refused by the hook');
  const status = await fetch(`${appUrl}api/status`, { headers: admin });
  assert.equal(status.status, 200);
  assert.match(status.headers.get('content-security-policy')!, /script-src 'self'/);
  const { readOnly: ro, report } = await status.json();
  assert.equal(ro, false);
  const orders = report.listeners.find((l: { channel: string }) => l.channel === 'dash_orders');
  assert.equal(orders.dead, 3);

  const [id] = await deadIds();
  // A cross-site form can only send form-encoded (or text/plain) bodies without custom headers.
  for (const [body, type] of [[`id=${id}`, 'application/x-www-form-urlencoded'], [`{"id":"${id}"}`, 'text/plain']] as const) {
    const res = await post(`${appUrl}api/dead/retry`, body, { ...admin, 'content-type': type });
    assert.equal(res.status, 403);
    assert.match((await res.json()).error, /must be a JSON request/);
  }
  const noHeader = await post(`${appUrl}api/dead/purge`, JSON.stringify({ id }), { ...admin, 'content-type': 'application/json' });
  assert.equal(noHeader.status, 403);
  assert.equal((await fetch(`${appUrl}api/dead/retry`, { headers: admin })).status, 405, 'GET cannot mutate');
  const viewer = await post(`${appUrl}api/dead/retry`, JSON.stringify({ id }), { cookie: 'session=viewer', 'content-type': 'application/json', 'x-pubsub-dashboard': '1' });
  assert.equal(viewer.status, 403, 'the hook made this request read-only');
  assert.match((await viewer.json()).error, /read-only/);
  const bad = await post(`${appUrl}api/dead/retry`, JSON.stringify({ id: '1; drop table x' }), { ...admin, 'content-type': 'application/json', 'x-pubsub-dashboard': '1' });
  assert.equal(bad.status, 400);
  const nothing = await post(`${appUrl}api/dead/purge`, '{}', { ...admin, 'content-type': 'application/json', 'x-pubsub-dashboard': '1' });
  assert.equal(nothing.status, 400, 'neither an id nor all: refused, nothing purged');
  assert.deepEqual((await deadIds()).length, 3, 'nothing was retried or purged');
  // Mounted at /ops/: /ops redirects so that the page's relative URLs resolve under it.
  const redirect = await fetch(appUrl.slice(0, -1), { headers: admin, redirect: 'manual' });
  assert.equal(redirect.status, 301);
  assert.equal(redirect.headers.get('location'), '/ops/');
});

test('`pubsub dashboard --read-only` through the real CLI serves the status and refuses a retry', async () => {
  const cli = startCli(['dashboard', '--port', '0', '--read-only'], { DATABASE_URL: db.url }, fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-dash-')));
  try {
    await cli.waitForOutput(/dashboard on (http:\S+)/);
    const url = /dashboard on (http:\S+)/.exec(cli.output())![1]!;
    const { readOnly: ro, report } = await (await fetch(`${url}api/status`)).json();
    assert.equal(ro, true);
    assert.equal(report.totals.dead, 3);
    const [id] = await deadIds();
    const res = await post(`${url}api/dead/retry`, JSON.stringify({ id }), { 'content-type': 'application/json', 'x-pubsub-dashboard': '1' });
    assert.equal(res.status, 403);
    assert.equal((await deadIds()).length, 3);
    // DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends its own host name.
    const rebound = await new Promise<number>((resolve, reject) =>
      http.get(`${url}api/status`, { headers: { host: 'evil.example:80' } }, (r) => (r.resume(), resolve(r.statusCode!))).on('error', reject),
    );
    assert.equal(rebound, 421);
    assert.equal(await cli.stop('SIGTERM'), 0, cli.output());
  } finally {
    await cli.stop('SIGKILL');
  }
});

test('on a database role with only the read grants, the dashboard shows the status and reports a refused retry', async () => {
  const role = `pubsub_dash_${process.pid}`;
  await db.query(`drop role if exists ${role}`);
  await db.query(`create role ${role} login password 'dash'`);
  const url = new URL(db.url);
  url.username = role;
  url.password = 'dash';
  const server = await startDashboard({ databaseUrl: url.toString(), port: 0, registry: new Registry() });
  try {
    await db.query(`grant usage on schema pubsub to ${role}`);
    await db.query(`grant select on pubsub.notification, pubsub.claim, pubsub.subscription, pubsub.channel to ${role}`);
    const { report } = await (await fetch(`${server.url}api/status`)).json();
    assert.equal(report.totals.dead, (await deadIds()).length);
    const dead = await (await fetch(`${server.url}api/dead`)).json();
    assert.equal(dead.total, report.totals.dead);
    const [id] = await deadIds();
    const res = await post(`${server.url}api/dead/retry`, JSON.stringify({ id }), { 'content-type': 'application/json', 'x-pubsub-dashboard': '1' });
    assert.equal(res.status, 500);
    assert.match((await res.json()).error, /permission denied for table notification/);
    assert.equal((await deadIds()).length, report.totals.dead);
  } finally {
    await server.close();
    await db.query(`drop owned by ${role}`);
    await db.query(`drop role ${role}`);
  }
});

/** One browser for the file (closed in `after`); each test opens its own context and closes it. */
let launched: ReturnType<typeof launch> | undefined;
async function launch() {
  const { chromium } = await import('playwright-core');
  return chromium.launch({ executablePath: CHROMIUM, args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
}
after(async () => (await launched)?.close());
async function browser(t: { skip(reason: string): void }) {
  if (!fs.existsSync(CHROMIUM)) {
    t.skip(`no browser at ${CHROMIUM}: install Debian's chromium (apt-get install -y chromium) to run the dashboard's browser tests`);
    return undefined;
  }
  const context = await (launched ??= launch()).then((b) => b.newContext({ viewport: { width: 1280, height: 900 } }));
  return { newContext: async () => context, newPage: () => context.newPage(), close: () => context.close() };
}

test('in a browser: the page shows the database figures and the hostile payload as text; a retry from the page runs the notification again', async (t) => {
  const chrome = await browser(t);
  if (!chrome) return;
  try {
    const context = await chrome.newContext();
    await context.addCookies([{ name: 'session', value: 'admin', url: appUrl }]);
    const page = await context.newPage();
    const consoleErrors: string[] = [];
    // Script errors and failed requests of the page (the browser's own /favicon.ico goes to the app's 404).
    page.on('console', (m) => m.type() === 'error' && !m.text().startsWith('Failed to load resource') && consoleErrors.push(m.text()));
    page.on('pageerror', (e) => consoleErrors.push(e.message));
    page.on('response', (r) => r.status() >= 400 && !r.url().endsWith('/favicon.ico') && consoleErrors.push(`${r.status()} ${r.url()}`));
    page.on('dialog', (d) => void d.accept());
    await page.goto(appUrl);
    await page.waitForSelector('body[data-loaded]');

    // The numbers are the database's.
    const [counts] = await db.query(`select
      count(*) filter (where channel = 'dash_orders' and dead_at is not null)::int as dead,
      count(*) filter (where channel = 'dash_idle' and dead_at is null and attempts = 0)::int as idle_pending
      from pubsub.notification`);
    const cell = (channel: string, listener: string, column: string) => page.locator(`#listeners tr[data-channel="${channel}"][data-listener="${listener}"] td.${column}`).textContent();
    assert.equal(await cell('dash_orders', 'OrderListeners.handle', 'dead'), String(counts.dead));
    assert.equal(await cell('dash_orders', 'OrderListeners.handle', 'pending'), '0');
    assert.equal(await cell('dash_idle', '', 'pending'), String(counts.idle_pending));
    assert.equal(await page.locator('#dead tbody tr').count(), counts.dead);
    assert.match((await page.locator('#listeners tr[data-channel="dash_idle"] td.listener').textContent())!, /\(unassigned\)/);
    assert.ok(await page.locator('#chart svg').count(), 'the chart is drawn');

    // The hostile payload and error are text: no script ran, no element was made from them.
    const [hostileId] = (await db.query(`select id::text as id from pubsub.notification where payload->>'html' is not null`)).map((r) => r.id);
    const hostileRow = page.locator(`#dead tr[data-id="${hostileId}"]`);
    assert.ok((await hostileRow.locator('pre.payload').textContent())!.includes('<script>window.__pwned = 1</script>'));
    assert.ok((await hostileRow.locator('pre.error-text').textContent())!.includes('<img src=x onerror='));
    assert.equal(await page.evaluate(() => (window as { __pwned?: number }).__pwned), undefined);
    assert.equal(await page.locator('#dead img, #dead script').count(), 0);
    if (process.env.PUBSUB_SCREENSHOT) await page.screenshot({ path: process.env.PUBSUB_SCREENSHOT, fullPage: true });

    // Retry from the page: the worker runs it again, and this time it succeeds.
    const before = runs.get(1);
    failing.delete(1);
    const [firstId] = (await db.query(`select id::text as id from pubsub.notification where payload->>'n' = '1'`)).map((r) => r.id);
    await page.locator(`#dead tr[data-id="${firstId}"] button.retry`).click();
    await waitFor(() => runs.get(1) === before! + 1, 'notification 1 to run again');
    await waitFor(async () => (await db.query(`select count(*)::int as n from pubsub.notification where id = $1`, [firstId]))[0].n === 0, 'it to be done');
    await page.waitForFunction((id) => !document.querySelector(`#dead tr[data-id="${id}"]`), firstId);
    assert.match((await page.locator('#action-result').textContent())!, /1 notification\(s\) will be retried/);
    assert.equal(await cell('dash_orders', 'OrderListeners.handle', 'dead'), '2');
    assert.deepEqual(consoleErrors, []);
  } finally {
    await chrome.close();
  }
});

test('in a browser, read-only: no retry buttons, and a retry sent from the page anyway is refused by the server', async (t) => {
  const chrome = await browser(t);
  if (!chrome) return;
  try {
    const page = await chrome.newPage();
    await page.goto(readOnly.url);
    await page.waitForSelector('body[data-loaded]');
    assert.equal(await page.locator('#mode').isVisible(), true);
    const ids = await deadIds();
    assert.equal(await page.locator('#dead tbody tr').count(), ids.length);
    assert.equal(await page.locator('#dead button.retry').first().isVisible(), false);
    assert.equal(await page.locator('#retry-all').isVisible(), false);
    const answer = await page.evaluate(async (id) => {
      const res = await fetch('api/dead/retry', { method: 'POST', headers: { 'content-type': 'application/json', 'x-pubsub-dashboard': '1' }, body: JSON.stringify({ id }) });
      return { status: res.status, body: await res.json() };
    }, ids[0]!);
    assert.equal(answer.status, 403);
    assert.match(answer.body.error, /read-only/);
    assert.deepEqual(await deadIds(), ids, 'still dead');
  } finally {
    await chrome.close();
  }
});

test('purge all matching a filter, from the page', async (t) => {
  const chrome = await browser(t);
  if (!chrome) return;
  try {
    const context = await chrome.newContext();
    await context.addCookies([{ name: 'session', value: 'admin', url: appUrl }]);
    const page = await context.newPage();
    page.on('dialog', (d) => void d.accept());
    await page.goto(appUrl);
    await page.waitForSelector('body[data-loaded]');
    const dead = (await deadIds()).length;
    assert.ok(dead > 0);
    await page.fill('#dead-filter input[name=channel]', 'no_such_channel');
    await page.click('#purge-all');
    await page.waitForFunction(() => document.querySelector('#action-result')?.textContent?.includes('0 notification(s) purged'));
    assert.equal((await deadIds()).length, dead, 'the filter held: nothing of another channel was purged');
    await page.fill('#dead-filter input[name=channel]', 'dash_orders');
    await page.click('#purge-all');
    await page.waitForFunction((n) => document.querySelector('#action-result')?.textContent?.includes(`${n} notification(s) purged`), dead);
    assert.deepEqual(await deadIds(), []);
  } finally {
    await chrome.close();
  }
});
