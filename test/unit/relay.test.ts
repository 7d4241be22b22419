/** Relay definitions and messages without a broker: options, templates, the message of a stored row, the config file's "relay" key. */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import type { Stored } from '../../src/attempts.js';
import { loadFileConfig } from '../../src/config.js';
import { PubSubError } from '../../src/errors.js';
import { getRegistry, orderPath } from '../../src/registry.js';
import { HELD_BACK, Relay, RelayHub, outgoing, relay, registerRelays, type Outgoing } from '../../src/relay.js';

const row = (over: Partial<Stored> = {}): Stored => ({
  id: '42',
  channel: 'u_orders',
  listener: null,
  payload: '{"region":"eu","customer":{"id":7},"total":12.5}',
  context: null,
  attempts: 0,
  created_at: '2026-12-03 22:53:21.011+00',
  order_key: null,
  isolated: false,
  latency_ms: 0,
  ...over,
});

test('a relay is a durable listener named relay.<to>.<channel>, batched unless ordered', () => {
  relay('u_orders', { to: 'amqp', exchange: 'orders', routingKey: 'order.{region}.{customer.id}' });
  @Relay('u_orders', { to: 'nats', ordered: true, orderKey: 'customer.id', name: 'orders-nats' })
  class OrdersToNats {}
  void OrdersToNats;
  const [amqp, nats] = getRegistry().get('u_orders')!.listeners;
  assert.equal(amqp!.id, 'relay.amqp.u_orders');
  assert.equal(amqp!.durable, true);
  assert.deepEqual(amqp!.delivery.batch, { size: 1000 });
  assert.equal(amqp!.delivery.maxAttempts, 1000);
  assert.equal(nats!.id, 'orders-nats');
  assert.equal(nats!.delivery.ordered, true);
  assert.equal(nats!.delivery.batch, undefined);
  assert.equal(nats!.delivery.orderKey, 'customer.id', 'a path: stored with each row by its writer');
  assert.deepEqual(orderPath(nats!), ['customer', 'id']);

  const m = outgoing(amqp!, row());
  assert.equal(m.id, 'relay.amqp.u_orders:42');
  assert.equal(m.destination, 'order.eu.7');
  assert.equal(m.body.toString(), row().payload, 'the stored JSON text as it is');
  assert.equal(m.createdAt, Date.UTC(2026, 11, 3, 22, 53, 21, 11));
  assert.equal(m.headers, undefined, 'no context, no headers');
  assert.equal(outgoing(nats!, row()).destination, 'u_orders', 'the subject defaults to the channel');

  const traced = outgoing(amqp!, row({ context: '{"tenant":"acme","$trace":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01","tracestate":"k=v"}}' }));
  assert.deepEqual(traced.headers, { 'pubsub-context': '{"tenant":"acme"}', traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', tracestate: 'k=v' });
  const onlyTrace = outgoing(amqp!, row({ context: '{"$trace":{"traceparent":"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"}}' }));
  assert.deepEqual(Object.keys(onlyTrace.headers!), ['traceparent']);
  getRegistry().clear();
});

test('"relay" in pubsub.config.json: a list, checked entry by entry when registered', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-relay-config-'));
  try {
    fs.writeFileSync(path.join(dir, 'pubsub.config.json'), JSON.stringify({ relay: { channel: 'x' } }));
    assert.throws(() => loadFileConfig(dir), /"relay" must be a list of relays/);
    fs.writeFileSync(path.join(dir, 'pubsub.config.json'), JSON.stringify({ relay: [{ channel: 'u_cfg', to: 'nats', subject: 'a.{b}' }] }));
    registerRelays(loadFileConfig(dir).relay);
    assert.equal(getRegistry().get('u_cfg')!.listeners[0]!.id, 'relay.nats.u_cfg');
    const refused = (entries: unknown, pattern: RegExp) => assert.throws(() => registerRelays(entries), (e: unknown) => e instanceof PubSubError && e.code === 'pubsub.config' && pattern.test(e.message));
    refused([{ to: 'amqp' }], /"relay"\[0\] must be an object with "channel" and "to"/);
    refused([{ channel: 'u_cfg2', to: 'amqp', orderKey: 3, ordered: true }], /orderKey must be a string/);
    refused([{ channel: 'u_cfg2', to: 'amqp', orderKey: 'a.', ordered: true }], /relay of "u_cfg2": the orderKey path "a\." has an empty segment/);
    assert.throws(() => registerRelays([{ channel: 'u_cfg', to: 'nats', subject: 'a.{b}' }]), (e: unknown) => e instanceof PubSubError && e.code === 'pubsub.duplicateListener');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
    getRegistry().clear();
  }
});

test('an ordered claim goes out key by key in bursts: the next row of every key once the previous burst was confirmed; a failure holds back the rest of its key', async () => {
  relay('u_seq', { to: 'nats', ordered: true, orderKey: 'k' });
  const l = getRegistry().get('u_seq')!.listeners[0]!;
  const bursts: string[][] = [];
  // The scheduling alone, with a publisher that fails one message (the brokers themselves are in test/integration/relay.test.ts).
  const publisher = {
    publish: async (messages: Outgoing[]) => {
      bursts.push(messages.map((m) => JSON.parse(m.body.toString()).n));
      return messages.map((m) => (JSON.parse(m.body.toString()).n === 'a2' ? new Error('nacked') : undefined));
    },
    close: async () => {},
  };
  const hub = new RelayHub(new Map([['nats', () => publisher]]), { info() {}, warn() {}, error() {} });
  const rows = ['a1', 'b1', 'a2', 'b2', 'a3', 'b3', 'c1'].map((n, i) => row({ id: String(i + 1), payload: JSON.stringify({ n }), order_key: n[0]! }));
  const results = await hub.send(l, rows);
  assert.deepEqual(bursts, [['a1', 'b1', 'c1'], ['a2', 'b2'], ['b3']]);
  assert.deepEqual(results.map((r) => (r === HELD_BACK ? 'held' : r === undefined ? 'ok' : 'failed')), ['ok', 'ok', 'failed', 'ok', 'held', 'ok', 'ok']);
  getRegistry().clear();
});
