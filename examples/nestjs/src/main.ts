/**
 * `npm start`: the app with its worker. It records two post reads and creates an author, logs what the
 * listeners did, and keeps serving notifications until SIGINT/SIGTERM, which close it cleanly.
 */
import 'reflect-metadata';
import { NestFactory } from '@nestjs/core';
import { AppModule } from './app.module';
import { AuthorsService } from './authors';
import { ReadCounter, ReadsService } from './reads';

async function waitFor(check: () => boolean | Promise<boolean>, what: string): Promise<void> {
  for (const deadline = Date.now() + 30_000; !(await check()); await new Promise((r) => setTimeout(r, 50))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
  }
}

async function main(): Promise<void> {
  if (!process.env.DATABASE_URL) {
    throw new Error('Set DATABASE_URL (no server at hand? run `npx pubsub dev` in another shell and export the URL it prints), then `npx pubsub migrate`.');
  }
  const app = await NestFactory.createApplicationContext(AppModule);
  app.enableShutdownHooks(); // SIGINT/SIGTERM: app.close(), which stops the worker after its running listeners

  const reads = app.get(ReadsService);
  await reads.recordRead(12);
  await reads.recordRead(12);
  const authors = app.get(AuthorsService);
  const author = await authors.create('Ada');

  const counter = app.get(ReadCounter);
  await waitFor(() => counter.get(12) === 2, 'two reads of post 12');
  await waitFor(async () => (await authors.posts(author.id)).length === 1, 'the first post of Ada');
  console.log(`ready: post 12 has ${counter.get(12)} reads; ${author.name}'s posts: ${JSON.stringify(await authors.posts(author.id))}`);
  console.log('worker running; Ctrl-C (or SIGTERM) stops it');
}

main().catch((error) => {
  console.error(error instanceof Error ? error.message : error);
  process.exit(1);
});
