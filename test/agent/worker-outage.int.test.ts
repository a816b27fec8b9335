// Outages cost no work: blob downloads, output uploads and the report are retried through 503s (the old claim loop made
// an upload 503 a permanent failure, and gave the report up after five tries), renewals failing during an
// outage do not stop the run, and the claim keeps being renewed while the report is retried. A 409 on a
// renewal — the control plane gave the execution to someone else — still stops the run.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { docker, nonceScript, tempDir, uniqueAccount, type AgentProcess } from './helpers.js';
import { eventually, sha256, startFakeControl, type FakeControl } from './fake-control.js';
import { claimFor, removeAccountLeftovers, startWorkerAgent } from './worker-support.js';

describe('the claim loop through control-plane outages', () => {
  const account = uniqueAccount('outage');
  let fake: FakeControl;
  let agent: AgentProcess;

  beforeAll(async () => {
    fake = await startFakeControl(account);
    agent = await startWorkerAgent(fake, `${tempDir('worker-outage')}/data`, 'outage-1');
  });

  afterAll(async () => {
    await agent?.stop();
    await fake?.close();
    await removeAccountLeftovers(account);
  });

  it('retries uploads and the report through 503s, renewing the claim all along', async () => {
    const script = nonceScript('import time\nopen("/work/outputs/result.txt", "w").write("42")\nprint("working", flush=True)\ntime.sleep(1.5)\nprint("done")');
    // Renewals every 300 ms, all failing during the run: the run must go on.
    const claim = claimFor(fake, account, { script }, { lease_ms: 900 });
    const id = claim.execution_id as string;
    const isRenewal = (url: string): boolean => url.includes(`/claims/${id}/renew`);
    const isReport = (url: string): boolean => url.includes(`/claims/${id}/complete`);
    fake.fail('renew', Number.POSITIVE_INFINITY);
    fake.fail('blob_put', 3);
    // The report is refused until the claim has been renewed twice after the first report attempt.
    fake.failWhile('complete', () => {
      const first = fake.requests.findIndex((r) => isReport(r.url));
      return first < 0 || fake.requests.slice(first).filter((r) => isRenewal(r.url)).length < 2;
    });
    fake.queueClaims([claim]);

    const report = await eventually('the report to be accepted', () => fake.completions.get(id));
    expect(report).toMatchObject({ outcome: 'done', exit_code: 0, failure: null, stdout: 'working\ndone\n', outputs: [{ name: 'result.txt', sha256: sha256('42'), size: 2 }] });
    expect(fake.blobs.get(sha256('42'))?.toString()).toBe('42');
    expect(fake.calls('blob_put')).toBe(4);
    expect(fake.requests.filter((r) => isReport(r.url)).length).toBeGreaterThan(1);
    expect(agent.log()).toContain('claim renewal failed; the run goes on');
    expect(agent.log()).toContain('output upload failed; retrying');
    expect(agent.log()).toContain('reporting the result failed; retrying');
    fake.fail('renew', 0);
  });

  it('waits for the script blob through 503s instead of handing the claim back', async () => {
    // The control plane went away right after handing out the claim: the download is retried while the
    // claim is held, so the outage costs no attempt (a hand-back would be outcome "retry").
    const claim = claimFor(fake, account, { script: nonceScript('print("fetched after the outage")') });
    const id = claim.execution_id as string;
    fake.fail('blob_get', 3, 503);
    fake.queueClaims([claim]);
    const report = await eventually('the report', () => fake.completions.get(id));
    expect(report).toMatchObject({ outcome: 'done', exit_code: 0, failure: null, stdout: 'fetched after the outage\n' });
    expect(fake.calls('blob_get')).toBeGreaterThanOrEqual(4);
    expect(agent.log()).toContain('blob download failed; retrying');
  });

  it('stops the run when a renewal says the claim is lost, and reports nothing', async () => {
    const claim = claimFor(fake, account, { script: nonceScript('import time\nprint("long", flush=True)\ntime.sleep(120)') }, { lease_ms: 600 });
    const id = claim.execution_id as string;
    fake.fail('renew', 1, 409);
    fake.queueClaims([claim]);
    await eventually('the run to be given up', () => (agent.log().includes('run stopped: the claim is lost, nothing is reported') ? true : undefined));
    expect(agent.log()).toContain('claim lost (lease expired or re-queued); stopping the run');
    // Stopped whether the renewal came during the build or during the run: no container is left running,
    // and once its removal (after the run, in the background) is done, none is left but the hot containers
    // made ahead for a next run (created, never started).
    const runContainers = async (): Promise<Array<{ State: string; Labels: Record<string, string> }>> =>
      docker.listContainers({ all: true, filters: { label: [`io.rgrid.account=${account}`, 'io.rgrid.role=run'] } });
    expect((await runContainers()).filter((c) => c.State === 'running')).toEqual([]);
    await eventually('the run container removed', async () => ((await runContainers()).every((c) => c.State === 'created' && c.Labels['io.rgrid.hot'] !== undefined) ? true : undefined));
    // Work after it still gets done, and by then a report of the lost claim would have been sent.
    const next = claimFor(fake, account, { script: nonceScript('print("next")') });
    fake.queueClaims([next]);
    expect(await eventually('the next claim', () => fake.completions.get(next.execution_id as string))).toMatchObject({ exit_code: 0 });
    expect(fake.completions.has(id)).toBe(false);
  });
});
