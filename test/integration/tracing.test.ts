// OpenTelemetry tracing (issue 9): send and process spans recorded by the SDK's in-memory exporter,
// against real PostgreSQL; the trace context carried by notify(), by a trigger's transaction, and
// kept out of the listeners' context; the library without @opentelemetry/api.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, beforeEach, test } from 'node:test';
import { SpanKind, SpanStatusCode, context, trace } from '@opentelemetry/api';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor, type ReadableSpan } from '@opentelemetry/sdk-trace-base';
import { Listen, PostInsertListen, applyMigrations, generateMigration, listen, notify, notifyMany, setContext, traceTransaction, type NotificationContext, type TriggerPayload, type Worker } from '../../src/index.js';
import type { Account } from '../fixtures/generated/prisma/client.js';
import { ROOT } from '../helpers/cli.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

const exporter = new InMemorySpanExporter();
context.setGlobalContextManager(new AsyncLocalStorageContextManager().enable());
trace.setGlobalTracerProvider(new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] }));
const app = trace.getTracer('app');

class Job {
  n!: number;
}

type Seen = { channel: string; payload: any; context: unknown; activeTraceId?: string };
const seen: Seen[] = [];
const record = (channel: string, payload: unknown, ctx: NotificationContext) => void seen.push({ channel, payload, context: ctx.context, activeTraceId: trace.getActiveSpan()?.spanContext().traceId });

class TracedListeners {
  @Listen('traced_jobs', { maxAttempts: 2, backoff: { baseMs: 10, maxMs: 10 } })
  job(p: Job, ctx: NotificationContext) {
    record('traced_jobs', p, ctx);
    if (p.n < 0) throw new TypeError(`job ${p.n} fails`);
  }
  @Listen('traced_batch', { type: Job, batch: { size: 2, waitMs: 2000 } })
  batch(p: Job[], ctx: NotificationContext) {
    record('traced_batch', p, ctx);
  }
  @Listen('traced_news', { durable: false })
  news(p: Job, ctx: NotificationContext) {
    record('traced_news', p, ctx);
  }
  @PostInsertListen('Account')
  account(p: TriggerPayload<Account>, ctx: NotificationContext) {
    record('account', p, ctx);
  }
  @PostInsertListen('Account', { channel: 'accounts_fast', durable: false })
  accountFast(p: TriggerPayload<Account>, ctx: NotificationContext) {
    record('accounts_fast', p, ctx);
  }
}

let db: TestDatabase;
let worker: Worker;
let migrationsDir: string;

before(async () => {
  assert.ok(TracedListeners);
  db = await createTestDatabase();
  migrationsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-tracing-'));
  fs.cpSync(path.join(ROOT, 'test/fixtures/prisma/migrations'), migrationsDir, { recursive: true });
  await generateMigration({ schema: path.join(ROOT, 'test/fixtures/prisma/schema.prisma'), migrationsDir, name: 'pubsub' });
  await applyMigrations(db.url, migrationsDir);
  worker = await listen({ databaseUrl: db.url, pollIntervalMs: 100, logger: { info() {}, warn() {}, error() {} } });
});
after(async () => {
  await worker?.close();
  await db?.drop();
  fs.rmSync(migrationsDir, { recursive: true, force: true });
});
beforeEach(() => {
  seen.length = 0;
  exporter.reset();
});

const spans = (name: string) => exporter.getFinishedSpans().filter((s) => s.name === name);
const waitForSpans = async (name: string, n = 1): Promise<ReadableSpan[]> => (await waitFor(() => (spans(name).length >= n ? spans(name) : undefined), `${n} span(s) "${name}"`))!;

/** The link and parent a process span has to the span context `to`. */
function assertTracedFrom(span: ReadableSpan, to: { traceId: string; spanId: string }): void {
  assert.equal(span.links.length, 1, 'one link: the producer');
  assert.equal(span.links[0]!.context.traceId, to.traceId);
  assert.equal(span.links[0]!.context.spanId, to.spanId);
  assert.equal(span.spanContext().traceId, to.traceId, 'in the producer\'s trace');
  assert.equal(span.parentSpanContext?.spanId, to.spanId, 'a child of the producer (one notification per attempt)');
}

