/**
 * Every SQL statement pgpubsub runs or generates, as pure functions returning strings. Identifiers are
 * validated and quoted here, once; runtime values always travel as bind parameters.
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import { conditionSql } from './condition.js';
import { PubSubError } from './errors.js';
import type { PrismaField, PrismaModel } from './prisma-schema.js';
import type { TriggerSpec } from './registry.js';

const { escapeIdentifier, escapeLiteral } = pg;

/** Advisory lock classes (first key of the two-int form) of pubsub.wake()'s handshake; the second key is hashtext(channel). */
export const WAKE_GATE = 1886745202;
export const WAKE_SLEEP = 1886745203;
/** Advisory lock class a worker holds (shared, for its session) on each schedule it runs; the second key is hashtext(name). */
export const SCHEDULE_RUNNING = 1886745204;
/** Advisory lock (with 0) a worker holds, for its session, while it maintains pubsub.notification (maintain.ts): one at a time. */
export const MAINTAIN_LOCK = 1886745205;
/** Advisory lock (with 0) pubsub.fan_out() holds to the end of its transaction: one at a time, so ids follow the writes. */
export const FANOUT_LOCK = 1886745206;

/**
 * The writer's side of the wake-up handshake (see pubsub.wake() in version 2 below) as PL/pgSQL
 * statements, for the channel `channel` (an SQL expression): take the gate (shared, until commit), then
 * NOTIFY only if a worker holds the sleep lock. Written into each durable trigger function, and the body
 * of pubsub.wake() since version 5: a call to a SECURITY DEFINER function with SET search_path costs a
 * GUC save and restore, the larger part of the check's cost to writers (bench W6x).
 */
export function wakeUpSql(channel: string): string {
  const key = `pg_catalog.hashtext(${channel})`;
  return `perform pg_catalog.pg_advisory_xact_lock_shared(${WAKE_GATE}, ${key});
  if pg_catalog.pg_try_advisory_lock(${WAKE_SLEEP}, ${key}) then
    perform pg_catalog.pg_advisory_unlock(${WAKE_SLEEP}, ${key}); -- nobody asleep: the workers will look again
  else
    perform pg_catalog.pg_notify(${channel}, '');
  end if;`;
}

/** Version of the library's own tables; each step up has an upgrade script in LIBRARY_SCHEMA. */
export const LIBRARY_SCHEMA_VERSION = 10;

export function ident(name: string): string {
  if (!name || name.includes('\0') || Buffer.byteLength(name) > 63) {
    throw new PubSubError('pubsub.schema', `"${name}" is not a valid PostgreSQL identifier (1 to 63 bytes, no NUL).`);
  }
  return escapeIdentifier(name);
}

export const literal = (value: string) => escapeLiteral(value);

/** SQLSTATEs that pubsub.notify() raises, so that every client can tell its errors apart. */
export const SQLSTATE_PAYLOAD_TOO_LARGE = 'PSB01';
export const SQLSTATE_CHANNEL_CONFLICT = 'PSB02';

/**
 * The order key a writer stores for a listener keyed by a payload field path (`path`: a text[]
 * expression, the path's segments): the field as text, as `#>>` gives it (a string as it is; a number,
 * boolean, object or array as PostgreSQL prints it in jsonb); '' when the field is missing, JSON null,
 * or a segment crosses a scalar; and '' for the empty path, an ordered listener's single key. Written
 * alike by pubsub.notify(), the trigger functions and the worker's catch-up (`keyRowsSql`), so a payload
 * gets one key wherever it is computed. Never computed in JavaScript: JSON.stringify and String() print
 * numbers and objects differently (1.0, 1e21, spaces).
 */
export function orderKeySql(payload: string, path: string): string {
  return `case when cardinality(${path}) = 0 then '' else coalesce(${payload} #>> ${path}, '') end`;
}

/** A path's segments as an SQL text[] constant, each segment quoted as a literal. */
export const pathArray = (path: string[]) => `array[${path.map(literal).join(', ')}]::text[]`;

/** orderKeySql for a path known when the SQL is written (trigger functions): the same key, without the case. */
export const constantPathKeySql = (payload: string, path: string[]) => (path.length ? `coalesce(${payload} #>> ${pathArray(path)}, '')` : `''`);

/**
 * pubsub.notify(): publishes in the channel's mode (see CHANNEL_DDL_V3). `keyed` (version 8): each
 * stored row gets its listener's order key from pubsub.subscription.order_path (null: no key, the
 * worker keys it if the listener is ordered).
 */
function notifyFunctionSql(keyed: boolean, fanout = false): string {
  return `create or replace function pubsub.notify(channel_name text, payload_json jsonb, context_json jsonb default null,
    declared_durable boolean default null, strict boolean default false) returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  first_id bigint;${fanout ? '\n  listeners text[];\n  keys text[];' : ''}
  ctx jsonb := coalesce(context_json, nullif(current_setting('pubsub.context', true), '')::jsonb);
  stored_durable boolean;
  message text;
begin
  select c.durable into stored_durable from pubsub.channel c where c.name = channel_name;
  if strict and stored_durable <> declared_durable then
    raise exception using errcode = '${SQLSTATE_CHANNEL_CONFLICT}',
      message = format('channel %s is %s in this database (pubsub.channel, written by the generated migrations), but the notification was sent as %s',
        channel_name, case when stored_durable then 'durable' else 'non-durable' end, case when declared_durable then 'durable' else 'non-durable' end),
      hint = 'Leave the durable option out to use the channel''s mode, or change the listeners and generate a migration.';
  end if;
  if not coalesce(stored_durable, declared_durable, true) then
    message := case when ctx is null then payload_json::text
      else chr(30) || '{"payload":' || payload_json::text || ',"context":' || ctx::text || '}' end;
    if octet_length(message) > 7999 then
      raise exception using errcode = '${SQLSTATE_PAYLOAD_TOO_LARGE}',
        message = format('the payload of a notification on non-durable channel %s is %s bytes as JSON, over the 7999 that NOTIFY takes',
          channel_name, octet_length(message)),
        hint = 'Send less (an id to look up), or make the channel durable, which has no such limit.';
    end if;
    perform pg_notify(channel_name, message);
    return null;
  end if;
${fanout ? FANOUT_NOTIFY : `  with stored as (
    insert into pubsub.notification (channel, listener, payload, context${keyed ? ', order_key' : ''})
      select channel_name, s.listener, payload_json, ctx${keyed ? `, case when s.order_path is not null then ${orderKeySql('payload_json', 's.order_path')} end` : ''} from pubsub.subscription s where s.channel = channel_name
      returning id
  ) select min(id) into first_id from stored;
  if first_id is null then
    insert into pubsub.notification (channel, payload, context) values (channel_name, payload_json, ctx)
      returning id into first_id;
  end if;
`}  perform pubsub.wake(channel_name);
  return first_id;
end
$$;`;
}

/**
 * Version 10: a durable notification for two or more listeners is stored once, in pubsub.fanout, with
 * each listener's order key; for one, one row as before; for none yet, one unassigned row.
 */
const FANOUT_NOTIFY = `  select array_agg(s.listener order by s.listener),
      case when bool_or(s.order_path is not null) then array_agg(case when s.order_path is not null then ${orderKeySql('payload_json', 's.order_path')} end order by s.listener) end
    into listeners, keys from pubsub.subscription s where s.channel = channel_name;
  if cardinality(listeners) > 1 then
    insert into pubsub.fanout (channel, listeners, order_keys, payload, context) values (channel_name, listeners, keys, payload_json, ctx)
      returning id into first_id;
  elsif cardinality(listeners) = 1 then
    insert into pubsub.notification (channel, listener, payload, context, order_key) values (channel_name, listeners[1], payload_json, ctx, keys[1])
      returning id into first_id;
  else
    insert into pubsub.notification (channel, payload, context) values (channel_name, payload_json, ctx)
      returning id into first_id;
  end if;
`;

/**
 * Channel modes. Idempotent, so that it can also run after a schema that
 * already has it. Every publisher then uses a channel's real mode, whatever listeners it loaded: before,
 * a process that had not loaded a channel's non-durable listeners stored its notifications for nobody.
 */
const CHANNEL_DDL_V3 = `-- The mode of each channel, written by the generated migrations from the listeners.
create table if not exists pubsub.channel (
  name text primary key,
  durable boolean not null,
  updated_at timestamptz not null default now()
);

-- Publish in the channel's mode. Durable (or unknown to pubsub.channel): one row per subscribed listener
-- (one unassigned row if none yet), then a wake-up. Non-durable: the payload itself goes out with NOTIFY,
-- as {"payload":…,"context":…} behind chr(30) when it has a context (as notify() in TypeScript did); returns null.
-- declared_durable: the publisher's own idea of the mode, used for channels pubsub.channel lacks; with
-- strict, a disagreement with pubsub.channel is an error instead of being overruled by it.
drop function if exists pubsub.notify(text, jsonb, jsonb);
${notifyFunctionSql(false)}`;

/**
 * Library-level privileges, for version 3 of the library schema. PostgreSQL grants EXECUTE on every
 * new function to PUBLIC, so without this any role with USAGE on schema pubsub could store forged
 * notifications (pubsub.notify runs as its owner) or send wake-ups. Callers of notify() are granted
 * EXECUTE explicitly (`notifyGrantSql`). The schema itself grants nothing to PUBLIC by default; the
 * revoke states it. Default privileges make functions the migration role creates in pubsub later
 * non-public too (each trigger function also revokes its own EXECUTE, whoever creates it).
 */
const SECURITY_DDL_V3 = `revoke all on schema pubsub from public;
revoke all on function pubsub.notify(text, jsonb, jsonb, boolean, boolean) from public;
revoke all on function pubsub.wake(text) from public;
alter default privileges in schema pubsub revoke execute on functions from public;`;

/**
 * pubsub.claim_next() (see version 9). `fanout` (version 10): it also returns a row of kind 'fanout' when
 * writes wait in pubsub.fanout to be turned into their listeners' rows (pubsub.fan_out()).
 */
