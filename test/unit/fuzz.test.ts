/**
 * Property-based tests of payload decoding against hostile input: whatever arrives, decoding returns a
 * defined value or throws PubSubError 'pubsub.invalidPayload'; it never changes its input, never
 * pollutes a prototype and never leaves a `__proto__` key in what a listener receives.
 */
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import fc from 'fast-check';
import { Transform, Type } from '../../src/index.js';
import { PubSubError } from '../../src/errors.js';
import { decodePayload, decodeTriggerPayload, type WireTriggerPayload } from '../../src/payload.js';

const RUNS = 150;

class Inner {
  x!: number;
  greet() {
    return 'inner';
  }
  get fixed() {
    return 'inner-fixed';
  }
}

class Outer {
  n!: number;
  @Type(() => Inner)
  inner!: Inner;
  @Type(() => Inner)
  list!: Inner[];
  @Type(() => Date)
  when!: Date;
  greet() {
    return 'outer';
  }
}

/** No decorators: takes decodePayload's fast path instead of class-transformer. */
class Plain {
  n!: number;
  label!: string;
  greet() {
    return 'plain';
  }
  get fixed() {
    return 'plain-fixed';
  }
}

class Amount {
  @Transform(({ value }) => BigInt(value), { toClassOnly: true })
  cents!: bigint;
}

const PROTOTYPES = [Object.prototype, Array.prototype, Function.prototype, String.prototype, Number.prototype, Date.prototype, Inner.prototype, Outer.prototype, Plain.prototype];
const ownKeys = PROTOTYPES.map((p) => Reflect.ownKeys(p).length);

/** Nothing reachable from everywhere changed: run after every test. */
function assertNoPollution() {
  assert.equal(({} as any).polluted, undefined);
  assert.equal(({} as any).x, undefined);
  assert.equal(Object.getPrototypeOf({}), Object.prototype);
  assert.equal(typeof ({} as any).toString, 'function');
  assert.deepEqual(
    PROTOTYPES.map((p) => Reflect.ownKeys(p).length),
    ownKeys,
    'a prototype gained or lost properties',
  );
  assert.equal(new Inner().greet(), 'inner');
  assert.equal(new Plain().fixed, 'plain-fixed');
}
afterEach(assertNoPollution);

/** An own data property for every entry, `__proto__` included (an object literal would set the prototype instead). */
function record(entries: Array<[string, unknown]>): Record<string, unknown> {
  const o: Record<string, unknown> = {};
  for (const [k, v] of entries) Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
  return o;
}