test('notify() inside a traced request: a send PRODUCER span, then a process CONSUMER span linked to it, child of it, with the messaging attributes; the listener runs inside it and its context has no trace key', async () => {
  const id = await app.startActiveSpan('request', async (request) => {
    try {
      return await notify('traced_jobs', { n: 1 }, { client: db.pool, context: { requestId: 'r-1' } });
    } finally {
      request.end();
    }
  });
  const [process] = await waitForSpans('process traced_jobs');
  const [send] = spans('send traced_jobs');
  const [request] = spans('request');
  assert.ok(send && process && request && id);
  assert.equal(send.kind, SpanKind.PRODUCER);
  assert.equal(send.parentSpanContext?.spanId, request.spanContext().spanId, 'send is a child of the caller\'s span');
  assert.deepEqual(send.attributes, {
    'messaging.system': 'pgpubsub',
    'messaging.destination.name': 'traced_jobs',
    'messaging.operation.type': 'send',
    'messaging.operation.name': 'send',
    'messaging.message.id': id,
    'pgpubsub.durable': true,
  });
  assert.equal(process.kind, SpanKind.CONSUMER);
  assertTracedFrom(process, send.spanContext());
  assert.deepEqual(process.attributes, {
    'messaging.system': 'pgpubsub',
    'messaging.destination.name': 'traced_jobs',
    'messaging.operation.type': 'process',
    'messaging.operation.name': 'process',
    'messaging.message.id': id,
    'pgpubsub.durable': true,
    'pgpubsub.attempt': 1,
    'pgpubsub.listener': 'TracedListeners.job',
  });
  assert.equal(process.status.code, SpanStatusCode.UNSET);
  assert.deepEqual(seen[0]!.context, { requestId: 'r-1' }, 'the listener sees its context without $trace');
  assert.equal(seen[0]!.activeTraceId, send.spanContext().traceId, 'the listener runs with the process span active');
  // The span ends when the listener returns; the claim commits just after it.
  await waitFor(async () => (await db.query(`select count(*)::int as n from pubsub.notification`))[0].n === 0, 'the claim to commit');
});

test('a failing listener: each attempt is a process span with status ERROR and an exception event naming what it threw; attempts numbered', async () => {
  await app.startActiveSpan('request', async (request) => {
    await notify('traced_jobs', { n: -1 }, { client: db.pool });
    request.end();
  });
  const processes = (await waitForSpans('process traced_jobs', 2)).sort((a, b) => Number(a.attributes['pgpubsub.attempt']) - Number(b.attributes['pgpubsub.attempt']));
  const [send] = spans('send traced_jobs');
  assert.deepEqual(processes.map((s) => s.attributes['pgpubsub.attempt']), [1, 2]);
  for (const span of processes) {
    assertTracedFrom(span, send!.spanContext());
    assert.equal(span.status.code, SpanStatusCode.ERROR);
    assert.equal(span.status.message, 'job -1 fails');
    const [event] = span.events;
    assert.equal(event?.name, 'exception');
    assert.equal(event?.attributes?.['exception.type'], 'TypeError', 'the listener\'s own error, not the wrapper naming the listener');
    assert.equal(event?.attributes?.['exception.message'], 'job -1 fails');
  }
  assert.deepEqual(seen.map((s) => s.context), [undefined, undefined], 'a context that only carried the trace is no context');
  await waitFor(async () => (await db.query(`select count(*)::int as n from pubsub.notification where dead_at is not null`))[0].n === 1, 'dead-lettered');
});

test('a non-durable notification: process span linked to the send span; the listener\'s context keeps the user\'s keys only', async () => {
  await app.startActiveSpan('request', async (request) => {
    await notify('traced_news', { n: 2 }, { client: db.pool, context: { tenant: 'acme' } });
    request.end();
  });
  const [process] = await waitForSpans('process traced_news');
  const [send] = spans('send traced_news');
  assert.equal(send!.attributes['pgpubsub.durable'], false);
  assert.equal(send!.attributes['messaging.message.id'], undefined);
  assertTracedFrom(process!, send!.spanContext());
  assert.equal(process!.attributes['pgpubsub.durable'], false);
  assert.equal(process!.attributes['pgpubsub.listener'], 'TracedListeners.news');
  assert.deepEqual(seen[0]!.context, { tenant: 'acme' });
});

