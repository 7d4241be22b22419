// A durable custom channel: services publish post reads, a listener provider counts them.
import { Injectable, Logger } from '@nestjs/common';
import { Listen, Type, defineChannel, type NotificationContext } from 'pgpubsub';
import { PubSub } from './pubsub.module';

export class PostRead {
  postId!: number;
  // JSON has no dates: @Type tells class-transformer to turn the ISO string back into a Date.
  @Type(() => Date)
  date!: Date;
}

/** Durable (the default): stored in the publisher's transaction, processed once even if the worker was down. */
export const postReads = defineChannel('post_reads', PostRead);

/** Reads per post: a stand-in for a cache, a metrics client, any provider a listener needs. */
@Injectable()
export class ReadCounter {
  private readonly counts = new Map<number, number>();

  add(postId: number): number {
    const count = (this.counts.get(postId) ?? 0) + 1;
    this.counts.set(postId, count);
    return count;
  }

  get(postId: number): number {
    return this.counts.get(postId) ?? 0;
  }
}

/** The publishing side, e.g. called by a controller. */
@Injectable()
export class ReadsService {
  constructor(private readonly pubsub: PubSub) {}

  recordRead(postId: number): Promise<string | undefined> {
    return this.pubsub.notify(postReads, { postId, date: new Date() });
  }
}

/** A listener is a provider: Nest builds it, with ReadCounter injected, and the worker calls it. */
@Injectable()
export class ReadListener {
  private readonly logger = new Logger(ReadListener.name);

  constructor(private readonly counter: ReadCounter) {}

  @Listen(postReads)
  onRead(read: PostRead, ctx: NotificationContext): void {
    const count = this.counter.add(read.postId);
    this.logger.log(`post ${read.postId} read on ${read.date.toISOString().slice(0, 10)}: ${count} read(s) (notification ${ctx.id})`);
  }
}
