/**
 * Secrets stay out of command lines, on the real grid: an agent started with --worker-token-file and an
 * `rgrid run` started with --token-file run a script together while the test reads every process's
 * command line (`ps -eo args` and /proc/PID/cmdline): neither token appears, and both were used (the
 * agent registered and ran the execution). A token given with --worker-token prints a warning.
 */
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { nonceScript, startAgent, tempDir, uniqueAccount, type AgentProcess } from '../agent/helpers.js';
import { createToken } from '../control/support.js';
import { runCli, allCommandLines } from '../support/processes.js';
import { RGRID_BIN, useGrid } from './grid.js';

const grid = useGrid();
const agents: AgentProcess[] = [];
afterAll(async () => {
  await Promise.all(agents.map((a) => a.stop()));
});

function privateFile(dir: string, name: string, content: string): string {
  const path = join(dir, name);
  writeFileSync(path, `${content}\n`);
  chmodSync(path, 0o600);
  return path;
}

describe('tokens from files appear in no command line', () => {
  it('rgrid-agent serve --worker-token-file and rgrid run --token-file, read from ps while they run', async () => {
    const account = uniqueAccount('tokens');
    const workerId = `tokens-${process.pid}`;
    const dir = tempDir('e2e-tokens');
    const workerToken = await createToken(grid.app(), account, 'worker', workerId);
    const clientToken = await grid.clientToken(account);
    // The harness hands the worker token over as --worker-token-file (a private file), never on argv.
    const agent = await startAgent({
      dataDir: join(dir, 'data'), socket: join(dir, 'agent.sock'), baseImage: inject('baseImage'), wheelhouse: grid.wheelhouse(),
      control: { url: grid.url(), workerToken, workerId },
    });
    agents.push(agent);
    const script = join(dir, 'slow.py');
    writeFileSync(script, nonceScript('import time\ntime.sleep(3)\nprint("slept")'));

    // Sample the process table for as long as the run lasts.
    const samples: string[] = [];
    const { code, stdout, stderr } = await runCli('rgrid', ['run', script, '--token-file', privateFile(dir, 'client-token', clientToken), '--json'], {
      env: { RGRID_CONTROL_URL: grid.url() },
      whileRunning: async (_pid, ended) => {
        let done = false;
        void ended.then(() => (done = true));
        while (!done) {
          samples.push(allCommandLines());
          await new Promise((r) => setTimeout(r, 250));
        }
      },
    });
    expect(code, stderr).toBe(0);
    const summary = JSON.parse(stdout) as { worker_id: string };
    expect(summary.worker_id).toBe(workerId); // the agent registered and claimed with the token from its file
    expect(stderr).toContain('slept');
    const seen = samples.join('\n');
    expect(samples.some((s) => s.includes(`${RGRID_BIN} run`))).toBe(true);
    expect(seen).toContain('--worker-token-file');
    expect(seen).not.toContain(workerToken);
    expect(seen).not.toContain(clientToken);
    expect(agent.log()).not.toContain(workerToken);
    expect(agent.log()).not.toContain('warning');
  });

  it('rgrid-agent serve --worker-token prints a one-line warning first', async () => {
    const dir = tempDir('e2e-token-warning');
    // An invalid setting ends the start right after the token sources are read: no engine is needed.
    // The token is on the command line on purpose: that is what the warning is about.
    const res = await runCli('rgrid-agent', ['serve', '--socket', join(dir, 's'), '--data-dir', dir, '--runtime', 'py=img', '--worker-token', 'rgrid_visible', '--build-concurrency', 'many']);
    expect(res.code).toBe(2); // a refused flag: a usage error (common/cli.ts)
    const lines = res.stderr.split('\n').filter(Boolean);
    expect(lines[0]).toBe('rgrid-agent: warning: --worker-token is visible to every local user (ps, /proc/PID/cmdline); prefer --worker-token-file, worker_token_file in the config, or a systemd credential');
    expect(lines[1]).toMatch(/^rgrid-agent: bad_request: --build-concurrency must be a whole number at least 1 and at most 64, got "many"$/);
    expect(lines).toHaveLength(2);
  });
});