test('notify() in a transaction with setContext() but no context of its own: the transaction\'s context is kept and the trace added', async () => {
  const client = await db.pool.connect();
  try {
    await client.query('begin');
    await setContext(client, { requestId: 'r-tx' }); // no active span: stored as it is
    await app.startActiveSpan('request', async (request) => {
      await notify('traced_jobs', { n: 3 }, { client });
      request.end();
    });
    await client.query('commit');
  } finally {
    client.release();
  }
  const [process] = await waitForSpans('process traced_jobs');
  assertTracedFrom(process!, spans('send traced_jobs')[0]!.spanContext());
  assert.deepEqual(seen[0]!.context, { requestId: 'r-tx' });
});

test('trigger-fed notifications written in a traced transaction (traceTransaction, or setContext under a span): their process spans are linked to the writer\'s span; the context keeps the user\'s keys', async () => {
  const client = await db.pool.connect();
  let writer!: { traceId: string; spanId: string };
  try {
    await app.startActiveSpan('write account', async (span) => {
      writer = span.spanContext();
      await client.query('begin');
      await traceTransaction(client);
      await client.query(`insert into accounts (account_code, "display name") values ('T1', 'traced')`);
      await client.query('commit');
      span.end();
    });
  } finally {
    client.release();
  }
  const durable = (await waitForSpans('process model.Account'))[0]!;
  const fast = (await waitForSpans('process accounts_fast'))[0]!;
  assertTracedFrom(durable, writer);
  assertTracedFrom(fast, writer);
  assert.equal(durable.attributes['pgpubsub.listener'], 'TracedListeners.account');
  const byChannel = (c: string) => seen.find((s) => s.channel === c)!;
  assert.equal(byChannel('account').context, undefined, 'only the trace was set');
  assert.equal(byChannel('accounts_fast').context, undefined);
  assert.equal('context' in byChannel('accounts_fast').payload, false, 'nor does the trigger payload carry it');

  // setContext() under an active span adds the trace to the user's context.
  seen.length = 0;
  exporter.reset();
  await app.startActiveSpan('write account 2', async (span) => {
    writer = span.spanContext();
    const c = await db.pool.connect();
    try {
      await c.query('begin');
      await setContext(c, { requestId: 'r-9' });
      await c.query(`insert into accounts (account_code, "display name") values ('T2', 'traced')`);
      await c.query('commit');
    } finally {
      c.release();
    }
    span.end();
  });
  assertTracedFrom((await waitForSpans('process model.Account'))[0]!, writer);
  assertTracedFrom((await waitForSpans('process accounts_fast'))[0]!, writer);
  await waitFor(() => seen.length >= 2, 'both listeners');
  assert.deepEqual(byChannel('account').context, { requestId: 'r-9' });
  assert.deepEqual(byChannel('accounts_fast').context, { requestId: 'r-9' });
  assert.deepEqual(byChannel('accounts_fast').payload.context, { requestId: 'r-9' });
});

test('a batch: one process span linked to each notification\'s send span, a child of none of them', async () => {
  const client = await db.pool.connect();
  try {
    await client.query('begin');
    for (const n of [1, 2]) await app.startActiveSpan(`request ${n}`, async (span) => (await notify('traced_batch', { n }, { client }), span.end()));
    await client.query('commit');
  } finally {
    client.release();
  }
  const [process] = await waitForSpans('process traced_batch');
  const sends = spans('send traced_batch').map((s) => s.spanContext().spanId).sort();
  assert.deepEqual(process!.links.map((l) => l.context.spanId).sort(), sends);
  assert.equal(process!.parentSpanContext, undefined);
  assert.equal(process!.attributes['messaging.batch.message_count'], 2);
  assert.equal(process!.attributes['messaging.message.id'], undefined);
  assert.equal(process!.attributes['pgpubsub.listener'], 'TracedListeners.batch');
});

test('a stored trace context that is garbage (hand-written, another program) is ignored: an unlinked process span, the listener runs', async () => {
  await db.query(`select pubsub.notify('traced_jobs', '{"n": 4}', '{"$trace": {"traceparent": "00-zz-not-hex-01"}, "k": 1}')`);
  const [process] = await waitForSpans('process traced_jobs');
  assert.equal(process!.links.length, 0);
  assert.equal(process!.parentSpanContext, undefined);
  assert.deepEqual(seen[0]!.context, { k: 1 });
});

