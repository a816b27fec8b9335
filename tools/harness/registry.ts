/**
 * A real OCI distribution registry for the tests and benchmarks: Debian's `docker-registry` (distribution 2.8) on a free
 * 127.0.0.1 port with its storage in a temp directory, delete enabled so manifest deletion can be tested.
 * It can be stopped and started again on the same port and storage, as an outage would.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freeLoopbackPort } from './processes.js';

export interface TestRegistry {
  /** `127.0.0.1:PORT`, what engines and agents are given. */
  readonly address: string;
  readonly storageDir: string;
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops it and removes its storage. */
  destroy(): Promise<void>;
}

async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not become ready within ${timeoutMs} ms`);
}

export async function startRegistry(): Promise<TestRegistry> {
  const dir = mkdtempSync(join(tmpdir(), 'rgrid-registry-'));
  const port = await freeLoopbackPort();
  const address = `127.0.0.1:${port}`;
  const configPath = join(dir, 'config.yml');
  const storageDir = join(dir, 'storage');
  writeFileSync(
    configPath,
    [
      'version: 0.1',
      'log:',
      '  level: warn',
      'storage:',
      '  filesystem:',
      `    rootdirectory: ${storageDir}`,
      '  delete:',
      '    enabled: true',
      'http:',
      `  addr: ${address}`,
      '',
    ].join('\n'),
  );
  let child: ChildProcess | undefined;
  let log = '';

  const registry: TestRegistry = {
    address,
    storageDir,
    async start() {
      if (child) return;
      const proc = spawn('docker-registry', ['serve', configPath], { stdio: ['ignore', 'ignore', 'pipe'] });
      proc.stderr?.on('data', (chunk: Buffer) => {
        log = (log + chunk.toString()).slice(-4000);
      });
      child = proc;
      proc.once('exit', () => {
        if (child === proc) child = undefined;
      });
      await waitUntil(`docker-registry on ${address} (${log.trim().split('\n').pop() ?? ''})`, async () => (await fetch(`http://${address}/v2/`)).status === 200, 15_000);
    },
    async stop() {
      const proc = child;
      if (!proc) return;
      child = undefined;
      await new Promise<void>((resolve) => {
        proc.once('exit', () => resolve());
        proc.kill('SIGTERM');
        setTimeout(() => proc.kill('SIGKILL'), 5000).unref();
      });
    },
    async destroy() {
      await registry.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await registry.start();
  return registry;
}
