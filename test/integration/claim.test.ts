// The common claim through pubsub.claim_ready() (library version 7) against the statement it replaced,
// written out (claimSql's `inline`): the same rows for any listeners, cursors, channels, limit and
// context filter; a plan that stays on the (listener, id) index whatever the table held when it was
// made; and a database still at version 6 refused with the fix.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import pg from 'pg';
import { Listen, listen, notify } from '../../src/index.js';
import { readClaim } from '../../src/drain.js';
import { LIBRARY_SCHEMA, LIBRARY_SCHEMA_VERSION, claimSql, schemaVersionSql, type ClaimTarget } from '../../src/sql.js';
import { createTestDatabase, waitFor, type TestDatabase } from '../helpers/db.js';

class X {
  n!: number;
}
const got: number[] = [];
class Xs {
  @Listen('x')
  got(x: X) {
    got.push(x.n);
  }
}

let db: TestDatabase;
before(async () => {
  db = await createTestDatabase({ library: true });
});
after(() => db?.drop());

const quiet = { info() {}, warn() {}, error() {} };
/** Names that sort next to each other or compare equal under a collation but not byte for byte. */
const NAMES = ['a', 'A', 'a ', 'ä', 'b', 'Post.inserted'];
const CONTEXTS = [null, '{"t":1}', '{"t":2}', '{"t":1,"u":3}'];

const stored = fc.record({
  listener: fc.constantFrom(...NAMES, null),
  channel: fc.constantFrom('x', 'y'),
  context: fc.constantFrom(...CONTEXTS),
  isolated: fc.boolean(),
  dead: fc.boolean(),
  due: fc.boolean(),
});
const target = fc.record({
  listeners: fc.uniqueArray(fc.constantFrom(...NAMES, 'nobody'), { maxLength: 4 }),
  unassigned: fc.uniqueArray(fc.constantFrom('x', 'y', 'z'), { maxLength: 3 }),
  limit: fc.integer({ min: 1, max: 6 }),
  context: fc.constantFrom(null, '{"t":1}', '{"u":3}'),
  /** Per listener, a cursor at the nth stored row (of any listener), or none. */
  cursors: fc.array(fc.option(fc.nat({ max: 40 })), { minLength: 4, maxLength: 4 }),
});

/** Runs a claim script and rolls it back: the claimed rows in id order (as the worker sorts them), without their latency. */
async function claimed(client: pg.Client, t: ClaimTarget): Promise<unknown[]> {
  const results = (await client.query(claimSql(t))) as unknown as pg.QueryResult[];
  await client.query('rollback');
  return readClaim(results).rows.map(({ latency_ms, ...rest }) => rest);
}

test('pubsub.claim_ready() claims the same rows as the written-out claim, for any listeners, cursors, channels, limit and context filter', async () => {
  const client = new pg.Client(db.url);
  await client.connect();
  try {
    let claims = 0;
    await fc.assert(
      fc.asyncProperty(fc.array(stored, { maxLength: 40 }), target, async (rows, t) => {
        await client.query('truncate pubsub.notification');
        const ids = (await client.query<{ id: string }>(
          `insert into pubsub.notification (listener, channel, payload, context, isolated, dead_at, run_at)
           select * from unnest($1::text[], $2::text[], $3::jsonb[], $4::jsonb[], $5::boolean[], $6::timestamptz[], $7::timestamptz[]) returning id::text`,
          [rows.map((r) => r.listener), rows.map((r) => r.channel), rows.map((_, i) => JSON.stringify({ i })), rows.map((r) => r.context),
            rows.map((r) => r.isolated), rows.map((r) => (r.dead ? new Date() : null)), rows.map((r) => new Date(Date.now() + (r.due ? -60_000 : 60_000)))],
        )).rows.map((r) => r.id);
        const after = new Map<string, string>();
        t.listeners.forEach((name, i) => {
          const at = t.cursors[i];
          if (at !== null && at !== undefined) after.set(name, ids[at] ?? String(at));
        });
        const claim: ClaimTarget = { listeners: t.listeners, unassigned: t.unassigned, limit: t.limit, context: t.context, after, idleTimeoutMs: 0 };
        const written = await claimed(client, { ...claim, inline: true });
        const through = await claimed(client, claim);
        claims++;
        assert.deepEqual(through, written);
      }),
      { numRuns: 150 },
    );
    assert.ok(claims >= 150);
  } finally {
    await client.end();
  }
});

