// The module `pubsub listen --prisma` loads in the benchmark (W7): the demo app's PrismaClient, built by the root `npm run build`.
import type { PrismaAdapter } from 'pgpubsub';

const generated = new URL('../../dist/examples/generated/prisma/client.js', import.meta.url).href;
const { PrismaClient } = (await import(generated)) as { PrismaClient: new (options: { adapter: PrismaAdapter }) => object };

export const prisma = (adapter: PrismaAdapter) => new PrismaClient({ adapter });