function claimNextFunctionSql(fanout: boolean): string {
  return `${fanout ? 'create or replace' : 'create'} function pubsub.claim_next(listener_names text[], cursors bigint[], channels text[], max_rows integer, context_filter jsonb, idle_ms integer)
returns table (kind text, id text, channel text, listener text, payload text, context text, attempts integer, created_at text,
  order_key text, isolated boolean, latency_ms double precision, dead boolean, pid integer, xid text)
language plpgsql set search_path = pg_catalog, pg_temp as $$
declare
  waiting boolean;
begin
  if idle_ms > 0 and (current_setting('idle_in_transaction_session_timeout') = '0'
      or current_setting('idle_in_transaction_session_timeout')::interval > make_interval(secs => idle_ms / 1000.0)) then
    perform set_config('idle_in_transaction_session_timeout', idle_ms::text, true);
  end if;
  if exists (select 1 from pubsub.claim) then
    return query select 'reaped', r.id, r.channel, r.listener, null::text, null::text, r.attempts, null::text, null::text,
      null::boolean, null::float8, r.dead, null::integer, null::text
      from pubsub.reap_lost_claims() r;
  end if;
  execute 'select exists (select 1 from pubsub.notification h where h.isolated and h.dead_at is null)' into waiting;
  return query select 'claimed', c.id, c.channel, c.listener, c.payload, c.context, c.attempts, c.created_at, c.order_key,
      c.isolated, c.latency_ms, null::boolean, null::integer, null::text
    from pubsub.claim_ready(listener_names, cursors, channels, max_rows, context_filter) c;
  return query select 'session', null::text, null::text, null::text, null::text, null::text, null::integer, null::text, null::text,
    waiting, null::float8, null::boolean, pg_backend_pid(), txid_current_if_assigned()::text;
${fanout ? FANOUT_FLAG : ''}end
$$;`;
}

const FANOUT_FLAG = `  return query select 'fanout', null::text, null::text, null::text, null::text, null::text, null::integer, null::text, null::text,
    null::boolean, null::float8, null::boolean, null::integer, null::text where pubsub.fanout_waiting();
`;

