// Schedules without a database: intervals and cron expressions (bad input refused with the fix in the
// message), the DST rule, the catch-up plan, the decorators' registration, and that a schedule's
// listener needs no subscription or channel mode in the generated migration.
import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';
import { Cron, Every, PubSubError, defineChannel, type NotificationContext, type ScheduleOptions } from '../../src/index.js';
import { channelModes, subscriptions } from '../../src/migration.js';
import { getRegistry } from '../../src/registry.js';
import { MAX_CATCH_UP, cronTiming, describeTiming, everyTiming, parseInterval, planSlots } from '../../src/timing.js';

afterEach(() => getRegistry().clear());

const iso = (ms: number) => new Date(ms).toISOString();
const at = (text: string) => Date.parse(text);
/** The first `n` slots of a timing after `from`. */
const slots = (t: { next(after: number): number }, from: string, n: number) => {
  const out: string[] = [];
  for (let a = at(from); out.length < n; ) out.push(iso((a = t.next(a))));
  return out;
};
const refused = (fn: () => unknown, pattern: RegExp) =>
  assert.throws(fn, (e: unknown) => e instanceof PubSubError && e.code === 'pubsub.invalidSchedule' && pattern.test(e.message));

test('intervals: durations and milliseconds, at least a second, slots on multiples since the epoch', () => {
  assert.equal(parseInterval('5m'), 300_000);
  assert.equal(parseInterval(300_000), 300_000);
  assert.equal(parseInterval('1h30m'), 5_400_000);
  assert.equal(parseInterval('30s'), 30_000);
  assert.equal(parseInterval('1d'), 86_400_000);
  assert.equal(parseInterval('1500ms'), 1500);
  refused(() => parseInterval('5 minutes', 'Jobs.run'), /^Jobs\.run: the interval must be .* such as '30s', '5m', '1h30m' or '1d', got "5 minutes"/);
  refused(() => parseInterval('1.5h'), /got "1\.5h"/);
  refused(() => parseInterval(500), /from 1000 \(1s\).*got 500/);
  refused(() => parseInterval(1000.5), /whole number/);
  refused(() => parseInterval('400d'), /366d/);
  refused(() => parseInterval(undefined), /got undefined/);
  assert.deepEqual(slots(everyTiming(parseInterval('5m')), '2026-12-03T22:41:13Z', 2), ['2026-12-03T22:45:00.000Z', '2026-12-03T22:50:00.000Z']);
  assert.equal(describeTiming(everyTiming(5_400_000)), 'every 1h30m');
});

test('cron expressions: fields, ranges, steps, names, nicknames; bad ones refused with what is wrong', () => {
  assert.deepEqual(slots(cronTiming('0 * * * *'), '2026-12-03T22:41:00Z', 2), ['2026-12-03T23:00:00.000Z', '2026-12-04T00:00:00.000Z']);
  assert.deepEqual(slots(cronTiming('*/20 9-10 * * mon-fri'), '2026-12-04T10:30:00Z', 3), ['2026-12-04T10:40:00.000Z', '2026-12-07T09:00:00.000Z', '2026-12-07T09:20:00.000Z']);
  assert.deepEqual(slots(cronTiming('0 0 1,15 * 7'), '2026-12-01T00:00:00Z', 3), ['2026-12-06T00:00:00.000Z', '2026-12-13T00:00:00.000Z', '2026-12-15T00:00:00.000Z'], 'day of month or day of week, 7 = Sunday');
  assert.deepEqual(slots(cronTiming('@daily', 'Asia/Tokyo'), '2026-12-03T12:00:00Z', 1), ['2026-12-03T15:00:00.000Z']);
  assert.deepEqual(slots(cronTiming('0 0 29 feb *'), '2026-01-01T00:00:00Z', 1), ['2028-02-29T00:00:00.000Z']);
  refused(() => cronTiming('0 25 * * *', 'UTC', 'Reports.daily'), /^Reports\.daily: hour "25" is not a value from 0 to 23/);
  refused(() => cronTiming('* * *'), /must have 5 fields \(minute hour day-of-month month day-of-week\)/);
  refused(() => cronTiming('0 0 30 2 *'), /never fires/);
  refused(() => cronTiming('5-1 * * * *'), /goes backwards/);
  refused(() => cronTiming('*/0 * * * *'), /step .* at least 1/);
  refused(() => cronTiming('0 0 * * funday'), /day of week "funday"/);
  refused(() => cronTiming('0 0 * * *', 'Mars/Olympus'), /tz "Mars\/Olympus" is not a time zone.*'Europe\/Paris'/);
  assert.equal(describeTiming(cronTiming('30 2 * * *', 'Europe/Paris')), 'cron 30 2 * * * (Europe/Paris)');
});

