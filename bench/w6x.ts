/**
 * `npm run bench -- --only W6x`: experiments on the writers' cost (issue 12), never part of a full run.
 * Each variant is a copy of the `readings` table whose trigger is the generated one with one thing
 * changed, measured side by side with the generated trigger and no trigger, in one run.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { round } from './stats.js';

type Query = (text: string, values?: unknown[]) => Promise<any[]>;
interface Tools {
  q: Query;
  sideBySide(variants: Record<string, string>, clients: number, rounds?: number): Promise<Record<string, number>>;
  single(table: string): string;
  hundred(table: string): string;
  row(workload: string, system: string, figure: string, ratio?: string): void;
}

const CHANNEL = `'model.Reading'`;
/** The wake-up as generated triggers write it inline (since library version 5). */
const INLINE = /perform pg_catalog\.pg_advisory_xact_lock_shared[\s\S]*?end if;/;
/** Version 4's pubsub.wake() (LIBRARY_SCHEMA[2]): the same handshake in a SECURITY DEFINER function with a pinned search_path, called by every trigger. */
export function wakeV4Sql(librarySchema: Record<number, string>, name: string): string {
  return librarySchema[2]!.match(/create function pubsub\.wake\(channel_name text\)[\s\S]*?\n\$\$;/)![0].replace('pubsub.wake(', `pubsub.${name}(`);
}
/** One transaction-level try on one of 16 slots chosen by backend (a sleeper would hold all 16 shared); measured worse: writers sharing a slot collide and NOTIFY. */
const slotWake = `if not pg_try_advisory_xact_lock(1886745216 + pg_backend_pid() % 16, hashtext(${CHANNEL})) then
    perform pg_notify(${CHANNEL}, '');
  end if;`;

export async function writerExperiments({ q, sideBySide, single, hundred, row }: Tools): Promise<Record<string, unknown>> {
  const [{ src }] = await q(`select p.prosrc as src from pg_trigger t join pg_proc p on p.oid = t.tgfoid where t.tgrelid = 'readings'::regclass and not t.tgisinternal`);
  if (!INLINE.test(src)) throw new Error(`W6x: unexpected trigger source:\n${src}`);
  const payload = String(src).match(/payload jsonb := ([\s\S]*?);\nbegin/)![1]!;
  const definer = 'security definer set search_path = pg_catalog, pg_temp';
  const { LIBRARY_SCHEMA } = await import(path.join(path.dirname(fileURLToPath(import.meta.url)), '../../dist/src/sql.js'));
  await q(wakeV4Sql(LIBRARY_SCHEMA, 'w6x_wake_v4'));
  const WAKE = `perform pubsub.wake(${CHANNEL});`;
  await q(`create table pubsub.notification_copy (like pubsub.notification including all)`);
  await q(`create table pubsub.notification_lean (like pubsub.notification including defaults including identity)`);
  await q(`create index on pubsub.notification_lean (listener, id) where dead_at is null`);
  const rowVariants: Record<string, [string, string]> = {
    current: [src, definer],
    v4: [src.replace(INLINE, `perform pubsub.w6x_wake_v4(${CHANNEL});`), definer],
    nowake: [src.replace(INLINE, ''), definer],
    call: [src.replace(INLINE, WAKE), definer], // version 5's pubsub.wake(): no SECURITY DEFINER, no SET
    slot: [src.replace(INLINE, slotWake), definer],
    noset: [src, 'security definer'],
    tojsonb: [src.replace(payload, `jsonb_build_object('op', TG_OP, 'new', to_jsonb(NEW))`), definer],
    copyidx: [src.replace(INLINE, '').replace('pubsub.notification', 'pubsub.notification_copy'), definer],
    leanidx: [src.replace(INLINE, '').replace('pubsub.notification', 'pubsub.notification_lean'), definer],
  };
  const stmtRows = payload.replaceAll('NEW.', 'n.').replaceAll('OLD.', 'n.');
  const stmtSrc = `
begin
  insert into pubsub.notification (channel, listener, payload) select ${CHANNEL}, 'BenchListeners.reading', ${stmtRows} from new_rows n;
  ${src.match(INLINE)![0]}
  return null;
end
`;
  const tableSql = (t: string) => `create table ${t} (id serial primary key, value int not null, note text not null)`;
  for (const [name, [body, options]] of Object.entries(rowVariants)) {
    await q(tableSql(`readings_x_${name}`));
    await q(`create function pubsub.w6x_${name}() returns trigger language plpgsql ${options} as $x$${body}$x$`);
    await q(`create trigger w6x after insert on readings_x_${name} for each row execute function pubsub.w6x_${name}()`);
  }
  await q(tableSql('readings_x_stmt'));
  await q(`create function pubsub.w6x_stmt() returns trigger language plpgsql ${definer} as $x$${stmtSrc}$x$`);
  await q(`create trigger w6x after insert on readings_x_stmt referencing new table as new_rows for each statement execute function pubsub.w6x_stmt()`);

  const out: Record<string, unknown> = {};
  const names = ['plain', ...Object.keys(rowVariants), 'stmt'];
  const report = (label: string, unit: string, per: number, f: Record<string, number>) => {
    out[label] = Object.fromEntries(Object.entries(f).map(([k, v]) => [k, { rate: round(v * per, 0), ratio: round(v / f.plain!) }]));
    for (const [k, v] of Object.entries(f)) row('W6x', `${label} ${k}`, `${round(v * per, 0)} ${unit}`, `${round(v / f.plain!)}× plain, ${round(v / f.current!)}× current`);
  };
  for (const clients of [1, 8, 32]) {
    const f = await sideBySide(Object.fromEntries(names.map((n) => [n, single(n === 'plain' ? 'readings_plain' : `readings_x_${n}`)])), clients);
    report(`${clients} writer(s)`, 'commits/s', 1, f);
  }
  for (const clients of [1, 8]) {
    const f = await sideBySide({ plain: hundred('readings_plain'), current: hundred('readings_x_current'), v4: hundred('readings_x_v4'), stmt: hundred('readings_x_stmt') }, clients);
    report(`${clients} writer(s) x100`, 'rows/s', 100, f);
  }
  return out;
}
