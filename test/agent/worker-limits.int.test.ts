// The claim loop's side of run limits: what a claim asks for is clamped like a local request (a 1 TiB
// memory request reached the container unchanged before), and a run whose outputs pass the limit is a
// result — reported `done` with failure `output_limit`, no output uploaded — never handed back to be
// retried elsewhere.
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nonceScript, tempDir, uniqueAccount, type AgentProcess } from './helpers.js';
import { eventually, startFakeControl, type FakeControl } from './fake-control.js';
import { claimFor, removeAccountLeftovers, startWorkerAgent } from './worker-support.js';

const MiB = 1024 * 1024;

describe('run limits on claimed executions', () => {
  const account = uniqueAccount('wlimits');
  let fake: FakeControl;
  let agent: AgentProcess;

  beforeAll(async () => {
    fake = await startFakeControl(account);
    agent = await startWorkerAgent(fake, join(tempDir('worker-limits'), 'data'), 'limits-1', {
      run_max_memory_mb: 192, run_memory_mb: 128, run_max_output_mb: 16, run_max_output_file_mb: 8,
    });
  });

  afterAll(async () => {
    await agent?.stop();
    await fake?.close();
    await removeAccountLeftovers(account);
  });

  it('clamps the memory a claim asks for to run_max_memory_mb', async () => {
    const probe = 'import os\nfor p in ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"):\n    if os.path.exists(p):\n        print(int(open(p).read()))';
    const claim = claimFor(fake, account, { script: nonceScript(probe) }, { memory_mb: 1_048_576, timeout_s: 7 * 86_400 });
    fake.queueClaims([claim]);
    const report = await eventually('the report', () => fake.completions.get(claim.execution_id as string));
    expect(report).toMatchObject({ outcome: 'done', exit_code: 0, failure: null, stdout: `${192 * MiB}\n` });
  });

  it('reports a 2 GiB sparse output as output_limit, uploading nothing', async () => {
    const claim = claimFor(fake, account, { script: nonceScript('with open("/work/outputs/big", "wb") as f:\n    f.truncate(2 << 30)\nopen("/work/outputs/small.txt", "w").write("s")\nprint("made")') });
    fake.queueClaims([claim]);
    const report = await eventually('the report', () => fake.completions.get(claim.execution_id as string));
    expect(report).toMatchObject({ outcome: 'done', exit_code: 0, failure: 'output_limit', outputs: [], stdout: 'made\n' });
    expect(report.error).toMatch(/outputs cut at the output limit, none kept: output "big" is 2048 MiB, over the 8 MiB limit per file/);
    expect(fake.calls('blob_put')).toBe(0);
    expect(fake.calls('manifest')).toBe(0);
  });
});
