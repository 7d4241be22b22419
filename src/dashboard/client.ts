/// <reference lib="dom" />
/**
 * The dashboard page's script, served as app.js: plain browser JavaScript once compiled, no framework.
 * Everything from the database (channel and listener names, errors, payloads) is hostile input: it is
 * only ever put in the page as text (textContent, attributes set through the DOM), never as HTML.
 */

import type { ListenerStatus as ListenerRow, ScheduleStatus } from '../status.js';

interface Report {
  at: string;
  listeners: ListenerRow[];
  totals: { pending: number; running: number; failing: number; dead: number };
  workers: Array<{ worker: string; claims: number; rows: number; since: string }>;
  schedules?: Array<Omit<ScheduleStatus, 'lastSlot' | 'nextSlot' | 'lastRunAt'> & { lastSlot: string | null; nextSlot: string | null }>;
  throughput: { windowSeconds: number; perMinute: number | null; history: Array<{ at: string; seconds: number; processed: number }>; note: string };
  drift: {
    ok: boolean | null;
    triggers: Array<{ state: string; trigger: string; table: string; channel?: string; detail?: string }>;
    subscriptions: { missing: Array<{ channel: string; listener: string }>; extra: Array<{ channel: string; listener: string }>; orderKeys?: Array<{ channel: string; listener: string; detail: string }> };
    channels: Array<{ name: string; expected: boolean | null; installed: boolean | null }>;
    notes: string[];
  };
}
interface Dead {
  id: string;
  channel: string;
  listener: string | null;
  attempts: number;
  last_error: string | null;
  dead_at: string | null;
  payload: unknown;
}

const POLL_MS = 2000;
/** Dead letters shown at once, oldest first; retry and purge "all matching" reach the others. */
const DEAD_SHOWN = 25;
const $ = <T extends Element = HTMLElement>(selector: string) => document.querySelector(selector) as T;

