import assert from 'node:assert/strict';
import { test } from 'node:test';
import { conditionSql } from '../../src/condition.js';
import { PostUpdateListen, TriggerListen } from '../../src/decorators.js';
import { planMigration, triggerDefinitions } from '../../src/migration.js';
import { parsePrismaSchema } from '../../src/prisma-schema.js';
import { getRegistry, Registry, type TriggerSpec } from '../../src/registry.js';
import { LIBRARY_SCHEMA, createTriggerSql, dollarTag, triggerFunctionSql, triggerKey, triggerNames } from '../../src/sql.js';

const models = parsePrismaSchema(`
model User {
  id           Int    @id
  email        String
  passwordHash String @map("password_hash")
  balanceCents Int    @map("balance_cents")
  Nick         String
  @@map("users")
}`);
const user = models.get('User')!;

function defsFor(spec: Partial<TriggerSpec> & { durable?: boolean }, m = models) {
  const r = new Registry();
  const { durable = true, ...trigger } = spec;
  r.register({ id: 'T.t', channel: durable ? 'model.User' : 'fast', durable, target: {}, method: 'm', delivery: {}, trigger: { model: 'User', when: 'AFTER', events: ['UPDATE'], ...trigger } });
  return triggerDefinitions(r, m);
}

test('non-durable trigger channels send only the primary key unless select says otherwise; durable ones the whole row', () => {
  const fn = (spec: Parameters<typeof defsFor>[0]) => triggerFunctionSql(defsFor(spec)[0]!);
  const fast = fn({ durable: false });
  assert.match(fast, /'id', to_jsonb\(NEW\."id"\)/);
  assert.doesNotMatch(fast, /password_hash|email/);
  assert.match(fast, /'partial', true/);
  const chosen = fn({ durable: false, select: ['email'] });
  assert.match(chosen, /'email'/);
  assert.match(chosen, /'id'/, 'the key is always there');
  assert.doesNotMatch(chosen, /password_hash/);
  assert.match(fn({ durable: false, select: '*' }), /password_hash/);
  const whole = fn({ durable: false, select: '*' });
  assert.doesNotMatch(whole.slice(0, whole.indexOf('octet_length')), /'partial', true/, 'partial only in the truncated fallback');
  assert.match(fn({}), /password_hash/, 'durable: stored where ordinary roles cannot read');
  assert.doesNotMatch(fn({ select: ['email'] }), /password_hash/, 'durable channels can narrow too');
});

test('the selection is part of the trigger key, so changing it makes a new migration', () => {
  const base: TriggerSpec = { model: 'User', when: 'AFTER', events: ['UPDATE'] };
  assert.equal(triggerKey(base, 'fast', false), triggerKey({ ...base }, 'fast', false));
  assert.notEqual(triggerKey(base, 'fast', false), triggerKey({ ...base, select: ['email'] }, 'fast', false));
  assert.notEqual(triggerKey({ ...base, select: ['email'] }, 'fast', false), triggerKey({ ...base, select: '*' }, 'fast', false));
  const first = planMigration(defsFor({ durable: false }), null)!;
  const changed = planMigration(defsFor({ durable: false, select: ['email'] }), first.state)!;
  assert.ok(changed);
  assert.match(changed.sql, /drop function if exists/);
});

test('select names: checked at decoration (shape) and at make-migration (fields of the model)', () => {
  getRegistry().clear();
  assert.throws(
    () => {
      class A {
        @PostUpdateListen('User', { durable: false, select: 'email' as any })
        m(_p: object) {}
      }
      return A;
    },
    (e: any) => e.code === 'pubsub.schema' && /A\.m: select must be '\*' or a list of Prisma field names/.test(e.message),
  );
  assert.throws(() => defsFor({ durable: false, select: ['email', 'password_hash', 'nope'] }), (e: any) => e.code === 'pubsub.schema' && /T\.t: select names "password_hash", "nope", which are not fields of User\. Fields: id, email, passwordHash/.test(e.message));
  class B {
    @TriggerListen({ model: 'User', when: 'AFTER', events: ['INSERT'], durable: false, select: ['email', 'email', 'Nick'] })
    m(_p: object) {}
  }
  assert.ok(B);
  assert.deepEqual(getRegistry().list()[0]!.listeners[0]!.trigger!.select, ['Nick', 'email']);
  getRegistry().clear();
});

test('trigger functions and library functions are not executable by PUBLIC', () => {
  const fn = triggerFunctionSql(defsFor({})[0]!);
  const { functionName } = triggerNames(defsFor({})[0]!);
  assert.ok(fn.endsWith(`revoke all on function pubsub."${functionName}"() from public;`));
  assert.match(LIBRARY_SCHEMA[3]!, /revoke all on function pubsub\.notify\(text, jsonb, jsonb, boolean, boolean\) from public;/);
  assert.match(LIBRARY_SCHEMA[3]!, /revoke all on function pubsub\.wake\(text\) from public;/);
});

