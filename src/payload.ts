/** Payloads on the wire: JSON text out of `notify()`, typed objects into listeners. */
import { createRequire } from 'node:module';
import path from 'node:path';
import 'reflect-metadata';
import { plainToInstance } from 'class-transformer';
import { PubSubError } from './errors.js';
import type { TriggerPayload } from './types.js';

/** JSON.stringify that writes bigints as decimal strings (JSON has no bigint). */
export function encodePayload(payload: unknown, channel: string): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(payload, (_key, value) => (typeof value === 'bigint' ? value.toString() : value));
  } catch (cause) {
    throw new PubSubError('pubsub.invalidPayload', `notify("${channel}"): the payload cannot be written as JSON: ${(cause as Error).message}`, { cause });
  }
  if (text === undefined) {
    throw new PubSubError('pubsub.invalidPayload', `notify("${channel}"): the payload is ${String(payload)}; send a JSON value such as an object.`);
  }
  return text;
}

type Storage = Record<'_typeMetadatas' | '_transformMetadatas' | '_exposeMetadatas' | '_excludeMetadatas', Map<Function, unknown>>;
let storage: Storage | null | undefined;
const plainClasses = new WeakMap<Function, boolean>();

/**
 * Whether class-transformer has nothing to do for `type` beyond `new type()` and copying the keys:
 * no @Type, @Transform, @Expose or @Exclude on it or its ancestors. Such payloads skip the (slow)
 * metadata walk of plainToInstance. Reads class-transformer's own storage; if that ever moves, every
 * class takes the full path.
 */
function isPlainClass(type: Function): boolean {
  let known = plainClasses.get(type);
  if (known !== undefined) return known;
  if (storage === undefined) {
    try {
      storage = createRequire(import.meta.url)('class-transformer/cjs/storage').defaultMetadataStorage as Storage;
    } catch {
      storage = null;
    }
  }
  known = !!storage;
  for (let t: Function | null = type; known && t && t !== Object && t !== Function.prototype; t = Object.getPrototypeOf(t)) {
    const s = storage!;
    if (s._typeMetadatas.has(t) || s._transformMetadatas.has(t) || s._exposeMetadatas.has(t) || s._excludeMetadatas.has(t)) known = false;
  }
  plainClasses.set(type, known);
  return known;
}

const PRIMITIVES = new Map<Function, (v: unknown) => unknown>([
  [String, (v) => v],
  [Number, (v) => v],
  [Boolean, (v) => v],
  [BigInt, (v) => (typeof v === 'string' || typeof v === 'number' ? BigInt(v) : v)],
  [Date, (v) => (typeof v === 'string' ? new Date(v) : v)],
]);

/** Turns a decoded JSON value into an instance of `type` (class-transformer), or a primitive. */
export function decodePayload(value: unknown, type: Function | undefined): unknown {
  if (!type) return value;
  const primitive = PRIMITIVES.get(type);
  if (primitive) return primitive(value);
  if (value === null || typeof value !== 'object') return value;
  if (!Array.isArray(value) && isPlainClass(type)) {
    // What plainToInstance does for a class without decorators, minus the metadata walk.
    const instance = new (type as new () => Record<string, unknown>)();
    for (const key of Object.keys(value)) if (key !== '__proto__' && key !== 'constructor') instance[key] = (value as Record<string, unknown>)[key];
    return instance;
  }
  return plainToInstance(type as new () => object, value as object);
}

/** The trigger payload as the generated trigger function writes it. */
export interface WireTriggerPayload {
  op: TriggerPayload['op'];
  when: TriggerPayload['when'];
  model: string;
  /** Key of the trigger definition that produced it (routes it to that definition's listeners). */
  trigger: string;
  /** Field name → Prisma type for fields whose JSON form is not their value (BigInt, DateTime, …). */
  types?: Record<string, string>;
  old: Record<string, unknown> | null;
  new: Record<string, unknown> | null;
  truncated?: boolean;
  /** The rows hold only some fields (the listener's `select`, or the key when truncated). */
  partial?: boolean;
  /** Version of the model's shape it was written with. */
  v?: string;
  /** Non-durable trigger payloads carry the transaction's context here. */
  context?: unknown;
}

type DecimalCtor = new (value: string) => unknown;
let decimalCtor: DecimalCtor | undefined;

