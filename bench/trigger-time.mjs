// `DATABASE_URL=postgres://…/postgres node bench/trigger-time.mjs` (after `npm run bench`, which builds both): per-row trigger time (EXPLAIN ANALYZE "Trigger … time"), 20,000-row INSERTs, variants interleaved, median of 9.
import pg from 'pg';
import { LIBRARY_SCHEMA, librarySchemaSql, triggerFunctionSql, createTriggerSql, wakeUpSql } from '../dist/src/sql.js';
import { wakeV4Sql } from './dist/w6x.js';
const server = new URL(process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
const at = (db) => Object.assign(new URL(server), { pathname: `/${db}` }).toString();
const admin = new pg.Client(at('postgres')); await admin.connect();
await admin.query('drop database if exists writers_trigcost'); await admin.query('create database writers_trigcost'); await admin.end();
const c = new pg.Client(at('writers_trigcost')); await c.connect();
await c.query(librarySchemaSql(0));
const model = (table) => ({ name: 'Reading', table, primaryKey: ['id'], fields: [
  { name: 'id', type: 'Int', kind: 'scalar', list: false, optional: false, column: 'id' },
  { name: 'value', type: 'Int', kind: 'scalar', list: false, optional: false, column: 'value' },
  { name: 'note', type: 'String', kind: 'scalar', list: false, optional: false, column: 'note' }] });
const def = (table, key, listeners = ['L.a']) => ({ key, channel: 'model.Reading', durable: true, spec: { model: 'Reading', when: 'AFTER', events: ['INSERT'] }, model: model(table), listeners });
const inline = wakeUpSql(`'model.Reading'`);
await c.query(wakeV4Sql(LIBRARY_SCHEMA, 'wake_v4'));
const variants = {
  v4: (s) => s.replace(inline, `perform pubsub.wake_v4('model.Reading');`),
  v5call: (s) => s.replace(inline, `perform pubsub.wake('model.Reading');`),
  v5inline: (s) => s,
  nowake: (s) => s.replace(inline, ''),
  l3: (s) => s, l10: (s) => s,
};
for (const name of Object.keys(variants)) {
  const listeners = name === 'l3' ? ['L.a', 'L.b', 'L.c'] : name === 'l10' ? [...'abcdefghij'].map((x) => `L.${x}`) : ['L.a'];
  const d = def(`r_${name}`, `k_${name}`, listeners);
  await c.query(`create table r_${name} (id serial primary key, value int not null, note text not null)`);
  await c.query(variants[name](triggerFunctionSql(d)));
  await c.query(createTriggerSql(d));
}
const per = {};
for (let round = 0; round < (Number(process.env.ROUNDS) || 9); round++) {
  for (const name of Object.keys(variants)) {
    await c.query(`truncate r_${name}, pubsub.notification`);
    const r = await c.query(`explain (analyze, format json) insert into r_${name} (value, note) select g, 'w6' from generate_series(1, 20000) g`);
    const t = r.rows[0]['QUERY PLAN'][0].Triggers[0];
    (per[name] ??= []).push((t['Time'] * 1000) / t['Calls']);
  }
}
const med = (a) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)];
for (const [name, list] of Object.entries(per)) console.log(`${name.padEnd(9)} ${med(list).toFixed(1)} µs/row  (runs ${list.map((x) => x.toFixed(1)).join(', ')})`);
const [{ server_version }] = (await c.query('show server_version')).rows; console.log('PostgreSQL', server_version);
await c.end();
const a2 = new pg.Client(at('postgres')); await a2.connect(); await a2.query('drop database writers_trigcost'); await a2.end();
