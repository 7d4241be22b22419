/** Payloads on the wire: JSON text out of `notify()`, typed objects into listeners. */
import { createRequire } from 'node:module';
import path from 'node:path';
import 'reflect-metadata';
import { plainToInstance } from 'class-transformer';
import { PubSubError } from './errors.js';
import type { TriggerPayload } from './types.js';

/**
 * JSON.stringify that writes bigints as decimal strings (JSON has no bigint). `part` names what is
 * encoded in messages: the payload, or the context sent with it.
 */
export function encodePayload(payload: unknown, channel: string, part = 'payload'): string {
  let text: string | undefined;
  try {
    text = JSON.stringify(payload, function (this: Record<string, unknown>, key, value) {
      if (typeof value === 'bigint') return value.toString();
      // toJSON already ran: an invalid Date reads as null here, so look at the original.
      const original = this[key];
      if (original instanceof Date && Number.isNaN(original.getTime())) throw new PubSubError('pubsub.invalidPayload', `notify("${channel}"): the ${part} has an invalid Date${key ? ` at "${key.slice(0, 40)}"` : ''} (new Date() of something that is not a date), which JSON would write as null. Send a valid Date, or null.`);
      return value;
    });
  } catch (cause) {
    if (cause instanceof PubSubError) throw cause;
    const deep = cause instanceof RangeError;
    throw new PubSubError(
      'pubsub.invalidPayload',
      `notify("${channel}"): the ${part} cannot be written as JSON: ${(cause as Error).message}. ${deep ? 'Send a less deeply nested value.' : 'Send plain data: objects, arrays, strings, numbers, booleans, null, Date and bigint, without cycles.'}`,
      { cause },
    );
  }
  if (text === undefined) {
    const what = typeof payload === 'function' ? 'a function' : typeof payload === 'symbol' ? 'a symbol' : String(payload);
    throw new PubSubError('pubsub.invalidPayload', `notify("${channel}"): the ${part} is ${what}, which JSON cannot represent; send a JSON value such as an object (null is allowed).`);
  }
  return text;
}

type Storage = Record<'_typeMetadatas' | '_transformMetadatas' | '_exposeMetadatas' | '_excludeMetadatas', Map<Function, unknown>> & {
  findTypeMetadata(target: Function, key: string): { typeFunction?: () => unknown; options?: { discriminator?: unknown } } | undefined;
  findTransformMetadatas(target: Function, key: string, transformationType: number): unknown[];
};
let storage: Storage | null | undefined;
const plainClasses = new WeakMap<Function, boolean>();

/** class-transformer's metadata storage, or null if it ever moves (then nothing is known from it). */
function metadataStorage(): Storage | null {
  if (storage === undefined) {
    try {
      storage = createRequire(import.meta.url)('class-transformer/cjs/storage').defaultMetadataStorage as Storage;
    } catch {
      storage = null;
    }
  }
  return storage;
}

/**
 * Whether class-transformer has nothing to do for `type` beyond `new type()` and copying the keys:
 * no @Type, @Transform, @Expose or @Exclude on it or its ancestors. Such payloads skip the (slow)
 * metadata walk of plainToInstance. Reads class-transformer's own storage; if that ever moves, every
 * class takes the full path.
 */
function isPlainClass(type: Function): boolean {
  let known = plainClasses.get(type);
  if (known !== undefined) return known;
  const s = metadataStorage();
  known = !!s;
  for (let t: Function | null = type; s && known && t && t !== Object && t !== Function.prototype; t = Object.getPrototypeOf(t)) {
    if (s._typeMetadatas.has(t) || s._transformMetadatas.has(t) || s._exposeMetadatas.has(t) || s._excludeMetadatas.has(t)) known = false;
  }
  plainClasses.set(type, known);
  return known;
}

/** Longest BigInt payload accepted, in digits: parsing grows faster than linearly, so a hostile payload could stall the worker. */
const MAX_BIGINT_DIGITS = 10_000;

