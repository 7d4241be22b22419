/**
 * When schedules fire: intervals (`@Every`) and cron expressions in a time zone (`@Cron`), as pure
 * functions of instants (milliseconds since the epoch), so every worker computes the same slots.
 *
 * - An interval's slots are the multiples of it since the Unix epoch (`'5m'`: :00, :05, … UTC), real
 *   time, never moved by daylight saving time.
 * - A cron expression's slots are wall-clock times in its zone (default UTC). Wall-clock times that
 *   daylight saving time makes ambiguous are resolved as Temporal's `disambiguation: 'compatible'`
 *   does: a time skipped by the spring-forward jump runs the length of the jump later (02:30 → 03:30),
 *   and a time repeated by the fall-back runs once, at its first occurrence. Two wall times that
 *   resolve to one instant make one slot.
 */
import { PubSubError } from './errors.js';

export type ScheduleKind = 'every' | 'cron';

export interface Timing {
  readonly kind: ScheduleKind;
  /** As stored in pubsub.schedule: the interval in ms, or the cron expression as written. */
  readonly expression: string;
  /** The cron expression's zone; null for intervals. */
  readonly timeZone: string | null;
  /** The first slot strictly after `after`; Infinity when there is none. */
  next(after: number): number;
}

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: MINUTE, h: HOUR, d: DAY };

const bad = (where: string, message: string) => new PubSubError('pubsub.invalidSchedule', `${where}: ${message}`);

/**
 * `'5m'`, `'1h30m'`, `'30s'`, `'1d'`, `'500ms'` or a number of milliseconds; at least one second (a
 * slot is one transaction and one stored notification), at most 366 days.
 */
export function parseInterval(value: unknown, where = 'interval'): number {
  let ms: number;
  if (typeof value === 'number') ms = value;
  else if (typeof value === 'string' && /^(\d+(ms|s|m|h|d))+$/.test(value.trim())) {
    ms = 0;
    for (const [, n, unit] of value.trim().matchAll(/(\d+)(ms|s|m|h|d)/g)) ms += Number(n) * UNITS[unit!]!;
  } else {
    throw bad(where, `the interval must be a number of milliseconds or a duration such as '30s', '5m', '1h30m' or '1d', got ${JSON.stringify(value) ?? String(value)}.`);
  }
  if (!Number.isSafeInteger(ms) || ms < 1000 || ms > 366 * DAY) {
    throw bad(where, `the interval must be a whole number of milliseconds from 1000 (1s) to ${366 * DAY} (366d), got ${JSON.stringify(value)}.`);
  }
  return ms;
}

/** Slots every `ms` milliseconds, aligned on the Unix epoch. */
export function everyTiming(ms: number): Timing {
  return {
    kind: 'every',
    expression: String(ms),
    timeZone: null,
    next: (after) => (Math.floor(after / ms) + 1) * ms,
  };
}

// Cron expressions.

interface Field {
  name: string;
  min: number;
  max: number;
  names?: string[];
}
const FIELDS: Field[] = [
  { name: 'minute', min: 0, max: 59 },
  { name: 'hour', min: 0, max: 23 },
  { name: 'day of month', min: 1, max: 31 },
  { name: 'month', min: 1, max: 12, names: ['jan', 'feb', 'mar', 'apr', 'may', 'jun', 'jul', 'aug', 'sep', 'oct', 'nov', 'dec'] },
  { name: 'day of week', min: 0, max: 7, names: ['sun', 'mon', 'tue', 'wed', 'thu', 'fri', 'sat'] },
];
const NICKNAMES: Record<string, string> = {
  '@yearly': '0 0 1 1 *',
  '@annually': '0 0 1 1 *',
  '@monthly': '0 0 1 * *',
  '@weekly': '0 0 * * 0',
  '@daily': '0 0 * * *',
  '@midnight': '0 0 * * *',
  '@hourly': '0 * * * *',
};

