/**
 * A CLI command loads only what it uses (agent/cli/program.ts, client/cli/program.ts): the daemon's
 * modules (dockerode, lmdb, fastify, pino, TypeBox, the builder, the runner…) load for `rgrid-agent
 * serve` alone, a socket command loads its HTTP client and nothing of the daemon, and `--help` /
 * `--version` load neither. Checked by listing every module the process loads (a module-loader hook
 * registered with `node --import`, writing each URL to a file), not by timing anything. Runs the built
 * CLIs from dist/ against a real agent (and so a real Docker engine).
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BIN, childEnv, type CliName } from '../support/processes.js';
import { removeAccountImages, startAgent, tempDir, uniqueAccount, writeFiles, type AgentProcess } from '../agent/helpers.js';

const BASE_IMAGE = process.env.RGRID_TEST_BASE_IMAGE ?? 'rgrid-test/python:bookworm';
const dir = tempDir('rgrid-cli-light-');
const account = uniqueAccount('light');
let agent: AgentProcess;
let script: string;

// The hook runs in the loader's own thread: it can only tell the test what it saw through a file.
const HOOKS = `import { appendFileSync } from 'node:fs';
export async function load(url, context, next) {
  appendFileSync(process.env.RGRID_MODULE_LOG, url + '\\n');
  return next(url, context);
}
`;
writeFileSync(join(dir, 'hooks.mjs'), HOOKS);
writeFileSync(join(dir, 'register.mjs'), "import { register } from 'node:module';\nregister('./hooks.mjs', import.meta.url);\n");

/** Runs a built CLI and returns its exit status and every module URL it loaded. */
async function loadedBy(cli: CliName, args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; modules: string[]; stderr: string }> {
  const log = join(dir, `modules-${Math.random().toString(36).slice(2)}.log`);
  writeFileSync(log, '');
  const child = spawn(process.execPath, ['--import', pathToFileURL(join(dir, 'register.mjs')).href, BIN[cli], ...args], {
    env: childEnv({ ...env, RGRID_MODULE_LOG: log }),
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', resolve);
  });
  return { code, modules: readFileSync(log, 'utf8').split('\n').filter(Boolean), stderr };
}

/** What only the daemon needs: none of it may load for a client command. */
const DAEMON_ONLY = [
  /\/node_modules\/(dockerode|docker-modem|lmdb|fastify|@fastify\/[^/]+|pino|typebox|prom-client|chokidar|p-queue|tar-stream|pg)\//,
  /\/dist\/agent\/(daemon|fleet|metrics|config|startup-repair)\.js$/,
  /\/dist\/agent\/(api|builder|runner|index|worker|sync|prune|reconcile|warm|registry|control)\//,
  /\/dist\/agent\/cli\/serve\.js$/,
  /\/dist\/common\/wire\//,
];
const daemonModules = (modules: string[]): string[] => modules.filter((m) => DAEMON_ONLY.some((re) => re.test(m)));
const has = (modules: string[], re: RegExp): boolean => modules.some((m) => re.test(m));

beforeAll(async () => {
  script = writeFiles(dir, { 'script.py': `# light ${account}\nprint("hi")\n` })['script.py']!;
  agent = await startAgent({ dataDir: join(dir, 'data'), baseImage: BASE_IMAGE, logLevel: 'warn' });
  // The image exists before the measured ensure: that one is a hit.
  const res = await agent.client.ensure({ script: readFileSync(script), account });
  expect(res.built).toBe(true);
}, 240_000);

afterAll(async () => {
  await agent?.stop();
  await removeAccountImages(account);
});

describe('rgrid-agent loads the daemon only for serve', () => {
  it.each([['--help'], ['--version'], ['ls', '--help']])('%s loads neither the daemon nor the socket client', async (...args) => {
    const run = await loadedBy('rgrid-agent', args);
    expect(run.code).toBe(0);
    // The hook saw the program itself (it cannot pass by seeing nothing).
    expect(has(run.modules, /\/dist\/agent\/cli\/program\.js$/)).toBe(true);
    expect(has(run.modules, /\/node_modules\/commander\//)).toBe(true);
    expect(daemonModules(run.modules)).toEqual([]);
    expect(has(run.modules, /\/dist\/agent\/client\/agent-client\.js$|\/node_modules\/undici\//)).toBe(false);
  });

  it.each([
    ['ls', '--account', account],
    ['ensure', '--script', '<script>', '--account', account, '--json'],
    ['status', '--json'],
  ])('%s over the socket loads the client and nothing of the daemon', async (...args) => {
    const run = await loadedBy('rgrid-agent', args.map((a) => (a === '<script>' ? script : a)), { RGRID_AGENT_SOCKET: agent.socket });
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(has(run.modules, /\/dist\/agent\/client\/agent-client\.js$/)).toBe(true);
    expect(daemonModules(run.modules)).toEqual([]);
    // Node's own http client, not undici's (its load alone is a large part of a command's start-up).
    expect(has(run.modules, /\/node_modules\/undici\//)).toBe(false);
  });

  it.each([
    ['ls', '--account', account],
    ['ensure', '--script', '<script>', '--account', account, '--json'],
  ])('%s leaves out what only run and inspect --pylock need (flag parsing, name checks, safe writes)', async (...args) => {
    const run = await loadedBy('rgrid-agent', args.map((a) => (a === '<script>' ? script : a)), { RGRID_AGENT_SOCKET: agent.socket });
    expect(run.code).toBe(0);
    expect(has(run.modules, /\/dist\/agent\/cli\/client-commands\.js$/)).toBe(true);
    expect(run.modules.filter((m) => /\/dist\/(agent\/cli\/run-command|common\/(cli-flags|duration|names|safe-write))\.js$/.test(m))).toEqual([]);
  });

  it('serve does load the daemon (the listing sees what it must)', async () => {
    // A refused flag value: serve loads its modules, then stops before starting anything.
    const run = await loadedBy('rgrid-agent', ['serve', '--build-concurrency', 'many']);
    expect(run.code).toBe(2);
    expect(has(run.modules, /\/dist\/agent\/daemon\.js$/)).toBe(true);
    expect(has(run.modules, /\/node_modules\/dockerode\//)).toBe(true);
  });
});

describe('rgrid loads its HTTP client only for a command that calls the control plane', () => {
  it.each([['--help'], ['--version'], ['run', '--help']])('rgrid %s', async (...args) => {
    const run = await loadedBy('rgrid', args);
    expect(run.code).toBe(0);
    expect(has(run.modules, /\/dist\/client\/cli\/program\.js$/)).toBe(true);
    expect(has(run.modules, /\/dist\/client\/(api|run|outputs|token)\.js$/)).toBe(false);
    expect(has(run.modules, /^node:http$/)).toBe(false);
  });

  it('rgrid status loads it (against an address where nothing listens: the command fails, after loading)', async () => {
    const run = await loadedBy('rgrid', ['status', '00000000-0000-4000-8000-000000000000', '--control-url', 'http://127.0.0.1:9', '--token', 'x'.repeat(40), '--retry-for', '0']);
    expect(run.code).not.toBe(0);
    expect(has(run.modules, /\/dist\/client\/api\.js$/)).toBe(true);
  });
});
