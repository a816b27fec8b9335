#!/usr/bin/env node
/**
 * `rgrid-control`: serve, migrate, token create|list|revoke, cleanup. The only module that reads the
 * environment (once, `readControlEnv`), listens, and installs signal handlers. Errors end the process
 * with a one-line reason on stderr and the exit status of their kind (common/cli.ts), never a
 * swallowed failure.
 */
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { Option, type Command } from 'commander';
import { createProgram, envHelp, exitStatusOfError, oneLine, runProgram } from '../../common/cli.js';
import { isRgridError, RgridError } from '../../common/errors.js';
import { durationFlag } from '../../common/cli-flags.js';
import { createLogger } from '../../common/logger.js';
import { assertUuid } from '../../common/names.js';
import { buildControlApp } from '../app.js';
import { runCleanup } from '../cleanup.js';
import { loadControlConfig, type ControlConfig } from '../config.js';
import { openDatabase } from '../db/connect.js';
import { migrate } from '../db/migrate.js';
import { createPool } from '../db/pool.js';
import { createTokenRepository } from '../repositories/tokens.js';
import { createFsBlobStorage } from '../storage/fs-storage.js';
import { tokenInfo } from '../routes/admin.js';
import { join } from 'node:path';
import { configFromFlags, readControlEnv, readDatabaseUrl, urlHasPassword, type CommonFlags, type ControlEnv, type RegistryFlags, type ServeFlags } from './options.js';
import { connectedAsSuperuser } from '../db/roles.js';

type Lifecycle = 'starting' | 'running' | 'draining' | 'stopped' | 'failed';

/** Longest drain before we give up; below systemd's default TimeoutStopSec of 90 s. */
const DRAIN_DEADLINE_MS = 30_000;

const stderrLog = (line: string): void => {
  process.stderr.write(`${line}\n`);
};

/** A password on the command line is readable by every local user (ps, /proc/<pid>/cmdline). */
function warnCommandLineSecrets(flags: CommonFlags, warn: (line: string) => void): void {
  if (flags.databaseUrl && urlHasPassword(flags.databaseUrl)) {
    warn('--database-url carries a password on the command line, where every local user can read it; use --database-url-file, DATABASE_URL_FILE or the systemd credential database-url');
  }
}

/** The database URL a command other than serve uses (same sources as serve). */
function databaseUrlOf(flags: CommonFlags, env: ControlEnv): string | null {
  warnCommandLineSecrets(flags, stderrLog);
  return readDatabaseUrl(flags, env)?.value ?? null;
}

async function serve(flags: ServeFlags, env: ControlEnv): Promise<void> {
  const config = configFromFlags(flags, env);
  const logger = createLogger({ service: 'rgrid-control', level: config.logLevel });
  let state: Lifecycle = 'starting';
  warnCommandLineSecrets(flags, (line) => logger.warn(line));
  if (config.adminToken === null) logger.warn('no admin token configured (RGRID_CONTROL_ADMIN_TOKEN or a file): admin routes refuse every request');
  // Set once the app exists: a database that cannot be restarted ends the process (its service
  // manager then starts everything afresh, on a new port if the old one was taken).
  let onDatabaseLost: (err: unknown) => void = (err) => {
    logger.fatal({ err }, 'embedded PostgreSQL could not be restarted; exiting');
    process.exit(1);
  };
  const database = await openDatabase(config.databaseUrl, config.dataDir, (line) => logger.debug({ postgres: line }), {
    supervise: { onGiveUp: (err) => onDatabaseLost(err) },
  });
  logger.info({ mode: database.mode }, 'database ready');
  try {
    if (database.mode === 'external' && (await connectedAsSuperuser(database.url))) {
      logger.warn('connected to PostgreSQL as a superuser: give the control plane a role that only owns its database (docs/operations.md, Secrets)');
    }
    if (config.migrateOnStart) {
      const { applied } = await migrate(database.url, { info: (m) => logger.debug(m), warn: (m) => logger.warn(m), error: (m) => logger.error(m) });
      logger.info({ applied }, applied.length > 0 ? 'migrations applied' : 'schema up to date');
    }
    const app = await buildControlApp({ ...config, databaseUrl: database.url }, { logger });
    const shutdown = (signal: string): void => {
      if (state === 'draining' || state === 'stopped') return;
      state = 'draining';
      logger.info({ signal }, 'draining');
      const deadline = setTimeout(() => {
        logger.error('drain deadline passed; exiting');
        process.exit(1);
      }, DRAIN_DEADLINE_MS);
      deadline.unref();
      app
        .close()
        .then(() => database.stop())
        .then(() => {
          state = 'stopped';
          logger.info('stopped');
        })
        .catch((err: unknown) => {
          state = 'failed';
          logger.error({ err }, 'shutdown failed');
          process.exitCode = 1;
        });
    };
    process.once('SIGTERM', () => shutdown('SIGTERM'));
    process.once('SIGINT', () => shutdown('SIGINT'));
    onDatabaseLost = (err) => {
      logger.fatal({ err }, 'embedded PostgreSQL could not be restarted; exiting');
      process.exitCode = 1;
      shutdown('database lost');
    };
    // The address actually bound (with --listen HOST:0 the kernel picks the port).
    const url = await app.listen({ host: config.host, port: config.port });
    state = 'running';
    logger.info({ state, url }, 'rgrid-control serving');
  } catch (err) {
    state = 'failed';
    await database.stop().catch(() => undefined);
    throw err;
  }
}

