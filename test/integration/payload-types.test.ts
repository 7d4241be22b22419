// Payload types that cannot silently lie, against real PostgreSQL: Date and bigint properties of payload
// classes (declared, undeclared, nested), notify() with bigint and Date, and channels defined with a
// Standard Schema (zod, valibot; sync and async) validated in notify() and again in the worker.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as v from 'valibot';
import { z } from 'zod';
import { Listen, PubSubError, Type, defineChannel, listen, notify, type NotificationContext, type Worker } from '../../src/index.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

/** Any decorator makes tsc record a property's type (`design:type`); this one does nothing else. */
const Doc = (): PropertyDecorator => () => {};

class Line {
  @Doc() shippedAt!: Date;
  @Doc() cents!: bigint;
  sku!: string;
}

/** Types declared by TypeScript alone (through @Doc), by @Type, and nested. */
class Shipment {
  @Doc() at!: Date;
  @Doc() weight!: bigint;
  @Type(() => BigInt) total!: bigint;
  @Type(() => Date) due!: Date;
  @Type(() => Line) lines!: Line[];
  @Doc() note?: Date | null;
}

/** No decorator at all: nothing at runtime says `at` is a Date or `big` a bigint. */
class Loose {
  n!: number;
  at!: Date;
  big!: bigint;
  label!: string;
}

const shipments = defineChannel('pt_shipments', Shipment);
const looseTyped = defineChannel('pt_loose_typed', Loose);

const Order = z.object({
  orderId: z.number().int().positive(),
  email: z.email(),
  placedAt: z.coerce.date(),
  cents: z.coerce.bigint(),
  sku: z.string().transform((s) => s.toUpperCase()),
});
const orders = defineChannel('pt_orders', Order);
/** JSON has no Date: z.date() (not coerced) can never pass in the worker. */
const dated = defineChannel('pt_dated', z.object({ at: z.date() }));
/** An async refinement: a rejection may change later (it could ask a service), so it is retried. */
const asyncOrders = defineChannel(
  'pt_async',
  z.object({ n: z.number() }).refine(async (o) => o.n !== 13, { message: 'unlucky', path: ['n'] }),
);
const pings = defineChannel('pt_pings', z.object({ seq: z.number() }), { durable: false });
const valibotChannel = defineChannel('pt_valibot', v.object({ id: v.pipe(v.string(), v.uuid()), tags: v.array(v.string()) }));

const received: Record<string, unknown[]> = {};
const got = (channel: string) => (received[channel] ??= []);
const warnings: string[] = [];
const errors: string[] = [];

class PayloadListeners {
  @Listen(shipments)
  onShipment(s: Shipment) {
    got('pt_shipments').push(s);
  }

  @Listen('pt_loose')
  onLoose(l: Loose) {
    got('pt_loose').push(l);
  }

  @Listen(orders)
  onOrder(o: z.output<typeof Order>, ctx: NotificationContext) {
    got('pt_orders').push({ o, attempt: ctx.attempt });
  }

  @Listen(asyncOrders, { maxAttempts: 2, backoff: { baseMs: 10, maxMs: 20 } })
  onAsync(o: { n: number }) {
    got('pt_async').push(o);
  }

  @Listen(pings)
  onPing(p: { seq: number }, ctx: NotificationContext) {
    assert.equal(ctx.durable, false);
    got('pt_pings').push(p);
  }

  @Listen(valibotChannel)
  onValibot(x: { id: string; tags: string[] }) {
    got('pt_valibot').push(x);
  }
}

