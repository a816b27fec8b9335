// An agent SIGKILLed during an execution. Its claim is not renewed, the
// control plane re-queues the execution on the other agent, where it completes: attempts = 2.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { nonceScript, tempDir, uniqueAccount, type AgentProcess } from '../agent/helpers.js';
import { rgrid, rgridRun, useGrid } from './grid.js';

const grid = useGrid();

describe('an agent killed mid-execution', () => {
  it('re-queues the execution on the other agent', async () => {
    const account = uniqueAccount('killed');
    const agents: Record<string, AgentProcess> = { 'kill-a': await grid.agent(account, 'kill-a'), 'kill-b': await grid.agent(account, 'kill-b') };
    const env = { url: grid.url(), token: await grid.clientToken(account) };
    const dir = tempDir('e2e-kill');
    writeFileSync(join(dir, 'slow.py'), nonceScript('import time\nprint("started", flush=True)\ntime.sleep(6)\nprint("finished")'));

    const pending = rgridRun([join(dir, 'slow.py')], env);
    // Wait until a worker has claimed it, then kill that worker's agent outright.
    let victim: string | undefined;
    for (let i = 0; i < 600 && !victim; i++) {
      const { rows } = await grid.db.pool.query<{ worker_id: string }>(
        "SELECT worker_id FROM executions WHERE account_id = $1 AND status = 'running'", [account]);
      victim = rows[0]?.worker_id;
      if (!victim) await new Promise((r) => setTimeout(r, 100));
    }
    expect(victim).toBeDefined();
    await agents[victim!]!.kill();

    const result = await pending;
    const survivor = victim === 'kill-a' ? 'kill-b' : 'kill-a';
    expect(result).toMatchObject({ exit_code: 0, worker_id: survivor });
    expect(result.stderr).toContain('finished');
    const status = JSON.parse((await rgrid(['status', result.execution_id, '--json'], env)).stdout) as { attempts: number; status: string };
    expect(status).toMatchObject({ attempts: 2, status: 'succeeded' });
  });
});
