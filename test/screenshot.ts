/**
 * Makes the README's picture of the dashboard (docs/dashboard.png) and prints the `pubsub status`
 * table beside it: a scratch database, three listeners (one failing now and then), a worker, a
 * steady stream of notifications for about 40 s, the dashboard in headless chromium.
 * `npm run build && DATABASE_URL=… node dist/test/screenshot.js [docs/dashboard.png]`
 */
import path from 'node:path';
import { Listen, listen, notify, startDashboard, statusMonitor } from '../src/index.js';
import { formatStatus } from '../src/cli/status-view.js';
import { ROOT } from './helpers/cli.js';
import { createTestDatabase } from './helpers/db.js';

class Order {
  id!: number;
  total!: number;
}
class Signup {
  email!: string;
}
class Shop {
  @Listen('order_placed', { maxAttempts: 3, backoff: { baseMs: 2000 } })
  async sendReceipt(order: Order) {
    await new Promise((r) => setTimeout(r, 4));
    if (order.id % 23 === 0) throw new Error(`SMTP 451: mailbox of order ${order.id} temporarily unavailable`);
  }
  @Listen('order_placed')
  async updateStock(order: Order) {
    await new Promise((r) => setTimeout(r, 2));
  }
  @Listen('user_signed_up')
  async welcome(signup: Signup) {
    if (signup.email.endsWith('.invalid')) throw new Error(`cannot deliver to ${signup.email}`);
  }
}
void Shop;

const out = process.argv[2] ?? path.join(ROOT, 'docs/dashboard.png');
const db = await createTestDatabase({ library: true, subscribe: true });
const quiet = { info() {}, warn() {}, error() {} };
const worker = await listen({ databaseUrl: db.url, logger: quiet, pollIntervalMs: 500 });
const dashboard = await startDashboard({ databaseUrl: db.url, port: 0 });
const { chromium } = await import('playwright-core');
const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  await page.goto(dashboard.url);
  let id = 0;
  // `pubsub status --watch` as it reads while the worker runs: two samples, the last 5 s of the load apart.
  const monitor = statusMonitor({ pool: db.pool });
  let sampled = false;
  const until = Date.now() + Number(process.env.SCREENSHOT_SECONDS ?? 40) * 1000;
  while (Date.now() < until) {
    // A load that rises and falls, so the chart has a shape.
    const burst = 20 + Math.round(60 * Math.abs(Math.sin((until - Date.now()) / 6000)));
    for (let i = 0; i < burst; i++) await notify('order_placed', { id: ++id, total: (id * 37) % 500 }, { client: db.pool });
    if (id % 7 === 0) await notify('user_signed_up', { email: `user${id}@example.${id % 3 ? 'com' : 'invalid'}` }, { client: db.pool });
    await new Promise((r) => setTimeout(r, 250));
    if (!sampled && Date.now() > until - 5000) await monitor.read().then(() => (sampled = true));
  }
  const table = formatStatus(await monitor.read());
  await monitor.close();
  await worker.close(); // leaves a backlog in view
  for (let i = 0; i < 40; i++) await notify('order_placed', { id: ++id, total: 10 }, { client: db.pool });
  await page.waitForTimeout(2500);
  await page.screenshot({ path: out });
  console.log(`wrote ${out}\n\n${table}`);
} finally {
  await browser.close();
  await dashboard.close();
  await db.drop();
}