// Checked by the compiler (tsc builds the tests): these lines must not compile.
export function typeChecks() {
  // @ts-expect-error notify() takes the schema's input: orderId is a number
  void notify(orders, { orderId: '1', email: 'a@b.c', placedAt: new Date(), cents: 1n, sku: 'x' });
  // @ts-expect-error email is missing
  void notify(orders, { orderId: 1, placedAt: new Date(), cents: 1n, sku: 'x' });
  const withTransform = defineChannel('pt_tc', z.object({ n: z.string().transform(Number) }));
  void notify(withTransform, { n: '12' }); // the input type: a string
  // @ts-expect-error the input is a string, not the output's number
  void notify(withTransform, { n: 12 });
  class Checks {
    @Listen(withTransform)
    right(p: { n: number }) {
      return p.n.toFixed();
    }

    // @ts-expect-error the listener receives the output ({ n: number }), not the input
    @Listen(withTransform)
    wrong(p: { n: string }) {
      return p;
    }
  }
  return Checks;
}

let db: TestDatabase;
let worker: Worker;
/** A client for calls that must be refused before they send anything. */
const mustNotSend = { query: async () => assert.fail('nothing may be sent') };
/** Waits for the channel's dead letters. */
async function deadLetters(channel: string, timeoutMs?: number) {
  const rows = await waitFor(async () => {
    const dead = (await stored(channel)).filter((r) => r.dead);
    return dead.length ? dead : undefined;
  }, `a dead letter on ${channel}`, timeoutMs);
  return rows!;
}
const stored = async (channel: string) =>
  db.query<{ attempts: number; dead: boolean; last_error: string | null }>('select attempts, dead_at is not null as dead, last_error from pubsub.notification where channel = $1', [channel]);

async function refused(promise: Promise<unknown>, pattern: RegExp): Promise<PubSubError> {
  const error = await promise.then(
    () => assert.fail('expected notify() to refuse'),
    (e: unknown) => e,
  );
  assert.ok(error instanceof PubSubError, String(error));
  assert.equal(error.code, 'pubsub.invalidPayload');
  assert.match(error.message, pattern);
  return error;
}

before(async () => {
  assert.ok(PayloadListeners);
  db = await createTestDatabase({ library: true, subscribe: true });
  worker = await listen({
    databaseUrl: db.url,
    pollIntervalMs: 100,
    logger: { info() {}, warn: (m) => warnings.push(m), error: (m, e) => errors.push(`${m} ${(e as Error)?.message ?? ''}`) },
  });
});

after(async () => {
  await worker?.close();
  await db?.drop();
});

test('Date and bigint properties declared only by their TypeScript type (any decorator) arrive as Date and bigint, nested too', async () => {
  const big = 2n ** 70n + 1n;
  await notify(
    shipments,
    {
      at: new Date('2024-02-29T23:59:59.123Z'),
      weight: big,
      total: -big,
      due: new Date(Date.UTC(2030, 0, 1)),
      lines: [{ shippedAt: new Date(0), cents: 5n, sku: '007' }],
      note: null,
    },
    { client: db.pool },
  );
  const [s] = (await waitFor(() => got('pt_shipments').length === 1 && got('pt_shipments'), 'the shipment')) as Shipment[];
  assert.ok(s instanceof Shipment);
  assert.ok(s.at instanceof Date && s.at.toISOString() === '2024-02-29T23:59:59.123Z');
  assert.equal(s.weight, big);
  assert.equal(s.total, -big); // @Type(() => BigInt): class-transformer alone would leave a string
  assert.ok(s.due instanceof Date && s.due.getTime() === Date.UTC(2030, 0, 1));
  assert.ok(s.lines[0] instanceof Line);
  assert.ok(s.lines[0].shippedAt instanceof Date && s.lines[0].shippedAt.getTime() === 0);
  assert.equal(s.lines[0].cents, 5n);
  assert.equal(s.lines[0].sku, '007');
  assert.equal(s.note, null);
  assert.deepEqual(warnings.filter((w) => !w.startsWith('autovacuum is off')), []); // the CI server runs without autovacuum
});

