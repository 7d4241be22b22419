/**
 * Reads what triggers need from a Prisma schema: models, their tables (`@@map`, `@@schema`), fields and
 * columns (`@map`), scalar types and primary keys. Pure: `parsePrismaSchema` takes the text.
 */
import fs from 'node:fs';
import path from 'node:path';
import { PubSubError } from './errors.js';

export const SCALAR_TYPES = new Set(['String', 'Boolean', 'Int', 'BigInt', 'Float', 'Decimal', 'DateTime', 'Json', 'Bytes']);

export interface PrismaField {
  name: string;
  /** Prisma type name: a scalar, an enum name, or `Unsupported`. */
  type: string;
  kind: 'scalar' | 'enum' | 'unsupported';
  list: boolean;
  optional: boolean;
  column: string;
}

export interface PrismaModel {
  name: string;
  table: string;
  /** Database schema from `@@schema`; undefined means the connection's default (usually public). */
  schema?: string;
  fields: PrismaField[];
  /** Field names of the primary key (`@id` or `@@id`); empty when the model has only `@@unique`. */
  primaryKey: string[];
}

/** Removes `//` comments, leaving string literals alone. */
function stripComments(text: string): string {
  let out = '';
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (inString) {
      out += c;
      if (c === '\\') out += text[++i] ?? '';
      else if (c === '"') inString = false;
    } else if (c === '"') {
      inString = true;
      out += c;
    } else if (c === '/' && text[i + 1] === '/') {
      while (i < text.length && text[i] !== '\n') i++;
      out += '\n';
    } else {
      out += c;
    }
  }
  return out;
}

function blocks(text: string): Array<{ kind: string; name: string; body: string }> {
  const found: Array<{ kind: string; name: string; body: string }> = [];
  const head = /\b(model|enum|view|type|datasource|generator)\s+(\w+)\s*\{/g;
  for (let m; (m = head.exec(text)); ) {
    let depth = 1;
    let i = head.lastIndex;
    let inString = false;
    for (; i < text.length && depth > 0; i++) {
      const c = text[i];
      if (inString) {
        if (c === '\\') i++;
        else if (c === '"') inString = false;
      } else if (c === '"') inString = true;
      else if (c === '{') depth++;
      else if (c === '}') depth--;
    }
    found.push({ kind: m[1]!, name: m[2]!, body: text.slice(head.lastIndex, i - 1) });
    head.lastIndex = i;
  }
  return found;
}

/** The first string argument of an attribute, with Prisma's `\"` and `\\` escapes undone. */
const stringArg = (attr: string, line: string) =>
  line.match(new RegExp(`${attr}\\(\\s*(?:name:\\s*)?"((?:[^"\\\\]|\\\\.)+)"`))?.[1]?.replace(/\\(.)/g, '$1');

export function parsePrismaSchema(text: string): Map<string, PrismaModel> {
  const all = blocks(stripComments(text));
  const enums = new Set(all.filter((b) => b.kind === 'enum').map((b) => b.name));
  const models = new Map<string, PrismaModel>();
  for (const block of all.filter((b) => b.kind === 'model')) {
    const model: PrismaModel = { name: block.name, table: block.name, fields: [], primaryKey: [] };
    let ignored = false;
    for (const raw of block.body.split('\n')) {
      const line = raw.trim();
      if (!line) continue;
      if (line.startsWith('@@')) {
        if (line.startsWith('@@map')) model.table = stringArg('@@map', line) ?? model.table;
        else if (line.startsWith('@@schema')) model.schema = stringArg('@@schema', line);
        else if (line.startsWith('@@ignore')) ignored = true;
        else if (line.startsWith('@@id')) {
          const list = line.match(/\[([^\]]*)\]/)?.[1] ?? '';
          model.primaryKey = list.split(',').map((f) => f.trim().match(/^\w+/)?.[0]).filter((f): f is string => !!f);
        }
        continue;
      }
      const m = line.match(/^(\w+)\s+(Unsupported\("[^"]*"\)|\w+)(\[\])?(\?)?\s*(.*)$/);
      if (!m) continue;
      const [, name, type, list, optional, attrs = ''] = m;
      if (/(^|\s)@ignore\b/.test(attrs)) continue;
      const kind = type!.startsWith('Unsupported') ? 'unsupported' : SCALAR_TYPES.has(type!) ? 'scalar' : enums.has(type!) ? 'enum' : undefined;
      if (!kind) continue; // relation or composite type: no column of its own
      model.fields.push({
        name: name!,
        type: kind === 'unsupported' ? 'Unsupported' : type!,
        kind,
        list: !!list,
        optional: !!optional,
        column: stringArg('@map', attrs) ?? name!,
      });
      if (/(^|\s)@id\b/.test(attrs)) model.primaryKey = [name!];
    }
    if (!ignored) models.set(model.name, model);
  }
  return models;
}

/** Reads a schema file, or every `.prisma` file under a folder (Prisma's multi-file schemas). */
export function readPrismaSchema(schemaPath: string): Map<string, PrismaModel> {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(schemaPath);
  } catch (cause) {
    throw new PubSubError('pubsub.config', `Prisma schema not found at ${schemaPath}. Pass --schema <file> or set "schema" in pubsub.config.json.`, { cause });
  }
  const files = stat.isDirectory()
    ? fs.readdirSync(schemaPath, { recursive: true, encoding: 'utf8' }).filter((f) => f.endsWith('.prisma')).sort().map((f) => path.join(schemaPath, f))
    : [schemaPath];
  return parsePrismaSchema(files.map((f) => fs.readFileSync(f, 'utf8')).join('\n'));
}
