// The agent does not trust what the control plane says: a claim whose execution id is a path, an input
// named `../x`, a digest that is not a sha256, blob bytes that do not match — each is refused before it
// touches a file, and a canary directory outside the data dir survives (the old claim loop removed
// `<data_dir>/worker-outputs/<execution_id>` recursively: `../../../victim` was a directory outside it).
import { randomUUID } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { nonceScript, tempDir, uniqueAccount, type AgentProcess } from './helpers.js';
import { eventually, sha256, startFakeControl, type FakeControl } from './fake-control.js';
import { agentMetrics, claimFor, removeAccountLeftovers, startWorkerAgent } from './worker-support.js';

describe('claims the agent refuses', () => {
  const account = uniqueAccount('trust');
  const base = tempDir('worker-trust');
  // <base>/a/data/worker-outputs/../../../victim is <base>/victim.
  const dataDir = join(base, 'a', 'data');
  const canary = join(base, 'victim');
  let fake: FakeControl;
  let agent: AgentProcess;

  beforeAll(async () => {
    mkdirSync(dataDir, { recursive: true });
    mkdirSync(canary);
    writeFileSync(join(canary, 'keep.txt'), 'still here');
    fake = await startFakeControl(account);
    agent = await startWorkerAgent(fake, dataDir, 'trust-1');
  });

  afterAll(async () => {
    await agent?.stop();
    await fake?.close();
    await removeAccountLeftovers(account);
  });

  it('refuses hostile claims, touches nothing outside its data dir, and keeps running good ones', async () => {
    const script = nonceScript('print(open("/work/inputs/data.txt").read().upper())\nopen("/work/outputs/out.txt", "w").write("done")');
    const input = { name: 'data.txt', data: Buffer.from('hello') };
    const traversal = claimFor(fake, account, { script }, { execution_id: '../../../victim' });
    const badInput = claimFor(fake, account, { script }, { inputs: [{ name: '../x', sha256: sha256('x'), size: 1 }] });
    const badDigest = claimFor(fake, account, { script }, { script_sha256: 'not-a-sha256' });
    const escape = claimFor(fake, account, { script }, { account: 'acme\u001b[2J' });
    const tampered = claimFor(fake, account, { script, inputs: [input] });
    // The blob the control plane serves for the input is not the one the manifest names.
    fake.blobs.set(sha256(input.data), Buffer.from('HELLO'));
    fake.queueClaims([traversal, badInput, badDigest, escape, tampered]);
    const refusedIds = [badInput, badDigest, escape, tampered].map((c) => c.execution_id as string);
    await eventually('the refused claims to be reported', () => (refusedIds.every((id) => fake.completions.has(id)) ? true : undefined));

    for (const claim of [badInput, badDigest, escape]) {
      expect(fake.completions.get(claim.execution_id as string)).toMatchObject({ claim_id: claim.claim_id, outcome: 'done', failure: 'error' });
    }
    expect(fake.completions.get(badInput.execution_id as string)?.error).toMatch(/claim refused: \/inputs\/0\/name "\.\.\/x"/);
    expect(fake.completions.get(badDigest.execution_id as string)?.error).toMatch(/\/script_sha256 "not-a-sha256"/);
    // Shown escaped, never as a raw escape sequence.
    expect(fake.completions.get(escape.execution_id as string)?.error).toContain('\\u001b[2J');
    expect(fake.completions.get(tampered.execution_id as string)).toMatchObject({ outcome: 'done', failure: 'input_unavailable' });
    expect(fake.completions.get(tampered.execution_id as string)?.error).toMatch(/arrived with digest/);

    // A good claim after all that still runs, inputs in and outputs out.
    fake.blobs.set(sha256(input.data), input.data);
    const good = claimFor(fake, account, { script, inputs: [input] });
    fake.queueClaims([good]);
    const done = await eventually('the good claim to complete', () => fake.completions.get(good.execution_id as string));
    expect(done).toMatchObject({ outcome: 'done', exit_code: 0, failure: null, stdout: 'HELLO\n', outputs: [{ name: 'out.txt', sha256: sha256('done'), size: 4 }] });
    expect(fake.blobs.get(sha256('done'))?.toString()).toBe('done');

    // The traversal claim was dropped: never reported, never part of a request, nothing removed or written.
    expect(readFileSync(join(canary, 'keep.txt'), 'utf8')).toBe('still here');
    expect(readdirSync(base).sort()).toEqual(['a', 'victim']);
    expect(readdirSync(join(base, 'a')).sort()).toEqual(['data', 'trust-1.json']);
    expect(fake.requests.some((r) => r.url.includes('victim') || r.url.includes('..'))).toBe(false);
    expect(fake.completions.size).toBe(5);
    const metrics = await agentMetrics(agent.socket);
    expect(metrics).toMatch(/rgrid_agent_claims_refused_total\{action="dropped"\} 1\b/);
    expect(metrics).toMatch(/rgrid_agent_claims_refused_total\{action="reported"\} 3\b/);
    expect(agent.log()).toContain('refused a claim; dropped');
    expect(agent.log()).toContain('\\"../../../victim\\"');
    // Run staging is gone once reported; blob cache files are the agent's alone.
    expect(existsSync(join(dataDir, 'worker-outputs')) ? readdirSync(join(dataDir, 'worker-outputs')) : []).toEqual([]);
    expect(readdirSync(join(dataDir, 'blobs', sha256(input.data).slice(0, 2)))).toContain(sha256(input.data));
  });

  it('drops a claim that is not even an object, and runs the next one of the same answer', async () => {
    const good = claimFor(fake, account, { script: nonceScript('print("after")') });
    fake.queueClaims([randomUUID(), good]);
    expect(await eventually('the next claim to complete', () => fake.completions.get(good.execution_id as string))).toMatchObject({ exit_code: 0, stdout: 'after\n' });
    const metrics = await agentMetrics(agent.socket);
    expect(metrics).toMatch(/rgrid_agent_claims_refused_total\{action="dropped"\} 2\b/);
  });
});
