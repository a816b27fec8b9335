import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { PG_MIGRATE_LOCK_ID, runner } from 'node-pg-migrate';

/**
 * The SQL migrations live in control/migrations of the source tree. tsc does not copy .sql files to
 * dist/, so from dist/control/db/ this walks back to the package root's control/migrations; from the
 * source tree (vitest) it is the sibling directory. The package ships control/migrations with dist/.
 */
export function migrationsDir(): string {
  const here = dirname(fileURLToPath(import.meta.url));
  const candidates = [join(here, '..', 'migrations'), join(here, '..', '..', '..', 'control', 'migrations')];
  for (const dir of candidates) {
    if (existsSync(join(dir, '1763800000000_initial-schema.sql'))) return dir;
  }
  throw new Error(`control migrations not found (looked in ${candidates.join(', ')})`);
}

export interface MigrateResult {
  applied: string[];
}

interface MigrateLogger {
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

/**
 * Applies pending migrations. node-pg-migrate guards itself with pg_try_advisory_lock and *fails* when
 * another runner holds it ("Another migration is already running"); replicas starting together must
 * wait instead, so this session first blocks on the same lock id. Advisory locks are re-entrant per
 * session, so the runner's own try-lock on this client then succeeds, and the second replica finds
 * nothing left to apply once it gets the lock.
 */
export async function migrate(databaseUrl: string, logger: MigrateLogger): Promise<MigrateResult> {
  const client = new pg.Client({ connectionString: databaseUrl, application_name: 'rgrid-control-migrate' });
  await client.connect();
  try {
    await client.query('SELECT pg_advisory_lock($1)', [PG_MIGRATE_LOCK_ID]);
    try {
      const applied = await runner({
        dbClient: client,
        dir: migrationsDir(),
        migrationsTable: 'pgmigrations',
        direction: 'up',
        checkOrder: true,
        logger: { debug: () => undefined, info: (m: string) => logger.info(m), warn: (m: string) => logger.warn(m), error: (m: string) => logger.error(m) },
      });
      return { applied: applied.map((m) => m.name) };
    } finally {
      await client.query('SELECT pg_advisory_unlock($1)', [PG_MIGRATE_LOCK_ID]);
    }
  } finally {
    await client.end();
  }
}
