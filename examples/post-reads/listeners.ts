// Scenario 1 of the design notes: keep a count of post reads per day, off the request path.
// Also a plugin: `pubsub posts recount --since 2026-01-01` rebuilds the counts from the reads.
import { InvalidArgumentError, Listen, Type, defineChannel, type NotificationContext, type RegisterCommands } from 'pgpubsub';

export class PostRead {
  postId!: number;
  // JSON has no dates: @Type tells class-transformer to turn the ISO string back into a Date.
  @Type(() => Date)
  date!: Date;
}

/** One declaration for both sides: notify(postReads, …) and @Listen(postReads) are type-checked. */
export const postReads = defineChannel('post_reads_per_date', PostRead);

export class PostReadListeners {
  /** Logs the read (post_reads) and bumps its day's count (post_read_counts, the cache) in the worker's transaction. */
  @Listen(postReads)
  async onRead(read: PostRead, ctx: NotificationContext) {
    await ctx.tx!.query('insert into post_reads (post_id, read_at) values ($1, $2)', [read.postId, read.date]);
    const { rows } = await ctx.tx!.query<{ reads: number }>(
      `insert into post_read_counts (day, post_id, reads) values (($2::timestamptz at time zone 'UTC')::date, $1, 1)
       on conflict (day, post_id) do update set reads = post_read_counts.reads + 1 returning reads`,
      [read.postId, read.date],
    );
    const day = read.date.toISOString().slice(0, 10);
    console.log(`[post-reads] post ${read.postId} read on ${day}: ${rows[0]!.reads} read(s) that day (notification ${ctx.id})`);
  }
}

/** The name of this module's commands: `pubsub posts …` (without it, the channel's name would be used). */
export const plugin = 'posts';

const day = (value: string) => {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(value) || Number.isNaN(Date.parse(value))) throw new InvalidArgumentError('Expected a day such as 2026-01-01.');
  return value;
};
const postId = (value: string) => {
  if (!/^[1-9]\d{0,9}$/.test(value)) throw new InvalidArgumentError('Expected a post id such as 12.');
  return Number(value);
};

/**
 * `pubsub posts recount --since 2026-01-01 [--post 12] [--check]`: replays the logged reads into the
 * per-day counts, e.g. after the counting changed or the cache was lost. With --check it writes
 * nothing and exits 1 when the counts differ from the reads (for a cron job or CI).
 */
export const registerCommands: RegisterCommands = (cmd, ctx) => {
  cmd
    .command('recount')
    .description('Rebuild the per-day read counts (post_read_counts) from the reads (post_reads) since a day, in one transaction.')
    .requiredOption('--since <day>', 'first day to recount (UTC), as YYYY-MM-DD', day)
    .option('--post <id>', 'only this post', postId)
    .option('--check', 'write nothing; exit 1 if the counts differ from the reads')
    .action(async (flags: { since: string; post?: number; check?: boolean }) => {
      const client = await ctx.pool().connect();
      try {
        await client.query('begin');
        // Workers wait while it recounts: a read they are counting right now is either in the recount
        // (committed before the lock) or added on top of it (their upsert runs after this commits).
        await client.query('lock table post_read_counts in exclusive mode');
        const scope = [flags.since, flags.post ?? null];
        await client.query(
          `create temporary table fresh on commit drop as
             select (read_at at time zone 'UTC')::date as day, post_id, count(*)::int as reads from post_reads
             where read_at >= $1::date::timestamp at time zone 'UTC' and ($2::int is null or post_id = $2) group by 1, 2`,
          scope,
        );
        const cached = `select day, post_id, reads from post_read_counts where day >= $1::date and ($2::int is null or post_id = $2)`;
        const { rows } = await client.query<{ n: number }>(`select count(distinct (day, post_id))::int as n from ((table fresh except ${cached}) union all (${cached} except table fresh)) d`, scope);
        const differ = rows[0]!.n;
        if (flags.check) {
          await client.query('rollback');
          ctx.log.info(differ ? `${differ} count(s) since ${flags.since} differ from the reads` : `the counts since ${flags.since} match the reads`);
          return differ ? 1 : 0;
        }
        await client.query(`delete from post_read_counts where day >= $1::date and ($2::int is null or post_id = $2)`, scope);
        const { rowCount } = await client.query('insert into post_read_counts (day, post_id, reads) select day, post_id, reads from fresh');
        await client.query('commit');
        ctx.log.info(`recounted ${rowCount} post-day(s) since ${flags.since}${flags.post ? ` for post ${flags.post}` : ''}; ${differ} had been wrong`);
      } catch (error) {
        await client.query('rollback').catch(() => {});
        throw error;
      } finally {
        client.release();
      }
    });
};
