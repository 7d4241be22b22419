// The worker's upkeep of pubsub.notification (`maintain`): indexes left at their peak by churn are
// rebuilt while writers and claims go on, but not while an old transaction is open; an interrupted
// rebuild's leftovers are dropped; one worker at a time; a role that is not the owner is told once.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { Listen, listen, notify } from '../../src/index.js';
import { Maintenance } from '../../src/maintain.js';
import { MAINTAIN_LOCK } from '../../src/sql.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

class Tick {
  n!: number;
}
const seen: number[] = [];
class Ticks {
  @Listen('upkeep')
  tick(t: Tick) {
    seen.push(t.n);
  }
}

let db: TestDatabase;
before(async () => {
  assert.ok(Ticks);
  db = await createTestDatabase({ library: true, subscribe: true });
});
after(() => db?.drop());

/** Messages logged at each level. */
function recorder() {
  const lines = { info: [] as string[], warn: [] as string[], error: [] as string[] };
  return { lines, logger: { info: (m: string) => lines.info.push(m), warn: (m: string) => lines.warn.push(m), error: (m: string) => lines.error.push(m) } };
}
const size = async () => (await db.query(`select pg_indexes_size('pubsub.notification')::float8 as indexes, pg_relation_size('pubsub.notification')::float8 as heap`))[0];

test('indexes left at their peak by churn are rebuilt (and the table vacuumed, unless autovacuum came first) while writers and the worker go on, once no old transaction is open; every notification runs once', async () => {
  // 700,000 rows stored and processed (deleted): the indexes keep their pages.
  await db.query(`insert into pubsub.notification (channel, listener, payload) select 'gone', 'Gone.gone', '{}' from generate_series(1, 700000)`);
  await db.query(`delete from pubsub.notification`);
  const bloated = await size();
  assert.ok(bloated.indexes > 32 * 1024 * 1024, `indexes of ${bloated.indexes} bytes`);

  const old = await db.pool.connect();
  await old.query('begin isolation level repeatable read');
  await old.query('select txid_current()'); // an xmin that vacuum must respect, and a rebuild would wait for
  const { lines, logger } = recorder();
  const worker = await listen({ databaseUrl: db.url, channels: ['upkeep'], maintain: { intervalMs: 200 }, logger });
  try {
    let n = 0;
    const writes = async (count: number) => {
      for (let i = 0; i < count; i++) await notify('upkeep', { n: n++ }, { client: db.pool });
    };
    await writes(50);
    await new Promise((r) => setTimeout(r, 1000)); // five passes
    assert.equal(lines.info.filter((l) => /rebuilt|vacuumed/.test(l)).length, 0, `nothing done while the old transaction is open: ${lines.info.join('\n')}`);
    await old.query('commit');
    await Promise.all([writes(300), waitFor(() => lines.info.some((l) => /rebuilt the indexes/.test(l)), 'the rebuild', 30_000)]);
    await waitFor(() => seen.length >= n, `all ${n} notifications`);
    assert.deepEqual([...seen].sort((a, b) => a - b), [...Array(n).keys()], 'each once');
    const rebuilt = await size();
    assert.ok(rebuilt.indexes < 4 * 1024 * 1024, `indexes back to ${rebuilt.indexes} bytes from ${bloated.indexes}`);
    assert.deepEqual(lines.warn, []);
    assert.deepEqual(lines.error, []);
  } finally {
    old.release();
    await worker.close();
  }
});

test('indexes an interrupted rebuild left invalid are dropped, by one worker at a time', async () => {
  await db.query(`create index concurrently notification_listener_id_ccnew on pubsub.notification (listener, id)`);
  await db.query(`update pg_index set indisvalid = false where indexrelid = 'pubsub.notification_listener_id_ccnew'::regclass`); // as a cancelled REINDEX CONCURRENTLY leaves it
  const leftover = async () => (await db.query(`select to_regclass('pubsub.notification_listener_id_ccnew') is not null as there`))[0].there;
  const control = new pg.Pool({ connectionString: db.url, max: 1 });
  const { lines, logger } = recorder();
  const maintenance = new Maintenance({ connectionString: db.url }, control, 60_000, logger);
  const other = await db.pool.connect();
  try {
    await other.query(`select pg_advisory_lock(${MAINTAIN_LOCK}, 0)`); // another worker is at it
    await maintenance.once();
    assert.equal(await leftover(), true, 'left to the worker that holds the turn');
    await other.query(`select pg_advisory_unlock(${MAINTAIN_LOCK}, 0)`);
    await maintenance.once();
    assert.equal(await leftover(), false);
    assert.match(lines.info.join('\n'), /dropped notification_listener_id_ccnew, an index left invalid by an interrupted rebuild/);
  } finally {
    other.release();
    await maintenance.close();
    await control.end();
  }
});

