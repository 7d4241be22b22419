import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { Listen, PostInsertListen, PostSaveListen, TriggerListen, defineChannel, type TriggerPayload } from '../../src/index.js';
import { getRegistry } from '../../src/registry.js';

afterEach(() => getRegistry().clear());

class Read {
  postId!: number;
}

test('@Listen records the listener with its reflected payload class', () => {
  class L {
    @Listen('reads')
    onRead(_r: Read) {}
  }
  const def = getRegistry().get('reads')!;
  assert.equal(def.kind, 'custom');
  assert.equal(def.durable, true);
  assert.equal(def.listeners[0]!.id, 'L.onRead');
  assert.equal(def.listeners[0]!.payloadType, Read);
  assert.ok(L);
});

test('a payload typed as an interface or Object is rejected with the fix in the message', () => {
  assert.throws(
    () => {
      class L {
        @Listen('reads')
        onRead(_r: { postId: number }) {}
      }
      return L;
    },
    (e: any) => e.code === 'pubsub.missingParamType' && /L\.onRead/.test(e.message) && /Declare the payload as a class/.test(e.message),
  );
});

test('channel names longer than 63 bytes or with odd characters are rejected', () => {
  assert.throws(() => defineChannel('x'.repeat(64)), (e: any) => e.code === 'pubsub.invalidChannel' && /63/.test(e.message));
  assert.throws(() => defineChannel('é'.repeat(32)), (e: any) => e.code === 'pubsub.invalidChannel');
  assert.throws(() => defineChannel('a b'), (e: any) => e.code === 'pubsub.invalidChannel');
  assert.equal(defineChannel('x'.repeat(63)).name.length, 63);
});

test('the same listener registered twice is an error', () => {
  class L {
    @Listen('reads')
    onRead(_r: Read) {}
  }
  assert.throws(() => getRegistry().register({ ...getRegistry().get('reads')!.listeners[0]! }), (e: any) => e.code === 'pubsub.duplicateListener');
  assert.ok(L);
});

test('listeners of one channel must agree on durability and kind', () => {
  class A {
    @Listen('reads')
    one(_r: Read) {}
  }
  assert.throws(
    () => {
      class B {
        @Listen('reads', { durable: false })
        two(_r: Read) {}
      }
      return B;
    },
    (e: any) => e.code === 'pubsub.channelConflict' && /A\.one/.test(e.message),
  );
  assert.throws(
    () => {
      class C {
        @PostInsertListen('Author', { channel: 'reads' })
        three(_p: TriggerPayload) {}
      }
      return C;
    },
    (e: any) => e.code === 'pubsub.channelConflict',
  );
  assert.ok(A);
});

test('several listeners and operations share a model channel', () => {
  class L {
    @PostInsertListen('Author')
    inserted(_p: TriggerPayload) {}
    @PostSaveListen('Author')
    saved(_p: TriggerPayload) {}
    @TriggerListen({ model: 'Author', when: 'AFTER', events: ['UPDATE', 'DELETE', 'UPDATE'] })
    changed(_p: TriggerPayload) {}
  }
  const def = getRegistry().get('model.Author')!;
  assert.equal(def.kind, 'trigger');
  assert.deepEqual(def.listeners.map((l) => l.trigger!.events), [['INSERT'], ['INSERT', 'UPDATE'], ['DELETE', 'UPDATE']]);
  assert.ok(L);
});

test('static methods can be listeners', () => {
  class L {
    @Listen('reads')
    static onRead(_r: Read) {}
  }
  assert.equal(getRegistry().get('reads')!.listeners[0]!.target, L);
});

test('trigger decorators validate their arguments', () => {
  const apply = (decorator: ReturnType<typeof TriggerListen>) => () => {
    class L {
      @decorator
      m(_p: TriggerPayload) {}
    }
    return L;
  };
  assert.throws(apply(TriggerListen({ model: 'Author', when: 'AFTER', events: [] })), (e: any) => e.code === 'pubsub.schema' && /L\.m/.test(e.message));
  // @ts-expect-error columns need UPDATE among the events: a compile error, and a runtime one from JavaScript
  assert.throws(apply(TriggerListen({ model: 'Author', when: 'AFTER', events: ['INSERT'], columns: ['name'] })), /columns only apply to UPDATE events, and this listener fires on INSERT/);
  assert.throws(apply(TriggerListen({ model: 'author table', when: 'AFTER', events: ['INSERT'] })), /Prisma model name/);
});

test('delivery options are validated where they are declared', () => {
  const declare = (options: object) => () => {
    class L {
      @Listen('reads', options)
      onRead(_r: Read) {}
    }
    return L;
  };
  assert.throws(declare({ maxAttempts: 0 }), /L\.onRead: maxAttempts must be a whole number ≥ 1/);
  assert.throws(declare({ timeoutMs: -1 }), /timeoutMs must be a positive/);
  assert.throws(declare({ orderKey: () => 'k' }), /orderKey needs ordered: true/);
  assert.throws(declare({ batch: { size: 0 } }), /batch\.size/);
  assert.throws(declare({ ordered: true, batch: { size: 2 } }), /both ordered and batched/);
  assert.throws(declare({ name: 'has spaces' }), /name "has spaces"/);
  assert.throws(() => {
    class B {
      @Listen('reads', { batch: { size: 5 } })
      onReads(_r: Read[]) {}
    }
    return B;
  }, /type` option \(batch listeners take an array\)/);
  declare({ name: 'reads.cache', maxAttempts: 3, backoff: { baseMs: 10 }, timeoutMs: 100, ordered: true, orderKey: () => 'k' })();
  assert.equal(getRegistry().get('reads')!.listeners[0]!.id, 'reads.cache');
});