/** Upgrade scripts for the library's tables, index = version reached. */
export const LIBRARY_SCHEMA: Record<number, string> = {
  1: `create schema if not exists pubsub;

-- One row per durable notification, deleted in the transaction that processed it.
create table pubsub.notification (
  id bigint generated always as identity primary key,
  channel text not null,
  payload jsonb not null,
  context jsonb default nullif(current_setting('pubsub.context', true), '')::jsonb,
  attempts integer not null default 0,
  run_at timestamptz not null default now(),
  last_error text,
  created_at timestamptz not null default now()
);
create index notification_channel_id on pubsub.notification (channel, id);

-- Durable publish: store, then wake the workers. The wake-up carries no payload, so any number of
-- notifications of one channel in one transaction fold into a single NOTIFY.
-- Security definer: writers need no grants on the pubsub schema, only EXECUTE on this function.
create or replace function pubsub.notify(channel text, payload jsonb) returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  notification_id bigint;
begin
  insert into pubsub.notification (channel, payload) values (channel, payload)
    returning id into notification_id;
  perform pg_notify(channel, '');
  return notification_id;
end
$$;`,
  2: `-- Version 2: one row per listener (independent retries, dead letters, ordering), subscriptions,
-- model versions. Rows stored by version 1 keep listener = null and are processed as before.
alter table pubsub.notification
  add column listener text,
  add column order_key text,
  add column last_attempt_at timestamptz,
  add column dead_at timestamptz;
drop index pubsub.notification_channel_id;
create index notification_unassigned on pubsub.notification (channel, id) where listener is null;
create index notification_listener_id on pubsub.notification (listener, id) where dead_at is null;
create index notification_listener_order on pubsub.notification (listener, order_key, id) where order_key is not null;
create index notification_dead on pubsub.notification (dead_at) where dead_at is not null;

-- Who receives a channel's notifications; written by the generated migrations.
create table pubsub.subscription (
  channel text not null,
  listener text not null,
  created_at timestamptz not null default now(),
  primary key (channel, listener)
);

-- The shape of each model that triggers send, so old payloads can be read after a model change.
create table pubsub.model (
  name text primary key,
  version text not null,
  fields jsonb not null
);

-- Wakes the workers of a channel after commit, but only if one of them is asleep: a NOTIFY makes every
-- notifying commit of the cluster queue on one lock through its WAL flush, so busy writers skip it
-- while the workers are awake anyway. Race-free handshake with a worker falling asleep, per channel:
--   writer: take the gate (shared, until commit), then look for a sleeper (the sleep lock held shared);
--   worker: hold the sleep lock shared, then wait until it can take the gate exclusively (every writer
--           that looked before it registered has committed), then look at the table once more.
-- Either the writer sees the sleeper and notifies, or the worker's last look sees the writer's row.
create function pubsub.wake(channel_name text) returns void
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  h integer := hashtext(channel_name);
begin
  perform pg_advisory_xact_lock_shared(${WAKE_GATE}, h);
  if pg_try_advisory_lock(${WAKE_SLEEP}, h) then
    perform pg_advisory_unlock(${WAKE_SLEEP}, h); -- nobody asleep: the workers will look again
  else
    perform pg_notify(channel_name, '');
  end if;
end
$$;

-- One row per subscribed listener; a channel nobody subscribes to yet keeps one unassigned row.
drop function pubsub.notify(text, jsonb);
create function pubsub.notify(channel_name text, payload_json jsonb, context_json jsonb default null) returns bigint
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  first_id bigint;
  ctx jsonb := coalesce(context_json, nullif(current_setting('pubsub.context', true), '')::jsonb);
begin
  with stored as (
    insert into pubsub.notification (channel, listener, payload, context)
      select channel_name, s.listener, payload_json, ctx from pubsub.subscription s where s.channel = channel_name
      returning id
  ) select min(id) into first_id from stored;
  if first_id is null then
    insert into pubsub.notification (channel, payload, context) values (channel_name, payload_json, ctx)
      returning id into first_id;
  end if;
  perform pubsub.wake(channel_name);
  return first_id;
end
$$;`,
  3: `-- Version 3: attempts are counted when they start, whatever ends them (see the worker's attempts.ts).
-- A worker records each claim here, committed before any listener runs, and deletes the record in the
-- claim's own transaction. A record whose transaction aborted (a crash, a cut connection, a restart, a
-- listener outliving idle_in_transaction_session_timeout) is an attempt that never ended: the rows it
-- names get it counted and are isolated, i.e. claimed one per transaction from then on, so a row that
-- kills its worker dead-letters after maxAttempts while its batch neighbours complete.
create table pubsub.claim (
  xid bigint primary key,
  ids bigint[] not null,
  policy jsonb not null,
  worker text not null,
  claimed_at timestamptz not null default now()
);
alter table pubsub.notification add column isolated boolean not null default false;
create index notification_isolated on pubsub.notification (id) where isolated and dead_at is null;

-- Counts the attempts of claims whose transaction aborted (the record is still there, its transaction
-- is over and did not commit; null = too old to tell, which cannot be a commit either; a record of a
-- committed claim, which arrived after that commit, is only dropped): attempts + one
-- per lost claim, the row isolated, a retry after the listener's backoff, or dead at its maxAttempts
-- (policy: listener -> [maxAttempts, baseMs, maxMs]). Rows locked right now were claimed again already;
-- their new attempt settles them, so they are skipped, never waited for. PL/pgSQL so that its plan is
-- made once per session: every claim calls it. Runs with the caller's rights (the worker's), so
-- EXECUTE for PUBLIC gives nobody anything.
create function pubsub.reap_lost_claims()
returns table (id text, channel text, listener text, attempts integer, dead boolean)
language plpgsql set search_path = pg_catalog, pg_temp as $$
#variable_conflict use_column
begin
  return query with stale as (
      delete from pubsub.claim where xid in (
        select xid from pubsub.claim where txid_status(xid) is distinct from 'in progress' for update skip locked)
      returning ids, policy, worker, claimed_at, coalesce(txid_status(xid), 'aborted') as status
    ), lost as (
      select u.id, count(*)::int as times, max(s.worker) as worker, max(s.claimed_at) as claimed_at, (array_agg(s.policy))[1] as policy
      from stale s, unnest(s.ids) u(id) where s.status = 'aborted' group by u.id
    ), target as (
      select n.id, n.attempts + l.times as attempts, coalesce(l.policy -> n.listener, '[10, 1000, 300000]') as p, l.worker, l.claimed_at
      from pubsub.notification n join lost l on l.id = n.id where n.dead_at is null for update of n skip locked
    )
    update pubsub.notification n set
      attempts = t.attempts, isolated = true, last_attempt_at = t.claimed_at,
      last_error = format('the attempt never ended: its transaction was lost (worker %s died, its connection was cut or timed out, or the server restarted); claimed at %s', t.worker, t.claimed_at),
      run_at = now() + make_interval(secs => (least((t.p ->> 2)::float8, (t.p ->> 1)::float8 * 2 ^ least(t.attempts - 1, 40)) * (0.5 + random() / 2)) / 1000),
      dead_at = case when t.attempts >= (t.p ->> 0)::int then now() end
    from target t where n.id = t.id
    returning n.id::text as id, n.channel, n.listener, n.attempts, n.dead_at is not null as dead;
end
$$;

${CHANNEL_DDL_V3}

${SECURITY_DDL_V3}`,
  4: `-- Version 4: schedules (@Every, @Cron). One row per schedule, written by the workers: every slot up to
-- covered_until is settled (run or skipped), advanced in the transaction that stores the slot's run, so
-- a slot runs once across all workers and a restart neither repeats nor loses one.
create table pubsub.schedule (
  name text primary key,
  kind text not null,
  expression text not null,
  time_zone text,
  catch_up text not null,
  covered_until timestamptz not null,
  last_slot timestamptz,
  last_run_at timestamptz,
  runs bigint not null default 0,
  skipped bigint not null default 0,
  created_at timestamptz not null default now()
);`,
  5: `-- Version 5: the wake-up check costs writers less. pubsub.wake() runs with its caller's rights and
-- search_path, without a GUC save and restore per call: its only callers, pubsub.notify() and the trigger
-- functions, are SECURITY DEFINER with a pinned search_path (EXECUTE stays revoked from PUBLIC, and it
-- names every function it calls with its schema). Trigger functions generated from now on write the same
-- handshake inline instead of calling it; older ones keep calling it, on the same locks.
create or replace function pubsub.wake(channel_name text) returns void
language plpgsql as $$
begin
  ${wakeUpSql('channel_name')}
end
$$;`,
  6: `-- Version 6: bridges from a broker (bridge.ts). A bridge stores a batch of broker messages as durable
-- notifications and acks them after the commit; a crash between the two redelivers them. The message
-- ids a bridge stored are kept here for its de-duplication window, written in the storing transaction,
-- so a redelivered message is recognised and not stored twice.
create table pubsub.bridge_seen (
  bridge text not null,
  message_id text not null,
  seen_at timestamptz not null default now(),
  primary key (bridge, message_id)
);
create index bridge_seen_at on pubsub.bridge_seen (bridge, seen_at);

-- Stores a batch in one statement (one transaction in autocommit), in array order: a message whose id
-- (message_ids[i], null: none) the bridge stored within keep_seconds is skipped; the others become
-- durable notifications on channel_name through pubsub.notify (declared durable, strictly). Returns the
-- id of each message's notification, null for a duplicate. Also forgets up to 1000 of the bridge's ids
-- older than keep_seconds. Security definer: a bridge's role needs only EXECUTE on this function.
create function pubsub.bridge_store(bridge_name text, channel_name text, message_ids text[], payloads text[],
    contexts text[], keep_seconds float8) returns bigint[]
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  ids bigint[] := '{}';
  i integer;
begin
  delete from pubsub.bridge_seen s where (s.bridge, s.message_id) in (
    select o.bridge, o.message_id from pubsub.bridge_seen o
    where o.bridge = bridge_name and o.seen_at < now() - make_interval(secs => keep_seconds)
    limit 1000 for update skip locked);
  for i in 1 .. coalesce(array_length(payloads, 1), 0) loop
    if message_ids[i] is not null then
      insert into pubsub.bridge_seen (bridge, message_id) values (bridge_name, message_ids[i])
        on conflict (bridge, message_id) do update set seen_at = excluded.seen_at
        where pubsub.bridge_seen.seen_at < now() - make_interval(secs => keep_seconds);
      if not found then
        ids := ids || null::bigint;
        continue;
      end if;
    end if;
    ids := ids || pubsub.notify(channel_name, payloads[i]::jsonb, contexts[i]::jsonb, true, true);
  end loop;
  return ids;
end
$$;
revoke all on function pubsub.bridge_store(text, text, text[], text[], text[], float8) from public;`,
  7: `-- Version 7: the common claim (see claimSql) as a function, so that its plan is made once per server
-- session instead of on every claim (planning the claim's DELETE was 0.2 ms of each claim's server time;
-- a function's plans are kept per session, which works through any pooler, unlike PREPARE). Deletes and
-- returns, in one statement, up to max_rows ready rows of each listener_names[i] after cursors[i] (null:
-- from the start) and up to max_rows ready unassigned rows of channels (listener null), each part in id
-- order, skipping locked rows; context_filter: only rows whose context contains it (null: all).
-- One cached (generic) plan serves every listener, so it must not depend on a listener's backlog: each
-- part walks the (listener, id) index from its cursor, which only that index can do without sorting
-- (the order is by listener, then id; listener >= x and listener <= x, not =, keeps listener in it), with
-- sorting and sequential scans ruled out (the DELETE stays on the primary key whatever the table's size
-- when the plan was made). Runs with the caller's rights (the worker's: DELETE on pubsub.notification),
-- so EXECUTE for PUBLIC, granted deliberately, gives nobody anything: every worker role can call it.
create function pubsub.claim_ready(listener_names text[], cursors bigint[], channels text[], max_rows integer, context_filter jsonb)
returns table (id text, channel text, listener text, payload text, context text, attempts integer, created_at text,
  order_key text, isolated boolean, latency_ms double precision)
language plpgsql
set search_path = pg_catalog, pg_temp set plan_cache_mode = force_generic_plan set enable_sort = off set enable_seqscan = off as $$
begin
  return query delete from pubsub.notification n where n.id = any(array(
      select c.id from unnest(listener_names, cursors) l(name, after) cross join lateral (
        select h.id from pubsub.notification h
        where h.listener >= l.name and h.listener <= l.name and h.id > coalesce(l.after, 0)
          and not h.isolated and h.dead_at is null and h.run_at <= now() and (context_filter is null or h.context @> context_filter)
        order by h.listener, h.id limit max_rows for update skip locked) c
      union all
      select u.id from (
        select h.id from pubsub.notification h
        where h.listener is null and h.channel = any(channels)
          and not h.isolated and h.dead_at is null and h.run_at <= now() and (context_filter is null or h.context @> context_filter)
        order by h.listener, h.id limit max_rows for update skip locked) u))
    returning n.id::text, n.channel, n.listener, n.payload::text, n.context::text, n.attempts, n.created_at::text, n.order_key,
      n.isolated, date_part('epoch', now() - n.created_at) * 1000;
end
$$;
grant execute on function pubsub.claim_ready(text[], bigint[], text[], integer, jsonb) to public;`,
  8: `-- Version 8: order keys stored by the writer. An ordered listener whose orderKey is a payload field path
-- (or that has one key) has the path here (one key: '{}'); pubsub.notify() and the trigger functions store
-- each row's key with the row, so the worker no longer writes a second version of every row to key it.
-- null: the worker keys the rows (an orderKey function; rows stored before this version).
alter table pubsub.subscription add column order_path text[];

${notifyFunctionSql(true)}`,
  9: `-- Version 9: a claim's whole first round trip as one function call. pubsub.claim_next() does what the
-- claim script's statements did one by one (each parsed and planned on every claim: 0.13 ms of a
-- 0.27 ms round trip): keeps the claim session's idle limit at idle_ms when the session allows longer
-- (0: no limit; the setting ends with the transaction), counts lost claims (pubsub.reap_lost_claims(),
-- only while a claim is recorded), tells whether isolated rows wait, claims through
-- pubsub.claim_ready(), and returns, in this order, rows of kind 'reaped' (id, channel, listener,
-- attempts, dead), 'claimed' (the claimed rows, as claim_ready returns them) and one 'session' row (pid:
-- the server process; isolated: whether isolated rows wait; xid: the transaction id, null when nothing
-- was claimed). The look for isolated rows is planned on every call (EXECUTE), as the script's was: a
-- plan kept from a small table would scan the whole table on every claim where the partial index
-- notification_isolated answers at once (and a function-wide enable_seqscan = off also reached
-- reap_lost_claims(), which then walked whole indexes: several workers on one backlog drained at a
-- quarter of the rate). Runs with the caller's rights, like the functions it calls: EXECUTE for PUBLIC,
-- granted deliberately, gives nobody anything.
${claimNextFunctionSql(false)}
grant execute on function pubsub.claim_next(text[], bigint[], text[], integer, jsonb, integer) to public;`,
  10: `-- Version 10: a write for several listeners is stored once. Before, each durable listener of a channel
-- added a row of pubsub.notification to every write (its own copy of the payload, its index entries, its
-- WAL): the writer's cost grew by about a sixth per listener (bench W6). pubsub.notify() and the trigger
-- functions now store a notification for two or more listeners as one row here, naming them; a worker
-- turns it into the listeners' rows (pubsub.fan_out(), in a short transaction of its own, committed
-- before any listener runs), and from then on each listener's row has its own attempts, retries, dead
-- letter and order, as before. Ids come from pubsub.notification's sequence (an id names one stored
-- write, whichever table holds it); created_at is kept, so latency is measured from the write.
create table pubsub.fanout (
  id bigint primary key,
  channel text not null,
  listeners text[] not null,
  order_keys text[], -- each listener's order key, as its writer computed it (null: none has one)
  payload jsonb not null,
  context jsonb default nullif(current_setting('pubsub.context', true), '')::jsonb,
  created_at timestamptz not null default now()
);
do $$ begin
  execute format('alter table pubsub.fanout alter column id set default nextval(%L::regclass)', pg_get_serial_sequence('pubsub.notification', 'id'));
end $$;

-- Moves up to max_rows waiting writes, oldest first, into their listeners' rows of pubsub.notification
-- (each with the order key its writer stored for it; the first listener's row keeps the write's id, which
-- pubsub.notify() returned, the others get new ones in the order of the writes), wakes the
-- channels' sleeping workers, and returns how many writes it moved. One caller at a time (an advisory
-- lock to the end of the transaction: call it in a transaction of its own), so that the rows get ids in
-- the order of the writes, as ordered listeners need. SECURITY DEFINER, so that worker roles need no
-- grant on pubsub.fanout; EXECUTE for PUBLIC, granted deliberately: it only does what any worker does,
-- and returns nothing stored.
create function pubsub.fan_out(max_rows integer) returns integer
language plpgsql security definer set search_path = pg_catalog, pg_temp as $$
declare
  moved integer;
  woken text[];
  c text;
begin
  perform pg_advisory_xact_lock(${FANOUT_LOCK}, 0);
  with f as (
    delete from pubsub.fanout where id in (select id from pubsub.fanout order by id limit max_rows)
    returning *
  ), first as (
    insert into pubsub.notification (id, channel, listener, payload, context, order_key, created_at) overriding system value
    select f.id, f.channel, f.listeners[1], f.payload, f.context, f.order_keys[1], f.created_at from f
  ), rest as (
    insert into pubsub.notification (channel, listener, payload, context, order_key, created_at)
    select f.channel, l.listener, f.payload, f.context, f.order_keys[l.n + 1], f.created_at
    from f cross join lateral unnest(f.listeners[2:]) with ordinality l(listener, n)
    order by f.id, l.n
  ) select count(*)::int, array_agg(distinct f.channel) into moved, woken from f;
  foreach c in array coalesce(woken, '{}') loop
    ${wakeUpSql('c')}
  end loop;
  return moved;
end
$$;
grant execute on function pubsub.fan_out(integer) to public;

-- Whether writes wait to be moved (claim_next() tells its worker on every claim: PL/pgSQL, so that its
-- plan is made once per session). SECURITY DEFINER, EXECUTE for PUBLIC deliberately: it tells only that.
create function pubsub.fanout_waiting() returns boolean
language plpgsql stable security definer set search_path = pg_catalog, pg_temp as $$
begin
  return exists (select 1 from pubsub.fanout);
end
$$;
grant execute on function pubsub.fanout_waiting() to public;

-- The waiting writes per channel and listener (pubsub status, metrics, drainOnce()): how many, and the
-- oldest. SECURITY DEFINER, EXECUTE for PUBLIC deliberately: counts only, as pubsub status shows them.
create function pubsub.fanout_backlog() returns table (channel text, listener text, waiting integer, oldest timestamptz)
language sql stable security definer set search_path = pg_catalog, pg_temp as $$
  select f.channel, l, count(*)::int, min(f.created_at) from pubsub.fanout f, unnest(f.listeners) l group by 1, 2
$$;
grant execute on function pubsub.fanout_backlog() to public;

${notifyFunctionSql(true, true)}

${claimNextFunctionSql(true)}`,
};

