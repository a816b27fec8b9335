import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { startEmbeddedPostgres } from './embedded.js';

export interface OpenDatabase {
  url: string;
  /** 'external' (DATABASE_URL), 'embedded' (started here), 'attached' (embedded, started by a running serve). */
  mode: 'external' | 'embedded' | 'attached';
  stop(): Promise<void>;
}

interface RunFile {
  pid: number;
  url: string;
}

const runFileOf = (dataDir: string): string => join(dataDir, 'postgres-run.json');

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

async function reachable(url: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
  try {
    await client.connect();
    await client.query('SELECT 1');
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

/**
 * The database for a command: DATABASE_URL when given; otherwise the embedded server under
 * `<dataDir>/postgres`. A second command on the same data directory (e.g. `token create` next to a
 * running `serve`) attaches to the server that `serve` started instead of starting another one; the
 * run file holding its address is readable by the control plane's user only.
 */
export async function openDatabase(databaseUrl: string | null, dataDir: string, log: (line: string) => void): Promise<OpenDatabase> {
  if (databaseUrl) return { url: databaseUrl, mode: 'external', stop: () => Promise.resolve() };
  const runFile = runFileOf(dataDir);
  if (existsSync(runFile)) {
    const run = JSON.parse(readFileSync(runFile, 'utf8')) as RunFile;
    if (alive(run.pid) && (await reachable(run.url))) return { url: run.url, mode: 'attached', stop: () => Promise.resolve() };
  }
  const server = await startEmbeddedPostgres({ dataDir: join(dataDir, 'postgres'), log });
  writeFileSync(runFile, JSON.stringify({ pid: process.pid, url: server.url } satisfies RunFile), { mode: 0o600 });
  return {
    url: server.url,
    mode: 'embedded',
    async stop() {
      rmSync(runFile, { force: true });
      await server.stop();
    },
  };
}
