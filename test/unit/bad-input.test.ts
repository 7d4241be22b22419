/**
 * Bad input to the public API: every mistake is a PubSubError with a stable code, thrown where the
 * mistake is made, whose message names the problem and the fix. Never a TypeError from inside.
 */
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import fc from 'fast-check';
import { Listen, PostInsertListen, PostUpdateListen, PreDeleteListen, PubSubError, TriggerListen, defineChannel, notify, type TriggerPayload } from '../../src/index.js';
import { assertChannelName } from '../../src/channels.js';
import { encodePayload } from '../../src/payload.js';
import { getRegistry } from '../../src/registry.js';

afterEach(() => getRegistry().clear());

class Read {
  postId!: number;
}

const LEGAL = /^[A-Za-z0-9_.:-]{1,63}$/;

/** `fn` throws PubSubError `code` whose message matches every pattern. */
function refuses(fn: () => unknown, code: string, ...patterns: RegExp[]) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof PubSubError, `expected PubSubError, got ${(e as Error)?.stack ?? String(e)}`);
    assert.equal(e.code, code, e.message);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

async function refusesAsync(promise: Promise<unknown>, code: string, ...patterns: RegExp[]) {
  await assert.rejects(promise, (e: unknown) => {
    assert.ok(e instanceof PubSubError, `expected PubSubError, got ${(e as Error)?.stack ?? String(e)}`);
    assert.equal(e.code, code, e.message);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

/** A client that fails the test if anything is sent through it: the mistake must be caught before. */
const mustNotSend = { query: async () => assert.fail('nothing may be sent') };

test('channel names: what is refused and why', () => {
  const cases: Array<[unknown, RegExp]> = [
    ['', /non-empty string such as "orders\.created", got an empty string/],
    ['with space', /channel name "with space" contains " "; use only ASCII letters, digits/],
    ['quote"d', /"quote\\"d" contains "\\""/],
    ["it's", /contains "'"/],
    ['semi;colon', /contains ";"/],
    ['nul\u0000byte', /"nul\\u0000byte" contains "\\u0000"/],
    ['new\nline', /contains "\\n"/],
    ['ünïcødé', /contains "ü"/],
    ['🎉', /contains "🎉"/],
    ['a'.repeat(64), /is 64 bytes \(UTF-8\); PostgreSQL allows at most 63\. Choose a shorter name/],
    ['é'.repeat(32), /is 64 bytes \(UTF-8\)/], // 32 characters, 64 bytes
    ['x'.repeat(1_000_000), /"x{80}…" is 1000000 bytes/],
    [undefined, /got undefined/],
    [null, /got null/],
    [42, /got number 42/],
    [10n, /got bigint 10/],
    [Symbol('s'), /got symbol Symbol\(s\)/],
    [{ name: 'x' }, /got an object/],
    [() => 'x', /got a function/],
  ];
  for (const [name, pattern] of cases) {
    refuses(() => assertChannelName(name, 'where'), 'pubsub.invalidChannel', /^where: /, pattern);
    refuses(() => defineChannel(name as string), 'pubsub.invalidChannel', /^defineChannel: /, pattern);
  }
  // Legal: mixed case is kept (the library quotes names), and so are SQL keywords and leading digits.
  for (const name of ['MixedCase', 'select', '1st', 'a.b:c-d_e', 'x'.repeat(63)]) assertChannelName(name);
});

test('channel names (property): accepted exactly when 1 to 63 ASCII letters, digits, _ . : -; otherwise invalidChannel naming it', () => {
  const name = fc.oneof(
    fc.string({ unit: 'binary', maxLength: 70 }),
    fc.string({ unit: 'grapheme', maxLength: 40 }),
    fc.stringMatching(/^[A-Za-z0-9_.:-]{1,70}$/),
    fc.string({ unit: fc.constantFrom('a', 'Z', '9', '_', '.', ':', '-', ' ', '"', "'", '\0', 'é', '😀', '\\'), maxLength: 70 }),
  );
  fc.assert(
    fc.property(name, (n) => {
      let accepted = true;
      try {
        assertChannelName(n);
      } catch (e) {
        accepted = false;
        assert.ok(e instanceof PubSubError && e.code === 'pubsub.invalidChannel', String(e));
        assert.ok(e.message.length < 400, 'the message stays short');
        assert.match(e.message, /non-empty string|bytes \(UTF-8\)|use only ASCII letters/);
      }
      assert.equal(accepted, LEGAL.test(n), JSON.stringify(n));
    }),
    { numRuns: 1000 },
  );
});

test('every entry point checks the channel name: notify(), @Listen, trigger listeners', async () => {
  await refusesAsync(notify('bad name', {}, { client: mustNotSend }), 'pubsub.invalidChannel', /^notify\(\): channel name "bad name" contains " "/);
  await refusesAsync(notify(null as never, {}, { client: mustNotSend }), 'pubsub.invalidChannel', /got undefined/);
  await refusesAsync(notify({ name: 'a b' } as never, {}, { client: mustNotSend }), 'pubsub.invalidChannel', /"a b"/);
  const listenOn = (channel: unknown) => () => {
    class L {
      @Listen(channel as string)
      on(_r: Read) {}
    }
    return L;
  };
  for (const channel of ['a b', '', null, undefined, 5, { name: 'ü' }]) refuses(listenOn(channel), 'pubsub.invalidChannel', /^L\.on: /);
  refuses(
    () => {
      class T {
        @PostInsertListen('Author', { channel: 'Author"s' })
        on() {}
      }
      return T;
    },
    'pubsub.invalidChannel',
    /^T\.on: channel name "Author\\"s" contains "\\""/,
  );
});

test('notify() payloads JSON cannot carry: invalidPayload before anything is sent', async () => {
  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic.self = cyclic;
  let deep: unknown = 1;
  for (let i = 0; i < 20_000; i++) deep = { a: deep };
  const cases: Array<[unknown, RegExp]> = [
    [undefined, /the payload is undefined, which JSON cannot represent; send a JSON value such as an object/],
    [() => 1, /the payload is a function, which JSON cannot represent/],
    [Symbol('s'), /the payload is a symbol/],
    [cyclic, /cannot be written as JSON: Converting circular structure.*without cycles/s],
    [{ toJSON: () => { throw new Error('boom'); } }, /cannot be written as JSON: boom/],
    [{ get bad() { throw new TypeError('getter'); } }, /cannot be written as JSON: getter/],
    [deep, /cannot be written as JSON: Maximum call stack size exceeded\. Send a less deeply nested value/],
  ];
  for (const [payload, pattern] of cases) {
    refuses(() => encodePayload(payload, 'ch'), 'pubsub.invalidPayload', /^notify\("ch"\): /, pattern);
    for (const durable of [true, false]) await refusesAsync(notify('ch', payload, { client: mustNotSend, durable }), 'pubsub.invalidPayload', pattern);
  }
  // The context sent with a notification: the same checks, named as the context.
  for (const durable of [true, false]) {
    await refusesAsync(notify('ch', {}, { client: mustNotSend, durable, context: cyclic }), 'pubsub.invalidPayload', /^notify\("ch"\): the context cannot be written as JSON: Converting circular structure/);
  }
  // What JSON can carry, as JSON carries it: bigint as a decimal string, nested undefined/functions dropped, null kept.
  assert.equal(encodePayload({ n: 2n ** 64n, list: [1n], u: undefined, f: () => 1, d: new Date(0) }, 'ch'), '{"n":"18446744073709551616","list":["1"],"d":"1970-01-01T00:00:00.000Z"}');
  assert.equal(encodePayload(null, 'ch'), 'null');
  assert.equal(encodePayload(-5n, 'ch'), '"-5"');
});

test('a non-durable payload over 8000 bytes is refused with the fix; nothing is sent', async () => {
  const big = { text: 'x'.repeat(10 * 1024 * 1024) };
  await refusesAsync(
    notify('ch', big, { client: mustNotSend, durable: false }),
    'pubsub.payloadTooLarge',
    /^notify\("ch"\): the payload is 10485771 bytes as JSON; a non-durable notification must be at most 7999\. Send less \(an id to look up\), or use a durable channel/,
  );
  // Bytes, not characters: 4000 × "é" is 4000 characters but 8000 bytes.
  await refusesAsync(notify('ch', 'é'.repeat(4000), { client: mustNotSend, durable: false }), 'pubsub.payloadTooLarge', /8002 bytes/);
});

test('notify() with a client that is not a client: invalidClient naming what it got', async () => {
  const cases: Array<[unknown, RegExp]> = [
    [{}, /must be a pg Pool, Client or PoolClient, a PrismaClient or a Prisma transaction client; got object without query\(\)/],
    ['postgres://localhost/db', /got a string \(a connection string\? pass a pg Pool built from it\)/],
    [42, /got number without query\(\)/],
    [{ query: 'select 1' }, /got object without query\(\)/],
    [{ query: () => 5 }, /did not answer like a pg or Prisma client \(no rows came back\)/],
    [{ query: async () => ({}) }, /no rows came back/],
    [{ $queryRawUnsafe: async () => 'nope' }, /no rows came back/],
  ];
  for (const [client, pattern] of cases) {
    for (const durable of [true, false]) await refusesAsync(notify('ch', { a: 1 }, { client: client as never, durable }), 'pubsub.invalidClient', pattern);
  }
});

/** Declares a listener with `options`; returns the declaration as a thunk for assert.throws. */
const listenWith = (options: unknown, channel = 'reads') => () => {
  class L {
    @Listen(channel, options as object)
    onRead(_r: Read) {}
  }
  return L;
};

test('listener options: unknown keys and wrong types are refused at decoration time with the fix', () => {
  const cases: Array<[unknown, RegExp]> = [
    [{ maxAttemps: 3 }, /L\.onRead: unknown option "maxAttemps" in the options of @Listen; the options are durable, name, orderKey, maxAttempts, backoff, timeoutMs, ordered, batch, type\./],
    [null, /L\.onRead: the options of @Listen must be an object such as \{ maxAttempts: 5 \}, got null/],
    [5, /must be an object.*got 5/],
    [{ maxAttempts: 0 }, /maxAttempts must be a whole number ≥ 1, got 0/],
    [{ maxAttempts: -1 }, /maxAttempts must be a whole number ≥ 1, got -1/],
    [{ maxAttempts: 1.5 }, /got 1\.5/],
    [{ maxAttempts: '3' }, /got "3"/],
    [{ maxAttempts: NaN }, /got NaN/],
    [{ maxAttempts: Infinity }, /got Infinity/],
    [{ timeoutMs: -1 }, /timeoutMs must be a positive number of milliseconds up to 2147483647, got -1/],
    [{ timeoutMs: 0 }, /got 0/],
    [{ timeoutMs: '100' }, /got "100"/],
    [{ timeoutMs: Infinity }, /got Infinity/],
    [{ timeoutMs: 2 ** 31 }, /got 2147483648/],
    [{ backoff: { baseMs: 5000, maxMs: 1000 } }, /backoff\.baseMs \(5000\) exceeds backoff\.maxMs \(1000\); raise maxMs or lower baseMs/],
    [{ backoff: { baseMs: 600_000 } }, /backoff\.baseMs \(600000\) exceeds backoff\.maxMs \(300000, the default\)/],
    [{ backoff: { baseMs: -5 } }, /backoff\.baseMs must be a positive number of milliseconds, got -5/],
    [{ backoff: { maxMs: '1s' } }, /backoff\.maxMs must be a positive number.*got "1s"/],
    [{ backoff: 1000 }, /backoff must be an object/],
    [{ backoff: { base: 10 } }, /unknown option "base" in backoff; the options are baseMs, maxMs/],
    [{ batch: { size: 0 } }, /batch\.size must be a whole number ≥ 1, got 0/],
    [{ batch: { size: '10' } }, /batch\.size must be a whole number ≥ 1, got "10"/],
    [{ batch: 10 }, /batch must be an object/],
    [{ batch: { size: 2, waitMs: -1 } }, /batch\.waitMs must be a number of milliseconds from 0 to 2147483647, got -1/],
    [{ batch: { size: 2, wait: 5 } }, /unknown option "wait" in batch/],
    [{ ordered: 'yes' }, /ordered must be true or false, got "yes"/],
    [{ ordered: true, orderKey: 5 }, /orderKey must be a payload field path such as "customerId" or "order.customerId", or a function \(payload\) => string; got number/],
    [{ ordered: true, orderKey: '' }, /orderKey must be a payload field path .*; got an empty string/],
    [{ ordered: true, orderKey: 'order..id' }, /the orderKey path "order\.\.id" has an empty segment; write field names separated by single dots/],
    [{ ordered: true, orderKey: 'k'.repeat(201) }, /the orderKey path is 201 characters long; at most 200/],
    [{ ordered: true, orderKey: 'a\nb' }, /holds a control character/],
    [{ orderKey: 'key' }, /orderKey needs ordered: true/],
    [{ durable: 'no' }, /durable must be true or false, got "no"/],
    [{ name: 5 }, /name 5 must be 1 to 200 letters/],
    [{ name: 'x'.repeat(201) }, /must be 1 to 200 letters/],
    [{ type: 'Read' }, /the type option must be a class, got "Read"/],
  ];
  for (const [options, pattern] of cases) refuses(listenWith(options), 'pubsub.config', /^L\.onRead: /, pattern);
  assert.equal(getRegistry().list().length, 0, 'nothing refused was registered');
  listenWith({ maxAttempts: 1, timeoutMs: 2 ** 31 - 1, backoff: { baseMs: 1000, maxMs: 1000 }, batch: undefined })();
  listenWith({ name: 'batched', batch: { size: 1, waitMs: 0 }, type: Read }, 'reads.batch')();
});

test('maxAttempts (property): accepted exactly when a whole number ≥ 1', () => {
  fc.assert(
    fc.property(fc.oneof(fc.integer({ min: -3, max: 5 }), fc.double(), fc.anything({ maxDepth: 1 })), (maxAttempts) => {
      let accepted = true;
      try {
        listenWith({ maxAttempts })();
        getRegistry().clear();
      } catch (e) {
        accepted = false;
        assert.ok(e instanceof PubSubError && e.code === 'pubsub.config' && /maxAttempts must be a whole number ≥ 1/.test(e.message), String(e));
      }
      assert.equal(accepted, maxAttempts === undefined || (Number.isSafeInteger(maxAttempts) && (maxAttempts as number) >= 1));
    }),
    { numRuns: 300 },
  );
});

test('trigger listener options: shape and types are checked at decoration time', () => {
  const declare = (decorator: any) => () => {
    class T {
      @decorator
      on(_p: TriggerPayload) {}
    }
    return T;
  };
  refuses(declare(TriggerListen({ model: 'Author', when: 'AFTER' } as never)), 'pubsub.schema', /T\.on: events must be a non-empty list of 'INSERT', 'UPDATE', 'DELETE'/);
  refuses(declare(TriggerListen({ model: 'Author', when: 'AFTER', events: 'INSERT' } as never)), 'pubsub.schema', /events must be a non-empty list/);
  refuses(declare(TriggerListen({ model: 'Author', when: 'AFTER', events: ['UPDATE'], columns: 'title' } as never)), 'pubsub.schema', /columns must be a list of field names such as \['title'\], got "title"/);
  refuses(declare(TriggerListen({ model: 'Author', when: 'AFTER', events: ['UPDATE'], columns: [''] } as never)), 'pubsub.schema', /columns must be a list/);
  refuses(declare(TriggerListen({ model: 'Author', when: 'AFTER', events: ['INSERT'], condition: 5 } as never)), 'pubsub.schema', /condition must be an SQL boolean expression as a string/);
  refuses(declare(TriggerListen({ model: 'Author', when: 'AFTER', events: ['INSERT'], colums: ['a'] } as never)), 'pubsub.config', /unknown option "colums"/);
  refuses(declare(TriggerListen(null as never)), 'pubsub.config', /T\.on: the options of the trigger listener must be an object/);
  refuses(declare(PostInsertListen('Author', { maxAttempts: 0 })), 'pubsub.config', /T\.on: maxAttempts must be a whole number ≥ 1/);
  refuses(declare(PostInsertListen('Author', { model: 'Other' } as never)), 'pubsub.config', /unknown option "model"/);
  refuses(declare(PostInsertListen('Author', { colums: ['title'] } as never)), 'pubsub.config', /unknown option "colums" in the options of the trigger listener; the options are durable, name, orderKey, maxAttempts, backoff, timeoutMs, ordered, batch, channel, condition, select, columns/);
  refuses(declare(PostInsertListen('Author', { columns: ['title'] } as never)), 'pubsub.schema', /T\.on: columns only apply to UPDATE events, and this listener fires on INSERT\. Listen to UPDATE as well/);
  refuses(declare(PreDeleteListen('Author', { columns: ['title'] } as never)), 'pubsub.schema', /columns only apply to UPDATE events, and this listener fires on DELETE/);
  refuses(declare(PostInsertListen('Author', 7 as never)), 'pubsub.config', /must be an object/);
  refuses(declare(PostInsertListen('Author table')), 'pubsub.schema', /model must be a Prisma model name/);
  assert.equal(getRegistry().list().length, 0);
});
