/**
 * Payload types that cannot silently lie, without a database: Date and bigint properties decoded from
 * the TypeScript type tsc records, warned about when nothing is recorded, refused by notify() on the
 * sending side; Standard Schema recognition, issue formatting and registration.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import * as v from 'valibot';
import { z } from 'zod';
import { Listen, PubSubError, Type, defineChannel, getRegistry, notify } from '../../src/index.js';
import { assertRebuildable, decodePayload, encodePayload } from '../../src/payload.js';
import { SchemaRejection, formatIssues, isStandardSchema, validate, type StandardSchemaV1 } from '../../src/standard-schema.js';

const Doc = (): PropertyDecorator => () => {};

class Item {
  @Doc() at!: Date;
  @Doc() qty!: bigint;
  undeclared?: Date;
}

class Box {
  @Doc() sealedAt!: Date;
  @Type(() => BigInt) id!: bigint;
  @Type(() => Date) due!: Date;
  @Type(() => Date) history!: Date[];
  @Type(() => BigInt) codes!: bigint[];
  @Type(() => Item) items!: Item[];
  @Type(() => Item) main!: Item;
  @Doc() stamps!: Date[]; // an array whose items tsc cannot describe
  @Doc() label!: string; // declared a string: never warned about, whatever it holds
}

const isInvalidPayload = (e: unknown) => e instanceof PubSubError && e.code === 'pubsub.invalidPayload';
const roundTrip = (value: unknown, type: Function, warn?: (m: string) => void) => decodePayload(JSON.parse(encodePayload(value, 'c')), type, warn);

test('declared Date and bigint properties (TypeScript type or @Type) are rebuilt at every level, exactly', () => {
  const d = (ms: number) => new Date(ms);
  const box = roundTrip(
    {
      sealedAt: d(1),
      id: 2n ** 100n,
      due: d(2),
      history: [d(3), null, d(4)],
      codes: [-1n, 0n],
      items: [{ at: d(5), qty: 6n }],
      main: { at: d(7), qty: -(2n ** 80n) },
      label: '2024-01-01T00:00:00Z',
    },
    Box,
    () => assert.fail('nothing here is undeclared'),
  ) as Box;
  assert.ok(box instanceof Box && box.items[0] instanceof Item && box.main instanceof Item);
  assert.deepEqual([box.sealedAt, box.due, box.history, box.items[0]!.at, box.main.at], [d(1), d(2), [d(3), null, d(4)], d(5), d(7)]);
  assert.deepEqual([box.id, box.codes, box.items[0]!.qty, box.main.qty], [2n ** 100n, [-1n, 0n], 6n, -(2n ** 80n)]);
  assert.equal(box.label, '2024-01-01T00:00:00Z', 'a declared string stays a string whatever it looks like');
});

test('what a declared Date or bigint property cannot be is refused with invalidPayload naming the property (never an Invalid Date or a string)', () => {
  const refuse = (payload: unknown, pattern: RegExp) => assert.throws(() => decodePayload(payload, Box), (e: unknown) => isInvalidPayload(e) && pattern.test((e as Error).message), JSON.stringify(payload));
  refuse({ sealedAt: 'soon' }, /^payload for Box\.sealedAt: got "soon", expected a date as an ISO 8601 string/);
  refuse({ due: 'soon' }, /^payload for Box\.due: got "soon", expected a date/); // @Type(() => Date) alone gives an Invalid Date
  refuse({ history: ['2024-01-01T00:00:00Z', 'x'] }, /^payload for Box\.history\[1\]: got "x"/);
  refuse({ id: '1.5' }, /^payload for Box\.id: got "1\.5", expected a whole number/);
  refuse({ codes: [1, 'z'] }, /^payload for Box\.codes\[1\]: got "z"/);
  refuse({ items: [{ qty: 'many' }] }, /^payload for Box\.items\[0\]\.qty: got "many"/);
  refuse({ main: { at: {} } }, /^payload for Box\.main\.at: got an object/);
  // @Type maps over an array whatever the property's type: an array where a Date is declared, or the reverse, is refused.
  refuse({ due: ['2024-01-01T00:00:00Z'] }, /^payload for Box\.due: got an array, expected a single Date, not an array/);
  refuse({ codes: '1' }, /^payload for Box\.codes: got "1", expected an array of bigint values/);
  refuse({ sealedAt: [] }, /^payload for Box\.sealedAt: got an array, expected a single Date/);
});

test('undeclared properties that receive what looks like a Date or bigint are warned about once per property; other strings are not', () => {
  class Loose {
    when!: Date;
    big!: bigint;
    name!: string;
    @Doc() list!: Date[];
  }
  const warnings: string[] = [];
  const warn = (m: string) => warnings.push(m);
  for (let i = 0; i < 3; i++) {
    const got = decodePayload({ when: '2024-02-29T12:00:00.000Z', big: '123456789012345678901', name: 'Ann', list: ['2024-01-01T00:00:00+02:00'] }, Loose, warn) as Loose;
    assert.equal(typeof got.when, 'string', 'nothing says it is a Date, so it is left alone');
  }
  assert.deepEqual(
    warnings.map((w) => w.split(' arrived')[0]),
    ['Loose.when', 'Loose.big', 'Loose.list has items that'],
  );
  assert.match(warnings[2]!, /Loose does not declare the type of its items, so the listener gets strings\. Add @Type\(\(\) => Date\) to Loose\.list/);
  for (const text of ['2024-02-29', 'yesterday', '12.5', '1e3', '', ' 12', '+1', '0x10', '01', 'x'.repeat(10_000)]) {
    class Quiet {
      value!: string;
    }
    decodePayload({ value: text }, Quiet, (m) => assert.fail(`warned about ${JSON.stringify(text)}: ${m}`));
  }
});

test('notify() side: a Date or bigint where the class declares nothing is refused, naming the path; declared ones pass', () => {
  class Inner {
    @Doc() ok!: Date;
    loose?: unknown;
  }
  class Outer {
    @Type(() => Inner) inner!: Inner[];
    meta?: Record<string, unknown>;
  }
  const refuse = (payload: unknown, pattern: RegExp) =>
    assert.throws(() => assertRebuildable(payload, Outer, 'ch'), (e: unknown) => isInvalidPayload(e) && pattern.test((e as Error).message));
  refuse({ inner: [{ ok: new Date() }, { loose: 5n }] }, /^notify\("ch"\): Outer\.inner\[1\]\.loose is a bigint, but Inner does not declare the type of loose, so the listener would receive a string of digits\. Add @Type\(\(\) => BigInt\) to Inner\.loose/);
  refuse({ meta: [new Date()] }, /Outer\.meta is a Date/);
  assertRebuildable({ inner: [{ ok: new Date() }], meta: { deep: new Date() } }, Outer, 'ch'); // inside a plain object: JSON, as the type says
  assertRebuildable([{ inner: [] }], Outer, 'ch');
  for (const primitive of [String, Number, Date, BigInt]) assertRebuildable(new Date(), primitive, 'ch');
});

test('property: valid Dates and bigints of any size round-trip exactly through notify()\'s encoding and a declared class', () => {
  const date = fc.date({ noInvalidDate: true });
  const big = fc.bigInt({ min: -(2n ** 512n), max: 2n ** 512n });
  fc.assert(
    fc.property(date, big, fc.array(date, { maxLength: 3 }), fc.array(big, { maxLength: 3 }), fc.array(fc.record({ at: date, qty: big }), { maxLength: 3 }), (sealedAt, id, history, codes, items) => {
      const box = roundTrip({ sealedAt, id, due: sealedAt, history, codes, items, main: items[0] ?? null }, Box, () => assert.fail('no warning')) as Box;
      assert.deepEqual([box.sealedAt, box.id, box.due, box.history, box.codes], [sealedAt, id, sealedAt, history, codes]);
      assert.deepEqual(box.items.map((i) => [i.at, i.qty]), items.map((i) => [i.at, i.qty]));
    }),
    { numRuns: 200 },
  );
});

test('an invalid Date is refused by notify() at any depth, where JSON would silently write null', () => {
  for (const payload of [new Date(NaN), { a: new Date('x') }, [1, { b: [new Date(NaN)] }]]) {
    assert.throws(() => encodePayload(payload, 'ch'), (e: unknown) => isInvalidPayload(e) && /^notify\("ch"\): the payload has an invalid Date/.test((e as Error).message));
  }
  assert.equal(encodePayload({ a: new Date(0), b: 1n, c: null }, 'ch'), '{"a":"1970-01-01T00:00:00.000Z","b":"1","c":null}');
});

test('Standard Schema: zod, valibot and callable (arktype-style) schemas are recognised; other values are not', () => {
  const callable = Object.assign(() => {}, { '~standard': { version: 1, vendor: 'arktype', validate: (x: unknown) => ({ value: x }) } });
  for (const s of [z.string(), v.string(), callable]) assert.ok(isStandardSchema(s));
  for (const s of [null, undefined, 1, 'z', {}, class {}, { '~standard': { version: 2, validate() {} } }, { '~standard': { version: 1 } }]) assert.equal(isStandardSchema(s), false);
  assert.ok(defineChannel('ss_callable', callable as StandardSchemaV1<unknown>).schema);
  assert.throws(() => defineChannel('ss_bad', { parse() {} } as never), (e: unknown) => e instanceof PubSubError && e.code === 'pubsub.config' && /must be a class or a Standard Schema/.test(e.message));
});

test('issues are listed with their paths, at most ten, and a validator that throws is named as such (and retried, not dead-lettered)', async () => {
  const issues = [
    { message: 'bad', path: ['a', 0, { key: 'b c' }] },
    { message: 'root' },
    ...Array.from({ length: 11 }, (_, i) => ({ message: `m${i}`, path: [Symbol('s')] })),
  ];
  const text = formatIssues(issues);
  assert.match(text, /^ {2}- a\[0\]\["b c"\]: bad\n {2}- \(root\): root\n {2}- \["Symbol\(s\)"\]: m0\n/);
  assert.equal(text.split('\n').length, 11);
  assert.match(text, /… and 3 more$/);

  const rejection = await validate(z.object({ n: z.number() }), { n: 'x' }, 'here', 'Fix.').catch((e: unknown) => e);
  assert.ok(rejection instanceof SchemaRejection && rejection.permanent && rejection.code === 'pubsub.invalidPayload');
  const slow = await validate(z.object({ n: z.number() }).refine(async () => false, 'no'), { n: 1 }, 'here', 'Fix.').catch((e: unknown) => e);
  assert.ok(slow instanceof SchemaRejection && !slow.permanent, 'an async verdict may change: not permanent');
  const throwing = { '~standard': { version: 1 as const, vendor: 'mine', validate: () => { throw new Error('boom'); } } };
  const thrown = await validate(throwing, 1, 'here', 'Fix.').catch((e: unknown) => e);
  assert.ok(thrown instanceof PubSubError && !(thrown instanceof SchemaRejection) && /^here: the mine schema threw instead of returning issues: boom/.test(thrown.message));
});

test('@Listen on a schema channel needs no parameter class (no decorator metadata at all) and refuses a type option', async () => {
  const channel = defineChannel('ss_listen', z.object({ n: z.number() }));
  const target = { handle() {} }; // no design:paramtypes: as esbuild or tsx would compile it
  Listen(channel)(target, 'handle', Object.getOwnPropertyDescriptor(target, 'handle')!);
  const l = getRegistry().get('ss_listen')!.listeners[0]!;
  assert.equal(l.schema, channel.schema);
  assert.equal(l.payloadType, undefined);
  assert.throws(
    () => Listen(channel, { type: class X {} } as never)({ other() {} }, 'other', {}),
    (e: unknown) => e instanceof PubSubError && e.code === 'pubsub.config' && /defined with a schema.*remove the type option/.test(e.message),
  );
  await assert.rejects(notify(channel, { n: 'x' as never }, { client: { query: async () => assert.fail('nothing may be sent') } }), (e: unknown) => isInvalidPayload(e));
});

test('property: random JSON against zod and valibot schemas gives the output or a SchemaRejection listing issues, never another error', async () => {
  const schemas: StandardSchemaV1[] = [
    z.object({ n: z.number().int(), tags: z.array(z.string()).max(3), at: z.coerce.date() }),
    v.object({ id: v.pipe(v.string(), v.uuid()), nested: v.object({ x: v.nullable(v.number()) }) }),
    z.object({ n: z.number() }).refine(async (o) => o.n > 0, 'positive'),
  ];
  await fc.assert(
    fc.asyncProperty(fc.jsonValue(), fc.constantFrom(...schemas), async (input, schema) => {
      try {
        await validate(schema, input, 'here', 'Fix.');
      } catch (error) {
        assert.ok(error instanceof SchemaRejection && error.issues.length > 0, String(error));
        assert.match(error.message, /^here: the payload does not match the channel's (zod|valibot) schema:\n {2}- /);
        assert.ok(error.message.length < 5000);
      }
    }),
    { numRuns: 300 },
  );
});

test('property: random values in every declared Date/bigint/nested property give a correct instance or invalidPayload, never another error', () => {
  const anyValue = fc.oneof(fc.jsonValue({ maxDepth: 2 }), fc.date().map((d) => (Number.isNaN(d.getTime()) ? 'x' : d.toISOString())), fc.bigInt().map(String));
  const keys = ['sealedAt', 'id', 'due', 'history', 'codes', 'items', 'main', 'stamps', 'label'];
  const payload = fc.dictionary(fc.constantFrom(...keys), fc.oneof(anyValue, fc.array(anyValue, { maxLength: 3 }), fc.array(fc.dictionary(fc.constantFrom('at', 'qty', 'undeclared'), anyValue), { maxLength: 2 })));
  fc.assert(
    fc.property(payload, (input) => {
      const before = JSON.stringify(input);
      let box: Box;
      try {
        box = decodePayload(input, Box, () => {}) as Box;
      } catch (error) {
        assert.ok(isInvalidPayload(error), (error as Error)?.stack);
        return;
      }
      assert.equal(JSON.stringify(input), before, 'the input is never changed');
      const validDate = (d: unknown) => d === null || d === undefined || (d instanceof Date && !Number.isNaN(d.getTime()));
      assert.ok(validDate(box.sealedAt) && validDate(box.due));
      assert.ok(box.id === undefined || box.id === null || typeof box.id === 'bigint');
    }),
    { numRuns: 500 },
  );
});
