// The CLI's status table and progress line, without a database: hostile names cannot drive the
// terminal, progress goes only to a terminal, and bad flags are refused by commander.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildProgram } from '../../src/cli/program.js';
import { formatStatus, progressReporter } from '../../src/cli/status-view.js';
import type { StatusReport } from '../../src/status.js';

const report = (channel: string, listener: string): StatusReport => ({
  at: new Date('2026-12-03T12:00:00Z'),
  library: { installed: 3, expected: 3 },
  listeners: [{ channel, listener, durable: true, loaded: true, subscribed: true, pending: 1234, running: 1, failing: 2, dead: 3, oldestPendingSeconds: 3725, perMinute: null }],
  totals: { pending: 1234, running: 1, failing: 2, dead: 3 },
  workers: [{ worker: 'host\u001b[2J:1', claims: 1, rows: 10, since: new Date('2026-12-03T11:59:50Z') }],
  schedules: [
    {
      name: 'Evil\u001b[1m.tick',
      kind: 'every',
      when: 'every 5m',
      expression: '300000',
      timeZone: null,
      catchUp: 'last',
      lastSlot: new Date('2026-12-03T11:55:00Z'),
      lastRunAt: new Date('2026-12-03T11:55:00.004Z'),
      nextSlot: new Date('2026-12-03T12:00:00Z'),
      runs: 12,
      skipped: 3,
      loaded: true,
      recorded: true,
    },
  ],
  throughput: { windowSeconds: 0, perMinute: null, history: [], note: '' },
  drift: { ok: true, triggers: [], subscriptions: { missing: [], extra: [], orderKeys: [] }, channels: [], notes: [] },
});

test('formatStatus: names with control characters (ANSI escapes, newlines) are printed with ? instead', () => {
  const text = formatStatus(report('evil\u001b[31m', 'Listener\nfake line'));
  assert.doesNotMatch(text, /\u001b/);
  assert.match(text, /evil\?\[31m\s+Listener\?fake line\s+1,234\s+1\s+2\s+3\s+1h02m/);
  assert.match(text, /host\?\[2J:1 \(1 claim, 10 rows, since 10s\)/);
  assert.match(text, /throughput: - \(needs two samples/);
  assert.match(text, /Evil\?\[1m\.tick\s+every 5m\s+last\s+2026-12-03 11:55:00Z\s+2026-12-03 12:00:00Z\s+12\s+3/);
});

test('progressReporter: a line rewritten in place on a terminal, nothing elsewhere', () => {
  const written: string[] = [];
  const stream = (isTTY: boolean) => ({ isTTY, write: (s: string) => written.push(s) }) as unknown as NodeJS.WriteStream;
  const quiet = progressReporter(stream(false), 'retried');
  quiet.update(10, 20);
  quiet.end();
  assert.deepEqual(written, []);
  const tty = progressReporter(stream(true), 'retried');
  tty.update(10_000, 25_000);
  tty.end();
  assert.deepEqual(written, ['\r\u001b[Kpubsub: retried 10,000 of 25,000 (40%)', '\r\u001b[K']);
});

test('status and dashboard refuse bad numbers with commander errors', async () => {
  const program = buildProgram();
  program.commands.forEach((c) => c.exitOverride().configureOutput({ writeErr: () => {} }));
  await assert.rejects(program.parseAsync(['node', 'pubsub', 'status', '--watch', '0']), (e: any) => e.code === 'commander.invalidArgument' && /1 to 3600/.test(e.message));
  await assert.rejects(program.parseAsync(['node', 'pubsub', 'dashboard', '--port', '70000']), (e: any) => e.code === 'commander.invalidArgument' && /0 to 65535/.test(e.message));
});
