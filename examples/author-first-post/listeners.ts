// Scenario 2 of the design notes: when an author is inserted, create their first post.
import { PostInsertListen, type NotificationContext, type TriggerPayload } from 'pgpubsub';
import type { Author } from '../generated/prisma/client.js';

export class AuthorListeners {
  @PostInsertListen('Author')
  async createFirstPost(payload: TriggerPayload<Author>, ctx: NotificationContext) {
    const author = payload.new!;
    // ctx.prisma is the app's PrismaClient inside the worker's transaction: the post commits together
    // with the notification's removal, so a crash or a failure here never leaves an author with two
    // first posts or none.
    await ctx.prisma.post.create({ data: { authorId: author.id, content: 'Welcome! This is your first post', date: author.createdAt } });
    console.log(`[author-first-post] created the first post of ${author.name} (author ${author.id}, joined ${author.createdAt.toISOString()})`);
  }
}
