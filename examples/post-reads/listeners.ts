// Scenario 1 of the design notes: keep a count of post reads per day, off the request path.
import { Listen, Type, defineChannel, type NotificationContext } from 'pgpubsub';

export class PostRead {
  postId!: number;
  // JSON has no dates: @Type tells class-transformer to turn the ISO string back into a Date.
  @Type(() => Date)
  date!: Date;
}

/** One declaration for both sides: notify(postReads, …) and @Listen(postReads) are type-checked. */
export const postReads = defineChannel('post_reads_per_date', PostRead);

/** Reads per day per post: a stand-in for a real cache. */
export const readsPerDate = new Map<string, Map<number, number>>();

export class PostReadListeners {
  @Listen(postReads)
  onRead(read: PostRead, ctx: NotificationContext) {
    const day = read.date.toISOString().slice(0, 10);
    const counts = readsPerDate.get(day) ?? new Map<number, number>();
    counts.set(read.postId, (counts.get(read.postId) ?? 0) + 1);
    readsPerDate.set(day, counts);
    console.log(`[post-reads] post ${read.postId} read on ${day}: ${counts.get(read.postId)} read(s) that day (notification ${ctx.id})`);
  }
}
