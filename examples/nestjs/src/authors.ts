// A trigger channel: inserting an author fires the trigger `pubsub make-migration` wrote for this
// listener (prisma/migrations/*_pubsub); the listener provider creates the author's first post.
import { Injectable, Logger } from '@nestjs/common';
import { PostInsertListen, type NotificationContext, type TriggerPayload } from 'pgpubsub';
import { Database } from './database';

/** The Author model's fields (with a generated Prisma client: `import type { Author } from '…/prisma/client'`). */
export interface Author {
  id: number;
  name: string;
  createdAt: Date;
}

@Injectable()
export class WelcomeMessages {
  for(author: Author): string {
    return `Welcome, ${author.name}! This is your first post.`;
  }
}

@Injectable()
export class AuthorsService {
  constructor(private readonly db: Database) {}

  async create(name: string): Promise<Author> {
    const { rows } = await this.db.query<Author>('insert into authors (name) values ($1) returning id, name, created_at as "createdAt"', [name]);
    return rows[0]!;
  }

  async posts(authorId: number): Promise<string[]> {
    const { rows } = await this.db.query<{ content: string }>('select content from posts where author_id = $1 order by id', [authorId]);
    return rows.map((r) => r.content);
  }
}

@Injectable()
export class AuthorListener {
  private readonly logger = new Logger(AuthorListener.name);

  constructor(private readonly welcome: WelcomeMessages) {}

  @PostInsertListen('Author')
  async createFirstPost(payload: TriggerPayload<Author>, ctx: NotificationContext): Promise<void> {
    const author = payload.new!; // author.createdAt is a Date
    // ctx.tx is the worker's transaction: the post commits with the notification's removal, so a
    // crash or a failure here never leaves an author with two first posts, or none.
    await ctx.tx!.query('insert into posts (author_id, content) values ($1, $2)', [author.id, this.welcome.for(author)]);
    this.logger.log(`created the first post of ${author.name} (author ${author.id})`);
  }
}