test('the library never imports @opentelemetry/api statically, and works with it missing', async () => {
  const dir = path.join(ROOT, 'dist/src');
  const files = fs.readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.js'));
  for (const f of files) {
    const text = fs.readFileSync(path.join(dir, f), 'utf8');
    assert.doesNotMatch(text, /^\s*import\b[^(]*['"]@opentelemetry\//m, `${f} imports @opentelemetry statically`);
    assert.doesNotMatch(text, /require\(['"]@opentelemetry\//, f);
  }
  // A child process where @opentelemetry/* cannot be resolved (as when it is not installed).
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-nootel-'));
  try {
    fs.writeFileSync(path.join(tmp, 'hooks.mjs'), `export async function resolve(specifier, context, next) {
  if (specifier.startsWith('@opentelemetry/')) throw Object.assign(new Error('Cannot find package ' + specifier), { code: 'ERR_MODULE_NOT_FOUND' });
  return next(specifier, context);
}`);
    fs.writeFileSync(path.join(tmp, 'hide.mjs'), `import { register } from 'node:module';\nregister(${JSON.stringify(new URL(`file://${tmp}/hooks.mjs`).href)});`);
    fs.writeFileSync(
      path.join(tmp, 'main.mjs'),
      `import { createRequire } from 'node:module';
const pg = createRequire(${JSON.stringify(path.join(ROOT, 'package.json'))})('pg');
import { notify, setContext, traceTransaction } from ${JSON.stringify(path.join(ROOT, 'dist/src/index.js'))};
import { traceProcess, withoutTrace } from ${JSON.stringify(path.join(ROOT, 'dist/src/tracing.js'))};
let hidden = false;
try { await import('@opentelemetry/api'); } catch { hidden = true; }
const pool = new pg.Pool({ connectionString: process.env.URL });
const client = await pool.connect();
await client.query('begin');
await setContext(client, { requestId: 'no-otel' });
await traceTransaction(client);
const id = await notify('traced_nobody', { n: 5 }, { client });
await client.query('commit');
client.release();
const [row] = (await pool.query('select context from pubsub.notification where id = $1', [id])).rows;
await pool.query('delete from pubsub.notification where id = $1', [id]);
const ran = await traceProcess({ channel: 'x', durable: true, attempt: 1, messages: [{ context: null }] }, async () => 'ran');
console.log(JSON.stringify({ hidden, context: row.context, ran, stripped: withoutTrace({ $trace: { traceparent: 'x' }, a: 1 }) }));
await pool.end();`,
    );
    const { stdout } = await promisify(execFile)(process.execPath, ['--import', path.join(tmp, 'hide.mjs'), path.join(tmp, 'main.mjs')], { env: { ...process.env, URL: db.url }, cwd: ROOT });
    assert.deepEqual(JSON.parse(stdout.trim().split('\n').pop()!), { hidden: true, context: { requestId: 'no-otel' }, ran: 'ran', stripped: { a: 1 } });
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
});

test('notifyMany(): one send span for the call (its message count), each notification a process span linked to it', async () => {
  await app.startActiveSpan('request', async (request) => {
    await notifyMany('traced_jobs', [{ n: 51 }, { n: 52 }], { client: db.pool });
    request.end();
  });
  const processes = await waitForSpans('process traced_jobs', 2);
  const sends = spans('send traced_jobs');
  assert.equal(sends.length, 1);
  assert.equal(sends[0]!.attributes['messaging.batch.message_count'], 2);
  assert.equal(sends[0]!.attributes['pgpubsub.durable'], true);
  for (const p of processes) assertTracedFrom(p, sends[0]!.spanContext());
});

test('no tracer provider registered: no spans and no trace stored (the worker does no tracing work); a provider registered later is used from its first notification', async () => {
  const provider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  trace.disable(); // as an app with @opentelemetry/api installed (a dependency's dependency) but no SDK
  try {
    await notify('traced_jobs', { n: 41 }, { client: db.pool });
    await waitFor(() => seen.length === 1, 'the untraced notification processed');
    assert.equal(seen[0]!.activeTraceId, undefined, 'no span is active in the listener');
    assert.equal(seen[0]!.context, undefined, 'no trace stored with the notification');
  } finally {
    trace.setGlobalTracerProvider(provider);
  }
  await app.startActiveSpan('request', async (request) => {
    await notify('traced_jobs', { n: 42 }, { client: db.pool });
    request.end();
  });
  const [process] = await waitForSpans('process traced_jobs');
  assertTracedFrom(process!, spans('send traced_jobs')[0]!.spanContext());
  assert.equal(exporter.getFinishedSpans().filter((s) => s.name.endsWith('traced_jobs')).length, 2, 'only the second notification was traced');
});