test('make-migration grants pubsub.notify() to the named roles, revokes it from dropped ones, and refuses PUBLIC', () => {
  const defs = defsFor({});
  const first = planMigration(defs, null, [], {}, ['app', 'App Two'])!;
  assert.match(first.sql, /grant usage on schema pubsub to "app";\ngrant execute on function pubsub\.notify\(text, jsonb, jsonb, boolean, boolean\) to "app";/);
  assert.match(first.sql, /to "App Two";/);
  assert.ok(first.sql.indexOf('create table pubsub.notification') < first.sql.indexOf('grant usage'));
  assert.equal(planMigration(defs, first.state, [], {}, ['App Two', 'app']), null, 'unchanged grants: no migration');
  const dropped = planMigration(defs, first.state, [], {}, ['app'])!;
  assert.match(dropped.sql, /revoke execute on function pubsub\.notify\(text, jsonb, jsonb, boolean, boolean\) from "App Two";/);
  assert.doesNotMatch(dropped.sql, /grant/);
  assert.throws(() => planMigration(defs, null, [], {}, ['PUBLIC']), /names PUBLIC/);
  assert.throws(() => planMigration(defs, null, [], {}, ['x'.repeat(64)]), /not a valid PostgreSQL identifier/);
});

test('a dollar-quote tag that the body does not contain, with hostile @map names', () => {
  assert.equal(dollarTag('begin end'), '$pubsub$');
  assert.equal(dollarTag('a $pubsub$ b $pubsub_1$'), '$pubsub_2$');
  const long = 'é'.repeat(31); // 62 bytes
  const hostile = parsePrismaSchema(`
model Evil {
  id   Int    @id @map("$pubsub$")
  a    String @map("x$pubsub_1$y")
  b    String @map("it's \\"quoted\\" $$")
  Mixed String @map("Mixed Case Column")
  c    String @map("${'c'.repeat(63)}")
  @@map("${long}")
}`);
  const r = new Registry();
  r.register({ id: 'E.e', channel: 'model.Evil', durable: false, target: {}, method: 'm', delivery: {}, trigger: { model: 'Evil', when: 'AFTER', events: ['INSERT'], select: '*' } });
  const [def] = triggerDefinitions(r, hostile);
  const fn = triggerFunctionSql(def!);
  const tag = fn.match(/ as (\$pubsub(?:_\d+)?\$)\n/)![1]!;
  assert.equal(tag, '$pubsub_2$');
  const body = fn.slice(fn.indexOf(tag) + tag.length, fn.lastIndexOf(tag));
  assert.ok(!body.includes(tag));
  assert.match(body, /NEW\."it's ""quoted"" \$\$"/);
  assert.match(body, /NEW\."Mixed Case Column"/);
  assert.ok(Buffer.byteLength(triggerNames(def!).functionName) <= 63, 'a multibyte table name is cut by bytes');
  assert.doesNotThrow(() => createTriggerSql(def!));
});

test('conditions: field names become columns (NEW. and OLD.), columns stay, anything that could end the WHEN clause is refused', () => {
  const c = (text: string) => conditionSql(text, user, 'L.m');
  assert.equal(c('NEW.balanceCents > 100 and OLD.balanceCents <= 100'), 'NEW."balance_cents" > 100 and OLD."balance_cents" <= 100');
  assert.equal(c('new . passwordHash <> old."passwordHash"'), 'new . "password_hash" <> old."password_hash"');
  assert.equal(c('NEW.balance_cents > 0 and NEW."balance_cents" > 0'), 'NEW.balance_cents > 0 and NEW."balance_cents" > 0', 'column names are left as written');
  assert.equal(c('NEW.email = \'NEW.nope; -- /*\''), 'NEW.email = \'NEW.nope; -- /*\'', 'strings are not looked into');
  assert.equal(c('NEW.Nick is not null'), 'NEW."Nick" is not null', 'a mixed-case field is quoted (unquoted, PostgreSQL would fold it)');
  assert.equal(c(`NEW.email ~ E'\\\\d'`), `NEW.email ~ E'\\\\d'`);
  const refused = (text: string, why: RegExp) =>
    assert.throws(() => c(text), (e: any) => e.code === 'pubsub.invalidCondition' && e.message.startsWith(`L.m: condition ${JSON.stringify(text)}`) && why.test(e.message));
  refused('NEW.nope > 1', /refers to NEW\.nope, which is neither a field nor a column of User\. Valid fields of User: id, email, passwordHash, balanceCents, Nick\./);
  refused('OLD."Nope" > 1', /OLD\."Nope"/);
  refused('true; drop table users', /contains ";"/);
  refused('true -- x', /SQL comment/);
  refused('true /* x */', /SQL comment/);
  refused('(true', /"\(" without its "\)"/);
  refused('true)', /"\)" without its "\("/);
  refused("NEW.email = 'x", /unclosed string/);
  refused('NEW."email = 1', /unclosed quoted name/);
  refused('NEW.email = $$x$$', /dollar quotes/);
  refused(`NEW.email = E'\\'' ; drop table users; '`, /contains ";"/); // the \' does not close an E'' string
  refused('  ', /non-empty/);
});

test('grantNotify in pubsub.config.json must be a list of role names', async () => {
  const { loadFileConfig } = await import('../../src/config.js');
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pubsub-grant-'));
  fs.writeFileSync(path.join(dir, 'pubsub.config.json'), JSON.stringify({ grantNotify: ['app', 'ops'] }));
  assert.deepEqual(loadFileConfig(dir).grantNotify, ['app', 'ops']);
  fs.writeFileSync(path.join(dir, 'pubsub.config.json'), JSON.stringify({ grantNotify: 'app' }));
  assert.throws(() => loadFileConfig(dir), (e: any) => e.code === 'pubsub.config' && /"grantNotify" must be an array of non-empty strings/.test(e.message));
});