/** A deep copy that keeps prototypes (structuredClone turns null-prototype objects into plain ones). */
function snapshot<T>(value: T): T {
  if (value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map(snapshot) as T;
  const copy = Object.create(Object.getPrototypeOf(value));
  for (const key of Reflect.ownKeys(value)) {
    const d = Object.getOwnPropertyDescriptor(value, key)!;
    if ('value' in d) d.value = snapshot(d.value);
    Object.defineProperty(copy, key, d);
  }
  return copy;
}

/** Throws if any object reachable from `value` has an own `__proto__` key (iterative: values may be deep). */
function assertNoProtoKey(value: unknown) {
  const stack = [value];
  const seen = new Set<unknown>();
  while (stack.length) {
    const v = stack.pop();
    if (v === null || typeof v !== 'object' || seen.has(v)) continue;
    seen.add(v);
    assert.equal(Object.hasOwn(v, '__proto__'), false, 'a __proto__ key reached the listener');
    stack.push(...Object.values(v));
  }
}

const isInvalidPayload = (e: unknown) => e instanceof PubSubError && e.code === 'pubsub.invalidPayload';

/** Runs `fn`; a throw must be PubSubError 'pubsub.invalidPayload' (never a TypeError from deep inside). */
function decodeOrRefuse<T>(fn: () => T): { value: T } | { error: PubSubError } {
  try {
    return { value: fn() };
  } catch (error) {
    assert.ok(isInvalidPayload(error), `expected PubSubError pubsub.invalidPayload, got ${(error as Error)?.stack ?? String(error)}`);
    return { error: error as PubSubError };
  }
}

const hostileKey = fc.constantFrom('__proto__', 'constructor', 'prototype', 'polluted', 'toString', 'hasOwnProperty', 'greet', 'fixed', 'inner', 'list', 'when', 'x', 'n', 'label');
/** JSON with hostile keys at any depth, as JSON.parse would make it (own `__proto__` properties). */
const hostileJson: fc.Arbitrary<unknown> = fc.letrec<{ node: unknown; obj: unknown; arr: unknown }>((tie) => ({
  node: fc.oneof({ depthSize: 'small' }, fc.jsonValue({ maxDepth: 1 }), tie('obj'), tie('arr')),
  obj: fc.array(fc.tuple(hostileKey, tie('node')), { maxLength: 5 }).map(record),
  arr: fc.array(tie('node'), { maxLength: 4 }),
})).node;

const CLASSES: Array<[Function, string]> = [
  [Outer, 'outer'],
  [Plain, 'plain'],
  [Inner, 'inner'],
];

test('class payloads with __proto__, constructor and prototype keys at any depth: instances stay intact, input unchanged', () => {
  fc.assert(
    fc.property(hostileJson, fc.constantFrom(...CLASSES), (input, [type, greeting]) => {
      const before = JSON.stringify(input);
      const copy = snapshot(input);
      const got = decodeOrRefuse(() => decodePayload(input, type));
      assert.equal(JSON.stringify(input), before, 'decoding changed its input');
      assert.deepStrictEqual(input, copy, 'decoding changed its input');
      if ('error' in got) {
        assert.match(got.error.message, /^payload for \w+/);
        return;
      }
      const items = Array.isArray(got.value) ? got.value : [got.value];
      for (const item of items) {
        assert.equal(Object.getPrototypeOf(item), type.prototype);
        assert.equal(item.greet(), greeting);
        assert.equal(item.constructor, type);
        if (item.inner instanceof Inner) assert.equal(item.inner.greet(), 'inner');
      }
      assertNoProtoKey(got.value);
      assertNoPollution();
    }),
    { numRuns: RUNS * 2 },
  );
});

test('random JSON and random JS values for every kind of payload type: a defined value or invalidPayload, input unchanged', () => {
  const types: Function[] = [String, Number, Boolean, BigInt, Date, Outer, Plain, Amount];
  const value = fc.oneof(fc.jsonValue(), fc.anything({ maxDepth: 3, withNullPrototype: true, withObjectString: true }));
  fc.assert(
    fc.property(value, fc.constantFrom(...types), (input, type) => {
      const copy = snapshot(input);
      const got = decodeOrRefuse(() => decodePayload(input, type));
      assert.deepStrictEqual(input, copy, 'decoding changed its input');
      if ('error' in got) return;
      const v = got.value;
      if (type === String) assert.equal(typeof v, 'string');
      else if (type === Number) assert.equal(typeof v, 'number');
      else if (type === Boolean) assert.equal(typeof v, 'boolean');
      else if (type === BigInt) assert.equal(typeof v, 'bigint');
      else if (type === Date) assert.ok(v instanceof Date && !Number.isNaN(v.getTime()));
      else for (const item of Array.isArray(v) ? v : [v]) assert.ok(item instanceof type);
    }),
    { numRuns: RUNS * 2 },
  );
});

test('primitive payload types: exactly which inputs are accepted', () => {
  const refuse = (value: unknown, type: Function, pattern: RegExp) =>
    assert.throws(() => decodePayload(value, type), (e: any) => isInvalidPayload(e) && pattern.test(e.message), `${String(value)} as ${type.name}`);
  refuse('abc', BigInt, /payload for BigInt: got "abc", expected a whole number/);
  refuse('', BigInt, /got "", expected a whole number/);
  refuse('0x10', BigInt, /expected a whole number/);
  refuse(1.5, BigInt, /got 1\.5/);
  refuse(null, BigInt, /got null/);
  refuse('1'.repeat(20_000), BigInt, /\(20000 characters\).*at most 10000 digits/);
  refuse('not a date', Date, /payload for Date: got "not a date", expected a date as an ISO 8601 string/);
  refuse({}, Date, /got an object/);
  refuse(3, String, /payload for String: got 3, expected a JSON string/);
  refuse('3', Number, /expected a JSON number/);
  refuse('true', Boolean, /expected a JSON boolean/);
  refuse('text', Plain, /payload for Plain: got "text", expected a JSON object with the fields of class Plain/);
  refuse([{ n: 1 }, 2], Plain, /payload for Plain, item 1: got 2/);
  refuse(null, Outer, /payload for Outer: got null/);
  assert.equal(decodePayload('-12345678901234567890', BigInt), -12345678901234567890n);
  assert.equal(decodePayload(42, BigInt), 42n);
  assert.equal((decodePayload(0, Date) as Date).getTime(), 0);
  assert.deepEqual(decodePayload([{ n: 1 }], Plain), [Object.assign(new Plain(), { n: 1 })]);
});

test('a @Transform that throws on a bad value gives invalidPayload naming the class, with the cause', () => {
  assert.throws(
    () => decodePayload({ cents: 'abc' }, Amount),
    (e: any) => isInvalidPayload(e) && /payload for Amount: class-transformer could not turn it into Amount: Cannot convert abc to a BigInt/.test(e.message) && e.cause instanceof SyntaxError,
  );
});

test('methods, getters and constructor cannot be overwritten by payload keys', () => {
  const input = JSON.parse('{"n":1,"greet":"hacked","fixed":"hacked","constructor":{"prototype":{"polluted":true}},"__proto__":{"polluted":true},"toString":1}');
  for (const type of [Plain, Outer]) {
    const got = decodePayload(input, type) as Plain;
    assert.equal(got.greet(), type === Plain ? 'plain' : 'outer');
    assert.equal(got.constructor, type);
    assert.equal(typeof got.toString, 'function');
    assert.equal(got.n, 1);
    if (type === Plain) assert.equal(got.fixed, 'plain-fixed');
  }
});

test('huge strings (MBs) are carried or refused quickly, never stall the decoder', () => {
  const big = 'x'.repeat(5 * 1024 * 1024);
  assert.equal((decodePayload({ n: 1, label: big }, Plain) as Plain).label.length, big.length);
  assert.equal((decodePayload({ n: 1, inner: { x: 1 }, note: big }, Outer) as any).note.length, big.length);
  assert.throws(() => decodePayload('9'.repeat(5 * 1024 * 1024), BigInt), (e: any) => isInvalidPayload(e) && e.message.length < 400);
  assert.throws(() => decodePayload(big, Date), (e: any) => isInvalidPayload(e) && e.message.length < 400);
  const bytes = Buffer.alloc(3 * 1024 * 1024, 7);
  const wire = trigger({ raw: 'Bytes', at: 'DateTime', big: 'BigInt' }, { raw: bytes.toString('base64'), note: big });
  assert.equal(((decodeTriggerPayload(wire).new as any).raw as Uint8Array).length, bytes.length);
  for (const [type, value] of [['DateTime', big], ['BigInt', '1'.repeat(5 * 1024 * 1024)], ['Decimal', big], ['Bytes', big + '!']] as const) {
    assert.throws(
      () => decodeTriggerPayload(trigger({ f: type }, { f: value })),
      (e: any) => isInvalidPayload(e) && e.message.startsWith(`M payload, new.f (${type}): got "`) && e.message.length < 600,
      type,
    );
  }
});

function nested(depth: number, leaf: unknown, key = 'a'): unknown {
  let v = leaf;
  for (let i = 0; i < depth; i++) v = record([[key, v]]);
  return v;
}

test('10,000 levels of nesting: no stack overflow escapes, the fast path and trigger Json fields carry it', () => {
  const deep = nested(10_000, 1);
  // class-transformer recurses once per level: refused with a reason instead of a RangeError.
  assert.throws(() => decodePayload({ inner: deep }, Outer), (e: any) => isInvalidPayload(e) && /nested too deeply/.test(e.message));
  assert.throws(() => decodePayload(deep, Outer), (e: any) => isInvalidPayload(e) && /nested too deeply/.test(e.message));
  // A plain class keeps the nested JSON as it is.
  const plain = decodePayload({ n: 1, deep }, Plain) as any;
  assert.equal(plain.deep, deep);
  // …and drops a __proto__ key even 10,000 levels down, without recursion and without touching the input.
  const hostile = nested(10_000, record([['__proto__', { polluted: true }], ['ok', 1]]));
  const cleaned = decodePayload({ n: 1, hostile }, Plain) as any;
  let leaf = cleaned.hostile;
  for (let i = 0; i < 10_000; i++) leaf = leaf.a;
  assert.deepEqual(Object.keys(leaf), ['ok']);
  let original = hostile as any;
  for (let i = 0; i < 10_000; i++) original = original.a;
  assert.deepEqual(Object.keys(original), ['__proto__', 'ok']);
  const wire = trigger({}, { json: deep });
  assert.equal((decodeTriggerPayload(wire).new as any).json, deep);
  let arrays: unknown = 1;
  for (let i = 0; i < 10_000; i++) arrays = [arrays];
  assert.throws(() => decodePayload(arrays, Plain), (e: any) => isInvalidPayload(e) && /item 0: got an array/.test(e.message));
});

function trigger(types: Record<string, string>, row: unknown, extra: Partial<Record<keyof WireTriggerPayload, unknown>> = {}): WireTriggerPayload {
  return { op: 'INSERT', when: 'AFTER', model: 'M', trigger: 'k', types, old: null, new: row, ...extra } as WireTriggerPayload;
}

test('decodeTriggerPayload leaves the wire payload as it was (the worker re-serializes it to put a failed row back)', () => {
  const wire = trigger(
    { big: 'BigInt', raw: 'Bytes', at: 'DateTime', dec: 'Decimal', ratio: 'Float', bigs: 'BigInt[]' },
    { big: '9223372036854775807', raw: 'AAH+/w==', at: '2024-01-02T03:04:05.678', dec: '1.50', ratio: 'NaN', bigs: ['1', null] },
    { old: { big: '1', raw: '', at: '2024-01-02', dec: '0', ratio: 1, bigs: null } },
  );
  const text = JSON.stringify(wire);
  const decoded = decodeTriggerPayload(wire);
  assert.equal(JSON.stringify(wire), text); // before the fix: TypeError, "Do not know how to serialize a BigInt"
  assert.equal((decoded.new as any).big, 9223372036854775807n);
  assert.notEqual(decoded.new, wire.new);
  assert.notEqual(decoded.old, wire.old);
});

const TYPE_NAMES = ['BigInt', 'Decimal', 'DateTime', 'Bytes', 'Float', 'Int', 'String', 'Json', 'Boolean', ''];
const typeName = fc.constantFrom(...TYPE_NAMES, ...TYPE_NAMES.map((t) => `${t}[]`));
const fieldName = fc.constantFrom('a', 'b', 'c', '__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty');
/** Values near what the trigger writes (so conversions run), and anything else. */
const fieldValue = fc.oneof(
  fc.jsonValue({ maxDepth: 2 }),
  fc.bigInt().map(String),
  fc.constantFrom('NaN', 'Infinity', '-Infinity', 'infinity', 'abc', '', ' 1', '1e5', '2024-01-02', '13:14:15', 'AAH+/w==', 'AAH+\n/w==', '!!', 'not a date', 'x'),
  fc.array(fc.oneof(fc.constant(null), fc.bigInt().map(String), fc.string(), fc.array(fc.string(), { maxLength: 2 })), { maxLength: 3 }),
);
const row = fc.oneof(fc.array(fc.tuple(fieldName, fieldValue), { maxLength: 6 }).map(record), fc.constant(null), fc.jsonValue({ maxDepth: 1 }));
const maybe = <T>(good: fc.Arbitrary<T>) => fc.oneof({ weight: 5, arbitrary: good }, { weight: 1, arbitrary: fc.jsonValue({ maxDepth: 1 }) });
const wireArb = fc.record(
  {
    op: maybe(fc.constantFrom('INSERT', 'UPDATE', 'DELETE')),
    when: maybe(fc.constantFrom('BEFORE', 'AFTER')),
    model: maybe(fc.constant('M')),
    trigger: fc.constant('k'),
    types: maybe(fc.array(fc.tuple(fieldName, maybe(typeName)), { maxLength: 6 }).map(record)),
    old: row,
    new: row,
    v: fc.option(fc.constantFrom('v1', 'v2')),
    truncated: fc.option(fc.jsonValue({ maxDepth: 0 })),
    context: fc.option(fc.jsonValue({ maxDepth: 1 })),
  },
  { requiredKeys: ['trigger'] },
);
const shape = {
  version: 'v2',
  fields: ['a', 'b', 'constructor', 'toString'].map((name, i) => ({ name, type: 'String', list: false, optional: i % 2 === 0 })),
};

test('random trigger payloads: decoded rows or invalidPayload naming the field, input unchanged, no __proto__', () => {
  fc.assert(
    fc.property(wireArb, fc.boolean(), (wire, withShape) => {
      const before = snapshot(wire);
      const got = decodeOrRefuse(() => decodeTriggerPayload(wire as unknown as WireTriggerPayload, withShape ? shape : undefined, () => {}));
      assert.deepStrictEqual(wire, before, 'decoding changed its input');
      if ('error' in got) {
        // Names where: the envelope field, or the row and field with its type.
        assert.match(got.error.message, /^(trigger|[A-Za-z]\w*) payload(: |, (op|when|model|types(\.\w+|\[".*"\])?|(old|new)((\.\w+|\[".*"\]) \([\w[\]]*\)(\[\d+\])?)?): )got /);
        assert.match(got.error.message, /pubsub make-migration/);
        return;
      }
      for (const r of [got.value.old, got.value.new]) {
        if (r === null) continue;
        assert.equal(Object.getPrototypeOf(r), Object.prototype);
        assert.equal(Object.hasOwn(r, '__proto__'), false);
      }
    }),
    { numRuns: RUNS * 3 },
  );
});

/** PostgreSQL's encode(…, 'base64') breaks lines every 76 characters. */
const pgBase64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64').replace(/.{76}(?=.)/g, '$&\n');
/** to_jsonb(timestamp) without time zone: no Z, milliseconds only when present. */
const pgTimestamp = (d: Date) => d.toISOString().replace(/\.000Z$|Z$/, '');

test('every value the generated trigger can write decodes to the exact value', () => {
  fc.assert(
    fc.property(
      fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }),
      fc.uint8Array({ maxLength: 200 }),
      fc.date({ min: new Date('0001-01-01T00:00:00Z'), max: new Date('9999-12-31T23:59:59Z'), noInvalidDate: true }),
      fc.double(),
      fc.tuple(fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n }), fc.nat({ max: 20 })),
      fc.array(fc.option(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n })), { maxLength: 4 }),
      (big, bytes, date, float, [unscaled, scale], bigs) => {
        const digits = (unscaled < 0n ? -unscaled : unscaled).toString().padStart(scale + 1, '0');
        const dec = `${unscaled < 0n ? '-' : ''}${scale ? `${digits.slice(0, -scale)}.${digits.slice(-scale)}` : digits}`;
        const floatJson = Number.isFinite(float) ? float : String(float);
        const wire = trigger(
          { big: 'BigInt', raw: 'Bytes', at: 'DateTime', ratio: 'Float', dec: 'Decimal', bigs: 'BigInt[]' },
          JSON.parse(JSON.stringify({ big: String(big), raw: pgBase64(bytes), at: pgTimestamp(date), ratio: floatJson, dec, bigs: bigs.map((b) => (b === null ? null : String(b))) })),
        );
        const r = decodeTriggerPayload(wire).new as any;
        assert.equal(r.big, big);
        assert.deepEqual(r.raw, bytes);
        assert.equal(r.at.getTime(), date.getTime());
        assert.ok(Object.is(r.ratio, Object.is(float, -0) ? 0 : float)); // JSON has no -0
        assert.equal(r.dec.toFixed(scale), dec);
        assert.deepEqual(r.bigs, bigs);
      },
    ),
    { numRuns: RUNS },
  );
});