/** A short, safe description of a hostile value for an error message (never the whole of a huge or deep value). */
function show(value: unknown): string {
  if (typeof value === 'string') return value.length > 40 ? `${JSON.stringify(value.slice(0, 40)).slice(0, -1)}…" (${value.length} characters)` : JSON.stringify(value);
  if (Array.isArray(value)) return 'an array';
  if (value === null || typeof value !== 'object') return String(value);
  return 'an object';
}

/** A hostile or malformed payload: names where, what arrived, and what was expected. */
function invalid(where: string, value: unknown, expected: string, fix: string, cause?: unknown): PubSubError {
  return new PubSubError('pubsub.invalidPayload', `${where}: got ${show(value)}, expected ${expected}. ${fix}`, cause === undefined ? undefined : { cause });
}

const isRecord = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/**
 * `value` with every `__proto__` key dropped, at any depth; the same object when it has none (the
 * usual case: nothing is copied). Iterative, so a deeply nested payload cannot overflow the stack.
 * JSON.parse makes such keys plain own properties, harmless until listener code copies them with
 * assignment (Object.assign, naive deep merges), which would then replace a prototype.
 */
function withoutProtoKeys(value: unknown): unknown {
  if (value === null || typeof value !== 'object') return value;
  const stack: object[] = [value];
  let found = false;
  while (stack.length && !found) {
    const v = stack.pop()!;
    if (!Array.isArray(v) && Object.hasOwn(v, '__proto__')) found = true;
    for (const child of Object.values(v)) if (child !== null && typeof child === 'object') stack.push(child);
  }
  if (!found) return value;
  const copy = (v: object): object => (Array.isArray(v) ? [...v] : Object.fromEntries(Object.entries(v).filter(([k]) => k !== '__proto__')));
  const root = copy(value);
  const todo: object[] = [root];
  while (todo.length) {
    const v = todo.pop() as Record<string, unknown>;
    for (const key of Object.keys(v)) {
      const child = v[key];
      if (child !== null && typeof child === 'object') todo.push((v[key] = copy(child)));
    }
  }
  return root;
}

/** Names the fast path must not assign: methods and getter-only accessors of the class (what class-transformer skips too). */
const readOnlyKeys = new WeakMap<Function, Set<string>>();
function skippedKeys(type: Function): Set<string> {
  let keys = readOnlyKeys.get(type);
  if (keys) return keys;
  keys = new Set(['__proto__', 'constructor']);
  for (let p = type.prototype as object | null; p; p = Object.getPrototypeOf(p)) {
    for (const [key, d] of Object.entries(Object.getOwnPropertyDescriptors(p))) {
      if (key !== '__proto__' && (typeof d.value === 'function' || (d.get && !d.set))) keys.add(key);
    }
  }
  readOnlyKeys.set(type, keys);
  return keys;
}

const NOTIFY_BIGINT_FIX = 'notify() writes bigint values in this form.';

function toBigInt(value: unknown, where: string, fix = NOTIFY_BIGINT_FIX): bigint {
  if (typeof value === 'number' && Number.isInteger(value)) return BigInt(value);
  if (typeof value === 'string' && /^-?\d+$/.test(value) && value.length <= MAX_BIGINT_DIGITS + 1) return BigInt(value);
  throw invalid(where, value, `a whole number as a decimal string such as "-42" (at most ${MAX_BIGINT_DIGITS} digits)`, fix);
}

function toDate(value: unknown, where: string): Date {
  const date = typeof value === 'string' || typeof value === 'number' ? new Date(value) : undefined;
  if (date && !Number.isNaN(date.getTime())) return date;
  throw invalid(where, value, 'a date as an ISO 8601 string such as "2024-01-31T12:00:00.000Z"', 'notify() writes Date values in this form.');
}

