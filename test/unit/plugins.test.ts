// The pure parts of plugins: argv scanning, plugin names, and what `make-migration --only` plans.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { resolvePlugins, scanArgv } from '../../src/cli/plugins.js';
import type { LoadedModule } from '../../src/cli/load.js';
import { channelModes, onlyPlugins, planMigration, subscriptions, triggerDefinitions, type MigrationState } from '../../src/migration.js';
import { parsePrismaSchema } from '../../src/prisma-schema.js';
import { Registry, getRegistry } from '../../src/registry.js';
import type { TriggerOperation } from '../../src/types.js';

test('scanArgv finds -r/--require/-c/--config in every spelling, anywhere, and stops at --', () => {
  assert.deepEqual(scanArgv(['orders', '-r', 'a.js', 'recount', '--require=b.js', '-rc.js', '--since', 'x', '-c', 'conf.json']), {
    require: ['a.js', 'b.js', 'c.js'],
    config: 'conf.json',
    operands: ['orders', 'recount', 'x'],
  });
  assert.deepEqual(scanArgv(['--config=x.json', 'orders', '--', '-r', 'no.js']), { require: [], config: 'x.json', operands: ['orders', '-r', 'no.js'] });
  assert.deepEqual(scanArgv(['orders', '-r']), { require: [], operands: ['orders'] }, 'a missing value is left to commander');
});

test('plugin names: declared, derived from the one channel, checked', () => {
  const registry = getRegistry();
  registry.clear();
  for (const [id, channel] of [['A.a', 'alpha'], ['B.b', 'beta'], ['B.c', 'gamma'], ['D.d', '-dash']] as const) {
    registry.register({ id, channel, durable: true, target: {}, method: 'm', delivery: {} });
  }
  const mod = (module: string, listeners: string[], exports: Record<string, unknown> = {}): LoadedModule => ({ module, listeners, exports });
  const noop = () => {};
  try {
    const plugins = resolvePlugins([mod('a.js', ['A.a']), mod('b.js', ['B.b', 'B.c']), mod('c.js', [], { plugin: 'tools', registerCommands: noop })], ['listen']);
    assert.deepEqual(plugins.map((p) => [p.name, p.listeners, !!p.commands]), [['alpha', ['A.a'], false], ['tools', [], true]], 'b.js (two channels, no claim) has no name');
    // Default exports (CommonJS) count too.
    assert.equal(resolvePlugins([mod('d.js', [], { default: { plugin: 'dflt', registerCommands: noop } })], [])[0]!.commands?.module, 'd.js');
    // Derived names that would not be command names are no names.
    assert.deepEqual(resolvePlugins([mod('e.js', ['D.d'])], []), []);
    assert.throws(() => resolvePlugins([mod('b.js', ['B.b', 'B.c'], { registerCommands: noop })], []), /b\.js exports registerCommands but has no plugin name: its listeners declare the channels beta, gamma/);
    assert.throws(() => resolvePlugins([mod('x.js', [], { plugin: '--help' })], []), /x\.js: its "plugin" export must be a name such as 'orders'.*got "--help"/);
    assert.throws(() => resolvePlugins([mod('x.js', [], { plugin: 'x', registerCommands: 'nope' })], []), /"registerCommands" export must be a function/);
    assert.throws(() => resolvePlugins([mod('x.js', [], { plugin: 'p' }), mod('y.js', [], { plugin: 'p' })], []), /"p" is claimed by two modules, x\.js and y\.js/);
    assert.throws(() => resolvePlugins([mod('x.js', [], { plugin: 'listen' })], ['listen', 'help']), /"listen" is a built-in command/);
    // Two unclaimed modules on one channel are one plugin; a claim beside them is fine.
    const merged = resolvePlugins([mod('a.js', ['A.a']), mod('a2.js', ['A.a']), mod('a3.js', [], { plugin: 'alpha' })], []);
    assert.deepEqual(merged.map((p) => [p.name, p.modules.length]), [['alpha', 3]]);
  } finally {
    registry.clear();
  }
});

const models = parsePrismaSchema(`
model Author {
  id   Int    @id
  name String
  @@map("authors")
}`);

