import { Module } from '@nestjs/common';
import { AuthorListener, AuthorsService, WelcomeMessages } from './authors';
import { Database } from './database';
import { PubSubModule } from './pubsub.module';
import { ReadCounter, ReadListener, ReadsService } from './reads';

@Module({
  imports: [PubSubModule.forRoot({ pollIntervalMs: 1000 })],
  providers: [Database, ReadCounter, ReadsService, ReadListener, WelcomeMessages, AuthorsService, AuthorListener],
})
export class AppModule {}