/** Lets `roles` call pubsub.notify() (durable `notify()`); `revoke` takes it back from `removed`. */
export function notifyGrantSql(roles: string[], removed: string[] = []): string {
  const lines: string[] = [];
  for (const role of roles) {
    lines.push(`grant usage on schema pubsub to ${ident(role)};`, `grant execute on function pubsub.notify(text, jsonb, jsonb, boolean, boolean) to ${ident(role)};`);
  }
  // USAGE is left in place: the role may have it for other reasons, and alone it reads nothing.
  for (const role of removed) lines.push(`revoke execute on function pubsub.notify(text, jsonb, jsonb, boolean, boolean) from ${ident(role)};`);
  return lines.join('\n');
}

/** Upgrade script from version `from` (0 = nothing installed) to the current version. */
export function librarySchemaSql(from: number): string {
  const steps: string[] = [];
  for (let v = from + 1; v <= LIBRARY_SCHEMA_VERSION; v++) steps.push(LIBRARY_SCHEMA[v]!);
  return steps.join('\n\n');
}

export interface TriggerDefinition {
  /** Routes notifications to the listeners of this definition, e.g. `after_insert_1a2b3c4d`. */
  key: string;
  channel: string;
  durable: boolean;
  spec: TriggerSpec;
  model: PrismaModel;
  /** Durable: each notification is stored once per listener. */
  listeners: string[];
  /** Durable: listener → the path of the order key the trigger stores with its rows (see `orderPath`); [] one key. */
  orderPaths?: Record<string, string[]>;
}

/** Version of a model's shape as triggers send it: changes when a field is added, removed or retyped. */
export function modelVersion(model: PrismaModel): string {
  const shape = model.fields.map((f) => [f.name, f.type, f.list, f.optional]);
  return createHash('sha1').update(JSON.stringify(shape)).digest('hex').slice(0, 8);
}

/** Stable key of a trigger definition: listeners with the same spec and channel share one trigger. */
export function triggerKey(spec: TriggerSpec, channel: string, durable: boolean): string {
  // The selection joins the hashed list only when set, so keys of triggers without one stay as they were.
  const parts: unknown[] = [spec.model, spec.when, spec.events, spec.condition ?? null, spec.columns ?? null, channel, durable];
  if (spec.select !== undefined) parts.push(spec.select);
  const hash = createHash('sha1')
    .update(JSON.stringify(parts))
    .digest('hex')
    .slice(0, 8);
  return `${spec.when}_${spec.events.join('_')}_${hash}`.toLowerCase();
}

/** The longest prefix of `text` that fits in `bytes` bytes of UTF-8 without splitting a character. */
function byteSlice(text: string, bytes: number): string {
  let out = '';
  for (const ch of text) {
    if (Buffer.byteLength(out + ch) > bytes) break;
    out += ch;
  }
  return out;
}

export function triggerNames(def: TriggerDefinition): { functionName: string; triggerName: string } {
  // Identifiers are limited to 63 bytes, not characters: a multibyte table name must be cut by bytes.
  const room = 63 - 'tg___'.length - def.key.length;
  return {
    functionName: `tg_${byteSlice(def.model.table, room)}__${def.key}`,
    triggerName: `_900_pubsub_${def.key}`,
  };
}

const tableRef = (model: PrismaModel) => (model.schema ? `${ident(model.schema)}.` : '') + ident(model.table);

/** JSON form of one field: exact text for BigInt/Decimal, base64 for Bytes, the value otherwise. */
function fieldJson(field: PrismaField, record: 'OLD' | 'NEW'): string {
  const col = `${record}.${ident(field.column)}`;
  if (field.type === 'BigInt' || field.type === 'Decimal') return `to_jsonb(${col}::text${field.list ? '[]' : ''})`;
  if (field.type === 'Bytes') {
    return field.list ? `(select jsonb_agg(encode(b, 'base64')) from unnest(${col}) b)` : `to_jsonb(encode(${col}, 'base64'))`;
  }
  return `to_jsonb(${col})`;
}

/** jsonb_build_object takes at most 100 arguments, so wide rows are built in chunks and concatenated. */
function rowJson(fields: PrismaField[], record: 'OLD' | 'NEW'): string {
  const pairs = fields.map((f) => `${literal(f.name)}, ${fieldJson(f, record)}`);
  const chunks: string[] = [];
  for (let i = 0; i < pairs.length; i += 50) chunks.push(`jsonb_build_object(${pairs.slice(i, i + 50).join(', ')})`);
  return chunks.join(' || ') || `'{}'::jsonb`;
}

const TYPED = new Set(['BigInt', 'Decimal', 'DateTime', 'Bytes', 'Float']);

/**
 * The fields a trigger sends: `select` (plus the primary key), every field for `'*'`, and by default
 * every field on durable channels (stored where ordinary roles cannot read) but only the primary key
 * on non-durable ones, whose NOTIFY any role that can connect may LISTEN to.
 */
export function selectedFields(def: Pick<TriggerDefinition, 'durable' | 'spec' | 'model'>): PrismaField[] {
  const { select } = def.spec;
  const { fields, primaryKey } = def.model;
  if (select === '*' || (select === undefined && def.durable)) return fields;
  const wanted = new Set([...primaryKey, ...(select ?? [])]);
  return fields.filter((f) => wanted.has(f.name));
}

function payloadJson(def: TriggerDefinition, fields: PrismaField[], truncated: boolean): string {
  const partial = fields.length < def.model.fields.length;
  const types = Object.fromEntries(fields.filter((f) => TYPED.has(f.type)).map((f) => [f.name, f.type + (f.list ? '[]' : '')]));
  const parts = [
    `'op', TG_OP`,
    `'when', TG_WHEN`,
    `'model', ${literal(def.model.name)}`,
    `'trigger', ${literal(def.key)}`,
    `'v', ${literal(modelVersion(def.model))}`,
    ...(Object.keys(types).length ? [`'types', ${literal(JSON.stringify(types))}::jsonb`] : []),
    `'old', case when TG_OP <> 'INSERT' then ${rowJson(fields, 'OLD')} end`,
    `'new', case when TG_OP <> 'DELETE' then ${rowJson(fields, 'NEW')} end`,
    ...(truncated ? [`'truncated', true`] : []),
    // Tells the reader that missing fields were left out on purpose (not a model change).
    ...(partial ? [`'partial', true`] : []),
  ];
  return `jsonb_build_object(\n      ${parts.join(',\n      ')})`;
}

/**
 * A dollar-quote tag that does not occur in `body`: `$pubsub$`, else `$pubsub_1$`, `$pubsub_2$`…
 * Column names (`@map`) are free text and end up in the body, so a fixed tag could be closed by one.
 */
export function dollarTag(body: string): string {
  let tag = '$pubsub$';
  for (let n = 1; body.includes(tag); n++) tag = `$pubsub_${n}$`;
  return tag;
}

/**
 * The trigger function. Durable: stores the payload and sends an empty wake-up, so no row size can
 * fail the user's write. Non-durable: sends the payload itself; one that would exceed NOTIFY's 8000
 * bytes is sent with only the primary key fields and `truncated: true` instead of failing the write.
 * Either way the row images hold only the selected fields (see `selectedFields`).
 * A BEFORE trigger returns the row untouched (OLD for DELETE), so it never changes or cancels it.
 * Security definer, so the app's role needs no grants on the pubsub schema for its writes to work;
 * EXECUTE is revoked from PUBLIC (triggers fire whatever the writer's EXECUTE rights), so that nobody
 * can call it to run the owner's inserts with forged rows.
 */
export function triggerFunctionSql(def: TriggerDefinition): string {
  const { functionName } = triggerNames(def);
  const source = triggerFunctionSource(def);
  const tag = dollarTag(source);
  return `create or replace function pubsub.${ident(functionName)}() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as ${tag}${source}${tag};
revoke all on function pubsub.${ident(functionName)}() from public;`;
}

