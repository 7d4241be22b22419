// Scenario 2 of the design notes: when an author is inserted, create their first post.
import { PostInsertListen, type NotificationContext, type TriggerPayload } from 'pgpubsub';
import type { Author } from '../generated/prisma/client.js';

export class AuthorListeners {
  @PostInsertListen('Author')
  async createFirstPost(payload: TriggerPayload<Author>, ctx: NotificationContext) {
    const author = payload.new!;
    // ctx.tx is the worker's transaction: the post commits together with the notification's removal,
    // so a crash or a failure here never leaves an author with two first posts or none.
    await ctx.tx!.query('insert into posts (author_id, content, date) values ($1, $2, $3)', [
      author.id,
      'Welcome! This is your first post',
      author.createdAt,
    ]);
    console.log(`[author-first-post] created the first post of ${author.name} (author ${author.id}, joined ${author.createdAt.toISOString()})`);
  }
}