/** Commands other than serve: the same database selection, no HTTP server. */
async function withDatabase<T>(flags: CommonFlags, env: ControlEnv, fn: (url: string) => Promise<T>): Promise<T> {
  const config = databaseConfig(flags, env);
  const database = await openDatabase(config.databaseUrl, config.dataDir, () => undefined);
  try {
    const quiet = { info: () => undefined, warn: stderrLog, error: stderrLog };
    await migrate(database.url, quiet);
    return await fn(database.url);
  } finally {
    await database.stop();
  }
}

/** Data directory and database of a command other than serve: the flags, else the environment. */
function databaseConfig(flags: CommonFlags, env: ControlEnv): ControlConfig {
  const dataDir = flags.dataDir ?? env.RGRID_CONTROL_DATA_DIR;
  return loadControlConfig({ ...(dataDir ? { dataDir } : {}), databaseUrl: databaseUrlOf(flags, env) });
}

function print(value: unknown, json: boolean | undefined, text: () => string): void {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${text()}\n`);
}

export function buildProgram(env: ControlEnv): Command {
  const program = createProgram('rgrid-control', 'rgrid control plane: fleet-wide cache index, inputs, executions');
  // The registry cleanup deletes unused manifests from (serve's background cleanup and the cleanup command).
  const registryOptions = (cmd: Command): Command =>
    cmd
      .option('--registry <host:port[/prefix]>', envHelp('the registry the workers push to, where cleanup deletes manifests unused past the entry TTL (default: none, the registry is left alone)', 'RGRID_CONTROL_REGISTRY'))
      .option('--registry-auth-file <path>', envHelp('JSON file {"username": ..., "password": ...} for the registry, read at each use', 'RGRID_CONTROL_REGISTRY_AUTH_FILE'));
  const common = (cmd: Command): Command =>
    cmd
      .option('--data-dir <dir>', envHelp('data directory: embedded PostgreSQL, blobs (default .rgrid/control)', 'RGRID_CONTROL_DATA_DIR'))
      .option('--database-url <url>', envHelp('external PostgreSQL (default: embedded); prefer --database-url-file, a password here is visible to other users', 'DATABASE_URL'))
      .option('--database-url-file <path>', envHelp('file holding the external PostgreSQL URL', 'DATABASE_URL', 'DATABASE_URL_FILE', '$CREDENTIALS_DIRECTORY/database-url'));

  registryOptions(common(program.command('serve').description('run the HTTP API')))
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:8080')
    .option('--admin-token-file <path>', envHelp('file holding the admin token', 'RGRID_CONTROL_ADMIN_TOKEN', 'RGRID_CONTROL_ADMIN_TOKEN_FILE', '$CREDENTIALS_DIRECTORY/admin-token'))
    .option('--log-level <level>', envHelp('fatal|error|warn|info|debug|trace|silent (default info)', 'RGRID_CONTROL_LOG_LEVEL'))
    .option('--body-limit <bytes>', 'JSON body limit (default 1048576)')
    .option('--blob-max-bytes <bytes>', 'largest input blob (default 4 GiB)')
    .option('--entry-ttl <duration>', 'remove entries and manifests unused this long (default 30d)')
    .option('--worker-dead-after <duration>', 'no placement on workers silent this long (default 60s)')
    .option('--worker-retention <duration>', 'remove workers silent this long (default 7d)')
    .option('--cleanup-interval <duration>', 'period of the background cleanup, 0 = off (default 1h)')
    .option('--blob-grace <duration>', 'keep an unreferenced blob this long after upload (default 1h)')
    .option('--pool-max <n>', 'PostgreSQL connections per process (default 10)')
    .option('--fleet-cache <duration>', 'reuse the live-worker view for placement this long, 0 = never (default 1s)')
    .option('--placement-pull-mbps <n>', 'registry pull throughput placement assumes, MB/s (default 100)')
    .option('--token-cache <duration>', 'reuse a valid token lookup this long (never past expiry), 0 = never (default 1s)')
    .option('--no-migrate', 'do not apply migrations at start')
    // Admission control (docs/operations.md, Admission control and limits).
    .option('--snapshot-body-limit <bytes>', 'largest full-snapshot body (default 8 MiB)')
    .option('--account-blob-quota <bytes>', 'input blob bytes one account may keep (default 10 GiB)')
    .option('--account-blob-count <n>', 'input blobs one account may keep (default 1000000)')
    .option('--token-rate-limit <n>', 'requests per minute per token, 0 = unlimited (default 6000)')
    .option('--token-concurrency <n>', 'requests in flight per token, 0 = unlimited (default 128)')
    .option('--auth-failures-per-minute <n>', 'failed authentications per client address before 429, 0 = unlimited (default 30)')
    .option('--request-timeout <duration>', 'longest time to receive a whole request (default 1h)')
    .option('--headers-timeout <duration>', 'longest time to receive the request headers (default 20s)')
    .option('--connection-timeout <duration>', 'close a connection silent this long; must exceed the long-poll limit (default 90s)')
    .option('--keep-alive-timeout <duration>', 'close an idle keep-alive connection after this long (default 10s)')
    .option('--body-idle-timeout <duration>', 'refuse a request body that stops arriving for this long (default 30s)')
    // Dispatch and run limits (docs/dispatch.md; docs/operations.md, Tenancy and run limits).
    .option('--claim-lease <duration>', 'a claimed execution is queued again when its worker has not renewed it for this long (default 30s)')
    .option('--claim-wait-max <duration>', 'longest claim or wait long poll, at most 60s; 0 = answer at once (default 25s)')
    .option('--max-attempts <n>', 'attempts of an execution whose submission names none, 1-20 (default 3)')
    .option('--log-max-bytes <bytes>', 'stdout and stderr of an execution are each kept up to this many bytes (default 1 MiB)')
    .option('--run-max-memory-mb <mb>', 'largest memory_mb a submission may ask for, unless its account has its own ceiling (default 4096)')
    .option('--run-max-timeout <duration>', 'longest timeout_s a submission may ask for, unless its account has its own ceiling (default 1d)')
    .option('--run-max-attempts <n>', 'most max_attempts a submission may ask for, unless its account has its own ceiling, 1-20 (default 5)')
    // Images in the registry (docs/operations.md, Images in the registry).
    .option('--build-lease <duration>', 'a build lease not renewed this long is taken over by the next worker (default 30s)')
    .option('--build-failure-ttl <duration>', 'answer a failed build to every worker asking for its key this long, 0 = not at all (default 10m)')
    .action(async (flags: ServeFlags) => serve(flags, env));

  common(program.command('migrate').description('apply pending migrations and exit'))
    .option('--json', 'print JSON')
    .action(async (flags: CommonFlags & { json?: boolean }) => {
      const config = databaseConfig(flags, env);
      const database = await openDatabase(config.databaseUrl, config.dataDir, () => undefined);
      try {
        const result = await migrate(database.url, { info: () => undefined, warn: stderrLog, error: stderrLog });
        print(result, flags.json, () => (result.applied.length ? `applied: ${result.applied.join(', ')}` : 'schema up to date'));
      } finally {
        await database.stop();
      }
    });

  const token = program.command('token').description('manage bearer tokens');
  common(token.command('create').description('create a token; prints the secret once'))
    .requiredOption('--account <account>', 'account the token acts for')
    .addOption(new Option('--role <role>', 'token role').choices(['scheduler', 'client', 'worker']).makeOptionMandatory())
    .option('--worker-id <id>', 'worker id (role worker)')
    .option('--expires-in <duration>', 'e.g. 30d; default: no expiry')
    .option('--description <text>', 'free text kept with the token')
    .option('--json', 'print JSON')
    .action(async (flags: CommonFlags & { account: string; role: 'scheduler' | 'client' | 'worker'; workerId?: string; expiresIn?: string; description?: string; json?: boolean }) => {
      if ((flags.role === 'worker') !== (flags.workerId !== undefined)) throw new RgridError('bad_request', '--worker-id is required for, and only for, --role worker');
      // More than 0 (a token born expired is a typo) and at most ten years (a date JavaScript can hold).
      const expiresInMs = durationFlag(flags.expiresIn, '--expires-in', { exclusiveMin: 0, max: 3650 * 86_400_000 });
      const expiresAt = expiresInMs === undefined ? null : new Date(Date.now() + expiresInMs);
      await withDatabase(flags, env, async (url) => {
        const pool = createPool(url, 1);
        try {
          const { token: secret, row } = await createTokenRepository(pool).create({ account: flags.account, role: flags.role, workerId: flags.workerId ?? null, expiresAt, description: flags.description ?? null });
          print({ token: secret, ...tokenInfo(row) }, flags.json, () => secret);
        } finally {
          await pool.end();
        }
      });
    });
  common(token.command('list').description('list tokens (never the secrets)'))
    .option('--account <account>', 'only this account')
    .option('--json', 'print JSON')
    .action(async (flags: CommonFlags & { account?: string; json?: boolean }) => {
      await withDatabase(flags, env, async (url) => {
        const pool = createPool(url, 1);
        try {
          const rows = (await createTokenRepository(pool).list({ account: flags.account })).map(tokenInfo);
          print(rows, flags.json, () => rows.map((r) => `${r.id}  ${r.role.padEnd(9)} ${r.account ?? '-'}  ${r.worker_id ?? '-'}  ${r.revoked ? 'revoked' : (r.expires_at ?? 'no expiry')}`).join('\n'));
        } finally {
          await pool.end();
        }
      });
    });
  common(token.command('revoke').description('revoke a token by id').argument('<id>'))
    .option('--json', 'print JSON')
    .action(async (id: string, flags: CommonFlags & { json?: boolean }) => {
      assertUuid(id, 'token id');
      await withDatabase(flags, env, async (url) => {
        const pool = createPool(url, 1);
        try {
          const row = await createTokenRepository(pool).revoke(id);
          if (!row) throw new RgridError('not_found', `no token ${id}`);
          print(tokenInfo(row), flags.json, () => `revoked ${id}`);
        } finally {
          await pool.end();
        }
      });
    });

  registryOptions(common(program.command('cleanup').description('remove entries past the TTL, silent workers, unreferenced blobs, unused registry images')))
    .option('--dry-run', 'report what would be removed; remove nothing')
    .option('--json', 'print the report as JSON')
    .option('--entry-ttl <duration>', 'default 30d')
    .option('--worker-retention <duration>', 'default 7d')
    .option('--blob-grace <duration>', 'default 1h')
    .action(async (flags: CommonFlags & RegistryFlags & { dryRun?: boolean; json?: boolean; entryTtl?: string; workerRetention?: string; blobGrace?: string }) => {
      // Cleanup needs no admin token: its sources are left out, so a bad one cannot stop a cleanup.
      const config = configFromFlags({ ...flags, migrate: true }, { ...env, RGRID_CONTROL_ADMIN_TOKEN: undefined, RGRID_CONTROL_ADMIN_TOKEN_FILE: undefined, CREDENTIALS_DIRECTORY: undefined });
      await withDatabase(flags, env, async (url) => {
        const pool = createPool(url, 2);
        try {
          const report = await runCleanup(pool, createFsBlobStorage(join(config.dataDir, 'blobs')), config, { dryRun: flags.dryRun === true, wait: true });
          print(report, flags.json, () =>
            `${report.dry_run ? 'would remove' : 'removed'}: ${report.entries.count} entries, ${report.workers.count} workers, ${report.manifests.count} manifests, ${report.blobs.count} blob rows (${report.blob_files.count} files, ${report.blobs.bytes} bytes), ${report.applied_ops.count} op ids, ${report.registry_images.deleted.count} registry manifests${report.registry_images.failed.count > 0 ? ` (${report.registry_images.failed.count} kept: ${report.registry_images.failed.items[0]?.error ?? ''})` : ''}`);
        } finally {
          await pool.end();
        }
      });
    });
  return program;
}

/** Run when executed (also through npm's bin symlink), not when imported by tests. */
function isEntry(): boolean {
  try {
    return import.meta.url === pathToFileURL(realpathSync(process.argv[1] ?? '')).href;
  } catch {
    return false;
  }
}

/** One line, `rgrid-control: <code>: <reason>`, and the exit status of the error's kind. */
function fail(err: unknown): void {
  // Like rgrid-agent: an error that is not typed (a refused connection to the database, mostly) is unavailable.
  const line = isRgridError(err) ? `${err.code}: ${err.message}` : `unavailable: ${err instanceof Error ? err.message : String(err)}`;
  process.stderr.write(`rgrid-control: ${oneLine(line)}\n`);
  process.exit(exitStatusOfError(err));
}

if (isEntry()) {
  const env = readControlEnv(process.env);
  // Read once; out of the environment so that nothing the control plane starts could inherit a secret.
  delete process.env.RGRID_CONTROL_ADMIN_TOKEN;
  delete process.env.DATABASE_URL;
  void runProgram(buildProgram(env), process.argv, fail);
}
