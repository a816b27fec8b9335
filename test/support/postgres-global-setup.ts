import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import type {} from 'vitest';
import type { TestProject } from 'vitest/node';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../../control/db/embedded.js';

/**
 * One PostgreSQL for the whole integration run: DATABASE_URL when set, else one embedded server in a
 * temp directory (run as the `postgres` user when we are root). A database that cannot be reached or
 * started fails the run: CI must never go green without having talked to PostgreSQL. Each test file
 * then creates and drops its own database on it (test/control/support.ts).
 */
declare module 'vitest' {
  export interface ProvidedContext {
    databaseUrl: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  let server: EmbeddedPostgres | undefined;
  let dir: string | undefined;
  let url = process.env.DATABASE_URL;
  if (!url) {
    dir = mkdtempSync(join(tmpdir(), 'rgrid-test-pg-'));
    // The server may run as another user (root → postgres): it must be able to traverse to its data.
    chmodSync(dir, 0o711);
    server = await startEmbeddedPostgres({ dataDir: join(dir, 'postgres') });
    url = server.url;
  }
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 10_000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
  } catch (err) {
    await server?.stop();
    throw new Error(`integration tests need PostgreSQL (DATABASE_URL or the embedded server): ${String(err)}`);
  } finally {
    await client.end().catch(() => undefined);
  }
  project.provide('databaseUrl', url);
  return async () => {
    await server?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  };
}