interface CronFields {
  minutes: number[];
  hours: number[];
  days: Set<number>;
  months: Set<number>;
  weekdays: Set<number>;
  /** Both day fields restricted: a day matches either (as every cron does). */
  eitherDay: boolean;
  anyDay: boolean;
  anyWeekday: boolean;
}

function parseField(text: string, field: Field, where: string): Set<number> {
  const values = new Set<number>();
  const number = (s: string): number => {
    const named = field.names?.indexOf(s.toLowerCase()) ?? -1;
    const n = named >= 0 ? named + (field.names!.length === 12 ? 1 : 0) : /^\d+$/.test(s) ? Number(s) : NaN;
    if (!(n >= field.min && n <= field.max)) {
      throw bad(where, `${field.name} ${JSON.stringify(s)} is not a value from ${field.min} to ${field.max}${field.names ? ` or a name (${field.names.slice(0, 3).join(', ')}, …)` : ''}.`);
    }
    return n;
  };
  for (const part of text.split(',')) {
    const m = /^(\*|[A-Za-z0-9]+(?:-[A-Za-z0-9]+)?)(?:\/(\d+))?$/.exec(part);
    if (!m) throw bad(where, `${field.name} ${JSON.stringify(part)} is not a value, a range a-b, * or a step such as */15.`);
    const [, range, stepText] = m;
    const step = stepText === undefined ? 1 : Number(stepText);
    if (!(step >= 1)) throw bad(where, `${field.name}: the step in ${JSON.stringify(part)} must be at least 1.`);
    let [from, to] = [field.min, field.max];
    if (range !== '*') {
      const [a, b] = range!.split('-');
      from = number(a!);
      to = b === undefined ? (stepText === undefined ? from : field.max) : number(b);
      if (from > to) throw bad(where, `${field.name} range ${JSON.stringify(range)} goes backwards.`);
    }
    for (let v = from; v <= to; v += step) values.add(v);
  }
  return values;
}

function parseCron(expression: string, where: string): CronFields {
  const text = NICKNAMES[expression.trim().toLowerCase()] ?? expression.trim();
  const parts = text.split(/\s+/);
  if (parts.length !== 5) {
    throw bad(where, `cron expression ${JSON.stringify(expression)} must have 5 fields (minute hour day-of-month month day-of-week), e.g. '0 * * * *', or be one of ${Object.keys(NICKNAMES).join(', ')}.`);
  }
  const sets = parts.map((p, i) => parseField(p, FIELDS[i]!, where));
  const weekdays = sets[4]!;
  if (weekdays.delete(7)) weekdays.add(0); // 7 is Sunday too
  const anyDay = parts[2]!.startsWith('*');
  const anyWeekday = parts[4]!.startsWith('*');
  return {
    minutes: [...sets[0]!].sort((a, b) => a - b),
    hours: [...sets[1]!].sort((a, b) => a - b),
    days: sets[2]!,
    months: sets[3]!,
    weekdays,
    eitherDay: !anyDay && !anyWeekday,
    anyDay,
    anyWeekday,
  };
}

const formatters = new Map<string, Intl.DateTimeFormat>();

/** Throws pubsub.invalidSchedule for a zone the runtime's time zone database does not know. */
export function assertTimeZone(zone: unknown, where: string): asserts zone is string {
  if (typeof zone !== 'string' || zone === '') throw bad(where, `tz must be an IANA time zone name such as 'Europe/Paris' or 'UTC', got ${JSON.stringify(zone) ?? String(zone)}.`);
  try {
    formatter(zone);
  } catch {
    throw bad(where, `tz ${JSON.stringify(zone)} is not a time zone this runtime knows; use an IANA name such as 'Europe/Paris', 'America/New_York' or 'UTC'.`);
  }
}

