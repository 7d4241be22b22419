// W3's sender: one sample = BEGIN, publish sample i, stamp, COMMIT; the stamp (clock() of listeners.ts)
// is returned. Run in the bench process, or as a process of its own (forked, `node sender.js <url>`):
// there it sends sample i when told { kind, i } over IPC and answers { i, at }.
import pg from 'pg';
import { notify } from 'pgpubsub';
import { clock } from './listeners.js';

export type SampleKind = 'raw' | 'durable' | 'fast' | 'graphile';

export async function sendSample(client: pg.ClientBase, kind: SampleKind, i: number): Promise<number> {
  await client.query('begin');
  if (kind === 'raw') await client.query('select pg_notify($1, $2)', ['bench_raw', JSON.stringify({ i })]);
  else if (kind === 'graphile') await client.query('select graphile_worker.add_job($1, $2::json)', ['bench_latency', JSON.stringify({ i })]);
  else await notify(kind === 'durable' ? 'bench_latency' : 'bench_fast', { i }, { client });
  const at = clock();
  await client.query('commit');
  return at;
}

if (process.argv[1]?.endsWith('sender.js') && process.send) {
  const client = new pg.Client(process.argv[2]);
  await client.connect();
  process.on('message', async ({ kind, i }: { kind: SampleKind; i: number }) => process.send!({ i, at: await sendSample(client, kind, i) }));
  process.on('disconnect', () => void client.end().then(() => process.exit(0)));
  process.send({ ready: true });
}