test('pubsub.claim_next() (version 9) does what the written-out claim script does: the idle limit, lost claims counted, whether isolated rows wait, the rows, the transaction id', async () => {
  const client = new pg.Client(db.url);
  await client.connect();
  try {
    await client.query('truncate pubsub.notification, pubsub.claim');
    const ids = (await client.query<{ id: string }>(`insert into pubsub.notification (listener, channel, payload, isolated)
      select 'a', 'x', jsonb_build_object('i', g), g = 4 from generate_series(1, 5) g returning id::text`)).rows.map((r) => r.id);
    // A lost claim of the first row: its transaction aborted, its record is still there.
    await client.query('begin');
    const [{ xid }] = (await client.query(`select txid_current()::text as xid`)).rows;
    await client.query('rollback');
    await client.query(`insert into pubsub.claim (xid, ids, policy, worker) values ($1, $2, '{"a": [10, 1000, 300000]}', 'gone:1')`, [xid, [ids[0]]]);
    const claim: ClaimTarget = { listeners: ['a'], unassigned: ['x'], limit: 10, context: null, idleTimeoutMs: 35_000 };
    const run = async (t: ClaimTarget) => {
      const c = readClaim((await client.query(claimSql(t))) as unknown as pg.QueryResult[]);
      const [{ idle }] = (await client.query(`select current_setting('idle_in_transaction_session_timeout') as idle`)).rows;
      await client.query('rollback');
      return { ...c, idle, rows: c.rows.map(({ latency_ms, ...rest }) => rest) };
    };
    const written = await run({ ...claim, inline: true });
    const through = await run(claim);
    assert.deepEqual({ ...through, xid: 'each its own' }, { ...written, xid: 'each its own' });
    assert.equal(through.idle, '35s');
    assert.equal(through.pid, (await client.query('select pg_backend_pid() as pid')).rows[0].pid);
    assert.deepEqual(through.reaped, [{ id: ids[0], channel: 'x', listener: 'a', attempts: 1, dead: false }]);
    assert.equal(through.isolatedWaiting, true);
    assert.deepEqual(through.rows.map((r) => r.id), [ids[1], ids[2], ids[4]]); // not the isolated ones
    assert.match(String(through.xid), /^\d+$/);
    const [{ after }] = (await client.query(`select current_setting('idle_in_transaction_session_timeout') as after`)).rows;
    assert.equal(after, '0', 'the idle limit ended with the claim transaction');
    // Nothing to claim: no transaction id is spent.
    await client.query('truncate pubsub.notification, pubsub.claim');
    assert.equal((await run(claim)).xid, null);
  } finally {
    await client.end();
  }
});

