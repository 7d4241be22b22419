// Benchmark runner for graphile-worker 0.18.0 (PostgreSQL job queue), schema `graphile_worker`.
//
// graphileDrain({ connectionString, jobs, batching }) -> { ms, rate }
//   Setup (untimed): runMigrations(); TRUNCATE graphile_worker._private_jobs and
//   _private_job_queues; queue `jobs` no-op jobs (task "bench_noop", payload {}) with
//   graphile_worker.add_jobs() in batches of 10 000 (specs built server-side with
//   generate_series); ANALYZE the jobs table.
//   Worker: run({ taskList: { bench_noop: async () => {} }, concurrency: 24, maxPoolSize: 25,
//   noHandleSignals: true, silent logger }). pollInterval default (2000 ms), LISTEN/NOTIFY default.
//     batching: false -> no further options (graphile defaults: no local queue, one
//       get_job/complete_job round trip per job).
//     batching: true  -> preset.worker = { localQueue: { size: 500 }, completeJobBatchDelay: 0,
//       failJobBatchDelay: 0 } (the batching settings of graphile's own performance docs).
//   Concurrency 10 (pool 10 or 12) and 24 (pool 10 or 26) measured the same within run-to-run
//   noise on the 2-core test machine (~5k jobs/s unbatched, ~60k jobs/s batched, 50k jobs), so
//   the setting of graphile's own performance page is kept: concurrency 24, maxPoolSize 25.
//   Timing: the clock starts right after `await run(...)` resolves (run() builds the worker pool
//   synchronously before resolving; no job can have been fetched yet at that point, which is
//   checked) and stops inside the task call that brings the call count to `jobs`.
//   After stopping the clock the runner is stopped (runner.stop(), graceful) and the jobs table
//   is checked to be empty (waiting up to 2 s: unbatched, 0.18 does not await completeJob, so
//   stop() can resolve with the last few completions still in flight). rate = jobs / (ms / 1000).
//
// graphileLatencyWorker({ connectionString, onStart }) -> { stop() }
//   Same setup; worker with graphile defaults: concurrency 1, no local queue, no completion
//   batching, LISTEN/NOTIFY on ("jobs:insert"), pollInterval 2000 ms. Resolves once the pool
//   emitted "pool:listen:success" plus 200 ms to settle. The task "bench_latency" calls
//   onStart(payload.i) on entry; bench/run.ts (W3) adds the jobs (bench/sender.ts: BEGIN,
//   add_job, stamp, COMMIT, as for every system of W3) one at a time and takes the time.
//
// Both functions print nothing and close every pool/client/timer before returning.

import { EventEmitter } from "node:events";
import { performance } from "node:perf_hooks";
import pg from "pg";
import { Logger, run, runMigrations } from "graphile-worker";

const SCHEMA = "graphile_worker";
const NOOP_TASK = "bench_noop";
const LATENCY_TASK = "bench_latency";
const ADD_BATCH = 10_000;

const DRAIN_CONCURRENCY = 24;
const DRAIN_MAX_POOL_SIZE = 25;
const BATCHING_PRESET = {
  worker: {
    localQueue: { size: 500 },
    completeJobBatchDelay: 0,
    failJobBatchDelay: 0,
  },
};

const silentLogger = new Logger(() => () => {});
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function withClient(connectionString, fn) {
  const client = new pg.Client({ connectionString });
  client.on("error", () => {});
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

async function freshState(connectionString, client) {
  await runMigrations({ connectionString, logger: silentLogger });
  await client.query(
    `truncate ${SCHEMA}._private_jobs, ${SCHEMA}._private_job_queues`,
  );
}

async function queueNoopJobs(client, jobs) {
  for (let done = 0; done < jobs; done += ADD_BATCH) {
    const n = Math.min(ADD_BATCH, jobs - done);
    await client.query(
      `select count(*) from ${SCHEMA}.add_jobs(array(
         select row($1::text, '{}'::json, null, null, null, null, null, null)::${SCHEMA}.job_spec
         from generate_series(1, $2::int)))`,
      [NOOP_TASK, n],
    );
  }
  await client.query(`analyze ${SCHEMA}._private_jobs`);
}

async function countJobs(client) {
  const { rows } = await client.query(
    `select count(*)::int as n from ${SCHEMA}._private_jobs`,
  );
  return rows[0].n;
}

export async function graphileDrain({ connectionString, jobs, batching }) {
  return withClient(connectionString, async (client) => {
    await freshState(connectionString, client);
    await queueNoopJobs(client, jobs);

    let calls = 0;
    let endAt = 0;
    let resolveDone;
    const done = new Promise((resolve) => (resolveDone = resolve));
    const taskList = {
      [NOOP_TASK]: async () => {
        calls++;
        if (calls === jobs) {
          endAt = performance.now();
          resolveDone();
        }
      },
    };

    const runner = await run({
      connectionString,
      concurrency: DRAIN_CONCURRENCY,
      maxPoolSize: DRAIN_MAX_POOL_SIZE,
      noHandleSignals: true,
      logger: silentLogger,
      taskList,
      ...(batching ? { preset: BATCHING_PRESET } : {}),
    });
    const startAt = performance.now();
    const callsAtStart = calls;
    try {
      if (jobs > 0) {
        // If the runner dies (e.g. lost database), fail instead of waiting forever.
        const died = runner.promise.then(() => {
          throw new Error("graphileDrain: runner exited before all jobs ran");
        });
        await Promise.race([done, died]);
      }
    } finally {
      await runner.stop();
    }
    if (callsAtStart !== 0) {
      throw new Error(`graphileDrain: ${callsAtStart} jobs ran before the clock started`);
    }
    // Without completeJobBatchDelay, graphile 0.18 fires completeJob without awaiting it, and
    // runner.stop() can resolve while the last few completions are still in flight: allow them
    // up to 2 s to land before checking that the queue is really empty (untimed).
    let left = await countJobs(client);
    for (let waited = 0; left !== 0 && waited < 2000; waited += 10) {
      await sleep(10);
      left = await countJobs(client);
    }
    if (left !== 0 || calls !== jobs) {
      throw new Error(`graphileDrain: ${calls} task calls for ${jobs} jobs, ${left} jobs left`);
    }
    const ms = jobs > 0 ? endAt - startAt : 0;
    return { ms, rate: ms > 0 ? jobs / (ms / 1000) : 0 };
  });
}

export async function graphileLatencyWorker({ connectionString, onStart }) {
  await withClient(connectionString, (client) => freshState(connectionString, client));
  const events = new EventEmitter();
  const listening = new Promise((resolve) => events.once("pool:listen:success", resolve));
  const runner = await run({
    connectionString,
    noHandleSignals: true,
    logger: silentLogger,
    events,
    taskList: { [LATENCY_TASK]: async (payload) => onStart(payload.i) },
  });
  await listening;
  await sleep(200); // let LISTEN complete and the idle worker settle
  return { stop: () => runner.stop() };
}
