// A non-zero exit, a timeout and a memory-limit kill each end with a clear
// status (failed + failure reason), the CLI exits like `docker run` would, and the logs are kept.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { nonceScript, tempDir, uniqueAccount } from '../agent/helpers.js';
import { rgrid, rgridRun, useGrid } from './grid.js';

const grid = useGrid();

describe('failures are results', () => {
  it('non-zero exit, timeout and memory kill: status, exit code and logs', async () => {
    const account = uniqueAccount('fail');
    await grid.agent(account, 'fail-1');
    const env = { url: grid.url(), token: await grid.clientToken(account) };
    const dir = tempDir('e2e-fail');
    writeFileSync(join(dir, 'exit3.py'), nonceScript('import sys\nprint("about to fail")\nprint("bad things", file=sys.stderr)\nsys.exit(3)'));
    writeFileSync(join(dir, 'sleepy.py'), nonceScript('import time\nprint("sleeping", flush=True)\ntime.sleep(60)'));
    writeFileSync(join(dir, 'hog.py'), nonceScript('print("allocating", flush=True)\nx = b"x" * (300 * 1024 * 1024)\nprint(len(x))'));
    const status = async (id: string) => JSON.parse((await rgrid(['status', id, '--json'], env)).stdout) as Record<string, unknown>;
    const logs = async (id: string) => JSON.parse((await rgrid(['logs', id, '--json'], env)).stdout) as { stdout: string; stderr: string };

    const exit3 = await rgridRun([join(dir, 'exit3.py')], env);
    expect(exit3.code).toBe(3);
    expect(await status(exit3.execution_id)).toMatchObject({ status: 'failed', failure: 'nonzero_exit', exit_code: 3, attempts: 1 });
    expect(await logs(exit3.execution_id)).toMatchObject({ stdout: 'about to fail\n', stderr: 'bad things\n' });
    // The wait carries the logs of a finished execution when asked (what `rgrid run` uses), and only then.
    const wait = async (query: string) => {
      const res = await fetch(`${env.url}/v1/executions/${exit3.execution_id}/wait?timeout_ms=1000${query}`, { headers: { authorization: `Bearer ${env.token}` } });
      expect(res.status).toBe(200);
      return (await res.json()) as Record<string, unknown>;
    };
    expect(await wait('&logs=true')).toMatchObject({
      id: exit3.execution_id, status: 'failed', exit_code: 3,
      logs: { execution_id: exit3.execution_id, status: 'failed', stdout: 'about to fail\n', stderr: 'bad things\n', truncated: false },
    });
    expect(await wait('')).not.toHaveProperty('logs');

    const slow = await rgridRun([join(dir, 'sleepy.py'), '--timeout', '2'], env);
    expect(slow.code).toBe(124);
    expect(await status(slow.execution_id)).toMatchObject({ status: 'failed', failure: 'timeout', attempts: 1 });
    expect((await logs(slow.execution_id)).stdout).toBe('sleeping\n');

    const hog = await rgridRun([join(dir, 'hog.py'), '--memory', '64'], env);
    expect(hog.code).toBe(137);
    expect(await status(hog.execution_id)).toMatchObject({ status: 'failed', failure: 'memory_limit', exit_code: 137, attempts: 1 });
    expect((await logs(hog.execution_id)).stdout).toBe('allocating\n');
    // The plain (non-JSON) CLI says why.
    const plain = await rgrid(['run', join(dir, 'exit3.py')], env);
    expect(plain.code).toBe(3);
    expect(plain.stdout).toBe('about to fail\n');
    expect(plain.stderr).toContain('bad things\n');
    expect(plain.stderr).toContain('failed (nonzero_exit)');
  });
});