test('undeclared Date and bigint properties: notify() on the typed channel refuses them, nothing stored; sent around it, they arrive as strings and the worker warns once per property', async () => {
  // The class channel knows Loose: a Date or bigint where Loose declares nothing would reach the listener as a string.
  await refused(notify(looseTyped, { n: 1, at: new Date(), big: 1n, label: 'x' }, { client: mustNotSend }), /^notify\("pt_loose_typed"\): Loose\.at is a Date, but Loose does not declare the type of at, so the listener would receive an ISO string\. Add @Type\(\(\) => Date\)/);
  await refused(notify(looseTyped, { n: 1, at: undefined as never, big: 7n, label: 'x' }, { client: mustNotSend }), /Loose\.big is a bigint.*@Type\(\(\) => BigInt\)/);

  // By name (or from another program) the payload goes out; the worker cannot rebuild it and says so.
  for (const n of [1, 2]) await notify('pt_loose', { n, at: new Date(Date.UTC(2024, 0, n)), big: 10n ** 20n, label: 'plain text' }, { client: db.pool });
  const items = (await waitFor(() => got('pt_loose').length === 2 && got('pt_loose'), 'both loose payloads')) as Loose[];
  for (const l of items) {
    assert.equal(typeof l.at, 'string', 'an undeclared Date stays the string JSON made of it');
    assert.equal(typeof l.big, 'string');
  }
  const loose = warnings.filter((w) => w.startsWith('Loose.'));
  assert.equal(loose.length, 2, loose.join('\n'));
  assert.match(loose.find((w) => w.startsWith('Loose.at'))!, /^Loose\.at arrived as an ISO 8601 timestamp string, the form notify\(\) gives a Date, but Loose does not declare its type, so the listener gets a string\. Add @Type\(\(\) => Date\)/);
  assert.match(loose.find((w) => w.startsWith('Loose.big'))!, /^Loose\.big arrived as a string of digits, the form notify\(\) gives a bigint.*@Type\(\(\) => BigInt\)/);
  assert.ok(!loose.some((w) => w.includes('label')), 'ordinary strings are not warned about');
});

test('notify() with bigint and Date: exact round trip through a declared class; an invalid Date is refused before anything is sent', async () => {
  got('pt_shipments').length = 0;
  const huge = -(10n ** 400n) + 1n;
  const line = { shippedAt: new Date(8.64e15), cents: huge, sku: 's' };
  await notify(shipments, { at: new Date(-8.64e15), weight: 0n, total: huge, due: new Date(1), lines: [line, line] }, { client: db.pool });
  const s = ((await waitFor(() => got('pt_shipments').length === 1 && got('pt_shipments'), 'the shipment')) as Shipment[])[0]!;
  assert.equal(s.at.getTime(), -8.64e15);
  assert.equal(s.weight, 0n);
  assert.equal(s.total, huge);
  assert.equal(s.lines[1]!.cents, huge);
  assert.equal(s.lines[1]!.shippedAt.getTime(), 8.64e15);

  const before = (await stored('pt_shipments')).length;
  await refused(notify(shipments, { at: new Date('not a date'), weight: 1n, total: 1n, due: new Date(), lines: [] }, { client: db.pool }), /notify\("pt_shipments"\): the payload has an invalid Date at "at".*JSON would write as null/);
  await refused(notify('pt_untyped', { when: [new Date(NaN)] }, { client: mustNotSend }), /invalid Date/);
  assert.equal((await stored('pt_shipments')).length, before);
});