/**
 * What a payload class says about one property, for the values JSON cannot hold (Date, bigint):
 * - date, bigint: declared by its TypeScript type (tsc records `design:type` for a property with any
 *   decorator) or by @Type(() => BigInt), and nothing else converts it: decoded here.
 * - checkedDate: @Type(() => Date); class-transformer builds it, and an Invalid Date is refused here.
 * - nested: @Type(() => Class); that class's properties are handled the same way.
 * - known: another declared type, or a @Transform: left as class-transformer made it.
 * - unknown: nothing declared (no decorator, so no type at runtime), or an array of undeclared items:
 *   a string that looks like a Date or a bigint is warned about once, as the listener gets a string.
 */
type Field =
  | { kind: 'known' }
  /** `list`: the TypeScript type is an array (true) or not (false); undefined when tsc recorded nothing. */
  | { kind: 'date' | 'bigint' | 'checkedDate'; list?: boolean }
  | { kind: 'nested'; type: Function }
  | { kind: 'unknown'; array: boolean; warned: boolean };

const fieldCache = new WeakMap<Function, Map<string, Field>>();
/** class-transformer's TransformationType.PLAIN_TO_CLASS. */
const PLAIN_TO_CLASS = 0;
const SCALAR_TYPES = new Set<unknown>([String, Number, Boolean, Object, Array, Function, Symbol]);

function fieldsOf(type: Function): Map<string, Field> {
  let fields = fieldCache.get(type);
  if (!fields) fieldCache.set(type, (fields = new Map()));
  return fields;
}

function fieldOf(type: Function, key: string): Field {
  const fields = fieldsOf(type);
  let field = fields.get(key);
  if (!field) fields.set(key, (field = classify(type, key)));
  return field;
}

function classify(type: Function, key: string): Field {
  const s = metadataStorage();
  if (s?.findTransformMetadatas(type, key, PLAIN_TO_CLASS).length) return { kind: 'known' };
  const meta = s?.findTypeMetadata(type, key);
  const declared: unknown = Reflect.getMetadata('design:type', type.prototype, key);
  const list = declared === undefined ? undefined : declared === Array;
  if (meta) {
    let target: unknown;
    try {
      // A type function that needs its options (the object being built) picks per value: not ours to guess.
      target = meta.options?.discriminator ? undefined : meta.typeFunction?.();
    } catch {
      target = undefined;
    }
    if (target === Date) return { kind: 'checkedDate', list };
    if (target === BigInt) return { kind: 'bigint', list }; // class-transformer leaves it a string
    if (typeof target === 'function' && !SCALAR_TYPES.has(target)) return { kind: 'nested', type: target };
    return { kind: 'known' };
  }
  if (declared === Date) return { kind: 'date', list: false };
  if (declared === BigInt) return { kind: 'bigint', list: false };
  if (declared === undefined || declared === Array) return { kind: 'unknown', array: declared === Array, warned: false };
  return { kind: 'known' };
}

/** How notify() writes a Date (toISOString) and a bigint (toString), for values nothing declared. */
const ISO_TIMESTAMP = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})$/;
const INTEGER = /^-?(0|[1-9]\d*)$/;

/** 'Date' or 'bigint' when `value` (or an array's first item) is a string that looks like one as notify() writes it. */
function lookalike(value: unknown): 'Date' | 'bigint' | undefined {
  const v = Array.isArray(value) ? value.find((x) => x !== null) : value;
  if (typeof v !== 'string') return undefined;
  const first = v.charCodeAt(0);
  if (!((first >= 48 && first <= 57) || first === 45)) return undefined; // both forms start with a digit or "-"
  if (v.length <= 40 && ISO_TIMESTAMP.test(v)) return 'Date';
  if (v.length <= MAX_BIGINT_DIGITS + 1 && INTEGER.test(v)) return 'bigint';
  return undefined;
}

/** A Date or bigint value (or an array of them) that JSON will turn into a string. */
function jsonLoses(value: unknown): 'Date' | 'bigint' | undefined {
  const v = Array.isArray(value) ? value.find((x) => x !== null && x !== undefined) : value;
  return v instanceof Date ? 'Date' : typeof v === 'bigint' ? 'bigint' : undefined;
}

