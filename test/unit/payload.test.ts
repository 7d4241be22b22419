import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Transform, Type } from '../../src/index.js';
import { decodePayload, decodeTriggerPayload, encodePayload, type WireTriggerPayload } from '../../src/payload.js';

class Tag {
  label!: string;
  shout() {
    return this.label.toUpperCase();
  }
}

class Order {
  id!: number;
  @Type(() => Date)
  placedAt!: Date;
  @Type(() => Tag)
  tags!: Tag[];
  @Transform(({ value }) => BigInt(value), { toClassOnly: true })
  amount!: bigint;
  note!: string;
}

test('a payload round-trips into its class with Date, nested classes, arrays, bigint and awkward strings', () => {
  const note = `it's "quoted"\nnew line \\ back-slash 🎉 ünïcødé \u0000-free`;
  const sent = { id: 7, placedAt: new Date('2024-02-29T23:59:59.123Z'), tags: [{ label: 'a' }, { label: 'b' }], amount: 2n ** 63n - 1n, note };
  const wire = JSON.parse(encodePayload(sent, 'orders'));
  const order = decodePayload(wire, Order) as Order;
  assert.ok(order instanceof Order);
  assert.ok(order.placedAt instanceof Date);
  assert.equal(order.placedAt.toISOString(), '2024-02-29T23:59:59.123Z');
  assert.equal(order.tags[1]!.shout(), 'B');
  assert.equal(order.amount, 9223372036854775807n);
  assert.equal(order.note, note);
});

test('primitive payload types pass through or convert', () => {
  assert.equal(decodePayload('hi', String), 'hi');
  assert.equal(decodePayload(3, Number), 3);
  assert.equal(decodePayload('12345678901234567890', BigInt), 12345678901234567890n);
  assert.equal((decodePayload('2024-01-01T00:00:00.000Z', Date) as Date).getTime(), Date.UTC(2024, 0, 1));
});

test('a payload that is not JSON gives a clear error', () => {
  const cyclic: any = {};
  cyclic.self = cyclic;
  assert.throws(() => encodePayload(cyclic, 'c'), (e: any) => e.code === 'pubsub.invalidPayload' && /notify\("c"\)/.test(e.message));
  assert.throws(() => encodePayload(undefined, 'c'), (e: any) => e.code === 'pubsub.invalidPayload');
});

test('class-transformer ignores __proto__ keys in payloads', () => {
  const order = decodePayload(JSON.parse('{"id":1,"__proto__":{"polluted":true}}'), Order) as any;
  assert.equal(order.polluted, undefined);
  assert.equal(({} as any).polluted, undefined);
});

test('trigger payloads decode to exact values by field type', () => {
  const wire: WireTriggerPayload = {
    op: 'UPDATE',
    when: 'AFTER',
    model: 'Everything',
    trigger: 'k',
    types: { big: 'BigInt', dec: 'Decimal', at: 'DateTime', day: 'DateTime', clock: 'DateTime', zoned: 'DateTime', raw: 'Bytes', ratio: 'Float', bigs: 'BigInt[]' },
    old: null,
    new: {
      big: '-9223372036854775808',
      dec: '12345678901234567890.123456789012345678',
      at: '2024-01-02T03:04:05.678',
      day: '2024-01-02',
      clock: '13:14:15',
      zoned: '2024-01-02T03:04:05.678+02:00',
      raw: Buffer.from([0, 1, 254, 255]).toString('base64'),
      ratio: 'NaN',
      bigs: ['1', null, '9007199254740993'],
      json: { nested: [1, 'two'] },
      plain: 'x',
    },
  };
  const p = decodeTriggerPayload(wire);
  const row = p.new as any;
  assert.equal(p.old, null);
  assert.equal(row.big, -9223372036854775808n);
  assert.equal(row.dec.toString(), '12345678901234567890.123456789012345678');
  assert.equal(row.at.toISOString(), '2024-01-02T03:04:05.678Z');
  assert.equal(row.day.toISOString(), '2024-01-02T00:00:00.000Z');
  assert.equal(row.clock.toISOString(), '1970-01-01T13:14:15.000Z');
  assert.equal(row.zoned.toISOString(), '2024-01-02T01:04:05.678Z');
  assert.deepEqual(row.raw, new Uint8Array([0, 1, 254, 255]));
  assert.ok(Number.isNaN(row.ratio));
  assert.deepEqual(row.bigs, [1n, null, 9007199254740993n]);
  assert.deepEqual(row.json, { nested: [1, 'two'] });
  assert.equal('trigger' in p, false);
});

test('a class without decorators takes the fast path and still becomes an instance, without __proto__ pollution', () => {
  class Plain {
    a!: number;
    nested!: { b: string[] };
    greet() {
      return `a=${this.a}`;
    }
  }
  const got = decodePayload(JSON.parse('{"a":1,"nested":{"b":["x"]},"__proto__":{"polluted":true},"constructor":"c"}'), Plain) as Plain & { polluted?: boolean };
  assert.ok(got instanceof Plain);
  assert.equal(got.greet(), 'a=1');
  assert.deepEqual(got.nested, { b: ['x'] });
  assert.equal(got.polluted, undefined);
  assert.equal(got.constructor, Plain);
  class Child extends Order {}
  assert.ok((decodePayload({ placedAt: '2024-01-01T00:00:00Z' }, Child) as Order).placedAt instanceof Date, 'decorators of an ancestor keep the full path');
});
