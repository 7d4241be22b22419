/**
 * Hostile input end to end, against PostgreSQL: odd but legal channel names really work through
 * NOTIFY and the worker; hostile rows stored straight into pubsub.notification end dead with a
 * last_error naming the problem, while the worker keeps running and their neighbours are processed.
 * The worker is tested as a black box through listen().
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import pg from 'pg';
import { Listen, PostInsertListen, Transform, Type, listen, notify, type NotificationContext, type TriggerPayload, type Worker } from '../../src/index.js';
import { assertChannelName } from '../../src/channels.js';
import { PubSubError } from '../../src/errors.js';
import { getRegistry } from '../../src/registry.js';
import { listenSql, triggerKey } from '../../src/sql.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

class Line {
  sku!: string;
}

class HostileOrder {
  id!: number;
  @Type(() => Date)
  at!: Date;
  @Type(() => Line)
  lines!: Line[];
  @Transform(({ value }) => (value === undefined ? value : BigInt(value)), { toClassOnly: true })
  cents?: bigint;
}

class Blob {
  id!: number;
  text!: string;
}

const LONG = `c${'x'.repeat(62)}`; // 63 bytes, the most PostgreSQL allows
const got = {
  orders: [] as HostileOrder[],
  named: [] as Array<{ channel: string; id: number }>,
  blobs: [] as Blob[],
  rows: [] as TriggerPayload[],
  retried: [] as Array<{ attempt: number; row: Record<string, unknown> }>,
};

class HostileListeners {
  @Listen('hostile.orders', { maxAttempts: 1 })
  onOrder(order: HostileOrder) {
    assert.ok(order instanceof HostileOrder);
    got.orders.push(order);
  }

  @Listen('MixedCase.Orders')
  onMixed(b: Blob, ctx: NotificationContext) {
    got.named.push({ channel: ctx.channel, id: b.id });
  }

  @Listen('1st-channel:x_y.z')
  onOdd(b: Blob, ctx: NotificationContext) {
    got.named.push({ channel: ctx.channel, id: b.id });
  }

  @Listen(LONG)
  onLong(b: Blob, ctx: NotificationContext) {
    got.named.push({ channel: ctx.channel, id: b.id });
  }

  @Listen('select', { durable: false })
  onKeyword(b: Blob, ctx: NotificationContext) {
    got.named.push({ channel: ctx.channel, id: b.id });
  }

  @Listen('big.blobs')
  onBlob(b: Blob) {
    got.blobs.push(b);
  }

  @PostInsertListen('Hostile', { maxAttempts: 1 })
  onRow(p: TriggerPayload) {
    got.rows.push(p);
  }

  @PostInsertListen('Retried', { maxAttempts: 3, backoff: { baseMs: 10, maxMs: 20 } })
  onRetried(p: TriggerPayload, ctx: NotificationContext) {
    got.retried.push({ attempt: ctx.attempt, row: p.new! });
    if (ctx.attempt === 0) throw new Error('first attempt fails on purpose');
  }
}

let db: TestDatabase;
let worker: Worker;
const errors: string[] = [];

before(async () => {
  assert.ok(HostileListeners);
  db = await createTestDatabase({ library: true, subscribe: true });
  // The worker serves only models that a migration recorded; no trigger writes these payloads, so record them here.
  await db.query(`insert into pubsub.model (name, version, fields) values ('Hostile', 'forged', '[]'), ('Retried', 'forged', '[]')`);
  worker = await listen({ databaseUrl: db.url, pollIntervalMs: 100, logger: { info() {}, warn() {}, error: (m) => errors.push(m) } });
});

after(async () => {
  await worker?.close();
  await db?.drop();
});

/** The one listener of `channel` (its id is what stored rows are addressed to). */
function listenerOf(channel: string) {
  const def = getRegistry().get(channel)!;
  return { id: def.listeners[0]!.id, key: def.listeners[0]!.trigger ? triggerKey(def.listeners[0]!.trigger, channel, def.durable) : undefined };
}

/** Stores rows the way a hostile writer could: straight into the table, payload as raw JSON text. */
async function store(channel: string, payloads: string[]): Promise<string[]> {
  const rows = await db.query<{ id: string }>(
    `insert into pubsub.notification (channel, listener, payload)
       select $1, $2, p::jsonb from unnest($3::text[]) with ordinality as t(p, n) order by n
     returning id::text`,
    [channel, listenerOf(channel).id, payloads],
  );
  await db.query('select pg_notify($1, $2)', [channel, '']);
  return rows.map((r) => r.id);
}

async function settled(ids: string[], timeoutMs = 10_000) {
  const pending = async () => (await db.query(`select count(*)::int as n from pubsub.notification where id = any($1::bigint[]) and dead_at is null`, [ids]))[0].n;
  await waitFor(async () => (await pending()) === 0, `rows ${ids} processed or dead`, timeoutMs);
  return db.query<{ id: string; last_error: string }>(`select id::text, last_error from pubsub.notification where id = any($1::bigint[]) order by pubsub.notification.id`, [ids]);
}