const DECLARE_FIX = (cls: string, key: string, kind: 'Date' | 'bigint') =>
  `Add @Type(() => ${kind === 'Date' ? 'Date' : 'BigInt'}) to ${cls}.${key} (or any decorator, so that tsc records its type)`;

/** Calls `fn` on `value`, or on each item when it is an array. */
function eachItem(value: unknown, fn: (item: unknown, at: string) => unknown, at: string): unknown {
  return Array.isArray(value) ? value.map((v, i) => (v === null ? v : fn(v, `${at}[${i}]`))) : fn(value, at);
}

/**
 * After the instance is built: decodes the Date and bigint properties the class declares only by their
 * TypeScript type, refuses an Invalid Date, recurses into nested classes, and warns (once per property)
 * about undeclared ones that received what looks like a Date or bigint. `plain` is never changed.
 */
function reviveFields(instance: Record<string, unknown>, plain: Record<string, unknown>, type: Function, where: string, warn?: (message: string) => void): void {
  const fields = fieldsOf(type);
  for (const key of Object.keys(plain)) {
    let field = fields.get(key);
    if (!field) fields.set(key, (field = classify(type, key)));
    if (field.kind === 'known') continue; // the usual case, kept cheap: once per payload per key
    const value = plain[key];
    if (field.kind === 'unknown') {
      const like = warn && !field.warned ? lookalike(value) : undefined;
      if (like) {
        field.warned = true;
        warn!(undeclaredWarning(type.name || 'an anonymous class', key, like, field.array));
      }
      continue;
    }
    if (value === null || value === undefined || !Object.hasOwn(instance, key)) continue; // excluded, renamed, or a method's name
    const at = `${where}${fieldRef(key)}`;
    if (field.kind !== 'nested' && field.list !== undefined && field.list !== Array.isArray(value)) {
      // @Type applies to each item of an array, whatever the property's type says: hold it to that type.
      const what = field.kind === 'bigint' ? 'bigint' : 'Date';
      throw invalid(at, value, field.list ? `an array of ${what} values` : `a single ${what}, not an array`, `Send what ${type.name}${fieldRef(key)} declares.`);
    }
    switch (field.kind) {
      case 'date':
        instance[key] = toDate(value, at);
        break;
      case 'bigint':
        instance[key] = eachItem(value, (v, a) => toBigInt(v, a), at);
        break;
      case 'checkedDate': {
        // class-transformer makes `new Date(anything)`: an Invalid Date is a payload that was not a date.
        const invalidDate = (v: unknown) => v instanceof Date && Number.isNaN(v.getTime());
        const built = instance[key];
        if (Array.isArray(built) ? built.some(invalidDate) : invalidDate(built)) eachItem(value, (v, a) => toDate(v, a), at);
        break;
      }
      case 'nested': {
        const built = instance[key];
        const nested = (b: unknown, p: unknown, a: string) => isRecord(b) && isRecord(p) && reviveFields(b, p, field.type, a, warn);
        if (Array.isArray(built) && Array.isArray(value)) built.forEach((b, i) => nested(b, value[i], `${at}[${i}]`));
        else nested(built, value, at);
        break;
      }
    }
  }
}

function undeclaredWarning(cls: string, key: string, like: 'Date' | 'bigint', array: boolean): string {
  return `${cls}${fieldRef(key)}${array ? ' has items that' : ''} arrived as ${like === 'Date' ? 'an ISO 8601 timestamp string' : 'a string of digits'}, the form notify() gives a ${like}, but ${cls} does not declare ${array ? 'the type of its items' : 'its type'}, so the listener gets ${array ? 'strings' : 'a string'}. ${DECLARE_FIX(cls, key, like)}; if it is meant to be a string, give it @Type(() => String) and this warning stops. (Warned once per property.)`;
}

/**
 * notify() with a class channel: a Date or bigint where the class declares no type would reach the
 * listener as a string while the class says otherwise, so it is refused here, before anything is sent.
 */
