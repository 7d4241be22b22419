// Fails when the toolchain stops emitting decorator metadata (esbuild, tsx, plain vitest): every
// listener would then lose its payload type.
import 'reflect-metadata';
import assert from 'node:assert/strict';
import { test } from 'node:test';

class Payload {
  value!: string;
}

function mark(): MethodDecorator {
  return () => {};
}

class Listeners {
  @mark()
  handle(_payload: Payload, _extra: number) {}
}

test('the compiler emits design:paramtypes for decorated methods', () => {
  assert.deepEqual(Reflect.getMetadata('design:paramtypes', Listeners.prototype, 'handle'), [Payload, Number]);
});
