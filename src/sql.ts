/**
 * Every SQL statement pgpubsub runs or generates, as pure functions returning strings. Identifiers are
 * validated and quoted here, once; runtime values always travel as bind parameters.
 */
import { createHash } from 'node:crypto';
import pg from 'pg';
import { PubSubError } from './errors.js';
import type { PrismaField, PrismaModel } from './prisma-schema.js';
import type { TriggerSpec } from './registry.js';

const { escapeIdentifier, escapeLiteral } = pg;

/** Version of the library's own tables; each step up has an upgrade script in LIBRARY_SCHEMA. */
export const LIBRARY_SCHEMA_VERSION = 1;

export function ident(name: string): string {
  if (!name || name.includes('\0') || Buffer.byteLength(name) > 63) {
    throw new PubSubError('pubsub.schema', `"${name}" is not a valid PostgreSQL identifier (1 to 63 bytes, no NUL).`);
  }
  return escapeIdentifier(name);
}

export const literal = (value: string) => escapeLiteral(value);

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
};

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
}

/** Stable key of a trigger definition: listeners with the same spec and channel share one trigger. */
export function triggerKey(spec: TriggerSpec, channel: string, durable: boolean): string {
  const hash = createHash('sha1')
    .update(JSON.stringify([spec.model, spec.when, spec.events, spec.condition ?? null, spec.columns ?? null, channel, durable]))
    .digest('hex')
    .slice(0, 8);
  return `${spec.when}_${spec.events.join('_')}_${hash}`.toLowerCase();
}

export function triggerNames(def: TriggerDefinition): { functionName: string; triggerName: string } {
  const room = 63 - 'tg___'.length - def.key.length;
  return {
    functionName: `tg_${def.model.table.slice(0, room)}__${def.key}`,
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

function payloadJson(def: TriggerDefinition, fields: PrismaField[], truncated: boolean): string {
  const types = Object.fromEntries(fields.filter((f) => TYPED.has(f.type)).map((f) => [f.name, f.type + (f.list ? '[]' : '')]));
  const parts = [
    `'op', TG_OP`,
    `'when', TG_WHEN`,
    `'model', ${literal(def.model.name)}`,
    `'trigger', ${literal(def.key)}`,
    ...(Object.keys(types).length ? [`'types', ${literal(JSON.stringify(types))}::jsonb`] : []),
    `'old', case when TG_OP <> 'INSERT' then ${rowJson(fields, 'OLD')} end`,
    `'new', case when TG_OP <> 'DELETE' then ${rowJson(fields, 'NEW')} end`,
    ...(truncated ? [`'truncated', true`] : []),
  ];
  return `jsonb_build_object(\n      ${parts.join(',\n      ')})`;
}

/**
 * The trigger function. Durable: stores the payload and sends an empty wake-up, so no row size can
 * fail the user's write. Non-durable: sends the payload itself; one that would exceed NOTIFY's 8000
 * bytes is sent with only the primary key fields and `truncated: true` instead of failing the write.
 * A BEFORE trigger returns the row untouched (OLD for DELETE), so it never changes or cancels it.
 * Security definer, so the app's role needs no grants on the pubsub schema for its writes to work.
 */
export function triggerFunctionSql(def: TriggerDefinition): string {
  const { functionName } = triggerNames(def);
  const channel = literal(def.channel);
  const ret = def.spec.when === 'BEFORE' ? `if TG_OP = 'DELETE' then return OLD; end if;\n  return NEW;` : 'return null;';
  let body: string;
  if (def.durable) {
    body = `  insert into pubsub.notification (channel, payload) values (${channel}, ${payloadJson(def, def.model.fields, false)});
  perform pg_notify(${channel}, '');`;
  } else {
    const keys = def.model.fields.filter((f) => def.model.primaryKey.includes(f.name));
    body = `  payload := ${payloadJson(def, def.model.fields, false)}::text;
  if octet_length(payload) > 7999 then
    payload := ${payloadJson(def, keys, true)}::text;
  end if;
  perform pg_notify(${channel}, payload);`;
  }
  return `create or replace function pubsub.${ident(functionName)}() returns trigger
language plpgsql security definer set search_path = pg_catalog, pg_temp as $pubsub$
${def.durable ? '' : 'declare\n  payload text;\n'}begin
${body}
  ${ret}
end
$pubsub$;`;
}

export function createTriggerSql(def: TriggerDefinition): string {
  const { functionName, triggerName } = triggerNames(def);
  const { spec, model } = def;
  const events = spec.events
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
  const when = spec.condition ? `\n  when (${spec.condition})` : '';
  return `drop trigger if exists ${ident(triggerName)} on ${tableRef(model)};
create trigger ${ident(triggerName)} ${spec.when} ${events} on ${tableRef(model)}
  for each row${when} execute function pubsub.${ident(functionName)}();`;
}

/** Drops a trigger and its function, as recorded in an earlier migration's state. */
export function dropTriggerSql(t: { schema?: string; table: string; trigger: string; function: string }): string {
  const table = (t.schema ? `${ident(t.schema)}.` : '') + ident(t.table);
  return `drop trigger if exists ${ident(t.trigger)} on ${table};
drop function if exists pubsub.${ident(t.function)}();`;
}

// Runtime statements of the worker.

export const claimSql = `select id::text as id, channel, payload, context, attempts
  from pubsub.notification
  where channel = any($1::text[]) and run_at <= now()
  order by id
  limit $2
  for update skip locked`;

export const completeSql = `delete from pubsub.notification where id = any($1::bigint[])`;

export const failSql = `update pubsub.notification
  set attempts = attempts + 1, last_error = $2, run_at = now() + make_interval(secs => $3)
  where id = $1`;

export const notifyDurableSql = `select pubsub.notify($1, $2::jsonb)::text as id`;
export const notifySql = `select 1 as sent from pg_notify($1, $2)`;

export const listenSql = (channels: string[]) => channels.map((c) => `listen ${ident(c)}`).join('; ');

export const schemaInstalledSql = `select to_regclass('pubsub.notification') is not null as installed`;