test('wrong types in typed trigger fields: each refused with the field, the value and the fix', () => {
  const cases: Array<[string, unknown, RegExp]> = [
    ['BigInt', 'abc', /new\.f \(BigInt\): got "abc", expected a whole number/],
    ['BigInt', 1.5, /got 1\.5/],
    ['BigInt', true, /got true/],
    ['Bytes', 'not base64!', /new\.f \(Bytes\): got "not base64!", expected bytes as a base64 string/],
    ['Bytes', 'AAA', /got "AAA"/],
    ['Bytes', 12, /got 12/],
    ['DateTime', 'not a date', /new\.f \(DateTime\): got "not a date", expected a timestamp/],
    ['DateTime', 1700000000000, /got 1700000000000/],
    ['DateTime', { iso: '2024' }, /got an object/],
    ['Decimal', 'x', /new\.f \(Decimal\): got "x", expected a decimal number/],
    ['Decimal', '1.2.3', /got "1\.2\.3"/],
    ['Decimal', null, /^$/], // null is null in every type
    ['Float', 'abc', /new\.f \(Float\): got "abc", expected a number/],
    ['Float', '1', /got "1"/],
    ['BigInt', ['1'], /new\.f \(BigInt\): got an array, expected a single value/],
    ['BigInt[]', '1', /new\.f \(BigInt\[\]\): got "1", expected a list/],
    ['BigInt[]', ['1', 'x'], /new\.f \(BigInt\[\]\)\[1\]: got "x"/],
    ['Bytes[]', [null, ['AA==']], /new\.f \(Bytes\[\]\)\[1\]: got an array, expected a single value/],
    ['DateTime[]', { a: 1 }, /got an object, expected a list/],
  ];
  for (const [type, value, pattern] of cases) {
    const wire = trigger({ f: type }, { f: value });
    if (value === null) {
      assert.equal((decodeTriggerPayload(wire).new as any).f, null);
      continue;
    }
    assert.throws(
      () => decodeTriggerPayload(wire),
      (e: any) => isInvalidPayload(e) && pattern.test(e.message) && /pubsub make-migration/.test(e.message),
      `${type} ${JSON.stringify(value)}`,
    );
  }
  // null elements of lists are kept; PostgreSQL's ±infinity become the farthest Dates.
  assert.deepEqual((decodeTriggerPayload(trigger({ f: 'BigInt[]' }, { f: [null, '2'] })).new as any).f, [null, 2n]);
  const inf = decodeTriggerPayload(trigger({ f: 'DateTime', g: 'DateTime' }, { f: 'infinity', g: '-infinity' })).new as any;
  assert.equal(inf.f.getTime(), 8.64e15);
  assert.equal(inf.g.getTime(), -8.64e15);
});

