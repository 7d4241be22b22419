// Runs `prisma generate` for a schema. Generating needs no database and no schema engine, but Prisma 7's
// CLI downloads the engine anyway unless PRISMA_SCHEMA_ENGINE_BINARY names an existing file; where the
// engine's download host is unreachable (air-gapped CI, this repo's test machines) we point it at node.
import { spawnSync } from 'node:child_process';

const schema = process.argv[2] ?? 'prisma/schema.prisma';
const env = {
  ...process.env,
  PRISMA_SCHEMA_ENGINE_BINARY: process.env.PRISMA_SCHEMA_ENGINE_BINARY ?? process.execPath,
  DATABASE_URL: process.env.DATABASE_URL ?? 'postgresql://unused@localhost/unused',
  PRISMA_HIDE_UPDATE_MESSAGE: '1',
};
const r = spawnSync(process.execPath, ['node_modules/prisma/build/index.js', 'generate', '--schema', schema], { stdio: 'inherit', env });
process.exit(r.status ?? 1);