function assertNoPollution() {
  assert.equal(({} as any).polluted, undefined);
  assert.equal(Object.getPrototypeOf({}), Object.prototype);
}

test('accepted channel names (property) round-trip through a real NOTIFY exactly; refused ones never reach the server', async () => {
  const listener = new pg.Client(db.url);
  await listener.connect();
  const heard: Array<{ channel: string; payload?: string }> = [];
  listener.on('notification', (n) => heard.push({ channel: n.channel, payload: JSON.parse(n.payload!) }));
  const mustNotSend = { query: async () => assert.fail('a refused name reached the server') };
  try {
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(fc.stringMatching(/^[A-Za-z0-9_.:-]{1,63}$/), fc.string({ maxLength: 70 }), fc.string({ unit: 'grapheme', maxLength: 20 })),
        fc.string({ maxLength: 50 }),
        async (name, text) => {
          let accepted = true;
          try {
            assertChannelName(name);
          } catch (e) {
            accepted = false;
            assert.ok(e instanceof PubSubError && e.code === 'pubsub.invalidChannel');
            await assert.rejects(notify(name, text, { client: mustNotSend, durable: false }), (e2: any) => e2.code === 'pubsub.invalidChannel');
          }
          if (!accepted) return;
          heard.length = 0;
          await listener.query(listenSql([name]));
          await notify(name, { text }, { client: db.pool, durable: false });
          await waitFor(() => heard.length > 0, `a NOTIFY on ${JSON.stringify(name)}`, 5000);
          await listener.query('unlisten *');
          assert.deepEqual(heard, [{ channel: name, payload: { text } }]);
        },
      ),
      { numRuns: 40 },
    );
  } finally {
    await listener.end();
  }
});

test('odd but legal names work end to end through notify() and the worker: mixed case, leading digit, punctuation, 63 bytes, an SQL keyword', async () => {
  got.named.length = 0;
  const channels = ['MixedCase.Orders', '1st-channel:x_y.z', LONG, 'select'];
  for (const [i, channel] of channels.entries()) await notify(channel, { id: i, text: 't' }, { client: db.pool });
  await waitFor(() => got.named.length === channels.length, 'one delivery per channel');
  assert.deepEqual(got.named.sort((a, b) => a.id - b.id), channels.map((channel, id) => ({ channel, id })));
  // PostgreSQL folds unquoted names to lower case: a listener of "mixedcase.orders" must not get these.
  assert.equal(getRegistry().get('mixedcase.orders'), undefined);
});

test('a 10 MB payload on a durable channel is stored as jsonb and delivered intact', async () => {
  got.blobs.length = 0;
  const text = `${'0123456789'.repeat(1024 * 1024)}ü"\\`;
  const id = await notify('big.blobs', { id: 1, text }, { client: db.pool });
  assert.ok(id);
  await waitFor(() => got.blobs.length === 1, 'the big payload', 30_000);
  assert.equal(got.blobs[0]!.text, text);
});

test('hostile rows of a typed @Listen channel end dead with the reason; the worker keeps going and neighbours are processed', async () => {
  got.orders.length = 0;
  const good = (id: number) => JSON.stringify({ id, at: '2024-01-01T00:00:00.000Z', lines: [{ sku: `s${id}` }], cents: '12345678901234567890' });
  const hostile: Array<[string, RegExp]> = [
    ['"just a string"', /payload for HostileOrder: got "just a string", expected a JSON object with the fields of class HostileOrder/],
    ['null', /payload for HostileOrder: got null/],
    ['[1, 2]', /payload for HostileOrder, item 0: got 1/],
    ['{"id": 5, "cents": "abc"}', /payload for HostileOrder: class-transformer could not turn it into HostileOrder: Cannot convert abc to a BigInt/],
    [`{"id": 6, "lines": [${'['.repeat(3000)}${']'.repeat(3000)}]}`, /payload for HostileOrder: the payload is nested too deeply to be turned into HostileOrder/],
  ];
  const ids = await store('hostile.orders', [good(1), ...hostile.map(([p]) => p), '{"id": 7, "__proto__": {"polluted": true}, "constructor": {"prototype": {"polluted": true}}}', good(8)]);
  const rows = await settled(ids);
  assert.deepEqual(got.orders.map((o) => o.id).sort(), [1, 7, 8]);
  assert.equal(got.orders.find((o) => o.id === 8)!.cents, 12345678901234567890n);
  assert.equal((got.orders.find((o) => o.id === 7) as any).polluted, undefined);
  assertNoPollution();
  // Processed rows are gone; each hostile one is dead with its own reason.
  assert.equal(rows.length, hostile.length);
  for (const [i, [, reason]] of hostile.entries()) {
    assert.equal(rows[i]!.id, ids[i + 1]);
    assert.match(rows[i]!.last_error, /PubSubError/);
    assert.match(rows[i]!.last_error, reason);
  }
  // Still alive: a new notification is processed.
  await notify('hostile.orders', JSON.parse(good(9)), { client: db.pool });
  await waitFor(() => got.orders.some((o) => o.id === 9), 'a notification after the hostile ones');
});