test('malformed trigger envelopes: invalidPayload, never a TypeError', () => {
  const cases: Array<[unknown, RegExp]> = [
    [null, /^trigger payload: got null, expected a JSON object with op, when, model, old and new/],
    ['text', /^trigger payload: got "text"/],
    [[1], /^trigger payload: got an array/],
    [{ ...trigger({}, {}), model: 5 }, /^trigger payload, model: got 5/],
    [{ ...trigger({}, {}), op: 'TRUNCATE' }, /^M payload, op: got "TRUNCATE", expected "INSERT", "UPDATE" or "DELETE"/],
    [{ ...trigger({}, {}), when: 'INSTEAD OF' }, /^M payload, when: got "INSTEAD OF"/],
    [trigger({ a: 5 } as any, {}), /^M payload, types\.a: got 5, expected a Prisma type name/],
    [{ ...trigger({}, {}), types: 'BigInt' }, /^M payload, types: got "BigInt"/],
    [trigger({}, 'row'), /^M payload, new: got "row", expected a JSON object of the row's fields, or null/],
    [trigger({}, null, { old: [1] }), /^M payload, old: got an array/],
  ];
  for (const [wire, pattern] of cases) {
    assert.throws(() => decodeTriggerPayload(wire as WireTriggerPayload), (e: any) => isInvalidPayload(e) && pattern.test(e.message), JSON.stringify(wire));
  }
  // A field named like an Object.prototype member is an ordinary field, not a type lookup into the prototype.
  const r = decodeTriggerPayload(trigger({}, { constructor: 'c', toString: 't', hasOwnProperty: 1 })).new as any;
  assert.deepEqual(Object.entries(r), [['constructor', 'c'], ['toString', 't'], ['hasOwnProperty', 1]]);
});
