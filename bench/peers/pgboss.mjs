// Benchmark runner for pg-boss 12.38.0 (PostgreSQL job queue), schema `pgboss`.
//
// Instance: new PgBoss({ connectionString, schedule: false, supervise: false }) (no cron and no
// maintenance/monitoring timers: neither takes part in fetching or completing jobs, and both
// would only add background queries to a run of a few seconds); pool size default (max: 10);
// migrate/createSchema default (on). An 'error' event fails the run (thrown, never printed).
//
// pgBossDrain({ connectionString, jobs }) -> { ms, rate }
//   Setup (untimed): start(); deleteQueue("bench_drain") (if left over: removes its jobs) and
//   createQueue("bench_drain") with defaults (policy standard, shared job table, notify off);
//   insert() `jobs` jobs with data {} in batches of 10 000; ANALYZE the job table.
//   Worker: work("bench_drain", { batchSize: 500, localConcurrency: 4, burstWhenBatchFull: true },
//   async (batch) => {}) -- a no-op batch handler; pg-boss completes the batch after it resolves.
//   burstWhenBatchFull is what lets a worker fetch again at once after a full batch; without it
//   every worker sleeps pollingIntervalSeconds (default 2 s) between fetches (measured: 277 jobs/s at 50/10).
//   batchSize 500 / localConcurrency 4 was the fastest of the settings tried on the 2-core test
//   machine, 50k jobs, two runs each (jobs/s): batchSize 20: 13-18k, 50: 19-22k (50/10: ~22k),
//   100: 25-28k, 200: 28-32k, 500: 33-37k (500/4: 35-37k), 1000: 32-36k; localConcurrency
//   2/4/10/20 mattered little beyond 4.
//   Timing: the clock starts right after `await boss.work(...)` resolves (work() spawns its
//   workers synchronously before resolving; no handler can have run yet, which is checked) and
//   stops in the handler call that brings the number of handled jobs to `jobs`.
//   Then (untimed) offWork(queue, { wait: true }), a check that every job of the queue is in
//   state 'completed', and stop({ graceful: true, close: true, timeout: 10000 }).
//   rate = jobs / (ms / 1000).
//
// pgBossLatency({ connectionString, samples }) -> number[] (ms)
//   Instance as above plus useListenNotify: true; queue "bench_latency" created with
//   { notify: true } (pg-boss's LISTEN/NOTIFY wake-up; without it pickup waits for the
//   pollingIntervalSeconds poll, minimum 0.5 s). work("bench_latency", {}, handler): defaults
//   (batchSize 1, localConcurrency 1, pollingIntervalSeconds 2, notifyPollingIntervalSeconds 30).
//   Sampling starts after the worker's first (empty) fetch has settled (200 ms sleep). Per sample,
//   sequentially: boss.send("bench_latency", { i: N }) (one autocommit insert + NOTIFY);
//   sent = performance.timeOrigin + performance.now() just after send() resolved (committed).
//   The handler records performance.timeOrigin + performance.now() on entry; sample =
//   received - sent (same process; the payload's sample index N keys the sent time). The next job
//   is sent only after the handler for the previous one ran. All samples returned, none dropped.
//
// Both functions print nothing and close every pool/client/timer before returning.

import { performance } from "node:perf_hooks";
import { PgBoss } from "pg-boss";

const DRAIN_QUEUE = "bench_drain";
const LATENCY_QUEUE = "bench_latency";
const INSERT_BATCH = 10_000;
const DRAIN_WORK_OPTIONS = {
  batchSize: 500,
  localConcurrency: 4,
  burstWhenBatchFull: true,
};
const STOP_OPTIONS = { graceful: true, close: true, timeout: 10_000 };

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function startBoss(connectionString, extra = {}, onError = null) {
  const boss = new PgBoss({
    connectionString,
    schedule: false,
    supervise: false,
    ...extra,
  });
  const errors = [];
  boss.on("error", (err) => {
    errors.push(err);
    onError?.(err);
  });
  boss.on("warning", () => {});
  await boss.start();
  return { boss, errors };
}

