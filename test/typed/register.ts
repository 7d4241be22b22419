// What an app writes once: pgpubsub's decorators then check model names and row types against this client.
import type { PrismaClient } from '../fixtures/generated/prisma/client.js';

declare module 'pgpubsub' {
  interface Register {
    client: PrismaClient;
  }
}
