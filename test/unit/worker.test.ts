import assert from 'node:assert/strict';
import { test } from 'node:test';
import { retryDelaySeconds } from '../../src/worker.js';

test('retry delays grow exponentially, stay within [cap/2, cap] and are capped', () => {
  for (let failures = 1; failures <= 30; failures++) {
    const cap = Math.min(300, 2 ** (failures - 1));
    for (let i = 0; i < 50; i++) {
      const d = retryDelaySeconds(failures);
      assert.ok(d >= cap / 2 && d <= cap, `failure ${failures}: ${d} s not in [${cap / 2}, ${cap}]`);
    }
  }
  assert.ok(retryDelaySeconds(5, { baseMs: 10, maxMs: 50 }) <= 0.05);
});