async function freshQueue(boss, name, options = {}) {
  await boss.deleteQueue(name);
  await boss.createQueue(name, options);
  const queue = await boss.getQueue(name);
  return `pgboss.${queue.table}`;
}

async function countNotCompleted(boss, table, name) {
  const { rows } = await boss
    .getDb()
    .executeSql(
      `select count(*)::int as n from ${table} where name = $1 and state <> 'completed'`,
      [name],
    );
  return rows[0].n;
}

export async function pgBossDrain({ connectionString, jobs }) {
  let failDrain;
  const failed = new Promise((_, reject) => (failDrain = reject));
  failed.catch(() => {});
  const { boss, errors } = await startBoss(connectionString, {}, (err) => failDrain(err));
  let stopped = false;
  try {
    const table = await freshQueue(boss, DRAIN_QUEUE);
    const batch = new Array(Math.min(INSERT_BATCH, jobs)).fill(null).map(() => ({ data: {} }));
    for (let done = 0; done < jobs; done += INSERT_BATCH) {
      const n = Math.min(INSERT_BATCH, jobs - done);
      await boss.insert(DRAIN_QUEUE, n === batch.length ? batch : batch.slice(0, n));
    }
    await boss.getDb().executeSql(`analyze ${table}`);

    let handled = 0;
    let endAt = 0;
    let resolveDone;
    const done = new Promise((resolve) => (resolveDone = resolve));
    await boss.work(DRAIN_QUEUE, DRAIN_WORK_OPTIONS, async (batchJobs) => {
      handled += batchJobs.length;
      if (handled >= jobs && endAt === 0) {
        endAt = performance.now();
        resolveDone();
      }
    });
    const startAt = performance.now();
    const handledAtStart = handled;
    if (jobs > 0) await Promise.race([done, failed]); // any 'error' event fails the run

    await boss.offWork(DRAIN_QUEUE, { wait: true });
    const left = await countNotCompleted(boss, table, DRAIN_QUEUE);
    await boss.stop(STOP_OPTIONS);
    stopped = true;
    if (handledAtStart !== 0) {
      throw new Error(`pgBossDrain: ${handledAtStart} jobs ran before the clock started`);
    }
    if (handled !== jobs || left !== 0) {
      throw new Error(`pgBossDrain: ${handled} jobs handled for ${jobs}, ${left} not completed`);
    }
    if (errors.length) throw errors[0];
    const ms = jobs > 0 ? endAt - startAt : 0;
    return { ms, rate: ms > 0 ? jobs / (ms / 1000) : 0 };
  } finally {
    if (!stopped) await boss.stop(STOP_OPTIONS).catch(() => {});
  }
}

export async function pgBossLatency({ connectionString, samples }) {
  const { boss, errors } = await startBoss(connectionString, { useListenNotify: true });
  try {
    await freshQueue(boss, LATENCY_QUEUE, { notify: true });

    const sent = new Array(samples);
    const received = new Array(samples);
    let waiting = null; // { i, resolve }
    await boss.work(LATENCY_QUEUE, {}, async ([job]) => {
      const t = now();
      const i = job.data.i;
      received[i] = t;
      if (waiting && waiting.i === i) waiting.resolve();
    });
    await sleep(200); // let the worker's first (empty) fetch finish and the listener settle

    for (let i = 0; i < samples; i++) {
      const started = new Promise((resolve) => (waiting = { i, resolve }));
      await boss.send(LATENCY_QUEUE, { i });
      sent[i] = now();
      await started;
    }
    waiting = null;
    await boss.offWork(LATENCY_QUEUE, { wait: true });
    if (errors.length) throw errors[0];
    return sent.map((s, i) => received[i] - s);
  } finally {
    await boss.stop(STOP_OPTIONS).catch(() => {});
  }
}