test('hostile trigger payloads end dead naming the field; neighbours are processed', async () => {
  got.rows.length = 0;
  const { key } = listenerOf('model.Hostile');
  const wire = (types: unknown, row: unknown, extra: object = {}) => JSON.stringify({ op: 'INSERT', when: 'AFTER', model: 'Hostile', trigger: key, types, old: null, new: row, ...extra });
  const types = { big: 'BigInt', raw: 'Bytes', at: 'DateTime', dec: 'Decimal', tags: 'BigInt[]' };
  const fine = (id: number) => wire(types, { id, big: '9223372036854775807', raw: 'AAH+/w==', at: '2024-01-02T03:04:05.678', dec: '1.50', tags: ['1', null] });
  const hostile: Array<[string, RegExp]> = [
    [wire(types, { id: 2, big: 'abc' }), /Hostile payload, new\.big \(BigInt\): got "abc", expected a whole number/],
    [wire(types, { id: 3, raw: 'not base64!' }), /Hostile payload, new\.raw \(Bytes\): got "not base64!", expected bytes as a base64 string/],
    [wire(types, { id: 4, at: 'not a date' }), /Hostile payload, new\.at \(DateTime\): got "not a date"/],
    [wire(types, { id: 5, dec: 'x' }), /Hostile payload, new\.dec \(Decimal\): got "x"/],
    [wire(types, { id: 6, tags: '1' }), /Hostile payload, new\.tags \(BigInt\[\]\): got "1", expected a list/],
    [wire(types, { id: 7, big: ['1'] }), /Hostile payload, new\.big \(BigInt\): got an array, expected a single value/],
    [wire({ big: 5 }, { id: 8 }), /Hostile payload, types\.big: got 5/],
    [wire(types, 'a row?'), /Hostile payload, new: got "a row\?"/],
  ];
  const ids = await store('model.Hostile', [fine(1), ...hostile.map(([p]) => p), fine(9)]);
  const rows = await settled(ids);
  assert.deepEqual(got.rows.map((r) => r.new!.id).sort(), [1, 9]);
  assert.equal(got.rows[0]!.new!.big, 9223372036854775807n);
  assert.equal(rows.length, hostile.length);
  for (const [i, [, reason]] of hostile.entries()) assert.match(rows[i]!.last_error, reason);
  for (const row of rows) assert.match(row.last_error, /pubsub make-migration/);
  assertNoPollution();
});

test('a failed trigger row is put back byte for byte, so the retry sees the same BigInt and Bytes values', async () => {
  // Before decoding was made pure, the worker's copy of the payload held a BigInt after decoding,
  // putting the row back threw "Do not know how to serialize a BigInt", and the batch rolled back forever.
  got.retried.length = 0;
  const { key } = listenerOf('model.Retried');
  const payload = JSON.stringify({
    op: 'INSERT',
    when: 'AFTER',
    model: 'Retried',
    trigger: key,
    types: { big: 'BigInt', raw: 'Bytes', at: 'DateTime' },
    old: null,
    new: { id: 1, big: '-9223372036854775808', raw: 'AAH+/w==', at: '2024-01-02T03:04:05.678' },
  });
  const [id] = await store('model.Retried', [payload]);
  await waitFor(() => got.retried.length === 2, 'the failed attempt and its retry');
  await settled([id!]);
  assert.deepEqual(
    got.retried.map((r) => r.attempt),
    [0, 1],
  );
  for (const { row } of got.retried) {
    assert.equal(row.big, -9223372036854775808n);
    assert.deepEqual(row.raw, new Uint8Array([0, 1, 254, 255]));
    assert.equal((row.at as Date).toISOString(), '2024-01-02T03:04:05.678Z');
  }
  assert.equal((await db.query('select count(*)::int as n from pubsub.notification where id = $1', [id]))[0].n, 0);
});

test('a row on a trigger channel that is not a trigger payload ends dead instead of being deleted unseen', async () => {
  const ids = await store('model.Hostile', ['null', '"text"', '{"op": "INSERT"}']);
  const rows = await settled(ids, 3000);
  assert.equal(rows.length, 3, 'every malformed row is kept, dead, with its reason');
  for (const row of rows) assert.match(row.last_error, /trigger payload/);
});

test('a 10,000-level payload that class-transformer cannot decode ends dead; its neighbours are processed once', async () => {
  // Before the worker kept the stored text, putting this row back re-serialized the decoded payload:
  // JSON.stringify overflowed the stack, the claim rolled back and the batch (neighbours included) ran again, forever.
  got.orders.length = 0;
  const deep = `{"id": 20, "lines": [${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}]}`;
  const ids = await store('hostile.orders', [JSON.stringify({ id: 21, at: '2024-01-01T00:00:00Z', lines: [] }), deep, JSON.stringify({ id: 22, at: '2024-01-01T00:00:00Z', lines: [] })]);
  const rows = await settled(ids);
  assert.deepEqual(got.orders.map((o) => o.id).sort(), [21, 22]);
  assert.equal(rows.length, 1);
  assert.match(rows[0]!.last_error, /nested too deeply/);
});
