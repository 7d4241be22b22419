// Logs: the three kinds of logger listen() accepts, the CLI's JSON and pretty lines, and the lines
// written from the worker's events.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import pino from 'pino';
import type { WorkerOptions } from '../../src/index.js';
import { lineLogger, logEvents, toLog } from '../../src/log.js';
import { Observer } from '../../src/observe.js';

const sink = () => {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk, _enc, done) {
      lines.push(...String(chunk).split('\n').filter(Boolean));
      done();
    },
  });
  return { lines, stream };
};

const failedEvent = { channel: 'orders', listener: 'Mailer.send', id: '42', ids: ['42'], attempt: 3, error: new Error('smtp down'), durationMs: 12.5, lost: false, dead: false };

test('a pino logger (bindings() and child()) gets (fields, message) with channel, listener, id, attempt and err', () => {
  const calls: unknown[][] = [];
  const pino = {
    bindings: () => ({}),
    child: () => pino,
    isLevelEnabled: (level: string) => level !== 'debug',
    debug: (...a: unknown[]) => calls.push(['debug', ...a]),
    info: (...a: unknown[]) => calls.push(['info', ...a]),
    warn: (...a: unknown[]) => calls.push(['warn', ...a]),
    error: (...a: unknown[]) => calls.push(['error', ...a]),
  };
  const observer = new Observer();
  logEvents(observer, toLog(pino));
  assert.equal(observer.wants('processed'), false, 'debug is off: no subscription to processed at all');
  observer.emit('failed', failedEvent);
  assert.equal(calls.length, 1);
  const [level, fields, message] = calls[0] as [string, Record<string, unknown>, string];
  assert.equal(level, 'error');
  assert.deepEqual({ ...fields, err: undefined }, { channel: 'orders', listener: 'Mailer.send', id: '42', attempt: 3, dead: false, durationMs: 12.5, err: undefined });
  assert.equal(fields.err, failedEvent.error);
  assert.equal(message, 'Mailer.send failed on channel "orders", notification 42 (attempt 3); kept for a retry:');
  toLog(pino).info('listening on orders');
  assert.deepEqual(calls[1], ['info', {}, 'listening on orders']);
});

test('an { info, warn, error } logger keeps its message signature: error(message, error)', () => {
  const calls: unknown[][] = [];
  const plain = { info: (m: string) => calls.push(['info', m]), warn: (m: string) => calls.push(['warn', m]), error: (m: string, e?: unknown) => calls.push(['error', m, e]) };
  const observer = new Observer();
  logEvents(observer, toLog(plain));
  observer.emit('failed', { ...failedEvent, dead: true });
  observer.emit('failed', { ...failedEvent, lost: true, durationMs: undefined as unknown as number });
  assert.deepEqual(calls, [
    ['error', 'Mailer.send failed on channel "orders", notification 42 (attempt 3); dead-lettered: see `pubsub dead list`:', failedEvent.error],
    ['warn', 'Mailer.send lost an attempt on channel "orders", notification 42 (attempt 3): its transaction ended before it committed; retried alone'],
  ]);
});

test('no logger: nothing is written to the console, and nobody subscribes to the events', () => {
  const observer = new Observer();
  const original = { log: console.log, warn: console.warn, error: console.error };
  const written: unknown[] = [];
  Object.assign(console, { log: (...a: unknown[]) => written.push(a), warn: (...a: unknown[]) => written.push(a), error: (...a: unknown[]) => written.push(a) });
  try {
    const log = toLog();
    logEvents(observer, log);
    log.warn('a warning');
    log.error('an error', new Error('x'));
  } finally {
    Object.assign(console, original);
  }
  assert.deepEqual(written, []);
  assert.equal(observer.wants('failed') || observer.wants('processed'), false);
});

test('lineLogger json: pino-shaped lines (numeric level, time, pid, hostname, msg), errors serialized, hostile fields never throw; levels filter', () => {
  const { lines, stream } = sink();
  const log = lineLogger({ format: 'json', level: 'info', out: stream });
  const circular: Record<string, unknown> = {};
  circular.self = circular;
  log.write('error', 'boom', { channel: 'c', big: 10n, circular, err: Object.assign(new Error('outer', { cause: new Error('inner') }), { code: 'E1' }) });
  log.write('debug', 'hidden');
  log.info('shown');
  assert.equal(lines.length, 2);
  const first = JSON.parse(lines[0]!);
  assert.equal(first.level, 50);
  assert.equal(first.msg, 'boom');
  assert.equal(first.pid, process.pid);
  assert.equal(first.big, '10');
  assert.equal(first.circular.self, '[Circular]');
  assert.equal(first.err.type, 'Error');
  assert.equal(first.err.message, 'outer');
  assert.equal(first.err.code, 'E1');
  assert.equal(first.err.cause.message, 'inner');
  assert.match(first.err.stack, /outer/);
  assert.equal(JSON.parse(lines[1]!).level, 30);
});

test('lineLogger pretty: "pubsub: …" lines, info on out, warnings and errors (with the stack) on err; debug lines only at --log-level debug', () => {
  const out = sink();
  const err = sink();
  const log = lineLogger({ format: 'pretty', level: 'debug', out: out.stream, err: err.stream });
  const observer = new Observer();
  logEvents(observer, log);
  log.info('listening on orders');
  observer.emit('failed', failedEvent);
  observer.emit('processed', { channel: 'orders', listener: 'Mailer.send', id: '7', ids: ['7', '8'], attempt: 1, durationMs: 3, latencyMs: [1, 2] });
  assert.deepEqual(out.lines, ['pubsub: listening on orders']);
  assert.match(err.lines[0]!, /^pubsub: Mailer\.send failed on channel "orders", notification 42 \(attempt 3\); kept for a retry: Error: smtp down/);
  assert.ok(err.lines.some((l) => /^pubsub: Mailer\.send processed notification 7 and 1 more on channel "orders" in 3 ms$/.test(l)), err.lines.join('\n'));
});

test('a real pino logger: accepted by listen()\'s type, and its JSON lines carry the fields and pino\'s serialized err', () => {
  const { lines, stream } = sink();
  const logger = pino({ level: 'debug' }, stream);
  const options: WorkerOptions = { logger }; // compiles: pino's (obj, msg) methods fit the Logger type
  const observer = new Observer();
  logEvents(observer, toLog(options.logger));
  observer.emit('failed', { ...failedEvent, dead: true });
  observer.emit('processed', { channel: 'orders', listener: 'Mailer.send', id: '7', ids: ['7'], attempt: 1, durationMs: 3, latencyMs: [1] });
  toLog(logger).warn('plain warning');
  const [failed, processed, warning] = lines.map((l) => JSON.parse(l));
  assert.equal(failed.level, 50);
  assert.equal(failed.channel, 'orders');
  assert.equal(failed.listener, 'Mailer.send');
  assert.equal(failed.id, '42');
  assert.equal(failed.attempt, 3);
  assert.equal(failed.dead, true);
  assert.equal(failed.err.message, 'smtp down');
  assert.equal(failed.err.type, 'Error');
  assert.match(failed.msg, /dead-lettered/);
  assert.equal(processed.level, 20);
  assert.equal(processed.id, '7');
  assert.equal(warning.level, 40);
  assert.equal(warning.msg, 'plain warning');
});