type Spec = { id: string; events: TriggerOperation[]; channel?: string; durable?: boolean };
function registry(...specs: Spec[]): Registry {
  const r = new Registry();
  for (const s of specs) {
    r.register({ id: s.id, channel: s.channel ?? 'model.Author', durable: s.durable ?? true, target: {}, method: 'm', delivery: {}, trigger: { model: 'Author', when: 'AFTER', events: s.events } });
  }
  return r;
}
const only = (previous: MigrationState, plugin: string, r: Registry, roles: string[] = []) => {
  const narrowed = onlyPlugins(previous, { plugins: { [plugin]: [...r.listenerIds] }, defs: triggerDefinitions(r, models), subscribed: subscriptions(r), channels: channelModes(r) }, models, roles);
  return { ...narrowed, plan: planMigration(narrowed.defs, previous, narrowed.subscribed, narrowed.channels, narrowed.notifyRoles, narrowed.keep) };
};
const full = (r: Registry, plugins: Record<string, string[]>, previous: MigrationState | null = null, roles: string[] = []) =>
  planMigration(triggerDefinitions(r, models), previous, subscriptions(r), channelModes(r), roles, { plugins })!;

test('--only gives the same state as a full run when the other plugins did not change', () => {
  const all = registry({ id: 'A.ins', events: ['INSERT'] }, { id: 'B.ins', events: ['INSERT'] }, { id: 'B.del', events: ['DELETE'] });
  const first = full(all, { a: ['A.ins'], b: ['B.del', 'B.ins'] }, null, ['app', 'other_service']);
  // a drops its insert listener and adds an update one.
  const a2 = registry({ id: 'A.upd', events: ['UPDATE'] });
  const { plan, notes } = only(first.state, 'a', a2, ['app']);
  assert.deepEqual(notes, []);
  assert.ok(plan);
  assert.equal(plan.summary.filter((l) => /revoke/.test(l)).length, 0, 'roles of other services are never revoked');
  assert.doesNotMatch(plan.sql, /'B\.del'/, 'b’s delete trigger is not rewritten');
  assert.match(plan.sql, /values \('model\.Author', 'B\.ins', payload\)/, 'the shared insert trigger now serves b alone');
  const expected = full(registry({ id: 'A.upd', events: ['UPDATE'] }, { id: 'B.ins', events: ['INSERT'] }, { id: 'B.del', events: ['DELETE'] }), { a: ['A.upd'], b: ['B.del', 'B.ins'] }, first.state, ['app', 'other_service']);
  assert.deepEqual(plan.state, expected.state);
  // Nothing changed since: nothing to write.
  assert.equal(only(plan.state, 'a', a2, ['app']).plan, null);
});

test('--only removes a trigger used only by the plugin, and keeps triggers recorded without listeners (older migrations) with a note', () => {
  const first = full(registry({ id: 'A.ins', events: ['INSERT'] }, { id: 'B.del', events: ['DELETE'] }), { a: ['A.ins'], b: ['B.del'] });
  const dropped = only(first.state, 'a', new Registry()).plan!;
  assert.match(dropped.sql, /drop trigger if exists "_900_pubsub_after_insert_/);
  assert.deepEqual(dropped.summary.filter((l) => /B\.del|delete/.test(l)), []);

  // As written before the listeners were recorded: a's changed insert trigger may serve other services.
  const legacy: MigrationState = { ...first.state, plugins: {}, triggers: Object.fromEntries(Object.entries(first.state.triggers).map(([k, t]) => [k, { table: t.table, trigger: t.trigger, function: t.function, hash: t.hash }])) };
  const changed = only(legacy, 'a', registry({ id: 'A.ins', events: ['INSERT'] }, { id: 'A.two', events: ['INSERT'] }));
  assert.match(changed.notes.join('\n'), /trigger _900_pubsub_after_insert_\w+ on authors is left as it is: it changed, and the migrations do not record which listeners it serves/);
  assert.doesNotMatch(changed.plan?.sql ?? '', /create or replace function/);
  assert.equal(only(legacy, 'a', new Registry()).plan?.summary.some((l) => /remove trigger/.test(l)) ?? false, false, 'an unrecorded trigger is never dropped by --only');
});
