// The wake-up handshake with several workers and long writers: every idle worker is registered as
// asleep, so the exit of one never leaves writes waiting for a poll, and a writer that keeps its
// transaction open never makes the other writers wait behind a worker falling asleep.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Listen, listen, notify, type Worker } from '../../src/index.js';
import { LIBRARY_SCHEMA, LIBRARY_SCHEMA_VERSION, WAKE_SLEEP, librarySchemaSql, createTriggerSql, schemaVersionSql, triggerFunctionSql, wakeUpSql, type TriggerDefinition } from '../../src/sql.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

class Ping {
  n!: number;
}
const seen: number[] = [];
class Pings {
  @Listen('pings')
  async ping(p: Ping) {
    seen.push(p.n);
  }
}

/** What the generated durable trigger on `ticks` sends: the row image. */
class Tick {
  new!: { id: number; n: number };
}
const ticked: number[] = [];
class Ticks {
  @Listen('ticks')
  tick(t: Tick) {
    ticked.push(t.new.n);
  }
}

/** A durable AFTER INSERT trigger on `ticks`, as make-migration generates it, for the listener Ticks.tick. */
const tickTrigger: TriggerDefinition = {
  key: 'after_insert_ticks',
  channel: 'ticks',
  durable: true,
  spec: { model: 'Tick', when: 'AFTER', events: ['INSERT'] },
  model: {
    name: 'Tick',
    table: 'ticks',
    primaryKey: ['id'],
    fields: [
      { name: 'id', type: 'Int', kind: 'scalar', list: false, optional: false, column: 'id' },
      { name: 'n', type: 'Int', kind: 'scalar', list: false, optional: false, column: 'n' },
    ],
  },
  listeners: ['Ticks.tick'],
};
const tickTableSql = `create table ticks (id serial primary key, n int not null);\n${triggerFunctionSql(tickTrigger)}\n${createTriggerSql(tickTrigger)}`;

let db: TestDatabase;
const quiet = { info() {}, warn() {}, error: console.error };
const sleepersOf = async (channel: string, on: TestDatabase = db) =>
  (await on.query(`select count(*)::int as n from pg_locks l join pg_database d on d.oid = l.database where d.datname = current_database()
    and locktype = 'advisory' and classid = $1 and objid = hashtext($2)::oid and granted`, [WAKE_SLEEP, channel]))[0].n;
const sleepers = () => sleepersOf('pings');

before(async () => {
  assert.ok(Pings && Ticks);
  db = await createTestDatabase({ library: true, subscribe: true });
  await db.query(tickTableSql);
});
after(() => db?.drop());

test('two idle workers are both registered as asleep; when one exits, the other is still woken at once (no poll)', async () => {
  const workers: Worker[] = [];
  try {
    for (let i = 0; i < 2; i++) workers.push(await listen({ databaseUrl: db.url, pollIntervalMs: 600_000, logger: quiet }));
    await notify('pings', { n: 1 }, { client: db.pool });
    await waitFor(() => seen.includes(1), 'the first ping');
    await waitFor(async () => (await sleepers()) === 2, 'both workers registered as asleep', 5000);
    await workers.shift()!.close();
    for (let n = 2; n <= 6; n++) {
      await notify('pings', { n }, { client: db.pool });
      await waitFor(() => seen.includes(n), `ping ${n} without a poll`, 3000);
      await new Promise((r) => setTimeout(r, 50));
    }
  } finally {
    for (const w of workers) await w.close();
  }
});

test('a writer that keeps its transaction open does not make other writers wait while the worker falls asleep', async () => {
  const worker = await listen({ databaseUrl: db.url, pollIntervalMs: 600_000, logger: quiet });
  const long = await db.pool.connect();
  try {
    await long.query('begin');
    await notify('pings', { n: 100 }, { client: long }); // holds the wake-up gate (shared) until it commits
    const started = Date.now();
    for (let n = 101; n <= 120; n++) {
      await notify('pings', { n }, { client: db.pool });
      await new Promise((r) => setTimeout(r, 10)); // the worker tries to fall asleep in between
    }
    const took = Date.now() - started;
    await waitFor(() => [...Array(20).keys()].every((i) => seen.includes(101 + i)), 'the twenty short writers');
    assert.ok(took < 2000, `20 short writers took ${took} ms beside one open transaction`);
    await long.query('commit');
    await waitFor(() => seen.includes(100), 'the long writer once it committed', 5000);
  } finally {
    long.release();
    await worker.close();
  }
});