/** The trigger function's PL/pgSQL body, exactly as PostgreSQL keeps it (`pg_proc.prosrc`), so `pubsub status` can compare. */
export function triggerFunctionSource(def: TriggerDefinition): string {
  const channel = literal(def.channel);
  const ret = def.spec.when === 'BEFORE' ? `if TG_OP = 'DELETE' then return OLD; end if;\n  return NEW;` : 'return null;';
  let body: string;
  let declare: string;
  const fields = selectedFields(def);
  if (def.durable) {
    // The context column's default picks up pubsub.context, as for notify().
    declare = `  payload jsonb := ${payloadJson(def, fields, false)};`;
    const listeners = def.listeners.map(literal);
    const paths = def.orderPaths ?? {};
    const key = (l: string) => (paths[l] ? constantPathKeySql('payload', paths[l]!) : 'null');
    const keyed = def.listeners.some((l) => paths[l]);
    let insert: string;
    if (listeners.length > 1) {
      // Several listeners: the write is stored once, with each one's key; a worker makes their rows (pubsub.fan_out()).
      insert = `insert into pubsub.fanout (channel, listeners, order_keys, payload) values (${channel}, array[${listeners.join(', ')}]::text[], ${keyed ? `array[${def.listeners.map(key).join(', ')}]::text[]` : 'null'}, payload)`;
    } else if (keyed) {
      // An ordered listener keyed by a path gets its key with the row (version 8).
      insert = `insert into pubsub.notification (channel, listener, payload, order_key) values (${channel}, ${listeners[0]}, payload, ${key(def.listeners[0]!)})`;
    } else {
      insert = `insert into pubsub.notification (channel, listener, payload) values (${channel}, ${listeners[0]}, payload)`;
    }
    body = `  ${insert};
  ${wakeUpSql(channel)}`;
  } else {
    const keys = def.model.fields.filter((f) => def.model.primaryKey.includes(f.name));
    declare = `  context jsonb := nullif(current_setting('pubsub.context', true), '')::jsonb;
  payload text;`;
    const withContext = (json: string) => `(${json} || case when context is null then '{}'::jsonb else jsonb_build_object('context', context) end)::text`;
    body = `  payload := ${withContext(payloadJson(def, fields, false))};
  if octet_length(payload) > 7999 then
    payload := ${withContext(payloadJson(def, keys, true))};
  end if;
  perform pg_notify(${channel}, payload);`;
  }
  return `
declare
${declare}
begin
${body}
  ${ret}
end
`;
}

function triggerEvents(def: TriggerDefinition): string {
  const { spec, model } = def;
  return spec.events
    .map((e) => {
      if (e !== 'UPDATE' || !spec.columns) return e;
      const columns = spec.columns.map((name) => {
        const field = model.fields.find((f) => f.name === name);
        if (!field) throw new PubSubError('pubsub.schema', `Trigger on ${model.name}: columns names "${name}", which is not a field of ${model.name}.`);
        return ident(field.column);
      });
      return `UPDATE OF ${columns.join(', ')}`;
    })
    .join(' OR ');
}

const whenClause = (def: TriggerDefinition) => (def.spec.condition ? `\n  when (${conditionSql(def.spec.condition, def.model, def.listeners.join(', '))})` : '');

export function createTriggerSql(def: TriggerDefinition): string {
  const { functionName, triggerName } = triggerNames(def);
  const { spec, model } = def;
  return `drop trigger if exists ${ident(triggerName)} on ${tableRef(model)};
create trigger ${ident(triggerName)} ${spec.when} ${triggerEvents(def)} on ${tableRef(model)}
  for each row${whenClause(def)} execute function pubsub.${ident(functionName)}();`;
}

const PG_TYPES: Record<string, string> = {
  String: 'text',
  Boolean: 'boolean',
  Int: 'integer',
  BigInt: 'bigint',
  Float: 'double precision',
  Decimal: 'numeric',
  DateTime: 'timestamp(3)',
  Json: 'jsonb',
  Bytes: 'bytea',
};

/** Checking a condition: a scratch table (dropped at the end of the transaction) with the model's columns. */
export function scratchTableSql(model: PrismaModel, like: boolean): string {
  if (like) return `create temp table pubsub_condition_check (like ${tableRef(model)}) on commit drop`;
  const columns = model.fields.map((f) => `${ident(f.column)} ${PG_TYPES[f.type] ?? 'text'}${f.list ? '[]' : ''}`);
  return `create temp table pubsub_condition_check (${columns.join(', ')}) on commit drop`;
}

/** The trigger as createTriggerSql makes it, on the scratch table, with a built-in trigger function. */
export function conditionCheckSql(def: TriggerDefinition): string {
  return `create trigger pubsub_condition_check ${def.spec.when} ${triggerEvents(def)} on pg_temp.pubsub_condition_check
  for each row${whenClause(def)} execute function pg_catalog.suppress_redundant_updates_trigger()`;
}

/**
 * Column names of the model's table as the database has it ($1: the table reference); none when it
 * does not exist or this role may not read it (`create table … (like t)` needs SELECT on t).
 */
export const tableColumnsSql = `select coalesce(array_agg(attname::text), '{}') as columns from pg_attribute
  where attrelid = to_regclass($1) and attnum > 0 and not attisdropped and has_table_privilege(attrelid, 'select')`;
export const tableReference = (model: PrismaModel) => tableRef(model);

/** Drops a trigger and its function, as recorded in an earlier migration's state. */
export function dropTriggerSql(t: { schema?: string; table: string; trigger: string; function: string }): string {
  const table = (t.schema ? `${ident(t.schema)}.` : '') + ident(t.table);
  return `drop trigger if exists ${ident(t.trigger)} on ${table};
drop function if exists pubsub.${ident(t.function)}();`;
}

/**
 * Records the listeners of every channel (`add`, `remove`) and the order key paths the writers store
 * with their rows (`keys`: path, or null for none; added subscriptions not named get null), as the
 * generated migration installs them.
 */
export function subscriptionsSql(
  add: Array<{ channel: string; listener: string }>,
  remove: Array<{ channel: string; listener: string }>,
  keys: Array<{ channel: string; listener: string; path: string[] | null }> = [],
): string {
  const lines: string[] = [];
  const path = (p: string[] | null | undefined) => (p ? pathArray(p) : 'null');
  const keyOf = new Map(keys.map((k) => [`${k.channel} ${k.listener}`, k.path]));
  if (add.length) {
    const values = add.map((s) => `(${literal(s.channel)}, ${literal(s.listener)}, ${path(keyOf.get(`${s.channel} ${s.listener}`))})`);
    lines.push(`insert into pubsub.subscription (channel, listener, order_path) values\n  ${values.join(',\n  ')}\n  on conflict (channel, listener) do update set order_path = excluded.order_path;`);
  }
  const added = new Set(add.map((s) => `${s.channel} ${s.listener}`));
  for (const k of keys) {
    if (!added.has(`${k.channel} ${k.listener}`)) lines.push(`update pubsub.subscription set order_path = ${path(k.path)} where channel = ${literal(k.channel)} and listener = ${literal(k.listener)};`);
  }
  for (const s of remove) lines.push(`delete from pubsub.subscription where channel = ${literal(s.channel)} and listener = ${literal(s.listener)};`);
  return lines.join('\n');
}

/** Records the mode of each channel (pubsub.channel), as the generated migration installs them. */
export function channelsSql(set: Array<{ name: string; durable: boolean }>, remove: string[]): string {
  const lines: string[] = [];
  if (set.length) {
    lines.push(`insert into pubsub.channel (name, durable) values\n  ${set.map((c) => `(${literal(c.name)}, ${c.durable})`).join(',\n  ')}\n  on conflict (name) do update set durable = excluded.durable, updated_at = now();`);
  }
  if (remove.length) lines.push(`delete from pubsub.channel where name in (${remove.map(literal).join(', ')});`);
  return lines.join('\n');
}

export function modelSql(model: PrismaModel): string {
  const fields = model.fields.map((f) => ({ name: f.name, type: f.type, list: f.list, optional: f.optional }));
  return `insert into pubsub.model (name, version, fields) values (${literal(model.name)}, ${literal(modelVersion(model))}, ${literal(JSON.stringify(fields))})
  on conflict (name) do update set version = excluded.version, fields = excluded.fields;`;
}

// Runtime statements of the worker.

const returning = `returning n.id::text as id, n.channel, n.listener, n.payload::text as payload, n.context::text as context,
  n.attempts, n.created_at::text as created_at, n.order_key, n.isolated,
  date_part('epoch', now() - n.created_at) * 1000 as latency_ms`;
/** Ordered claims also return what a row held back (not attempted) needs to go back unchanged. */
const orderedReturning = `${returning}, n.last_error, n.last_attempt_at::text as last_attempt_at`;

export interface ClaimTarget {
  /** Listener names; one ordered listener for `ordered`. */
  listeners: string[];
  /** Channels whose unassigned rows (listener null: stored by version 1 or before anyone subscribed) are taken too. */
  unassigned: string[];
  limit: number;
  /** Only notifications whose context contains this JSON. */
  context: string | null;
  /**
   * Ordered listener: claim the heads of keys (the first row of a key, none earlier waiting, failing or
   * running elsewhere), each with the rows of its key that follow it, in id order, up to the first one
   * that is not ready; `limit` rows in all. Its cursor is `afterKey`.
   */
  ordered?: boolean;
  /** Ordered: rows of one key per claim at most. @defaultValue limit */
  runLimit?: number;
  /** Ordered: start at this key (the highest of the last full claim this round: its run may go on). */
  afterKey?: string;
  /** Ordered: the writers store the keys (a path): no look for unkeyed rows after the claim (see Drain.assignKeys). */
  writerKeyed?: boolean;
  /** Claim isolated rows (see version 3), one per transaction, of any of `listeners`; its cursor is `after.get('')`. */
  isolated?: boolean;
  /**
   * Per listener: start after this id (the last one claimed in this drain round). Deleted rows leave
   * dead index entries at the front of each listener's range until vacuum; starting after them keeps
   * a claim O(batch) instead of O(backlog drained since the last vacuum).
   */
  after?: Map<string, string>;
  /** The common claim written out as one statement, as before version 7, instead of calling pubsub.claim_ready() (tests compare the two). */
  inline?: boolean;
  /**
   * The server ends the claim's session when it sits idle in its transaction this long (a frozen
   * client, a listener far past its timeout), which frees the claimed rows. A shorter limit set on the
   * role or database is kept. 0 = none.
   */
  idleTimeoutMs: number;
}