export function assertRebuildable(payload: unknown, type: Function, channel: string): void {
  if (JSON_PRIMITIVES.has(type) || type === Date || type === BigInt) return;
  const visit = (value: unknown, cls: Function, path: string): void => {
    if (Array.isArray(value)) return value.forEach((v, i) => visit(v, cls, `${path}[${i}]`));
    if (value === null || typeof value !== 'object' || value instanceof Date) return;
    for (const key of Object.keys(value)) {
      const v = (value as Record<string, unknown>)[key];
      if (v === null || v === undefined) continue;
      const field = fieldOf(cls, key);
      const lost = field.kind === 'unknown' ? jsonLoses(v) : undefined;
      if (lost) {
        const name = cls.name || 'an anonymous class';
        throw new PubSubError(
          'pubsub.invalidPayload',
          `notify("${channel}"): ${path}${fieldRef(key)} is a ${lost}, but ${name} does not declare ${field.kind === 'unknown' && field.array ? 'the type of its items' : `the type of ${key}`}, so the listener would receive ${lost === 'Date' ? 'an ISO string' : 'a string of digits'}. ${DECLARE_FIX(name, key, lost)}.`,
        );
      }
      if (field.kind === 'nested') visit(v, field.type, `${path}${fieldRef(key)}`);
    }
  };
  visit(payload, type, type.name || 'the payload');
}

/** JSON types a primitive payload parameter accepts as they are. */
const JSON_PRIMITIVES = new Map<Function, string>([
  [String, 'string'],
  [Number, 'number'],
  [Boolean, 'boolean'],
]);

/**
 * Turns a decoded JSON value into an instance of `type` (class-transformer), or a primitive. Never
 * changes `value` (the worker may still need it intact). A value that cannot become `type` throws
 * PubSubError 'pubsub.invalidPayload'. `__proto__` and `constructor` keys are dropped.
 */
export function decodePayload(value: unknown, type: Function | undefined, warn?: (message: string) => void): unknown {
  if (!type) return value;
  const where = `payload for ${type.name || 'an anonymous class'}`;
  const json = JSON_PRIMITIVES.get(type);
  if (json) {
    if (typeof value === json) return value;
    throw invalid(where, value, `a JSON ${json}`, `Send a ${json}, or declare the listener's parameter with the payload's type.`);
  }
  if (type === BigInt) return toBigInt(value, where);
  if (type === Date) return value instanceof Date ? new Date(value.getTime()) : toDate(value, where);
  if (Array.isArray(value)) return value.map((v, i) => decodeObject(v, type, `${where}, item ${i}`, warn));
  return decodeObject(value, type, where, warn);
}

function decodeObject(value: unknown, type: Function, where: string, warn?: (message: string) => void): object {
  const instance = buildObject(value, type, where);
  reviveFields(instance as Record<string, unknown>, value as Record<string, unknown>, type, where, warn);
  return instance;
}