test('a zod schema channel: valid payloads arrive as the schema output, typed; invalid ones are refused by notify() with their issues, nothing stored', async () => {
  const id = await notify(orders, { orderId: 7, email: 'ann@example.com', placedAt: new Date('2024-05-01T10:00:00Z'), cents: 2n ** 64n, sku: 'ab-1' }, { client: db.pool });
  assert.ok(id);
  const { o } = ((await waitFor(() => got('pt_orders').length === 1 && got('pt_orders'), 'the order')) as Array<{ o: z.output<typeof Order> }>)[0]!;
  assert.deepEqual(o, { orderId: 7, email: 'ann@example.com', placedAt: new Date('2024-05-01T10:00:00Z'), cents: 2n ** 64n, sku: 'AB-1' });
  await waitFor(async () => (await stored('pt_orders')).length === 0, 'the processed order to be deleted (its claim committed)');

  const error = await refused(
    notify(orders, { orderId: -1, email: 'not an address', placedAt: new Date(), cents: 1n, sku: 'x' }, { client: db.pool }),
    /^notify\("pt_orders"\): the payload does not match the channel's zod schema:\n {2}- orderId: .*\n {2}- email: .*\nNothing was sent\.$/,
  );
  assert.equal((error as { issues?: unknown[] }).issues?.length, 2);
  await refused(notify(orders, null as never, { client: db.pool }), /- \(root\): /);
  // z.date() passes a Date, but the worker validates JSON, where it is a string: said at notify(), not found out later.
  await refused(notify(dated, { at: new Date() }, { client: mustNotSend }), /matches the channel's schema, but not once written as JSON.*\n {2}- at: .*\nJSON turns a Date into an ISO string.*z\.coerce\.date\(\)/s);
  assert.deepEqual(await stored('pt_orders'), []);
  assert.equal(got('pt_orders').length, 1);
});

test('a stored payload that the (synchronous) schema refuses is dead-lettered on its first attempt, naming the issues; the listener is never called', async () => {
  got('pt_orders').length = 0;
  // Written around the schema, as raw SQL or another program could: notify() by name does not know it.
  await notify('pt_orders', { orderId: 'seven', email: 'ann@example.com', placedAt: 'yesterday', cents: '1', sku: 's' }, { client: db.pool });
  const [row] = await deadLetters('pt_orders');
  assert.equal(row!.attempts, 1, 'retrying the same bytes cannot help: dead at once, not after 10 attempts');
  assert.match(row!.last_error!, /PayloadListeners\.onOrder: the payload does not match the channel's zod schema:\n {2}- orderId: .*\n {2}- placedAt: .*\nnotify\(\) checks payloads against the schema/);
  assert.equal(got('pt_orders').length, 0, 'the listener never ran');
  assert.ok(errors.some((e) => /pt_orders.*dead-lettered/.test(e)));
});

test('an async schema: valid payloads round-trip; a stored payload it refuses is retried like any failure (it may change), then dead-lettered', async () => {
  await notify(asyncOrders, { n: 1 }, { client: db.pool });
  await refused(notify(asyncOrders, { n: 13 }, { client: db.pool }), /- n: unlucky/);
  await notify('pt_async', { n: 13 }, { client: db.pool });
  const [row] = await deadLetters('pt_async', 15_000);
  assert.equal(row!.attempts, 2);
  assert.match(row!.last_error!, /- n: unlucky/);
  assert.deepEqual(got('pt_async'), [{ n: 1 }]);
});

test('a valibot schema channel: valid payloads round-trip, invalid ones are refused at notify()', async () => {
  const id = '3b241101-e2bb-4255-8caf-4136c566a962';
  await notify(valibotChannel, { id, tags: ['a'] }, { client: db.pool });
  await waitFor(() => got('pt_valibot').length === 1, 'the valibot payload');
  assert.deepEqual(got('pt_valibot'), [{ id, tags: ['a'] }]);
  await refused(notify(valibotChannel, { id: 'x', tags: [1 as never] }, { client: db.pool }), /valibot schema:\n {2}- id: .*\n {2}- tags\[0\]: /);
});

test('a non-durable schema channel: valid payloads arrive validated; one sent around the schema is dropped with an error, the listener never called', async () => {
  await notify('pt_pings', { seq: 'one' }, { client: db.pool }); // by name: not validated on the way out
  await notify(pings, { seq: 2 }, { client: db.pool });
  await waitFor(() => got('pt_pings').length === 1, 'the valid ping');
  assert.deepEqual(got('pt_pings'), [{ seq: 2 }]);
  assert.ok(errors.some((e) => /non-durable notification on channel "pt_pings" failed and is dropped.*PayloadListeners\.onPing: the payload does not match the channel's zod schema:\n {2}- seq: /s.test(e)), errors.join('\n'));
});
