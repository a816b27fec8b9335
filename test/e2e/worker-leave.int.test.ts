// A rolling restart: an agent that gets SIGTERM while it runs an execution leaves placement at once — the
// control plane marks it leaving within seconds, far inside the 60 s dead-after window, and submissions
// made right after go to the other worker instead of waiting in the queue of one that will not claim them
// — while it renews and completes the run it holds, and exits clean.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { docker, nonceScript, tempDir, uniqueAccount, type AgentProcess } from '../agent/helpers.js';
import { eventually } from '../agent/fake-control.js';
import { call } from '../control/support.js';
import { upload } from '../control/dispatch-support.js';
import { rgrid, rgridRun, useGrid } from './grid.js';

// The default dead-after window: an agent that did not leave would stay placeable for the whole test.
const grid = useGrid({ workerDeadAfterMs: 60_000 });

describe('an agent stopped during a rolling restart', () => {
  it('leaves placement at once, finishes its run, and new work goes to the other worker', async () => {
    const account = uniqueAccount('leave');
    const agents: Record<string, AgentProcess> = { 'leave-a': await grid.agent(account, 'leave-a'), 'leave-b': await grid.agent(account, 'leave-b') };
    const client = await grid.clientToken(account);
    const env = { url: grid.url(), token: client };
    await eventually('both workers registered with a snapshot', async () => {
      const { rows } = await grid.db.pool.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM workers WHERE worker_id IN ('leave-a', 'leave-b') AND snapshot_at IS NOT NULL");
      return rows[0]!.n === 2 ? true : undefined;
    });
    const dir = tempDir('e2e-leave');
    writeFileSync(join(dir, 'slow.py'), nonceScript('import time\nprint("started", flush=True)\ntime.sleep(8)\nprint("finished")'));
    const slow = rgridRun([join(dir, 'slow.py')], env);
    slow.catch(() => undefined); // awaited below

    // The worker that holds the claim (the agent logged it: a stop between the claim's commit and its
    // answer would lose the answer, and the run would go again elsewhere — not this test's case).
    const victim = await eventually('the slow run claimed', async () => {
      const { rows } = await grid.db.pool.query<{ id: string; worker_id: string }>(
        "SELECT execution_id AS id, worker_id FROM executions WHERE account_id = $1 AND status = 'running'", [account]);
      const r = rows[0];
      return r && agents[r.worker_id]!.log().split('\n').some((l) => l.includes('"msg":"claimed"') && l.includes(r.id)) ? r.worker_id : undefined;
    });
    const survivor = victim === 'leave-a' ? 'leave-b' : 'leave-a';
    // Its container running, not only the claim taken: a drain starts no new build, so a claim still
    // waiting for its image at the stop would be handed back — right, but not this test's case.
    await eventually('the slow run running', async () =>
      ((await docker.listContainers({ filters: { label: [`io.rgrid.account=${account}`, 'io.rgrid.role=run'], status: ['running'] } })).length > 0 ? true : undefined));
    const stopped = agents[victim]!.stop();

    await eventually('the stopped worker marked leaving', async () => {
      const { rows } = await grid.db.pool.query<{ leaving: boolean }>('SELECT leaving_at IS NOT NULL AS leaving FROM workers WHERE worker_id = $1', [victim]);
      return rows[0]!.leaving ? true : undefined;
    }, 15_000);

    // Submitted while it drains: by load alone some would have gone to it (it has one execution, the other
    // none, and a batch alternates); none does.
    const script = await upload(grid.app(), client, Buffer.from(nonceScript('print("after the leave")')));
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await call(grid.app(), 'POST', '/v1/executions/submit', client, { runtime: 'python3.11', script_sha256: script });
      expect(res.statusCode, res.body).toBe(201);
      const execution = res.json<{ id: string; status: string; worker_id: string | null }>();
      expect(execution).toMatchObject({ status: 'assigned', worker_id: survivor });
      ids.push(execution.id);
    }

    // The run it held was renewed past its 3 s lease and completed by it, once.
    const result = await slow;
    expect(result).toMatchObject({ exit_code: 0, worker_id: victim });
    expect(result.stderr).toContain('finished');
    const status = JSON.parse((await rgrid(['status', result.execution_id, '--json'], env)).stdout) as { attempts: number; status: string };
    expect(status).toMatchObject({ attempts: 1, status: 'succeeded' });
    expect(await stopped).toBe(0);

    // And the batch runs on the other worker.
    await eventually('the batch done', async () => {
      const { rows } = await grid.db.pool.query<{ status: string; worker_id: string }>(
        'SELECT status, worker_id FROM executions WHERE execution_id = ANY($1::uuid[])', [ids]);
      return rows.every((r) => r.status === 'succeeded') ? rows : undefined;
    }).then((rows) => expect(rows.map((r) => r.worker_id)).toEqual(ids.map(() => survivor)));
  });
});
