/**
 * A trigger's `condition`: refuses text that could end the WHEN clause (the database check in
 * generate.ts then runs it against a scratch table), and translates `NEW.field`/`OLD.field` written
 * with Prisma field names to the `@map`ped column. Pure.
 */
import { PubSubError } from './errors.js';
import type { PrismaModel } from './prisma-schema.js';
import { ident } from './sql.js';

const IDENT_START = /[A-Za-z_\u0080-\uffff]/;
const IDENT_PART = /[A-Za-z0-9_$\u0080-\uffff]/;
/** Unquoted names PostgreSQL leaves unchanged (it folds the others to lower case). */
const PLAIN = /^[a-z_][a-z0-9_$]*$/;

function fail(who: string, condition: string, why: string): never {
  throw new PubSubError('pubsub.invalidCondition', `${who}: condition ${JSON.stringify(condition)} ${why}`);
}

/**
 * End of the quoted token starting at `i` (the index after its closing quote); doubled quotes escape,
 * and so do backslashes in E'…' strings (standard_conforming_strings, on since PostgreSQL 9.1, is assumed).
 */
function skipQuoted(text: string, i: number, quote: string, backslash = false): number {
  for (let j = i + 1; j < text.length; j++) {
    if (backslash && text[j] === '\\') {
      j++;
      continue;
    }
    if (text[j] !== quote) continue;
    if (text[j + 1] === quote) j++;
    else return j + 1;
  }
  return -1;
}

/**
 * The condition as it goes into the trigger's WHEN clause. Refuses what cannot be part of one boolean
 * expression (`;`, comments, dollar quotes, unbalanced parentheses or quotes) and NEW./OLD. references
 * to names that are neither a field nor a column of the model; field names become their columns.
 * `who` names the listener(s) in errors.
 */
export function conditionSql(condition: string, model: PrismaModel, who: string): string {
  if (typeof condition !== 'string' || !condition.trim()) fail(who, String(condition), 'must be a non-empty SQL boolean expression.');
  const columns = new Set(model.fields.map((f) => f.column));
  const valid = () => `Valid fields of ${model.name}: ${model.fields.map((f) => f.name).join(', ')}.`;
  let out = '';
  let depth = 0;
  for (let i = 0; i < condition.length; ) {
    const c = condition[i]!;
    if (c === "'" || c === '"') {
      const end = skipQuoted(condition, i, c, c === "'" && /(^|[^A-Za-z0-9_$])[eE]$/.test(out));
      if (end < 0) fail(who, condition, `has an unclosed ${c === "'" ? 'string' : 'quoted name'}.`);
      out += condition.slice(i, end);
      i = end;
    } else if (c === ';') {
      fail(who, condition, 'contains ";": a condition is one boolean expression, as in `NEW.balance > 100`.');
    } else if ((c === '-' && condition[i + 1] === '-') || (c === '/' && condition[i + 1] === '*')) {
      fail(who, condition, 'contains an SQL comment ("--" or "/*"); remove it.');
    } else if (c === '$') {
      fail(who, condition, 'contains "$" outside a quoted name: use \'…\' strings, not dollar quotes or parameters.');
    } else if (c === '(' || c === ')') {
      depth += c === '(' ? 1 : -1;
      if (depth < 0) fail(who, condition, 'has a ")" without its "(".');
      out += c;
      i++;
    } else if (IDENT_START.test(c)) {
      let j = i;
      while (j < condition.length && IDENT_PART.test(condition[j]!)) j++;
      const word = condition.slice(i, j);
      out += word;
      i = j;
      // A bare NEW/OLD followed by ".name": the one place where field names are translated.
      if (!/^(new|old)$/i.test(word) || (i > word.length && condition[i - word.length - 1] === '.')) continue;
      let k = i;
      while (/\s/.test(condition[k] ?? '')) k++;
      if (condition[k] !== '.') continue;
      k++;
      while (/\s/.test(condition[k] ?? '')) k++;
      let name: string;
      let end: number;
      let quoted = false;
      if (condition[k] === '"') {
        end = skipQuoted(condition, k, '"');
        if (end < 0) fail(who, condition, 'has an unclosed quoted name.');
        name = condition.slice(k + 1, end - 1).replaceAll('""', '"');
        quoted = true;
      } else {
        end = k;
        while (end < condition.length && IDENT_PART.test(condition[end]!)) end++;
        name = condition.slice(k, end);
        if (!name) fail(who, condition, `has "${word}." without a name after it. ${valid()}`);
      }
      const field = model.fields.find((f) => f.name === name);
      let column: string;
      if (quoted && columns.has(name)) column = name;
      else if (field) column = field.column;
      else if (!quoted && columns.has(name.toLowerCase())) column = name.toLowerCase();
      else fail(who, condition, `refers to ${word}.${quoted ? `"${name}"` : name}, which is neither a field nor a column of ${model.name}. ${valid()}`);
      // Written back unchanged when it already means that column, so existing triggers keep their DDL.
      const same = quoted ? name === column : PLAIN.test(name) ? name === column : false;
      out += same ? condition.slice(i, end) : `${condition.slice(i, k)}${ident(column)}`;
      i = end;
    } else {
      out += c;
      i++;
    }
  }
  if (depth !== 0) fail(who, condition, 'has a "(" without its ")".');
  return out;
}
