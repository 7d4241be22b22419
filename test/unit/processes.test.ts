// Settings of `pubsub listen`'s stop and --processes: config keys with bounds, and the flags given to worker processes.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { loadFileConfig, workerProcessNumber } from '../../src/config.js';
import { withoutProcessesFlag } from '../../src/cli/supervise.js';

test('"gracePeriodMs" and "processes" in pubsub.config.json are read and bounds-checked like the other worker settings', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-config-'));
  const write = (config: unknown) => fs.writeFileSync(path.join(dir, 'pubsub.config.json'), JSON.stringify(config));
  write({ gracePeriodMs: 0, processes: 64 });
  assert.deepEqual(loadFileConfig(dir), { dir, gracePeriodMs: 0, processes: 64 });
  const refused: Array<[unknown, RegExp]> = [
    [{ gracePeriodMs: -1 }, /"gracePeriodMs" must be a whole number from 0 to 86400000, got -1/],
    [{ gracePeriodMs: '30000' }, /"gracePeriodMs" must be a whole number from 0 to 86400000, got "30000"/],
    [{ processes: 0 }, /"processes" must be a whole number from 1 to 64, got 0/],
    [{ processes: 65 }, /"processes" must be a whole number from 1 to 64, got 65/],
  ];
  for (const [config, message] of refused) {
    write(config);
    assert.throws(() => loadFileConfig(dir), (e: any) => e.code === 'pubsub.config' && message.test(e.message), JSON.stringify(config));
  }
});

test('worker processes get the same flags without --processes, in either spelling', () => {
  assert.deepEqual(withoutProcessesFlag(['listen', '--processes', '3', '--require', 'a.js']), ['listen', '--require', 'a.js']);
  assert.deepEqual(withoutProcessesFlag(['listen', '--require', 'a.js', '--processes=3', '--channel', 'x']), ['listen', '--require', 'a.js', '--channel', 'x']);
  assert.equal(workerProcessNumber({ PUBSUB_WORKER_PROCESS: '2' }), 2);
  assert.equal(workerProcessNumber({ PUBSUB_WORKER_PROCESS: 'x' }), undefined);
  assert.equal(workerProcessNumber({}), undefined);
});