/** Rows of an ordered listener that are the first of their key: no earlier row of the key exists. */
/**
 * A scalar subquery, not \`not exists\`: on one key with a large backlog the planner turned \`not exists\`
 * into a hash anti-join comparing every pair of the key's rows (6 s per claim at 8,000 rows).
 */
const headOfKey = `h.id = (select e.id from pubsub.notification e where e.listener = h.listener and e.order_key = h.order_key order by e.id limit 1)`;

/** A notification a worker may claim now: not dead, due, and within the worker's context filter (JSON text, or null: all). Shared by the claim and the last look before sleeping. */
function readySql(context: string | null): string {
  return `dead_at is null and run_at <= now()${context === null ? '' : ` and context @> ${literal(context)}::jsonb`}`;
}

/**
 * One simple-protocol round trip that begins the claim transaction and deletes, in it, up to `limit`
 * ready notifications of each listener, in id order, skipping locked ones; results: [begin, session
 * (server pid; idle limit), the rows of lost claims counted now (pubsub.reap_lost_claims(), not even
 * called while no claim is recorded: the common case, a single worker between claims), whether
 * isolated rows wait, the claimed rows, the transaction id (null when nothing was claimed: no xid is
 * spent on empty claims), and for an ordered listener whether rows wait for their key]. Counting lost claims first, in the same transaction, means a claim never
 * takes a row whose lost attempt is not counted yet (it is isolated by then): a row that kills its
 * worker cannot take its neighbours along again. If this transaction is lost too, so is the count, and
 * the next claim makes it. The rows stay invisible to other workers until commit; a failed one is put
 * back by `restoreSql`. The statement is built from the worker's own configuration (listener
 * and channel names, limit, context filter, cursors read from the database), quoted with escapeLiteral:
 * the simple protocol takes no bind parameters, and it saves a round trip on every wake-up. Each
 * listener gets its own subquery with its name as a constant, so the planner walks (listener, id) in
 * order and never sorts the backlog; `id = any(array(…))` keeps the delete on the primary key even when
 * the table's statistics are stale (a burst after an idle period). The common claim (neither ordered
 * nor isolated) is two statements instead: begin, and pubsub.claim_next() (version 9), which does all of
 * the above in one call and claims through pubsub.claim_ready() (version 7), the same claim with a plan
 * made once per server session (planning the written-out statement was the larger part of a claim's
 * server time); `readClaim()` in drain.ts reads either shape.
 */
export function claimSql(target: ClaimTarget): string {
  const ready = readySql(target.context);
  const limit = Math.trunc(target.limit);
  const names = target.listeners.map(literal).join(', ');
  const channels = target.unassigned.map(literal).join(', ');
  /** Start after the cursor of `key` (ids read from the database, checked to be integers). */
  const cursor = (key: string) => {
    const after = target.after?.get(key);
    return after && /^\d+$/.test(after) ? after : undefined;
  };
  const from = (key: string) => (cursor(key) ? ` and id > ${cursor(key)}` : '');
  let ids: string;
  if (target.isolated) {
    const unassigned = channels ? ` or (h.listener is null and h.channel = any(array[${channels}]))` : '';
    ids = `select id from pubsub.notification h
    where isolated${from('')} and ${ready} and (h.listener = any(array[${names || 'null'}]::text[])${unassigned})
      and (h.order_key is null or ${headOfKey})
    order by id limit 1 for update skip locked`;
  } else if (target.ordered) {
    // Keys in index order by a skip scan over the (listener, order_key, id) index (one descent per
    // key, whatever a key's backlog), from the key where the last full claim of this round stopped.
    // Per key: its head (first row), locked (skip locked: holding a key's head is holding the key; no
    // other claim sees its later rows as heads while it exists), then its run: the key's rows from the
    // head on, cut at the first row that is not ready (dead, backing off, isolated, another context),
    // so a run never skips a row of its key. Nested loops under one limit: a claim walks only as many
    // keys as its rows need (one key with a long run, or many with one row each).
    const name = literal(target.listeners[0]!);
    const start = target.afterKey === undefined ? 'order_key is not null' : `order_key >= ${literal(target.afterKey)}`;
    ids = `with recursive keys(k) as (
      (select order_key from pubsub.notification where listener = ${name} and ${start} order by order_key limit 1)
      union all
      select (select order_key from pubsub.notification where listener = ${name} and order_key > keys.k order by order_key limit 1) from keys where keys.k is not null
    )
    select r.id from keys
    cross join lateral (select id, isolated, dead_at, run_at, context from pubsub.notification
      where listener = ${name} and order_key = keys.k order by id limit 1) f
    cross join lateral (select h.id from pubsub.notification h where h.id = f.id for update skip locked) h
    cross join lateral (select id from (select id, bool_and(ok) over (order by id) as run
      from (select id, (not isolated and ${ready}) as ok from pubsub.notification
        where listener = ${name} and order_key = keys.k and id >= f.id order by id limit ${Math.trunc(target.runLimit ?? limit)}) k) k where run) r
    where keys.k is not null and not f.isolated and ${ready}
    limit ${limit}`;
  } else {
    const parts = target.listeners.map(
      (name, i) => `select * from (select id from pubsub.notification where listener = ${literal(name)}${from(name)} and not isolated and ${ready} order by id limit ${limit} for update skip locked) l${i}`,
    );
    if (channels) {
      parts.push(`select * from (select id from pubsub.notification where listener is null and channel = any(array[${channels}]) and not isolated and ${ready} order by id limit ${limit} for update skip locked) unassigned`);
    }
    ids = parts.join('\n  union all ') || 'select null::bigint where false';
  }
  const idle = Math.trunc(target.idleTimeoutMs);
  const keepShorter = `current_setting('idle_in_transaction_session_timeout') = '0' or current_setting('idle_in_transaction_session_timeout')::interval > interval '${idle} ms'`;
  const session = idle > 0
    ? `select pg_backend_pid() as pid, case when ${keepShorter} then set_config('idle_in_transaction_session_timeout', '${idle}', true) end as idle`
    : `select pg_backend_pid() as pid`;
  const remove = `delete from pubsub.notification n where n.id = any(array(\n  ${ids}\n))`;
  // Ordered: each row also carries the highest key claimed (where a full claim's successor starts,
  // compared as the index compares), and the script ends by telling whether rows wait for their key.
  if (!target.ordered && !target.isolated && !target.inline) {
    const cursors = target.listeners.map((name) => cursor(name) ?? 'null').join(', ');
    return `begin;\nselect * from pubsub.claim_next(array[${names}]::text[], array[${cursors}]::bigint[], array[${channels}]::text[], ${limit}, ${target.context === null ? 'null' : `${literal(target.context)}::jsonb`}, ${Math.max(0, idle)})`;
  }
  const claim = target.ordered
    ? `with d as (${remove}\n${orderedReturning}) select *, max(order_key) over () as last_key from d`
    : `${remove}\n${returning}`;
  const unkeyed = target.ordered && !target.writerKeyed ? `;\nselect exists (select 1 from pubsub.notification where listener = ${literal(target.listeners[0]!)} and order_key is null) as unkeyed` : '';
  return `begin;\n${session};\nselect * from pubsub.reap_lost_claims() where exists (select 1 from pubsub.claim);\nselect exists (select 1 from pubsub.notification where isolated and dead_at is null) as isolated;\n${claim};\nselect txid_current_if_assigned()::text as xid${unkeyed}`;
}

/**
 * Ordered listener $1: notifications still waiting for their key after id $2, oldest first: by the bigint column
 * (`order by id` would sort the text alias, so "10" before "2", and give keys out of order).
 */
export const unkeyedSql = `select n.id::text as id, n.payload::text as payload from pubsub.notification n
  where n.listener = $1 and n.order_key is null and n.id > $2::bigint order by n.id limit 1000`;
export const setKeysSql = `update pubsub.notification n set order_key = k.key
  from unnest($1::bigint[], $2::text[]) k(id, key) where n.id = k.id`;

/**
 * Ordered listener $1 keyed by a path ($2, the segments; '{}' one key): gives its rows still without a
 * key (stored before version 8, or by a trigger function generated before the path) the key their
 * writer would have stored, computed in SQL as the writers do (orderKeySql), all of them: unkeyed rows
 * are the oldest here, and a row with its key stored must not run before an older one of its key.
 */
export const keyRowsSql = `update pubsub.notification n set order_key = ${orderKeySql('n.payload', '$2::text[]')}
  where n.listener = $1 and n.order_key is null`;

/**
 * Puts failed notifications back, claimed and deleted earlier in the same transaction, with the attempt
 * recorded. The payload and context go back as the exact text they were claimed as, never a re-encoding
 * of what a listener saw.
 */
export const restoreSql = `insert into pubsub.notification
    (id, channel, listener, payload, context, attempts, created_at, order_key, isolated, last_error, last_attempt_at, run_at, dead_at)
  overriding system value
  select f.id, f.channel, f.listener, f.payload::jsonb, f.context::jsonb, f.attempts + 1, f.created_at, f.order_key, f.isolated, f.error, now(),
         now() + make_interval(secs => f.delay), case when f.dead then now() end
  from unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::timestamptz[], $8::text[], $9::boolean[], $10::text[], $11::float8[], $12::boolean[])
    as f(id, channel, listener, payload, context, attempts, created_at, order_key, isolated, error, delay, dead)`;

/**
 * Puts rows of an ordered claim back exactly as they were claimed, without an attempt: those behind a
 * failed row of their key in the same claim, which must not run before it.
 */
export const holdBackSql = `insert into pubsub.notification
    (id, channel, listener, payload, context, attempts, created_at, order_key, isolated, last_error, last_attempt_at)
  overriding system value
  select f.id, f.channel, f.listener, f.payload::jsonb, f.context::jsonb, f.attempts, f.created_at, f.order_key, f.isolated, f.error, f.last_attempt_at
  from unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::int[], $7::timestamptz[], $8::text[], $9::boolean[], $10::text[], $11::timestamptz[])
    as f(id, channel, listener, payload, context, attempts, created_at, order_key, isolated, error, last_attempt_at)`;