function buildObject(value: unknown, type: Function, where: string): object {
  if (!isRecord(value)) {
    throw invalid(where, value, `a JSON object with the fields of class ${type.name}`, `Send an object, or declare the listener's parameter with the payload's type.`);
  }
  if (isPlainClass(type)) {
    // What plainToInstance does for a class without decorators, minus the metadata walk.
    const instance = new (type as new () => Record<string, unknown>)();
    const skip = skippedKeys(type);
    for (const key of Object.keys(value)) {
      if (!skip.has(key) && typeof instance[key] !== 'function') instance[key] = withoutProtoKeys(value[key]);
    }
    return instance;
  }
  try {
    return plainToInstance(type as new () => object, value);
  } catch (cause) {
    if (cause instanceof PubSubError) throw cause;
    const deep = cause instanceof RangeError && /call stack/i.test(cause.message);
    throw new PubSubError(
      'pubsub.invalidPayload',
      deep
        ? `${where}: the payload is nested too deeply to be turned into ${type.name} (class-transformer recurses once per level). Send a flatter payload, or give the deep part no @Type so that it is kept as plain JSON.`
        : `${where}: class-transformer could not turn it into ${type.name}: ${(cause as Error)?.message ?? String(cause)}. Fix the payload, or the @Type/@Transform decorator that threw.`,
      { cause },
    );
  }
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

const TRIGGER_FIX =
  'Trigger payloads are written by the trigger functions of `pubsub make-migration`; this one was written by something else or by an outdated trigger. Regenerate and apply the migration, and remove the notification (`pubsub dead purge <id>`).';

/** PostgreSQL's ±infinity have no Date; the farthest Dates (±8.64e15 ms) keep comparisons right. */
const INFINITE_DATES: Record<string, number> = { infinity: 8.64e15, '-infinity': -8.64e15 };

function parseDateTime(v: unknown, where: string): Date {
  if (typeof v === 'string' && v.length <= 64) {
    if (Object.hasOwn(INFINITE_DATES, v)) return new Date(INFINITE_DATES[v]!);
    // timestamp without time zone (Prisma's default DateTime) is UTC; time-only values sit on 1970-01-01.
    let text = /^\d{2}:\d{2}/.test(v) ? `1970-01-01T${v}` : v;
    if (/T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(text)) text += 'Z';
    const date = new Date(text);
    if (!Number.isNaN(date.getTime())) return date;
  }
  throw invalid(where, v, 'a timestamp, date or time as PostgreSQL writes it in JSON, such as "2024-01-31T12:00:00.123"', TRIGGER_FIX);
}

const DECIMAL = /^(-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|NaN|-?Infinity)$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;
const FLOAT_WORDS: Record<string, number> = { NaN: NaN, Infinity: Infinity, '-Infinity': -Infinity };

/** Converters from the JSON the trigger writes to the value Prisma would return, by Prisma type. */
const SCALARS: Record<string, (v: unknown, where: string) => unknown> = {
  BigInt: (v, where) => toBigInt(v, where, TRIGGER_FIX),
  Decimal: (v, where) => {
    const text = typeof v === 'number' && Number.isFinite(v) ? String(v) : v;
    if (typeof text === 'string' && DECIMAL.test(text)) {
      const Decimal = loadDecimal();
      try {
        return new Decimal(text);
      } catch (cause) {
        throw invalid(where, v, 'a decimal number as a string such as "12.50"', TRIGGER_FIX, cause);
      }
    }
    throw invalid(where, v, 'a decimal number as a string such as "12.50"', TRIGGER_FIX);
  },
  DateTime: parseDateTime,
  Bytes: (v, where) => {
    // PostgreSQL's base64 breaks lines every 76 characters.
    const text = typeof v === 'string' ? v.replace(/\r?\n/g, '') : undefined;
    if (text !== undefined && text.length % 4 === 0 && BASE64.test(text)) return new Uint8Array(Buffer.from(text, 'base64'));
    throw invalid(where, v, 'bytes as a base64 string such as "AAH+/w=="', TRIGGER_FIX);
  },
  Float: (v, where) => {
    if (typeof v === 'number') return v;
    if (typeof v === 'string' && Object.hasOwn(FLOAT_WORDS, v)) return FLOAT_WORDS[v]; // JSON has no NaN or ±Infinity
    throw invalid(where, v, 'a number, or "NaN", "Infinity" or "-Infinity"', TRIGGER_FIX);
  },
};

/** `.name`, or `["odd name"]` when the name would be unreadable after a dot. */
const fieldRef = (name: string) => (/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) ? `.${name}` : `[${JSON.stringify(name.length > 40 ? `${name.slice(0, 40)}…` : name)}]`);