test('DST: a wall time skipped by the spring-forward jump runs the length of the jump later; a repeated one runs once, the first time', () => {
  const paris = cronTiming('30 2 * * *', 'Europe/Paris');
  // 29 March 2026: 02:00 CET → 03:00 CEST.
  assert.deepEqual(slots(paris, '2026-03-27T12:00:00Z', 3), ['2026-03-28T01:30:00.000Z', '2026-03-29T01:30:00.000Z', '2026-03-30T00:30:00.000Z']);
  // 25 October 2026: 03:00 CEST → 02:00 CET, 02:30 happens twice.
  assert.deepEqual(slots(paris, '2026-10-23T12:00:00Z', 3), ['2026-10-24T00:30:00.000Z', '2026-10-25T00:30:00.000Z', '2026-10-26T01:30:00.000Z']);
  const newYork = cronTiming('30 2 * * *', 'America/New_York');
  assert.deepEqual(slots(newYork, '2026-03-07T12:00:00Z', 2), ['2026-03-08T07:30:00.000Z', '2026-03-09T06:30:00.000Z']);
  // Sub-daily expressions skip the repeated hour (use @Every for real-time periods), and fold the skipped one.
  const halfHours = cronTiming('*/30 * * * *', 'Europe/Paris');
  assert.deepEqual(slots(halfHours, '2026-10-24T23:45:00Z', 5).map((s) => s.slice(11, 16)), ['00:00', '00:30', '02:00', '02:30', '03:00']);
  assert.deepEqual(slots(halfHours, '2026-03-29T00:15:00Z', 3).map((s) => s.slice(11, 16)), ['00:30', '01:00', '01:30']);
});

test('catch-up plan: attended slots always run; missed ones follow none / last / all, at most MAX_CATCH_UP at once', () => {
  const second = everyTiming(1000);
  // Slots 11..15 s since covered_until at 10 s; missed before 13.5 s (no worker ran), attended after.
  assert.deepEqual(planSlots(second, 'none', 10_000, 15_200, 13_500), { run: [14_000, 15_000], skipped: 3, through: 15_000 });
  assert.deepEqual(planSlots(second, 'last', 10_000, 15_200, 13_500), { run: [13_000, 14_000, 15_000], skipped: 2, through: 15_000 });
  assert.deepEqual(planSlots(second, 'all', 10_000, 15_200, 13_500), { run: [11_000, 12_000, 13_000, 14_000, 15_000], skipped: 0, through: 15_000 });
  assert.deepEqual(planSlots(second, 'last', 10_000, 15_200, 0), { run: [11_000, 12_000, 13_000, 14_000, 15_000], skipped: 0, through: 15_000 }, 'late, never missed');
  assert.deepEqual(planSlots(second, 'last', 15_000, 15_900, 0), { run: [], skipped: 0, through: null });
  const day = planSlots(second, 'all', 0, 86_400_000, 86_400_000);
  assert.equal(day.run.length, MAX_CATCH_UP);
  assert.equal(day.run.at(-1), 86_400_000);
  assert.equal(day.skipped, 86_400 - MAX_CATCH_UP);
  assert.deepEqual(planSlots(second, 'none', 0, 86_400_900, 86_400_500), { run: [], skipped: 86_400, through: 86_400_000 });
  assert.deepEqual(planSlots(second, 'last', 0, 86_400_900, 86_400_500), { run: [86_400_000], skipped: 86_399, through: 86_400_000 });
  const hourly = cronTiming('0 * * * *');
  assert.deepEqual(planSlots(hourly, 'last', at('2026-12-01T00:00:00Z'), at('2026-12-03T12:30:00Z'), at('2026-12-03T12:30:00Z')), {
    run: [at('2026-12-03T12:00:00Z')],
    skipped: 59,
    through: at('2026-12-03T12:00:00Z'),
  });
});

