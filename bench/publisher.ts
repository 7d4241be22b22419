// W4's publisher, in its own process: one NOTIFY per transaction, as fast as one connection can.
import pg from 'pg';

const [url, channel, size, duration] = process.argv.slice(2) as [string, string, string, string];
const client = new pg.Client(url);
await client.connect();
const pad = 'x'.repeat(Math.max(0, Number(size) - 40));
const end = performance.now() + Number(duration);
let sent = 0;
while (performance.now() < end) {
  await client.query('select pg_notify($1, $2)', [channel, JSON.stringify({ sentAt: performance.timeOrigin + performance.now(), pad })]);
  sent++;
}
await client.end();
process.stdout.write(String(sent));