/** A new row with typed fields converted; `row` itself is left as it was (the worker may put it back). */
function decodeRow(row: unknown, types: Record<string, unknown>, where: string): Record<string, unknown> | null {
  if (row === null || row === undefined) return null;
  if (!isRecord(row)) throw invalid(where, row, 'a JSON object of the row\'s fields, or null', TRIGGER_FIX);
  const out: Record<string, unknown> = {};
  for (const [field, value] of Object.entries(row)) {
    if (field === '__proto__') continue; // no Prisma field has this name; as an assignment it would replace the prototype
    const type = Object.hasOwn(types, field) ? (types[field] as string) : '';
    const list = type.endsWith('[]');
    const scalar = list ? type.slice(0, -2) : type;
    const convert = Object.hasOwn(SCALARS, scalar) ? SCALARS[scalar] : undefined;
    const at = `${where}${fieldRef(field)} (${type})`;
    if (!convert || value === null) out[field] = value;
    else if (!list) {
      if (Array.isArray(value)) throw invalid(at, value, 'a single value', TRIGGER_FIX);
      out[field] = convert(value, at);
    } else {
      if (!Array.isArray(value)) throw invalid(at, value, 'a list (JSON array), or null', TRIGGER_FIX);
      out[field] = value.map((v, i) => {
        if (Array.isArray(v)) throw invalid(`${at}[${i}]`, v, 'a single value', TRIGGER_FIX);
        return v === null ? v : convert(v, `${at}[${i}]`);
      });
    }
  }
  return out;
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
    if (Object.hasOwn(row, f.name)) adapted[f.name] = row[f.name];
    else if (partial) continue; // left out by the selection, not by a model change
    else if (f.optional) adapted[f.name] = null;
    else missing.push(f.name);
  }
  return { row: adapted, missing };
}

const OPERATIONS = ['INSERT', 'UPDATE', 'DELETE'];

/**
 * Rebuilds a TriggerPayload with exact values from what the trigger wrote, as new objects: `wire` is
 * never changed. With the model's current shape, a payload written by an older shape (its `v`) is
 * adapted to it and `warn` is told once. Anything the generated trigger could not have written
 * throws PubSubError 'pubsub.invalidPayload' naming the field.
 */
export function decodeTriggerPayload(wire: WireTriggerPayload, current?: ModelShape, warn?: (message: string) => void): TriggerPayload {
  const w: unknown = wire;
  if (!isRecord(w)) throw invalid('trigger payload', w, 'a JSON object with op, when, model, old and new', TRIGGER_FIX);
  const model = typeof w.model === 'string' && /^[A-Za-z][A-Za-z0-9_]*$/.test(w.model) ? w.model : undefined;
  const where = `${model ?? 'trigger'} payload`;
  if (model === undefined) throw invalid(`${where}, model`, w.model, 'a Prisma model name such as "Author"', TRIGGER_FIX);
  if (typeof w.op !== 'string' || !OPERATIONS.includes(w.op)) throw invalid(`${where}, op`, w.op, '"INSERT", "UPDATE" or "DELETE"', TRIGGER_FIX);
  if (w.when !== 'BEFORE' && w.when !== 'AFTER') throw invalid(`${where}, when`, w.when, '"BEFORE" or "AFTER"', TRIGGER_FIX);
  const types = w.types ?? {};
  if (!isRecord(types)) throw invalid(`${where}, types`, types, 'an object of field name → Prisma type name', TRIGGER_FIX);
  for (const [field, type] of Object.entries(types)) {
    if (typeof type !== 'string') throw invalid(`${where}, types${fieldRef(field)}`, type, 'a Prisma type name such as "BigInt"', TRIGGER_FIX);
  }
  let old = decodeRow(w.old, types, `${where}, old`);
  let row = decodeRow(w.new, types, `${where}, new`);
  if (current && w.v && w.v !== current.version) {
    const partial = !!(w.partial || w.truncated);
    const a = adapt(old, current, partial);
    const b = adapt(row, current, partial);
    [old, row] = [a.row, b.row];
    const missing = [...new Set([...a.missing, ...b.missing])];
    warn?.(
      `a ${model} notification written with model version ${String(w.v)} was read as version ${current.version}: unknown fields dropped, missing optional fields set to null${missing.length ? `; required fields missing: ${missing.join(', ')}` : ''}`,
    );
  }
  const payload: TriggerPayload = { op: w.op as TriggerPayload['op'], when: w.when, model, old, new: row };
  if (w.context !== undefined) payload.context = w.context;
  if (w.truncated) payload.truncated = true;
  if (w.partial) payload.partial = true;
  return payload;
}
