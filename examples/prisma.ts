// How the worker builds the Prisma client that listeners get as ctx.prisma (pubsub.config.json "prisma").
import type { PrismaAdapter } from 'pgpubsub';
import { PrismaClient } from './generated/prisma/client.js';

export const prisma = (adapter: PrismaAdapter) => new PrismaClient({ adapter });
