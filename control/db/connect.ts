import { randomBytes } from 'node:crypto';
import { parseJsonFile } from '../../common/json-file.js';
import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { RgridError } from '../../common/errors.js';
import { startEmbeddedPostgres } from './embedded.js';
import { provisionAppRole } from './roles.js';

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

/** Whether `pid` is (still) an `rgrid-control serve`, not a process that got a recycled pid. */
function isServe(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').includes('serve');
  } catch {
    return !existsSync('/proc'); // no /proc to tell: assume it is
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

/** Where JSON.parse stopped in `text`, from its message or (when it names only the token) by re-parsing prefixes. */
function readRunFile(path: string): RunFile {
  const run = parseJsonFile(path, readFileSync(path, 'utf8')) as Partial<RunFile> | null;
  if (!run || typeof run.pid !== 'number' || typeof run.url !== 'string') {
    throw new RgridError('bad_request', `${path} does not hold {pid, url}; remove it if no rgrid-control serve runs on this data directory`);
  }
  return run as RunFile;
}

/** The application role's password, generated once, next to the superuser's (0600). */
function appPassword(dataDir: string): string {
  const path = join(dataDir, 'postgres-app-password');
  if (!existsSync(path)) writeFileSync(path, randomBytes(24).toString('base64url'), { mode: 0o600 });
  return readFileSync(path, 'utf8').trim();
}

export interface OpenOptions {
  /** Restart the embedded server when it dies (serve); `onGiveUp` when restarting keeps failing. */
  supervise?: { onGiveUp: (err: unknown) => void };
}

/**
 * The database for a command: DATABASE_URL when given; otherwise the embedded server under
 * `<dataDir>/postgres`, reached as the application role (control/db/roles.ts), never as its superuser.
 * A second command on the same data directory (e.g. `token create` next to a running `serve`) attaches
 * to the server that `serve` started instead of starting another one; the run file holding its address
 * is readable by the control plane's user only.
 */
export async function openDatabase(databaseUrl: string | null, dataDir: string, log: (line: string) => void, opts: OpenOptions = {}): Promise<OpenDatabase> {
  if (databaseUrl) return { url: databaseUrl, mode: 'external', stop: () => Promise.resolve() };
  const runFile = runFileOf(dataDir);
  if (existsSync(runFile)) {
    const run = readRunFile(runFile);
    if (alive(run.pid)) {
      if (await reachable(run.url)) return { url: run.url, mode: 'attached', stop: () => Promise.resolve() };
      // The serve that owns this data directory is restarting its database: starting a second server
      // here would race it for the data directory.
      if (run.pid !== process.pid && isServe(run.pid)) {
        throw new RgridError('unavailable', `rgrid-control serve (pid ${run.pid}) owns ${dataDir} and its database is not answering yet; retry shortly`);
      }
    }
  }
  const server = await startEmbeddedPostgres({ dataDir: join(dataDir, 'postgres'), log, ...(opts.supervise ? { supervise: opts.supervise } : {}) });
  let url: string;
  try {
    url = await provisionAppRole(server.url, { password: appPassword(dataDir) });
  } catch (err) {
    await server.stop();
    throw err;
  }
  writeFileSync(runFile, JSON.stringify({ pid: process.pid, url } satisfies RunFile), { mode: 0o600 });
  return {
    url,
    mode: 'embedded',
    async stop() {
      rmSync(runFile, { force: true });
      await server.stop();
    },
  };
}