/**
 * Records a claim before any of its listeners runs, in its own transaction (autocommit, on another
 * connection), so that it outlives the claim's transaction if that one never commits. Asynchronous
 * commit: it is made durable by the claim's own (synchronous) commit, so only a server crash in
 * between can lose it, and with it one attempt's count. Built from integers read from the database
 * and the worker's own names, quoted; the simple protocol is needed for SET LOCAL.
 */
export function recordClaimSql(xid: string, ids: string[], policy: Record<string, [number, number, number]>, worker: string): string {
  if (!/^\d+$/.test(xid) || !ids.every((id) => /^\d+$/.test(id))) throw new Error(`recordClaimSql: not integers: ${xid}, ${ids.join(',')}`);
  return `begin; set local synchronous_commit = off;
insert into pubsub.claim (xid, ids, policy, worker) values (${xid}, '{${ids.join(',')}}', ${literal(JSON.stringify(policy))}, ${literal(worker)});
commit`;
}

/** Settles a claim: its record goes with the transaction that commits its outcomes. */
export const settleClaimSql = (xid: string | null) => (xid && /^\d+$/.test(xid) ? `delete from pubsub.claim where xid = ${xid};\ncommit` : 'commit');

/** $1 channel, $2 payload JSON, $3 context JSON, $4 the publisher's idea of the mode, $5 whether it must match. */
export const notifySql = `select pubsub.notify($1, $2::jsonb, $3::jsonb, $4::boolean, $5::boolean)::text as id`;
export const setContextSql = `select set_config('pubsub.context', $1, true) is not null as ok`;
/** The transaction's context (pubsub.context) merged with $1 (a JSON object), for the rest of the transaction. */
const currentContext = `coalesce(nullif(current_setting('pubsub.context', true), '')::jsonb, '{}'::jsonb)`;
export const traceTransactionSql = `select set_config('pubsub.context', (${currentContext} || $1::jsonb)::text, true) is not null as ok`;
/** notifySql with $6, the trace context (a JSON object), added to the context: the given one, else the transaction's. */
export const tracedNotifySql = `select pubsub.notify($1, $2::jsonb, coalesce($3::jsonb, ${currentContext}) || $6::jsonb, $4::boolean, $5::boolean)::text as id`;
/** notifyMany(): notifySql for each of the payloads $2 (a text array of JSON), in their order, in one statement. */
export const notifyManySql = `select pubsub.notify($1, p::jsonb, $3::jsonb, $4::boolean, $5::boolean)::text as id from unnest($2::text[]) with ordinality as t(p, i) order by i`;
export const tracedNotifyManySql = `select pubsub.notify($1, p::jsonb, coalesce($3::jsonb, ${currentContext}) || $6::jsonb, $4::boolean, $5::boolean)::text as id from unnest($2::text[]) with ordinality as t(p, i) order by i`;

/** Drops every session lock of the LISTEN session (only sleep locks live there): no stray one can outlive a wake-up. */
export const wakeSql = `select pg_advisory_unlock_all()`;

/** What a worker's last look before sleeping covers: the rows its claims would take (see claimSql). */
export interface LookTarget {
  /** Channels whose sleep lock and gate it takes. */
  channels: string[];
  /** Listener ids it claims for. */
  listeners: string[];
  /** Channels whose unassigned rows it claims. */
  unassigned: string[];
  context: string | null;
}

/**
 * The worker's side of pubsub.wake()'s handshake, on its LISTEN session, in one simple-protocol round
 * trip (the worker's own names, quoted, as in claimSql), in a transaction: [register: hold the sleep
 * lock (session, shared, kept after the transaction)]; whether the gate is free, tried exclusively
 * without waiting (a waiting request would queue every later writer behind it): every writer that may
 * have missed the sleeper has committed; COMMIT, which releases the gate at once (a transaction-level
 * lock); then, in a new snapshot, the last look: whether any row the worker would claim is ready.
 * Results: begin, [sleep,] gate { clear }, commit, look { found }.
 */
export function settleSql(target: LookTarget, register: boolean): string {
  const array = (xs: string[]) => `array[${xs.map(literal).join(', ')}]::text[]`;
  const ready = readySql(target.context);
  const sleep = `select pg_advisory_lock_shared(${WAKE_SLEEP}, hashtext(c)) from unnest(${array(target.channels)}) c;\n`;
  return `begin;\n${register ? sleep : ''}select bool_and(pg_try_advisory_xact_lock(${WAKE_GATE}, hashtext(c))) as clear from unnest(${array(target.channels)}) c;
commit;
select exists (select 1 from pubsub.notification where listener = any(${array(target.listeners)}) and ${ready})
  or exists (select 1 from pubsub.notification where listener is null and channel = any(${array(target.unassigned)}) and ${ready})
  or pubsub.fanout_waiting() as found`;
}

export const listenSql = (channels: string[]) => channels.map((c) => `listen ${ident(c)}`).join('; ');

/** The library's schema version in this database: 0 = not installed. */
export const schemaVersionSql = `select case
    when to_regclass('pubsub.notification') is null then 0
    when to_regclass('pubsub.subscription') is null then 1
    when to_regclass('pubsub.claim') is null then 2
    when to_regclass('pubsub.schedule') is null then 3
    when (select prosecdef from pg_proc where oid = to_regprocedure('pubsub.wake(text)')) then 4
    when to_regclass('pubsub.bridge_seen') is null then 5
    when to_regprocedure('pubsub.claim_ready(text[], bigint[], text[], integer, jsonb)') is null then 6
    when not exists (select 1 from pg_attribute where attrelid = to_regclass('pubsub.subscription') and attname = 'order_path' and not attisdropped) then 7
    when to_regprocedure('pubsub.claim_next(text[], bigint[], text[], integer, jsonb, integer)') is null then 8
    when to_regclass('pubsub.fanout') is null then 9
    else 10 end as version`;

/**
 * What maintain.ts decides on, for pubsub.notification: whether this role may vacuum and reindex it
 * (owner, or MAINTAIN on PostgreSQL 17), live and dead rows (statistics), table and index bytes, how
 * long the oldest open transaction of another client of this database has been running (seconds; 0:
 * none), and the indexes an interrupted REINDEX CONCURRENTLY left invalid.
 */
export const maintenanceStateSql = `select
    pg_has_role(c.relowner, 'USAGE')
      or case when current_setting('server_version_num')::int >= 170000 then has_table_privilege(c.oid, 'MAINTAIN') else false end as allowed,
    coalesce(s.n_live_tup, 0)::float8 as live, coalesce(s.n_dead_tup, 0)::float8 as dead,
    pg_relation_size(c.oid)::float8 as heap, pg_indexes_size(c.oid)::float8 as indexes,
    coalesce((select extract(epoch from now() - min(a.xact_start)) from pg_stat_activity a
      where a.datname = current_database() and a.backend_type = 'client backend' and a.pid <> pg_backend_pid() and a.backend_xmin is not null), 0)::float8 as oldest_s,
    array(select i.relname::text from pg_index x join pg_class i on i.oid = x.indexrelid
      where x.indrelid = c.oid and not x.indisvalid and i.relname ~ '_cc(new|old)[0-9]*$') as leftovers
  from pg_class c left join pg_stat_user_tables s on s.relid = c.oid
  where c.oid = 'pubsub.notification'::regclass`;

/** Whether autovacuum looks after pubsub.notification: on for the server, and not turned off on the table. */
export const autovacuumSql = `select current_setting('autovacuum')::boolean and not exists (
    select 1 from pg_class c, unnest(c.reloptions) o where c.oid = 'pubsub.notification'::regclass and o ~* '^autovacuum_enabled=(false|off|no|n|f|0)$') as on`;

/** drainOnce(): the stored rows of $1 (listener ids; $2 channels, for rows stored before anyone subscribed; $3 a context filter or null), due now and not yet. */
export const backlogSql = `select count(*) filter (where run_at <= now())::int
    + (select coalesce(sum(b.waiting), 0)::int from pubsub.fanout_backlog() b where b.listener = any($1::text[])) as due,
    count(*) filter (where run_at > now())::int as waiting
  from pubsub.notification
  where dead_at is null and (listener = any($1::text[]) or (listener is null and channel = any($2::text[])))
    and ($3::jsonb is null or context @> $3::jsonb)`;
export const subscriptionsOfSql = `select channel, listener from pubsub.subscription where listener = any($1::text[])`;
export const modelsSql = `select name, version, fields from pubsub.model`;

/**
 * One scrape of the metrics, $1 the worker's channels: per (channel, listener) the pending and dead
 * counts and the oldest pending age (listener '' for rows stored before anyone subscribed); the NOTIFY
 * queue's usage; the age of the oldest open transaction of any worker connection.
 */
export const scrapeSql = `select
  (select coalesce(json_agg(b), '[]') from (
    select channel, coalesce(listener, '') as listener,
      count(*) filter (where dead_at is null)::int as pending,
      count(*) filter (where dead_at is not null)::int as dead,
      coalesce(extract(epoch from now() - min(created_at) filter (where dead_at is null)), 0)::float8 as oldest
    from (select channel, listener, dead_at, created_at from pubsub.notification where channel = any($1::text[])
      union all select f.channel, f.listener, null, f.oldest from pubsub.fanout_backlog() f, generate_series(1, f.waiting)
        where f.channel = any($1::text[])) n group by 1, 2) b) as backlog,
  pg_notification_queue_usage()::float8 as queue_usage,
  (select coalesce(extract(epoch from now() - min(xact_start)), 0)::float8 from pg_stat_activity
    where application_name = 'pubsub:worker' and xact_start is not null) as oldest_xact`;

// Dead letters.
const deadFilter = `dead_at is not null and ($1::bigint is null or id = $1) and ($2::text is null or channel = $2) and ($3::text is null or listener = $3)`;
// \`order by n.id\`: a bare \`id\` would sort the text alias ("10" before "9").
export const deadListSql = `select n.id::text as id, channel, listener, attempts, last_error, created_at, last_attempt_at, dead_at
  from pubsub.notification n where ${deadFilter} order by n.id limit $4`;
