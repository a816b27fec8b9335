/**
 * Real processes for tests, started from dist/ and awaited on their health endpoints (never on log text),
 * always stopped: the control plane (`rgrid-control serve`). Tokens reach them through files, never argv.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const CONTROL_BIN = join(ROOT, 'dist', 'control', 'cli', 'main.js');

export async function freeLoopbackPort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolvePort(port));
    });
  });
}

/** Polls `url` until it answers `status` (or `timeoutMs` passes: then throws with `what`). */
export async function waitForHttp(url: string, what: string, timeoutMs = 30_000, status = 200): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const got = await fetch(url, { signal: AbortSignal.timeout(2000) }).then((r) => r.status, () => undefined);
    if (got === status) return;
    if (Date.now() > deadline) throw new Error(`${what} did not answer ${status} on ${url} within ${timeoutMs} ms (last: ${got ?? 'no answer'})`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A file holding `secret`, readable by its owner only, removed with its directory by the caller. */
export function secretFile(secret: string, name = 'token'): string {
  const dir = mkdtempSync(join(tmpdir(), 'rgrid-secret-'));
  const path = join(dir, name);
  writeFileSync(path, `${secret}\n`, { mode: 0o600 });
  return path;
}

export interface ControlProcess {
  readonly url: string;
  readonly port: number;
  readonly proc: ChildProcess;
  log(): string;
  /** SIGTERM, then SIGKILL after a grace period; resolves with the exit code. */
  stop(): Promise<number | null>;
  /** SIGKILL: nothing is cleaned up, as in a crash. */
  kill(): Promise<void>;
}

export interface ControlProcessOptions {
  databaseUrl: string;
  adminToken: string;
  /** Listen on this port (to restart on the same address); a free one otherwise. */
  port?: number;
  dataDir?: string;
  args?: string[];
}

export async function startControlProcess(options: ControlProcessOptions): Promise<ControlProcess> {
  const port = options.port ?? (await freeLoopbackPort());
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'rgrid-control-proc-'));
  const tokenFile = secretFile(options.adminToken, 'admin-token');
  const env: NodeJS.ProcessEnv = { ...process.env, DATABASE_URL: options.databaseUrl, RGRID_CONTROL_ADMIN_TOKEN_FILE: tokenFile };
  delete env.RGRID_CONTROL_ADMIN_TOKEN;
  const proc = spawn(process.execPath, [CONTROL_BIN, 'serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--log-level', 'warn', ...(options.args ?? [])], {
    env, stdio: ['ignore', 'pipe', 'pipe'],
  });
  let output = '';
  const keep = (chunk: Buffer): void => {
    output = (output + chunk.toString()).slice(-20_000);
  };
  proc.stdout?.on('data', keep);
  proc.stderr?.on('data', keep);
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  const cleanup = (): void => rmSync(dirname(tokenFile), { recursive: true, force: true });
  const url = `http://127.0.0.1:${port}`;
  try {
    await Promise.race([
      waitForHttp(`${url}/readyz`, 'rgrid-control serve'),
      exited.then((code) => {
        throw new Error(`rgrid-control serve exited with ${code} during start:\n${output}`);
      }),
    ]);
  } catch (err) {
    proc.kill('SIGKILL');
    cleanup();
    throw err;
  }
  return {
    url,
    port,
    proc,
    log: () => output,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const timer = setTimeout(() => proc.kill('SIGKILL'), 15_000);
        await exited;
        clearTimeout(timer);
      }
      cleanup();
      return proc.exitCode;
    },
    async kill() {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGKILL');
        await exited;
      }
      cleanup();
    },
  };
}

/** Creates a token through the admin API of a running control plane. */
export async function createTokenOver(url: string, adminToken: string, body: Record<string, unknown>): Promise<string> {
  const res = await fetch(`${url}/v1/admin/tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  if (res.status !== 201) throw new Error(`token create failed: ${res.status} ${await res.text()}`);
  return ((await res.json()) as { token: string }).token;
}