function formatter(zone: string): Intl.DateTimeFormat {
  let f = formatters.get(zone);
  if (!f) {
    f = new Intl.DateTimeFormat('en-US', { timeZone: zone, hourCycle: 'h23', year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', second: 'numeric' });
    formatters.set(zone, f);
  }
  return f;
}

/**
 * The zone's UTC offset (ms) at an instant. Every offset change of the tz database since 1970 happens
 * on a quarter hour, so one lookup per quarter hour is cached.
 */
function offsetFunction(zone: string): (instant: number) => number {
  const cache = new Map<number, number>();
  const f = formatter(zone);
  return (instant) => {
    const bucket = Math.floor(instant / (15 * MINUTE)) * 15 * MINUTE;
    let offset = cache.get(bucket);
    if (offset === undefined) {
      const p = Object.fromEntries(f.formatToParts(bucket).map((x) => [x.type, x.value]));
      offset = Date.UTC(Number(p.year), Number(p.month) - 1, Number(p.day), Number(p.hour), Number(p.minute), Number(p.second)) - bucket;
      if (cache.size > 10_000) cache.clear();
      cache.set(bucket, offset);
    }
    return offset;
  };
}

/** Years a cron expression is searched for its next slot (29 February fires every 4 to 8 years). */
const SEARCH_DAYS = 366 * 9;

/** Slots of a cron expression in `zone`; throws pubsub.invalidSchedule for a bad expression or zone, or one that never fires. */
export function cronTiming(expression: string, zone = 'UTC', where = 'cron'): Timing {
  if (typeof expression !== 'string') throw bad(where, `the cron expression must be a string such as '0 * * * *', got ${String(expression)}.`);
  const cron = parseCron(expression, where);
  assertTimeZone(zone, where);
  const offset = offsetFunction(zone);
  /** The instant of a wall-clock time (as a UTC timestamp of its fields), 'compatible' disambiguation. */
  const resolve = (wall: number): number => {
    const before = offset(wall - DAY);
    const after = offset(wall + DAY);
    // The larger offset first: it gives the earlier instant, the first occurrence of a repeated time.
    for (const o of [Math.max(before, after), Math.min(before, after)]) {
      if (offset(wall - o) === o) return wall - o;
    }
    return wall - before; // skipped by a jump forward: the offset before it, i.e. the length of the jump later
  };
  const dayMatches = (date: Date): boolean => {
    if (!cron.months.has(date.getUTCMonth() + 1)) return false;
    const day = cron.days.has(date.getUTCDate());
    const weekday = cron.weekdays.has(date.getUTCDay());
    if (cron.eitherDay) return day || weekday;
    return (cron.anyDay || day) && (cron.anyWeekday || weekday);
  };
  /** Matching wall-clock minutes from `from` on (a wall time as UTC fields), in order. */
  function* walls(from: number): Generator<number> {
    const start = Math.ceil(from / MINUTE) * MINUTE;
    const firstDay = Math.floor(start / DAY) * DAY;
    for (let d = 0; d < SEARCH_DAYS; d++) {
      const day = firstDay + d * DAY;
      if (!dayMatches(new Date(day))) continue;
      for (const h of cron.hours) {
        if (day + (h + 1) * HOUR <= start) continue;
        for (const m of cron.minutes) {
          const wall = day + h * HOUR + m * MINUTE;
          if (wall >= start) yield wall;
        }
      }
    }
  }
  const next = (after: number): number => {
    const wallAfter = after + offset(after);
    // Fast path: the first wall time after `after`'s, with no offset change in between.
    for (const wall of walls(Math.floor(wallAfter / MINUTE) * MINUTE + MINUTE)) {
      const instant = wall - offset(after);
      // Offsets change at most twice a year, so the same offset at both ends a few days apart means none in between.
      if (instant - after < 7 * DAY && offset(instant) === offset(after)) return instant;
      break;
    }
    // Around an offset change, wall times do not map to instants in order: look from a few hours back
    // and keep the earliest instant after `after`.
    let best = Infinity;
    let bestWall = Infinity;
    for (const wall of walls(wallAfter - 3 * HOUR)) {
      if (wall > bestWall + 4 * HOUR) break;
      const instant = resolve(wall);
      if (instant > after && instant < best) [best, bestWall] = [instant, wall];
    }
    return best;
  };
  if (next(Date.UTC(2001, 0, 1)) === Infinity) throw bad(where, `cron expression ${JSON.stringify(expression)} never fires (no such date).`);
  return { kind: 'cron', expression, timeZone: zone, next };
}

/** The timing of a schedule as stored in pubsub.schedule (for `pubsub status`, without the modules). */
export function storedTiming(kind: string, expression: string, zone: string | null): Timing | undefined {
  try {
    if (kind === 'every') return everyTiming(parseInterval(Number(expression)));
    if (kind === 'cron') return cronTiming(expression, zone ?? 'UTC');
  } catch {
    // A row written by another version: status shows no next slot rather than failing.
  }
  return undefined;
}

/** `every 5m`, `every 1h30m`, `cron 0 * * * * (Europe/Paris)`: for status and messages. */
export function describeTiming(t: Timing): string {
  if (t.kind === 'cron') return `cron ${t.expression}${t.timeZone && t.timeZone !== 'UTC' ? ` (${t.timeZone})` : ''}`;
  let rest = Number(t.expression);
  let text = '';
  for (const [unit, size] of Object.entries(UNITS).reverse()) {
    if (rest >= size) {
      text += `${Math.floor(rest / size)}${unit}`;
      rest %= size;
    }
  }
  return `every ${text}`;
}

export type CatchUp = 'none' | 'last' | 'all';

/** Slots handed on at most at once by `catchUp: 'all'`; older missed ones are skipped (and counted). */
export const MAX_CATCH_UP = 100;
/** How far back missed cron slots are looked for (an interval's are counted without enumerating them). */
const LOOKBACK_MS = 400 * DAY;

export interface SlotPlan {
  /** Slots to run now, ascending. */
  run: number[];
  /** Slots passed over (missed, by the catch-up policy or beyond MAX_CATCH_UP). */
  skipped: number;
  /** Every slot up to this one is settled (run or skipped); null when there was nothing. */
  through: number | null;
}

/**
 * What a tick does with the slots in (`from`, `now`]: slots at or after `attendedFrom` passed while
 * some worker was running the schedule (late, perhaps, never missed) and all run; older ones were
 * missed while no worker ran it (or could reach the database) and follow `catchUp`: 'all' runs them,
 * 'last' runs the latest of them, 'none' skips them. At most MAX_CATCH_UP run at once; older ones are
 * skipped.
 */
export function planSlots(timing: Timing, catchUp: CatchUp, from: number, now: number, attendedFrom: number): SlotPlan {
  const keep: number[] = []; // the latest MAX_CATCH_UP slots to run
  let skipped = 0;
  let through: number | null = null;
  let lastMissed: number | null = null;
  let missedCount = 0;
  const take = (slot: number) => {
    keep.push(slot);
    if (keep.length > MAX_CATCH_UP) {
      keep.shift();
      skipped++;
    }
  };
  const visit = (slot: number) => {
    through = slot;
    if (slot >= attendedFrom) return take(slot);
    missedCount++;
    lastMissed = slot;
    if (catchUp === 'all') take(slot);
  };
  if (timing.kind === 'every') {
    const ms = Number(timing.expression);
    const first = Math.floor(from / ms) + 1;
    const last = Math.floor(now / ms);
    // Only the latest MAX_CATCH_UP + 1 are walked; older ones are counted. Those are all skipped: on
    // time ones (and, with 'all', missed ones) are followed by more than MAX_CATCH_UP that run; missed
    // ones with 'none' or 'last' are followed by a later slot, on time or missed, that 'last' prefers.
    const start = Math.max(first, last - MAX_CATCH_UP);
    skipped += Math.max(0, start - first);
    for (let k = start; k <= last; k++) visit(k * ms);
  } else {
    for (let slot = timing.next(Math.max(from, now - LOOKBACK_MS)); slot <= now; slot = timing.next(slot)) visit(slot);
  }
  if (catchUp === 'last' && lastMissed !== null) {
    keep.unshift(lastMissed); // missed slots all come before attended ones
    missedCount--;
  }
  if (catchUp !== 'all') skipped += missedCount;
  return { run: keep, skipped, through };
}