test('the plan pubsub.claim_ready() keeps for the session walks the (listener, id) index from the cursor, even when it was made on a small table', async () => {
  const client = new pg.Client(db.url);
  await client.connect();
  const plans: string[] = [];
  client.on('notice', (n) => plans.push(n.message ?? ''));
  try {
    await client.query('truncate pubsub.notification');
    // The plan is made on a small, analyzed table, where a sequential scan and a sort are cheapest.
    await client.query(`insert into pubsub.notification (listener, channel, payload) select 'busy', 'x', '{}' from generate_series(1, 30)`);
    await client.query('analyze pubsub.notification');
    await client.query(`load 'auto_explain'; set auto_explain.log_min_duration = 0; set auto_explain.log_nested_statements = on;
      set auto_explain.log_level = notice; set client_min_messages = notice`);
    const claim: ClaimTarget = { listeners: ['rare', 'busy'], unassigned: ['x'], limit: 10, context: null, idleTimeoutMs: 0 };
    assert.equal((await claimed(client, claim)).length, 10);
    // A skewed backlog arrives, not analyzed yet: 20,000 rows of one listener, 4 of the other.
    await client.query(`insert into pubsub.notification (listener, channel, payload)
      select case when g % 5000 = 0 then 'rare' else 'busy' end, 'x', '{}' from generate_series(1, 20000) g`);
    const [{ last }] = (await client.query(`select max(id)::text as last from pubsub.notification`)).rows;
    const from = { ...claim, after: new Map([['busy', String(BigInt(last) - 10n)]]) };
    const written = await claimed(client, { ...from, inline: true });
    plans.length = 0;
    assert.deepEqual(await claimed(client, from), written);
    assert.deepEqual(written.map((r: any) => r.listener), ['rare', 'rare', 'rare', ...Array(9).fill('busy'), 'rare']);
    const plan = plans.find((p) => p.includes('delete from pubsub.notification n'));
    assert.ok(plan, `auto_explain showed the function's statement: ${plans.join('\n')}`);
    assert.match(plan, /Index Scan using notification_listener_id on notification h\b/);
    assert.match(plan, /(Index Scan using notification_pkey on notification n|Bitmap Index Scan on notification_pkey)\b/); // the delete: by id
    assert.doesNotMatch(plan, /Seq Scan|Sort/);
    assert.match(plan, /Index Cond: \(\(listener >= l\.name\) AND \(listener <= l\.name\) AND \(id > COALESCE\(l\.after/); // from each cursor on
  } finally {
    await client.end();
  }
});

test('a database at version 6 (no pubsub.claim_ready()) is refused with the fix; the version 7 and 9 steps add the claim functions, callable by every role, with their settings pinned', async () => {
  const old = await createTestDatabase();
  try {
    await old.query([1, 2, 3, 4, 5, 6].map((v) => LIBRARY_SCHEMA[v]).join('\n\n'));
    assert.equal((await old.query(schemaVersionSql))[0].version, 6);
    await assert.rejects(listen({ databaseUrl: old.url, channels: ['x'], logger: quiet }), (e: any) =>
      e.code === 'pubsub.schemaMissing' && new RegExp(`version 6; this pgpubsub needs version ${LIBRARY_SCHEMA_VERSION}\\. Run \`pubsub make-migration\``).test(e.message));
    await old.query(LIBRARY_SCHEMA[7]!);
    assert.equal((await old.query(schemaVersionSql))[0].version, 7);
    const [fn] = await old.query(`select prosecdef, proconfig, exists (select 1 from aclexplode(proacl) a where a.grantee = 0 and a.privilege_type = 'EXECUTE') as public
      from pg_proc where oid = 'pubsub.claim_ready(text[], bigint[], text[], integer, jsonb)'::regprocedure`);
    assert.deepEqual(fn, { prosecdef: false, proconfig: ['search_path=pg_catalog, pg_temp', 'plan_cache_mode=force_generic_plan', 'enable_sort=off', 'enable_seqscan=off'], public: true });
    await old.query(`insert into pubsub.subscription (channel, listener) values ('x', 'Xs.got'); insert into pubsub.channel (name, durable) values ('x', true)`);
    await old.query(LIBRARY_SCHEMA[8]!);
    assert.equal((await old.query(schemaVersionSql))[0].version, 8);
    for (let v = 9; v <= LIBRARY_SCHEMA_VERSION; v++) await old.query(LIBRARY_SCHEMA[v]!); // the later steps, which the worker needs too
    assert.equal((await old.query(schemaVersionSql))[0].version, LIBRARY_SCHEMA_VERSION);
    const [next] = await old.query(`select prosecdef, proconfig, exists (select 1 from aclexplode(proacl) a where a.grantee = 0 and a.privilege_type = 'EXECUTE') as public
      from pg_proc where oid = 'pubsub.claim_next(text[], bigint[], text[], integer, jsonb, integer)'::regprocedure`);
    assert.deepEqual(next, { prosecdef: false, proconfig: ['search_path=pg_catalog, pg_temp'], public: true });
    const worker = await listen({ databaseUrl: old.url, channels: ['x'], logger: quiet });
    try {
      await notify('x', { n: 7 }, { client: old.pool });
      await waitFor(() => got.includes(7), 'the notification, claimed through pubsub.claim_ready()');
    } finally {
      await worker.close();
    }
  } finally {
    await old.drop();
  }
});
