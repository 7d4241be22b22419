/** What a bridge stores for a delivery (no broker, no database): body checks, context from headers. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decode, textHeaders, type Delivery } from '../../src/bridge.js';

const delivery = (body: string | Uint8Array, headers: Record<string, string> = {}, messageId?: string): Delivery => ({
  key: messageId,
  body: typeof body === 'string' ? Buffer.from(body) : body,
  meta: { ...(messageId && { messageId }), headers, queue: 'orders-in' },
  live: () => true,
  ack() {},
  reject() {},
});

test('the body is stored as it came; the context says where it came from', () => {
  const out = decode('b', delivery('{ "id": 1,  "b": [1, 2] }', { source: 'x' }, 'm-1'));
  assert.ok('payload' in out);
  assert.equal(out.payload, '{ "id": 1,  "b": [1, 2] }');
  assert.deepEqual(JSON.parse(out.context), { bridge: { name: 'b', messageId: 'm-1', headers: { source: 'x' }, queue: 'orders-in' } });
});

test("a relayed message's context and trace become the notification's context again", () => {
  const traceparent = '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01';
  const out = decode('b', delivery('1', { 'pubsub-context': '{"tenant":"acme"}', traceparent }));
  assert.ok('context' in out);
  const context = JSON.parse(out.context);
  assert.equal(context.tenant, 'acme');
  assert.deepEqual(context.$trace, { traceparent });
  // A pubsub-context header that is not a JSON object stays a header only.
  const odd = decode('b', delivery('1', { 'pubsub-context': '[1]' }));
  assert.ok('context' in odd);
  assert.deepEqual(Object.keys(JSON.parse(odd.context)), ['bridge']);
});

test('a body that is not UTF-8 JSON is poison, with the reason', () => {
  assert.deepEqual(Object.keys(decode('b', delivery('not json'))), ['poison']);
  assert.match((decode('b', delivery('not json')) as { poison: string }).poison, /not JSON/);
  assert.match((decode('b', delivery(new Uint8Array([0x22, 0xff, 0x22]))) as { poison: string }).poison, /not UTF-8/);
  assert.match((decode('b', delivery('')) as { poison: string }).poison, /not JSON/);
});

test('AMQP header values become text', () => {
  assert.deepEqual(textHeaders({ a: 'x', b: 2, c: Buffer.from('y'), d: null, e: { f: 1n } }), { a: 'x', b: '2', c: 'y', e: '{"f":"1"}' });
  assert.deepEqual(textHeaders(undefined), {});
});