/** An element with text content and optional class and attributes: the only way anything enters the page. */
function el(tag: string, text?: string | number | null, className?: string, attrs: Record<string, string> = {}): HTMLElement {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

const number = (n: number | null) => (n === null ? '–' : n.toLocaleString('en-US'));
function age(seconds: number | null): string {
  if (seconds === null) return '–';
  if (seconds < 60) return `${Math.round(seconds)}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ${Math.round(seconds % 60)}s`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86400)}d ${Math.floor((seconds % 86400) / 3600)}h`;
}

async function api<T>(path: string, body?: object): Promise<T> {
  const response = await fetch(path, body ? { method: 'POST', headers: { 'content-type': 'application/json', 'x-pubsub-dashboard': '1' }, body: JSON.stringify(body) } : {});
  const value = await response.json().catch(() => ({ error: `${response.status} ${response.statusText}` }));
  if (!response.ok) throw new Error(value.error ?? `${response.status} ${response.statusText}`);
  return value as T;
}

function renderListeners(report: Report) {
  const body = $('#listeners tbody');
  body.replaceChildren(
    ...report.listeners.map((l) => {
      const tr = el('tr', null, '', { 'data-channel': l.channel, 'data-listener': l.listener ?? '' });
      const notes = [l.durable === false ? 'non-durable' : '', l.subscribed === false ? 'not subscribed' : '', l.loaded === false ? 'not loaded' : ''].filter(Boolean);
      const name = el('td', l.listener ?? '(unassigned)', 'listener');
      if (notes.length) name.append(el('span', ` (${notes.join(', ')})`, l.subscribed === false ? 'problem' : 'muted'));
      tr.append(
        el('td', l.channel, 'channel'),
        name,
        el('td', number(l.pending), 'n pending'),
        el('td', number(l.running), 'n running'),
        el('td', number(l.failing), `n failing${l.failing ? ' warn' : ''}`),
        el('td', number(l.dead), `n dead${l.dead ? ' bad' : ''}`),
        el('td', age(l.oldestPendingSeconds), 'n oldest'),
        el('td', number(l.perMinute), 'n per-minute'),
      );
      return tr;
    }),
  );
  const t = report.totals;
  $('#totals').textContent = `${number(t.pending)} pending, ${number(t.running)} running, ${number(t.failing)} failing, ${number(t.dead)} dead`;
  $('#workers').textContent = report.workers.length
    ? `Workers with a claim in progress: ${report.workers.map((w) => `${w.worker} (${w.claims} claim${w.claims === 1 ? '' : 's'}, ${w.rows} rows)`).join(', ')}`
    : 'No worker has a claim in progress.';
}

/** Schedules with their last and next slot; the section shows only when there are some. */
function renderSchedules(report: Report) {
  const schedules = report.schedules ?? [];
  $('#schedules-section').hidden = schedules.length === 0;
  const time = (t: string | null) => (t ? new Date(t).toLocaleString() : '–');
  $('#schedules tbody').replaceChildren(
    ...schedules.map((s) => {
      const tr = el('tr');
      const name = el('td', s.name, 'schedule');
      if (s.loaded === false || !s.recorded) name.append(el('span', ` (${s.loaded === false ? 'not loaded' : 'no worker yet'})`, 'muted'));
      tr.append(name, el('td', s.when), el('td', s.catchUp), el('td', time(s.lastSlot)), el('td', time(s.nextSlot)), el('td', number(s.runs), 'n'), el('td', number(s.skipped), 'n'));
      return tr;
    }),
  );
}

/** Processed per minute of each interval between samples, as bars: plain SVG, no library. */
function renderChart(report: Report) {
  const { history, perMinute, windowSeconds, note } = report.throughput;
  $('#throughput').textContent =
    perMinute === null ? `Waiting for a second sample. ${note}` : `${number(perMinute)} per minute over the last ${Math.round(windowSeconds)} s. ${note}`;
  const ns = 'http://www.w3.org/2000/svg';
  const width = 720;
  const height = 160;
  const pad = 34;
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('width', String(width));
  svg.setAttribute('height', String(height));
  svg.setAttribute('role', 'img');
  const rates = history.map((h) => (h.seconds > 0 ? (h.processed / h.seconds) * 60 : 0));
  const max = Math.max(1, ...rates);
  const add = (tag: string, attrs: Record<string, string | number>, text?: string) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  add('line', { class: 'axis', x1: pad, y1: height - 20, x2: width, y2: height - 20 });
  add('text', { x: 0, y: 12 }, `${number(Math.round(max))}/min`);
  add('text', { x: 0, y: height - 22 }, '0');
  const slots = Math.min(180, Math.max(60, rates.length));
  const barWidth = (width - pad) / slots;
  rates.slice(-slots).forEach((rate, i, shown) => {
    const h = ((height - 40) * rate) / max;
    const bar = add('rect', { class: 'bar', x: pad + (slots - shown.length + i) * barWidth, y: height - 20 - h, width: Math.max(1, barWidth - 1), height: h });
    const title = document.createElementNS(ns, 'title');
    title.textContent = `${number(Math.round(rate))}/min`;
    bar.append(title);
  });
  add('text', { x: pad, y: height - 4 }, history.length ? `${Math.round(history.reduce((s, h) => s + h.seconds, 0))} s watched` : 'no samples yet');
  $('#chart').replaceChildren(svg);
}

function renderDrift(report: Report) {
  const { drift } = report;
  const items: HTMLElement[] = [];
  for (const t of drift.triggers) {
    if (t.state !== 'ok') items.push(el('li', `Trigger ${t.state}: ${t.trigger} on ${t.table}${t.channel ? ` (${t.channel})` : ''}: ${t.detail ?? ''}`, 'problem', { 'data-state': t.state }));
  }
  for (const s of drift.subscriptions.missing) items.push(el('li', `Subscription missing: ${s.listener} on ${s.channel} (nothing is stored for it)`, 'problem'));
  for (const s of drift.subscriptions.extra) items.push(el('li', `Subscription extra: ${s.listener} on ${s.channel} (stored for a listener not loaded here)`, 'problem'));
  for (const k of drift.subscriptions.orderKeys ?? []) items.push(el('li', `Order key of ${k.listener} on ${k.channel}: ${k.detail} (generate and apply a migration)`, 'problem'));
  for (const c of drift.channels) items.push(el('li', `Channel ${c.name}: ${c.expected ? 'durable' : 'non-durable'} in the listeners, ${c.installed === null ? 'not recorded' : c.installed ? 'durable' : 'non-durable'} in the database`, 'problem'));
  for (const n of drift.notes) items.push(el('li', n, 'muted'));
  const ok = drift.triggers.filter((t) => t.state === 'ok').length;
  const summary = $('#drift-summary');
  summary.textContent =
    drift.ok === null
      ? 'Not compared.'
      : drift.ok
        ? `The database matches the loaded listeners${drift.triggers.length ? ` (${ok} trigger${ok === 1 ? '' : 's'} checked)` : ''}.`
        : 'The database does not match the loaded listeners: run pubsub make-migration with every listener module loaded, and apply the migration.';
  summary.className = drift.ok === null ? 'muted' : drift.ok ? 'ok' : 'problem';
  $('#drift').replaceChildren(...items);
}

function deadFilter(): { channel?: string; listener?: string } {
  const form = new FormData($<HTMLFormElement>('#dead-filter'));
  const channel = String(form.get('channel') ?? '').trim();
  const listener = String(form.get('listener') ?? '').trim();
  return { ...(channel && { channel }), ...(listener && { listener }) };
}

async function act(action: 'retry' | 'purge', target: object, question: string) {
  if (!window.confirm(question)) return;
  try {
    const { count } = await api<{ count: number }>(`api/dead/${action}`, target);
    showError('');
    $('#action-result').textContent = `${count} notification(s) ${action === 'retry' ? 'will be retried' : 'purged'}.`;
  } catch (error) {
    showError((error as Error).message);
  }
  await refresh();
}

async function renderDead() {
  const filter = deadFilter();
  const query = new URLSearchParams({ ...filter, limit: String(DEAD_SHOWN) });
  const { rows, total } = await api<{ rows: Dead[]; total: number }>(`api/dead?${query}`);
  $('#dead-summary').textContent = `${number(total)} dead${total > rows.length ? `, the oldest ${rows.length} shown` : ''}.`;
  $('#dead tbody').replaceChildren(
    ...rows.map((d) => {
      const tr = el('tr', null, '', { 'data-id': d.id });
      // The first line of the error (its message) in view; the whole text, with the stack, one click away.
      const error = el('td');
      const details = el('details');
      const text = d.last_error ?? '';
      details.append(el('summary', text.split('\n')[0]!.slice(0, 200)), el('pre', text, 'error-text'));
      error.append(details);
      const payload = el('td');
      payload.append(el('pre', JSON.stringify(d.payload, null, 2), 'payload'));
      const buttons = el('td', null, 'mutations');
      const retry = el('button', 'Retry', 'retry', { type: 'button' });
      retry.addEventListener('click', () => act('retry', { id: d.id }, `Retry notification ${d.id}?`));
      const purge = el('button', 'Purge', 'purge danger', { type: 'button' });
      purge.addEventListener('click', () => act('purge', { id: d.id }, `Delete notification ${d.id} for good?`));
      buttons.append(retry, ' ', purge);
      tr.append(
        el('td', d.id, 'id'),
        el('td', d.channel, 'channel'),
        el('td', d.listener ?? '(all listeners)', 'listener'),
        el('td', d.attempts, 'n attempts'),
        el('td', d.dead_at ? new Date(d.dead_at).toLocaleString() : '', 'dead-at'),
        error,
        payload,
        buttons,
      );
      return tr;
    }),
  );
}

function showError(message: string) {
  $('#error').textContent = message;
}

let timer: number | undefined;
async function refresh() {
  window.clearTimeout(timer);
  try {
    const { readOnly: ro, report } = await api<{ readOnly: boolean; report: Report }>('api/status');
    document.body.classList.toggle('read-only', ro);
    $('#mode').hidden = !ro;
    renderListeners(report);
    renderSchedules(report);
    renderChart(report);
    renderDrift(report);
    await renderDead();
    $('#updated').textContent = `updated ${new Date(report.at).toLocaleTimeString()}`;
    document.body.dataset.loaded = String(Number(document.body.dataset.loaded ?? 0) + 1);
    if ($('#error').textContent?.startsWith('Refresh failed')) showError('');
  } catch (error) {
    showError(`Refresh failed: ${(error as Error).message}`);
  }
  timer = window.setTimeout(refresh, POLL_MS);
}

$('#dead-filter').addEventListener('submit', (event) => {
  event.preventDefault();
  void refresh();
});
$('#retry-all').addEventListener('click', () => act('retry', { all: true, ...deadFilter() }, 'Retry every dead notification that matches the filter?'));
$('#purge-all').addEventListener('click', () => act('purge', { all: true, ...deadFilter() }, 'Delete every dead notification that matches the filter, for good?'));
void refresh();
