// Listener objects are built at start: a class the app's container cannot build (the `instance` option
// returns nothing, or its constructor throws) stops the worker at once, naming the class, instead of
// failing every one of its notifications until they are dead-lettered.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Listen, listen } from '../../src/index.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

class Job {
  id!: number;
}

class Provided {
  @Listen('instances.provided')
  run(_job: Job) {}
}

class Forgotten {
  @Listen('instances.forgotten')
  run(_job: Job) {}
}

class Throwing {
  constructor() {
    throw new Error('no config for Throwing');
  }

  @Listen('instances.throwing')
  run(_job: Job) {}
}

const quiet = { info() {}, warn() {}, error() {} };
let db: TestDatabase;
before(async () => {
  db = await createTestDatabase({ library: true, subscribe: true });
});
after(() => db.drop());

const workerSessions = async () =>
  (await db.query(`select count(*)::int as n from pg_stat_activity where datname = current_database() and application_name = 'pubsub:worker'`))[0].n;

async function refusal(options: Parameters<typeof listen>[0]): Promise<Error & { code?: string }> {
  return listen({ databaseUrl: db.url, logger: quiet, ...options }).then(
    (worker) => worker.close().then(() => assert.fail('the worker started')),
    (error) => error,
  );
}

test('a listener class the instance option cannot provide stops the start, naming it', async () => {
  const container = new Map<Function, object>([[Provided, new Provided()]]);
  const error = await refusal({ channels: ['instances.provided', 'instances.forgotten'], instance: (cls) => container.get(cls)! });
  assert.equal(error.code, 'pubsub.config');
  assert.match(error.message, /^Forgotten\.run: the worker could not get the object of class Forgotten to call .*register the class as a provider/);
  await waitFor(async () => (await workerSessions()) === 0, 'the refused worker to close its connections');

  const worker = await listen({ databaseUrl: db.url, logger: quiet, channels: ['instances.provided'], instance: (cls) => container.get(cls)! });
  await worker.close();
});

test('a listener class whose constructor throws stops the start with the cause', async () => {
  const error = await refusal({ channels: ['instances.throwing'] });
  assert.equal(error.code, 'pubsub.config');
  assert.match(error.message, /Throwing\.run: .*no config for Throwing/);
  assert.equal((error.cause as Error).message, 'no config for Throwing');
});
