import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Docker from 'dockerode';
import { removeAccountResources, ROOT, runCli, type CliResult } from '../support/processes.js';
import type { AgentClient } from '../../agent/client/agent-client.js';

/**
 * Integration helpers: the real `rgrid-agent` from dist/ (npm test builds first) through the shared
 * process harness (test/support/processes.ts), a real Docker engine, per-run accounts so that test runs
 * never hit each other's images, and cleanup by label.
 */
export { ROOT, startAgentProcess as startAgent, type AgentProcess, type CliResult } from '../support/processes.js';
export const AGENT_BIN = join(ROOT, 'dist', 'agent', 'cli', 'main.js');
export const docker = new Docker();

export function uniqueAccount(prefix: string): string {
  return `it-${prefix}-${process.pid}-${Date.now().toString(36)}`;
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), `rgrid-${prefix}-`));
}

export function writeFiles(dir: string, files: Record<string, string | Buffer>): Record<string, string> {
  const paths: Record<string, string> = {};
  for (const [name, content] of Object.entries(files)) {
    paths[name] = join(dir, name);
    writeFileSync(paths[name], content);
  }
  return paths;
}

/** `rgrid-agent <args>` against `socket` (RGRID_AGENT_SOCKET). */
export function cli(args: string[], socket: string): Promise<CliResult> {
  return runCli('rgrid-agent', args, { env: { RGRID_AGENT_SOCKET: socket } });
}

export async function cliJson<T = Record<string, unknown>>(args: string[], socket: string): Promise<T> {
  const res = await cli([...args, '--json'], socket);
  if (res.code !== 0) throw new Error(`rgrid-agent ${args.join(' ')} exited ${res.code}: ${res.stderr}`);
  return JSON.parse(res.stdout) as T;
}

export async function imageExists(id: string): Promise<boolean> {
  try {
    await docker.getImage(id).inspect();
    return true;
  } catch {
    return false;
  }
}

/** Removes every container, volume and image of a test account (test/support/processes.ts). */
export const removeAccountImages = (account: string): Promise<void> => removeAccountResources(account, docker);

/** Python scripts whose bytes are unique per test run, so their image keys are new. */
export function nonceScript(body: string): string {
  return `# nonce ${process.pid}-${Date.now()}-${Math.random()}\n${body}\n`;
}

/** Polls `condition` until it holds; past `timeoutMs`, fails naming what was awaited. */
export async function until(condition: () => boolean | Promise<boolean>, what: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`gave up waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Waits until the agent's runs' clean-ups (done after their answers, in the background) have finished. */
export function runsCleanedUp(client: Pick<AgentClient, 'health'>): Promise<void> {
  return until(async () => ((await client.health()).runs as { cleaning: number }).cleaning === 0, 'the runs\' clean-ups');
}