/** Counts the NOTIFYs of `channel` (each a writer that saw a sleeping worker) on a connection of its own. */
async function countNotifies(channel: string): Promise<{ count: () => number; stop: () => Promise<void> }> {
  const client = await db.pool.connect();
  let n = 0;
  client.on('notification', (m) => void (m.channel === channel && n++));
  await client.query(`listen ${channel}`);
  return { count: () => n, stop: async () => (await client.query(`unlisten ${channel}`), client.release()) };
}

test('a quiet worker keeps its sleep lock while it drains a notification now and then: every commit reaches it by NOTIFY, with no handshake in between', async () => {
  const worker = await listen({ databaseUrl: db.url, pollIntervalMs: 600_000, logger: quiet });
  const notifies = await countNotifies('pings');
  try {
    await waitFor(async () => (await sleepers()) === 1, 'the worker registered as asleep', 5000);
    for (let n = 150; n < 155; n++) {
      await notify('pings', { n }, { client: db.pool });
      await waitFor(() => seen.includes(n), `ping ${n}`, 3000);
      assert.equal(await sleepers(), 1, `still registered as asleep after ping ${n}`);
    }
    await waitFor(() => notifies.count() === 5, 'a NOTIFY from each of the five writers', 3000);
  } finally {
    await notifies.stop();
    await worker.close();
  }
});

test('a worker that turns busy lets writers skip the NOTIFY; what they commit meanwhile is found by its last look, and it is registered as asleep again', async () => {
  const worker = await listen({ databaseUrl: db.url, pollIntervalMs: 600_000, logger: quiet });
  const notifies = await countNotifies('pings');
  try {
    await waitFor(async () => (await sleepers()) === 1, 'the worker registered as asleep', 5000);
    // 8 writers, 50 commits each, as fast as they can: a stream the worker is busy with.
    const written = Array.from({ length: 8 }, (_, w) => [...Array(50).keys()].map((i) => 1000 + w * 100 + i));
    await Promise.all(written.map(async (ns) => {
      for (const n of ns) await notify('pings', { n }, { client: db.pool });
    }));
    const all = written.flat();
    await waitFor(() => all.every((n) => seen.includes(n)), 'the 400 pings without a poll', 10_000);
    await waitFor(async () => (await sleepers()) === 1, 'the worker registered as asleep again', 5000);
    assert.ok(notifies.count() <= 200, `${notifies.count()} of 400 commits sent a NOTIFY to the busy worker`);
    const before = notifies.count();
    await notify('pings', { n: 202 }, { client: db.pool });
    await waitFor(() => seen.includes(202), 'a ping after it, by NOTIFY', 3000);
    assert.equal(notifies.count(), before + 1);
    for (const n of all) assert.equal(seen.filter((x) => x === n).length, 1, `ping ${n} once`);
  } finally {
    await notifies.stop();
    await worker.close();
  }
});

