/** How the CLI prints a status report (a table for terminals) and the progress of long dead-letter actions. */
import type { StatusReport } from '../status.js';

const age = (seconds: number | null) => {
  if (seconds === null) return '-';
  if (seconds < 60) return `${Math.round(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${String(Math.round(seconds % 60)).padStart(2, '0')}s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h${String(Math.floor((seconds % 3600) / 60)).padStart(2, '0')}m`;
  return `${Math.floor(seconds / 86400)}d${Math.floor((seconds % 86400) / 3600)}h`;
};
const count = (n: number) => n.toLocaleString('en-US');

/** Columns left-aligned for text, right-aligned for numbers. */
function table(head: string[], rows: string[][], right: Set<number>): string {
  const width = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => (right.has(i) ? c.padStart(width[i]!) : c.padEnd(width[i]!))).join('  ').trimEnd();
  return [line(head), ...rows.map(line)].join('\n');
}

/** Control characters of channel, listener and worker names would move the cursor of the terminal. */
const plain = (s: string) => s.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?');

export function formatStatus(report: StatusReport): string {
  const rows = report.listeners.map((l) => [
    plain(l.channel),
    plain(l.listener ?? '(unassigned)') + (l.durable === false ? ' (non-durable)' : '') + (l.subscribed === false ? ' (not subscribed!)' : '') + (l.loaded === false ? ' (not loaded)' : ''),
    count(l.pending),
    count(l.running),
    count(l.failing),
    count(l.dead),
    age(l.oldestPendingSeconds),
    l.perMinute === null ? '-' : count(l.perMinute),
  ]);
  const t = report.totals;
  const out = [
    rows.length
      ? table(['CHANNEL', 'LISTENER', 'PENDING', 'RUNNING', 'FAILING', 'DEAD', 'OLDEST', 'PER MIN'], rows, new Set([2, 3, 4, 5, 6, 7]))
      : 'No stored notifications and no listeners loaded.',
    '',
    `total: ${count(t.pending)} pending, ${count(t.running)} running, ${count(t.failing)} failing, ${count(t.dead)} dead`,
  ];
  const { throughput } = report;
  out.push(
    throughput.perMinute === null
      ? 'throughput: - (needs two samples: use --watch or the dashboard)'
      : `throughput: ${count(throughput.perMinute)}/min over the last ${Math.round(throughput.windowSeconds)}s`,
  );
  out.push(
    report.workers.length
      ? `workers with a claim in progress: ${report.workers.map((w) => `${plain(w.worker)} (${w.claims} claim${w.claims === 1 ? '' : 's'}, ${count(w.rows)} rows, since ${age((report.at.getTime() - new Date(w.since).getTime()) / 1000)})`).join(', ')}`
      : 'workers with a claim in progress: none',
  );
  if (report.schedules.length) out.push('', formatSchedules(report));
  const { drift } = report;
  const problems = drift.triggers.filter((tr) => tr.state !== 'ok');
  const okTriggers = drift.triggers.length - problems.length;
  if (drift.ok === null) out.push('', 'database not compared with the listeners');
  else out.push('', drift.ok ? `database matches the loaded listeners${drift.triggers.length ? ` (${okTriggers} trigger${okTriggers === 1 ? '' : 's'} ok)` : ''}` : 'database does NOT match the loaded listeners:');
  for (const tr of problems) out.push(`  trigger ${tr.state}: ${plain(tr.trigger)} on ${plain(tr.table)}${tr.channel ? ` (${plain(tr.channel)})` : ''}: ${tr.detail}`);
  for (const s of drift.subscriptions.missing) out.push(`  subscription missing: ${plain(s.listener)} on ${plain(s.channel)} (nothing is stored for it)`);
  for (const s of drift.subscriptions.extra) out.push(`  subscription extra: ${plain(s.listener)} on ${plain(s.channel)} (stored for a listener not loaded here)`);
  for (const k of drift.subscriptions.orderKeys) out.push(`  order key of ${plain(k.listener)} on ${plain(k.channel)}: ${plain(k.detail)} (generate and apply a migration)`);
  for (const c of drift.channels) out.push(`  channel ${plain(c.name)}: ${c.expected ? 'durable' : 'non-durable'} in the listeners, ${c.installed === null ? 'not recorded' : c.installed ? 'durable' : 'non-durable'} in the database`);
  if (drift.ok === false) out.push('  fix: run `pubsub make-migration` with every listener module loaded, and apply the migration');
  for (const note of drift.notes) out.push(`note: ${note}`);
  return out.join('\n');
}

/** A time as UTC, to the second: 2026-12-03 22:40:00Z. */
const instant = (d: Date | null) => (d ? new Date(d).toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-');

/** The schedules' table: when each runs, its last slot handed on and its next one. */
function formatSchedules(report: StatusReport): string {
  const rows = report.schedules.map((s) => [
    plain(s.name) + (s.loaded === false ? ' (not loaded)' : '') + (s.recorded ? '' : ' (no worker yet)'),
    plain(s.when),
    s.catchUp,
    instant(s.lastSlot),
    instant(s.nextSlot),
    count(s.runs),
    count(s.skipped),
  ]);
  return table(['SCHEDULE', 'WHEN', 'CATCH UP', 'LAST SLOT', 'NEXT SLOT', 'RUNS', 'SKIPPED'], rows, new Set([5, 6]));
}

/**
 * Progress of a long action on stderr, when it is a terminal: one line rewritten in place. Elsewhere
 * (a pipe, a log file, --json) nothing, so scripts read only the result. With `everyMs`, at most one
 * line that often, and always the last.
 */
export function progressReporter(stream: Pick<NodeJS.WriteStream, 'isTTY' | 'write'>, verb: string, everyMs = 0): { update(done: number, total: number): void; end(): void } {
  if (!stream.isTTY) return { update() {}, end() {} };
  let shown = false;
  let last = 0;
  return {
    update(done, total) {
      // At most one line per `everyMs`, except the last one (updates may come per notification).
      if (done < total && everyMs > 0 && Date.now() - last < everyMs) return;
      last = Date.now();
      shown = true;
      const percent = total ? Math.floor((done / total) * 100) : 100;
      stream.write(`\r\x1b[Kpubsub: ${verb} ${count(done)} of ${count(total)} (${percent}%)`);
    },
    end() {
      if (shown) stream.write('\r\x1b[K');
    },
  };
}