test('a rebuild whose backend is killed while it waits for a writer leaves invalid indexes; the next pass drops them and rebuilds; the writer\'s row is kept', async () => {
  await db.query(`insert into pubsub.notification (channel, listener, payload) select 'gone', 'Gone.gone', '{}' from generate_series(1, 700000)`);
  await db.query(`delete from pubsub.notification`);
  await db.query('analyze pubsub.notification'); // the statistics the pass reads: no live rows, 700,000 dead
  const control = new pg.Pool({ connectionString: db.url, max: 1 });
  const first = recorder();
  const maintenance = new Maintenance({ connectionString: db.url }, control, 60_000, first.logger);
  const writer = await db.pool.connect();
  const leftovers = async () => (await db.query(`select count(*)::int as n from pg_index x join pg_class i on i.oid = x.indexrelid
    where x.indrelid = 'pubsub.notification'::regclass and not x.indisvalid and i.relname ~ '_ccnew'`))[0].n;
  try {
    // A write in progress: REINDEX CONCURRENTLY builds its new indexes, then waits for it to end.
    await writer.query('begin');
    await writer.query(`insert into pubsub.notification (channel, listener, payload) values ('upkeep', 'Ticks.tick', '{"n": -1}')`);
    const pass = maintenance.once();
    const pid: number = await waitFor(async () => {
      const rows = await db.query(`select pid from pg_stat_activity where application_name = 'pubsub:maintain' and query ilike 'reindex%' and wait_event_type = 'Lock'`);
      return rows[0]?.pid;
    }, 'the rebuild waiting for the writer', 30_000);
    await db.query('select pg_terminate_backend($1)', [pid]);
    await assert.rejects(pass, /terminat/);
    assert.ok((await leftovers()) > 0, 'the killed rebuild left invalid indexes behind');
    await writer.query('commit');
  } finally {
    writer.release();
    await maintenance.close();
  }
  // The next pass, by any worker (the killed one counts its attempt against its own limit).
  const next = recorder();
  const again = new Maintenance({ connectionString: db.url }, control, 60_000, next.logger);
  try {
    await again.once();
  } finally {
    await again.close();
    await control.end();
  }
  assert.match(next.lines.info.join('\n'), /dropped notification_\w+_ccnew\w*, an index left invalid by an interrupted rebuild/);
  assert.match(next.lines.info.join('\n'), /rebuilt the indexes of pubsub.notification/);
  assert.equal(await leftovers(), 0);
  assert.ok((await size()).indexes < 4 * 1024 * 1024, 'indexes rebuilt');
  assert.deepEqual(await db.query(`select payload from pubsub.notification`), [{ payload: { n: -1 } }], 'the writer\'s row kept');
  await db.query('delete from pubsub.notification');
});

test('a worker whose role does not own pubsub.notification says once that maintenance is off, and works', async () => {
  const role = `pubsub_upkeep_${randomBytes(4).toString('hex')}`;
  await db.query(`create role ${role} login password 'pw'`);
  try {
    await db.query(`grant usage on schema pubsub to ${role}; grant select, insert, update, delete on pubsub.notification, pubsub.claim to ${role};
      grant select on pubsub.subscription, pubsub.model to ${role}; grant execute on function pubsub.notify(text, jsonb, jsonb, boolean, boolean) to ${role}`);
    const url = new URL(db.url);
    url.username = role;
    url.password = 'pw';
    const { lines, logger } = recorder();
    const worker = await listen({ databaseUrl: url.toString(), channels: ['upkeep'], maintain: { intervalMs: 100 }, logger });
    try {
      await new Promise((r) => setTimeout(r, 600));
      assert.equal(lines.warn.filter((l) => /maintenance of pubsub\.notification needs its owner/.test(l)).length, 1, lines.warn.join('\n'));
      await notify('upkeep', { n: -1 }, { client: db.pool });
      await waitFor(() => seen.includes(-1), 'a notification, as ever');
    } finally {
      await worker.close();
    }
  } finally {
    await db.query(`drop owned by ${role}; drop role ${role}`);
  }
});

test('a maintenance interval that is not a whole number of ms from 10 to 86,400,000 is refused before anything starts', async () => {
  for (const intervalMs of [-1, 0, 1.5, Number.NaN]) {
    await assert.rejects(listen({ databaseUrl: db.url, channels: ['upkeep'], maintain: { intervalMs } }), (e: any) =>
      e.code === 'pubsub.config' && /listen\(\): maintain\.intervalMs must be a whole number from 10 to 86400000/.test(e.message));
  }
});