/** Prisma's own Decimal class when the app has @prisma/client, so values are `instanceof Prisma.Decimal`. */
function loadDecimal(): DecimalCtor {
  if (decimalCtor) return decimalCtor;
  for (const from of [path.join(process.cwd(), 'index.js'), import.meta.url]) {
    const require = createRequire(from);
    for (const id of ['@prisma/client/runtime/client', '@prisma/client/runtime/library', 'decimal.js']) {
      try {
        const mod = require(id);
        const ctor = mod.Decimal ?? mod.default ?? mod;
        if (typeof ctor === 'function') return (decimalCtor = ctor as DecimalCtor);
      } catch {
        // try the next candidate
      }
    }
  }
  throw new PubSubError('pubsub.invalidPayload', 'A Decimal field arrived but neither @prisma/client nor decimal.js can be loaded. Install one of them.');
}

function parseDateTime(v: string): Date {
  // timestamp without time zone (Prisma's default DateTime) is UTC; time-only values sit on 1970-01-01.
  if (/^\d{2}:\d{2}/.test(v)) v = `1970-01-01T${v}`;
  if (/T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(v)) v += 'Z';
  return new Date(v);
}

const SCALARS: Record<string, (v: any) => unknown> = {
  BigInt: (v) => BigInt(v),
  Decimal: (v) => new (loadDecimal())(String(v)),
  DateTime: (v) => parseDateTime(v),
  Bytes: (v) => new Uint8Array(Buffer.from(v, 'base64')),
  Float: (v) => Number(v), // NaN and ±Infinity arrive as strings
};

function decodeRow(row: Record<string, unknown> | null, types: Record<string, string>): Record<string, unknown> | null {
  if (!row) return row;
  for (const [field, type] of Object.entries(types)) {
    const value = row[field];
    if (value === null || value === undefined) continue;
    const list = type.endsWith('[]');
    const convert = SCALARS[list ? type.slice(0, -2) : type];
    if (!convert) continue;
    row[field] = list && Array.isArray(value) ? value.map((v) => (v === null ? v : convert(v))) : convert(value);
  }
  return row;
}

/** A model's fields as the latest migration installed them (table pubsub.model). */
export interface ModelShape {
  version: string;
  fields: Array<{ name: string; type: string; list: boolean; optional: boolean }>;
}

/**
 * A row written with an older shape of the model: fields it has that the model no longer has are
 * dropped, optional fields it lacks become null. Required fields it lacks stay missing (warned).
 */
function adapt(row: Record<string, unknown> | null, shape: ModelShape, partial: boolean): { row: Record<string, unknown> | null; missing: string[] } {
  if (!row) return { row, missing: [] };
  const adapted: Record<string, unknown> = {};
  const missing: string[] = [];
  for (const f of shape.fields) {
    if (f.name in row) adapted[f.name] = row[f.name];
    else if (partial) continue; // left out by the selection, not by a model change
    else if (f.optional) adapted[f.name] = null;
    else missing.push(f.name);
  }
  return { row: adapted, missing };
}

/**
 * Rebuilds a TriggerPayload with exact values from what the trigger wrote. With the model's current
 * shape, a payload written by an older shape (its `v`) is adapted to it and `warn` is told once.
 */
export function decodeTriggerPayload(wire: WireTriggerPayload, current?: ModelShape, warn?: (message: string) => void): TriggerPayload {
  const types = wire.types ?? {};
  let old = decodeRow(wire.old, types);
  let row = decodeRow(wire.new, types);
  if (current && wire.v && wire.v !== current.version) {
    const partial = !!(wire.partial || wire.truncated);
    const a = adapt(old, current, partial);
    const b = adapt(row, current, partial);
    [old, row] = [a.row, b.row];
    const missing = [...new Set([...a.missing, ...b.missing])];
    warn?.(
      `a ${wire.model} notification written with model version ${wire.v} was read as version ${current.version}: unknown fields dropped, missing optional fields set to null${missing.length ? `; required fields missing: ${missing.join(', ')}` : ''}`,
    );
  }
  const payload: TriggerPayload = { op: wire.op, when: wire.when, model: wire.model, old, new: row };
  if (wire.context !== undefined) payload.context = wire.context;
  if (wire.truncated) payload.truncated = true;
  if (wire.partial) payload.partial = true;
  return payload;
}