export const deadShowSql = `select id::text as id, channel, listener, payload, context, attempts, last_error, created_at, last_attempt_at, dead_at
  from pubsub.notification where id = $1`;
/** The dead list with payloads and contexts, for the dashboard ($4: limit). */
export const deadPageSql = `select n.id::text as id, channel, listener, attempts, last_error, created_at, last_attempt_at, dead_at, payload, context
  from pubsub.notification n where ${deadFilter} order by n.id limit $4`;
export const deadCountSql = `select count(*)::int as count from pubsub.notification where ${deadFilter}`;
/**
 * One chunk of a retry or purge: up to $5 dead notifications with ids above $4, in id order, locked so
 * that two operators cannot act on one row twice. Returns the chunk's last id (the next cursor; null
 * when nothing is left), how many were changed and the channels to wake.
 */
const deadChunk = (change: string) => `with picked as (
    select id from pubsub.notification where ${deadFilter} and id > $4::bigint order by id limit $5 for update
  ), changed as (${change} returning n.channel)
  select (select max(id)::text from picked) as last, (select count(*)::int from changed) as count,
    (select coalesce(array_agg(distinct channel), '{}') from changed) as channels`;
export const deadRetrySql = deadChunk(
  `update pubsub.notification n set dead_at = null, attempts = 0, run_at = now() from picked p where n.id = p.id and n.dead_at is not null`,
);
export const deadPurgeSql = deadChunk(`delete from pubsub.notification n using picked p where n.id = p.id and n.dead_at is not null`);


// Status (`pubsub status`, the dashboard): read-only, each one statement.

/**
 * A row version is claimed right now when its xmax (the claim's DELETE, or the row lock of its
 * subquery) belongs to a transaction still in progress for this statement's snapshot: a claim deletes
 * its rows at once and commits after the listeners, so until then every other session still sees them,
 * with xmax set. xmax is a 32-bit xid: it is widened to the xid8 that pg_visible_in_snapshot() takes
 * with the snapshot's own epoch (modulo 2^32, signed). A committed or aborted deleter is "visible"
 * (completed), so a row left behind by a lost claim does not count. Multixact xmax (several lockers
 * at once) never comes from pgpubsub's own statements.
 */
const claimedNow = `(n.xmax <> '0'::xid and not pg_visible_in_snapshot((
    pg_snapshot_xmax(snap.s)::text::bigint
    + ((n.xmax::text::bigint - pg_snapshot_xmax(snap.s)::text::bigint % 4294967296) % 4294967296 + 4294967296 + 2147483648) % 4294967296
    - 2147483648)::text::xid8, snap.s))`;

/**
 * Per channel and listener: pending (never attempted), running (claimed now), failing (attempted,
 * waiting for a retry), dead, the oldest notification not yet processed nor dead, and, for throughput,
 * how many of its rows have ids up to $1 (the highest id of the previous sample; null: none) and the
 * highest id. One scan of the table; the counts form a partition of its rows.
 */
export const statusCountsSql = `with snap as (select pg_current_snapshot() as s),
rows as (
  select n.id, n.channel, n.listener, n.attempts, n.dead_at, n.created_at, ${claimedNow} as running
  from pubsub.notification n, snap
  union all -- writes waiting to be made into their listeners' rows: pending, without an id of their own here
  select null, f.channel, f.listener, 0, null, f.oldest, false from pubsub.fanout_backlog() f, generate_series(1, f.waiting)
)
select channel, listener,
  count(*) filter (where dead_at is null and not running and attempts = 0)::int as pending,
  count(*) filter (where dead_at is null and running)::int as running,
  count(*) filter (where dead_at is null and not running and attempts > 0)::int as failing,
  count(*) filter (where dead_at is not null)::int as dead,
  extract(epoch from now() - min(created_at) filter (where dead_at is null))::float8 as oldest_seconds,
  count(*) filter (where id <= $1::bigint)::int as up_to_previous,
  count(id)::int as total,
  max(id)::text as max_id
from rows group by channel, listener order by channel, listener nulls first`;

/** Workers with a claim in progress right now, from their claim records (pubsub.claim). */
export const statusWorkersSql = `select worker, count(*)::int as claims, sum(cardinality(ids))::int as rows, min(claimed_at) as since
  from pubsub.claim where txid_status(xid) = 'in progress' group by worker order by worker`;

/** Subscriptions with their order key path (read through to_jsonb so that a database before version 8, without the column, reads as null). */
export const statusSubscriptionsSql = `select channel, listener, to_jsonb(s) -> 'order_path' as order_path from pubsub.subscription s order by channel, listener`;
export const statusChannelsSql = `select name, durable from pubsub.channel order by name`;

/**
 * Every trigger that runs a function of schema pubsub, or is named like one of pgpubsub's: its
 * table, function and body, timing and events (tgtype bits), the columns of UPDATE OF, whether it has
 * a WHEN clause, and whether it is enabled. The catalogs are readable by every role.
 */
export const statusTriggersSql = `select t.tgname::text as trigger, n.nspname::text as schema, c.relname::text as table,
    pn.nspname::text as function_schema, p.proname::text as function, p.prosrc as source, t.tgenabled::text as enabled,
    t.tgtype::int as type, t.tgqual is not null as has_condition,
    coalesce((select array_agg(a.attname::text order by a.attname) from pg_attribute a
      where a.attrelid = t.tgrelid and a.attnum = any(t.tgattr::int2[])), '{}') as columns
  from pg_trigger t
  join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
  join pg_proc p on p.oid = t.tgfoid join pg_namespace pn on pn.oid = p.pronamespace
  where not t.tgisinternal and (pn.nspname = 'pubsub' or t.tgname like '\\_900\\_pubsub\\_%')
  order by c.relname, t.tgname`;

/** Trigger functions in schema pubsub, with their bodies: one may exist while its trigger is missing. */
export const statusFunctionsSql = `select p.proname::text as function, p.prosrc as source from pg_proc p
  join pg_namespace pn on pn.oid = p.pronamespace where pn.nspname = 'pubsub' and p.prorettype = 'trigger'::regtype`;


// Schedules (scheduler.ts).

/**
 * A worker's first tick of a schedule: creates its row (nothing is due before now: a new schedule
 * starts at its next slot) or records what the loaded code says of it. $1 name, $2 kind, $3
 * expression, $4 time zone, $5 catch-up policy, $6 the time it starts from (null: the server's clock).
 */
export const scheduleUpsertSql = `insert into pubsub.schedule as s (name, kind, expression, time_zone, catch_up, covered_until)
  values ($1, $2, $3, $4, $5, coalesce($6::timestamptz, clock_timestamp()))
  on conflict (name) do update set kind = excluded.kind, expression = excluded.expression, time_zone = excluded.time_zone, catch_up = excluded.catch_up
  where (s.kind, s.expression, s.time_zone, s.catch_up) is distinct from (excluded.kind, excluded.expression, excluded.time_zone, excluded.catch_up)`;
/**
 * Marks this session as running the schedules $1 (a session lock, shared: released when the worker's
 * connection ends, however it ends), so that other workers know their slots are attended.
 */
export const scheduleRunningSql = `select pg_advisory_lock_shared(${SCHEDULE_RUNNING}, hashtext(n)) from unnest($1::text[]) n`;
/**
 * Locks the schedule's row for this tick (other workers' ticks wait, then find the slots settled).
 * Times in ms, on the server's clock; `attended_from`: since when some worker has been running the
 * schedule without a break: the oldest connection among those holding its running lock (this one
 * included). A session of another role whose start this role may not read counts as running forever.
 */
export const scheduleLockSql = `select (extract(epoch from covered_until) * 1000)::float8 as covered_until, (extract(epoch from clock_timestamp()) * 1000)::float8 as now,
    (select (extract(epoch from min(coalesce(a.backend_start, '-infinity'))) * 1000)::float8 from pg_locks l join pg_stat_activity a on a.pid = l.pid
      where l.locktype = 'advisory' and l.classid = ${SCHEDULE_RUNNING} and l.objid = hashtext($1)::oid and l.objsubid = 2 and l.granted) as attended_from
  from pubsub.schedule where name = $1 for update`;
/**
 * Stores one notification per slot ($3: the slots' JSON texts) for the scheduled method's listener $2 on
 * channel $1, then a wake-up. A plain NOTIFY, not pubsub.wake(), whose EXECUTE workers are not granted:
 * one per tick costs nothing.
 */
export const scheduleStoreSql = `with stored as (
    insert into pubsub.notification (channel, listener, payload) select $1, $2, p::jsonb from unnest($3::text[]) p returning 1
  ) select pg_notify($1, '') from (select count(*) from stored) c`;
/** Settles the slots up to $2: $3 the latest that ran (null: none), $4 how many ran, $5 how many were skipped. */
export const scheduleAdvanceSql = `update pubsub.schedule set covered_until = $2::timestamptz,
    last_slot = coalesce($3::timestamptz, last_slot), last_run_at = case when $3 is null then last_run_at else now() end,
    runs = runs + $4, skipped = skipped + $5
  where name = $1`;
/** `pubsub status`: every schedule, times in ms. */
export const statusSchedulesSql = `select name, kind, expression, time_zone, catch_up, runs::int as runs, skipped::int as skipped,
    (extract(epoch from covered_until) * 1000)::float8 as covered_until, (extract(epoch from last_slot) * 1000)::float8 as last_slot, last_run_at,
    (extract(epoch from clock_timestamp()) * 1000)::float8 as now
  from pubsub.schedule order by name`;


// Bridges from a broker (bridge.ts).

/** Stores a bridge's batch: $1 bridge, $2 channel, $3 message ids (null: none), $4 payloads (JSON text), $5 contexts (JSON text), $6 seconds ids are kept. Notification ids, null for duplicates. */
export const bridgeStoreSql = `select pubsub.bridge_store($1, $2, $3::text[], $4::text[], $5::text[], $6::float8)::text[] as ids`;
