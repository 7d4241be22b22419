import { Injectable, type OnApplicationShutdown } from '@nestjs/common';
import { Pool } from 'pg';

/** The app's pg pool. Closed in onApplicationShutdown: after the worker has let running listeners finish. */
@Injectable()
export class Database extends Pool implements OnApplicationShutdown {
  constructor() {
    super({ connectionString: process.env.DATABASE_URL });
  }

  async onApplicationShutdown(): Promise<void> {
    await this.end();
  }
}