test('@Every and @Cron register a schedule and its listener on channel schedule:<name>, which migrations leave out', () => {
  const pipeline = defineChannel('pipeline_jobs', class Job {});
  class Jobs {
    @Every('5m', { maxAttempts: 3 })
    refresh(slot: Date, ctx: NotificationContext) {
      return [slot, ctx];
    }
    @Cron('0 * * * *', { tz: 'Europe/Paris', name: 'hourly', catchUp: 'all' })
    hourly() {}
  }
  @Every(300_000, { publish: pipeline, payload: (slot) => ({ startTimeMs: slot.getTime() }) })
  class Pipelines {}
  assert.ok(Jobs && Pipelines);
  const registry = getRegistry();
  assert.deepEqual([...registry.schedules.keys()], ['Jobs.refresh', 'hourly', 'Pipelines.pipeline_jobs']);
  const refresh = registry.schedules.get('Jobs.refresh')!;
  assert.equal(refresh.catchUp, 'last');
  assert.equal(refresh.listener?.channel, 'schedule:Jobs.refresh');
  assert.equal(refresh.listener?.payloadType, Date);
  assert.deepEqual(refresh.listener?.delivery, { maxAttempts: 3 });
  assert.equal(registry.schedules.get('hourly')!.timing.timeZone, 'Europe/Paris');
  assert.equal(registry.get('schedule:hourly')?.kind, 'schedule');
  assert.equal(registry.schedules.get('Pipelines.pipeline_jobs')!.publish?.channel, pipeline);
  assert.deepEqual(subscriptions(registry), []);
  assert.deepEqual(channelModes(registry), {});
});

test('schedules refuse bad input at decoration, naming the method', () => {
  const decorate = (fn: () => unknown) => fn;
  refused(
    decorate(() => {
      class A {
        @Every('5 min') run() {}
      }
      return A;
    }),
    /^A\.run: the interval must be/,
  );
  refused(
    decorate(() => {
      class B {
        @Cron('0 * * * *', { tz: 'Europe/Pariss' }) run() {}
      }
      return B;
    }),
    /^B\.run: tz "Europe\/Pariss" is not a time zone/,
  );
  refused(
    decorate(() => {
      class C {
        @Every('1m', { catchUp: 'some' as never }) run() {}
      }
      return C;
    }),
    /^C\.run: catchUp must be 'none', 'last' or 'all', got "some"/,
  );
  refused(
    decorate(() => {
      @(Every('1m') as unknown as ClassDecorator)
      class D {}
      return D;
    }),
    /^D: on a class, a schedule needs `publish: channel`/,
  );
  refused(
    decorate(() => {
      class E {
        @(Every('1m', { publish: 'jobs' }) as unknown as MethodDecorator) run() {}
      }
      return E;
    }),
    /^E\.run: a schedule with `publish` runs no method; put it on the class/,
  );
  assert.throws(
    () => {
      class F {
        @Every('1m', { ordered: true } as unknown as ScheduleOptions) run() {}
      }
      return F;
    },
    (e: unknown) => e instanceof PubSubError && e.code === 'pubsub.config' && /unknown option "ordered"/.test(e.message),
  );
  assert.throws(
    () => {
      class G {
        @Every('1m') run() {}
        @Every('2m', { name: 'G.run' }) other() {}
      }
      return G;
    },
    (e: unknown) => e instanceof PubSubError && e.code === 'pubsub.duplicateListener',
  );
});