test('no wake-up is lost through the trigger\'s inline check: concurrent single- and multi-row writers around a worker that keeps falling asleep, polling off', async () => {
  const worker = await listen({ databaseUrl: db.url, pollIntervalMs: 600_000, channels: ['ticks'], logger: quiet });
  try {
    const src = (await db.query(`select p.prosrc from pg_trigger t join pg_proc p on p.oid = t.tgfoid where t.tgrelid = 'ticks'::regclass and not t.tgisinternal`))[0].prosrc;
    assert.ok(src.includes(wakeUpSql(`'ticks'`)) && !src.includes('pubsub.wake('), 'the generated trigger checks for a sleeper inline');
    const writers = Array.from({ length: 8 }, async (_, w) => {
      const client = await db.pool.connect();
      try {
        for (let i = 0; i < 40; i++) {
          const n = w * 1000 + i * 10;
          if (i % 4 === 3) await client.query('insert into ticks (n) select $1::int + g from generate_series(0, 9) g', [n]); // ten rows, one statement
          else if (i % 4 === 2) {
            await client.query('begin'); // the worker may register as asleep while this transaction is open
            await client.query('insert into ticks (n) values ($1)', [n]);
            await new Promise((r) => setTimeout(r, Math.random() * 20));
            await client.query('commit');
          } else await client.query('insert into ticks (n) values ($1)', [n]);
          // Gaps, so that the worker keeps falling asleep between bursts.
          if (i % 5 === 4) await new Promise((r) => setTimeout(r, Math.random() * 40));
        }
      } finally {
        client.release();
      }
    });
    await Promise.all(writers);
    const [{ written }] = await db.query(`select count(*)::int as written from ticks`);
    await waitFor(() => ticked.length === written, `all ${written} rows without a poll (got ${ticked.length})`, 15_000);
    assert.equal(new Set(ticked).size, ticked.length, 'each row once');
    await waitFor(async () => (await sleepersOf('ticks')) === 1, 'the worker asleep', 5000);
    await new Promise((r) => setTimeout(r, 300)); // past its last look: asleep, not settling
    await db.query('insert into ticks (n) values (99999)'); // one late row to the sleeping worker
    await waitFor(() => ticked.includes(99999), 'a wake-up of the sleeping worker', 3000);
  } finally {
    await worker.close();
  }
});

test('upgrading to version 5: pubsub.wake() loses SECURITY DEFINER and its SET but stays non-public, and a version 4 trigger that calls it still wakes a sleeping worker', async () => {
  const old = await createTestDatabase();
  try {
    await old.query([1, 2, 3, 4].map((v) => LIBRARY_SCHEMA[v]).join('\n\n'));
    // The trigger as version 4 generated it: the handshake through a call to pubsub.wake().
    await old.query(tickTableSql.replace(wakeUpSql(`'ticks'`), `perform pubsub.wake('ticks');`));
    await old.query(`insert into pubsub.subscription (channel, listener) values ('ticks', 'Ticks.tick'); insert into pubsub.channel (name, durable) values ('ticks', true)`);
    const wake = `select prosecdef, proconfig, exists (select 1 from aclexplode(proacl) a where a.grantee = 0) as public from pg_proc where oid = 'pubsub.wake(text)'::regprocedure`;
    assert.deepEqual((await old.query(wake))[0], { prosecdef: true, proconfig: ['search_path=pg_catalog, pg_temp'], public: false });
    assert.equal((await old.query(schemaVersionSql))[0].version, 4);
    await assert.rejects(listen({ databaseUrl: old.url, channels: ['ticks'], logger: quiet }), new RegExp(`version 4; this pgpubsub needs version ${LIBRARY_SCHEMA_VERSION}`));

    await old.query(LIBRARY_SCHEMA[5]!);
    assert.deepEqual((await old.query(wake))[0], { prosecdef: false, proconfig: null, public: false });
    assert.equal((await old.query(schemaVersionSql))[0].version, 5);
    await old.query(librarySchemaSql(5)); // bridges (version 6) and on, for this worker to start
    const worker = await listen({ databaseUrl: old.url, pollIntervalMs: 600_000, channels: ['ticks'], logger: quiet });
    try {
      await waitFor(async () => (await sleepersOf('ticks', old)) === 1, 'the worker asleep', 5000);
      await new Promise((r) => setTimeout(r, 300));
      await old.query('insert into ticks (n) values (424242)');
      await waitFor(() => ticked.includes(424242), 'a wake-up through the version 4 trigger', 3000);
    } finally {
      await worker.close();
    }
  } finally {
    await old.drop();
  }
});
