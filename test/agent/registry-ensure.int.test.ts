// Pull before build, end to end on the agent's side: real agents from dist/ on real engines (the main one,
// and a second dockerd standing in for another worker host, reached through DOCKER_HOST), a real OCI
// registry, and a fake control plane on 127.0.0.1 answering the build-lease routes (the real routes are
// not on this branch yet). Each test is what a worker must do with one answer of the grid: a lease
// (build, push, complete with the digest the registry holds), a push (pull by digest, run, origin
// pulled), a recorded failure (fail without building), a digest of the wrong image (refuse, build), the
// registry or the control plane away (build, queue the push, deliver it when they are back), and a
// kill -9 with a push still queued (delivered after the restart).
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { registryLocation } from '../../agent/registry/transfer.js';
import { requirementsDigest } from '../../common/cache-keys.js';
import { createWheelhouse } from '../../tools/wheelhouse/wheelhouse.js';
import { pushImage } from '../support/engines.js';
import { startEngine, type TestEngine } from '../support/engines.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';
import { cliJson, docker, nonceScript, startAgent, tempDir, uniqueAccount, type AgentProcess } from './helpers.js';
import { eventually, sha256, startFakeControl, type FakeControl, type RecordedRequest } from './fake-control.js';
import { agentMetrics, claimFor, removeAccountLeftovers, startWorkerAgent } from './worker-support.js';

const MANIFEST_TYPES = [
  'application/vnd.docker.distribution.manifest.v2+json', 'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json', 'application/vnd.oci.image.index.v1+json',
].join(', ');

describe('image sharing through a registry (agent side)', () => {
  const account = uniqueAccount('regshare');
  let registry: TestRegistry;
  let fake: FakeControl;
  let agentA: AgentProcess;
  let dataA: string;
  let engineB: TestEngine | undefined;
  let agentB: AgentProcess | undefined;
  let baseRef = '';
  let wheelhouse = '';
  /** The first test's script image: its key and the digest it was pushed as. */
  let shared: { script: string; key: string; digest: string } | undefined;

  const startA = async (): Promise<AgentProcess> => startWorkerAgent(fake, dataA, 'reg-a', { registry: registry.address, build_wait_s: 30, pip_find_links: wheelhouse });
  const acquiresFor = (script: string): Array<Record<string, unknown>> =>
    fake.requests.filter((r) => r.url.endsWith('/image-builds') && (r.body as { script_sha256?: unknown }).script_sha256 === sha256(script)).map((r) => r.body as Record<string, unknown>);
  const completesOf = (leaseId: string): RecordedRequest[] => fake.requests.filter((r) => r.url.includes(`/image-builds/${leaseId}/complete`));
  const recordsFor = (key: string): RecordedRequest[] => fake.requests.filter((r) => r.url.endsWith('/registry-images') && (r.body as { key?: unknown }).key === key);
  const manifestStatus = async (key: string, digest: string): Promise<number> => {
    const repository = registryLocation(registry.address, account, 'image', key).repository.slice(registry.address.length + 1);
    const res = await fetch(`http://${registry.address}/v2/${repository}/manifests/${digest}`, { method: 'HEAD', headers: { accept: MANIFEST_TYPES } });
    return res.status;
  };
  /** Runs `script` through the claim loop of worker `workerId` and returns the report the fake received. */
  const runClaim = async (script: string, workerId = 'reg-a', requirements?: Buffer): Promise<Record<string, unknown>> => {
    if (requirements) fake.blobs.set(sha256(requirements), requirements);
    const claim = claimFor(fake, account, { script }, requirements ? { requirements_sha256: requirementsDigest(requirements).sha256, requirements_blob_sha256: sha256(requirements) } : {});
    fake.queueClaims([claim], workerId);
    return eventually(`the report of ${String(claim.execution_id)}`, () => fake.completions.get(claim.execution_id as string));
  };
  const metric = async (agent: AgentProcess, line: RegExp): Promise<number | undefined> => {
    const m = line.exec(await agentMetrics(agent.socket));
    return m ? Number(m[1]) : undefined;
  };
  /** A lease for the next acquire of (kind image, script); every other acquire gets a fresh lease too. */
  const grantLease = (): string => {
    const leaseId = randomUUID();
    fake.onAcquire = (_w, body) => ({
      state: 'lease', lease_id: body.kind === 'image' ? leaseId : randomUUID(), lease_ms: 30_000, lease_expires_at: new Date(Date.now() + 30_000).toISOString(), attempt: 1,
    });
    return leaseId;
  };

  beforeAll(async () => {
    registry = await startRegistry();
    fake = await startFakeControl(account);
    dataA = `${tempDir('regshare-a')}/data`;
    wheelhouse = createWheelhouse([{ name: 'rgtest-regshare', version: '1.0' }], tempDir('wheels-regshare'));
    agentA = await startA();
  });

  afterAll(async () => {
    await agentA?.stop();
    await agentB?.stop();
    await engineB?.stop();
    await fake?.close();
    await registry?.destroy();
    if (baseRef) await docker.getImage(baseRef).remove({ noprune: true }).catch(() => undefined);
    await removeAccountLeftovers(account);
  });

  it('lease: builds, pushes, and completes with the digest the registry holds', async () => {
    const leaseId = grantLease();
    const script = nonceScript('print("shared")');
    const report = await runClaim(script);
    expect(report).toMatchObject({ outcome: 'done', exit_code: 0, stdout: 'shared\n', image_origin: 'built' });
    const [acquire] = acquiresFor(script);
    expect(acquire).toMatchObject({ account, kind: 'image', registry: registry.address, runtime: 'python3.11' });
    const key = acquire!.key as string;
    // Completed before the report: the push was part of the ensure.
    const [complete] = completesOf(leaseId);
    expect(complete?.body).toMatchObject({ outcome: 'pushed' });
    const digest = (complete!.body as { manifest_digest: string }).manifest_digest;
    expect(digest).toMatch(/^sha256:[0-9a-f]{64}$/);
    expect(await manifestStatus(key, digest)).toBe(200);
    expect(await metric(agentA, /^rgrid_agent_push_outbox_depth (\d+)$/m)).toBe(0);
    const entries = await cliJson<Array<Record<string, unknown>>>(['ls', '--account', account], agentA.socket);
    expect(entries.find((e) => e.key === key)).toMatchObject({ origin: 'built', registry_digest: null });
    shared = { script, key, digest };
  });

  it('pushed: another worker pulls by the digest and runs with origin pulled, building nothing', async () => {
    // The second worker host: its own engine (DOCKER_HOST), the base image only in the registry.
    engineB = await startEngine('regshare-b');
    baseRef = await pushImage(docker, inject('baseImage'), registry.address, 'rgrid-test/python', 'bookworm');
    const { key, digest, script } = shared!;
    fake.onAcquire = (worker, body) =>
      worker === 'reg-b' && body.key === key
        ? { state: 'pushed', registry: registry.address, manifest_digest: digest, size_bytes: null, pushed_by: 'reg-a' }
        : { state: 'lease', lease_id: randomUUID(), lease_ms: 30_000, lease_expires_at: new Date(Date.now() + 30_000).toISOString(), attempt: 1 };
    const dataB = `${tempDir('regshare-b')}/data`;
    const startB = (): Promise<AgentProcess> => startAgent({
      dataDir: dataB, baseImage: baseRef, wheelhouse, control: { url: fake.url, workerToken: 'fake-token', workerId: 'reg-b', capacity: 1 },
      args: ['--registry', registry.address], env: { DOCKER_HOST: engineB!.host },
    });
    agentB = await startB();
    // The base image came from the registry into B's engine, and it is the same image (same keys).
    expect((await engineB.docker.getImage(baseRef).inspect()).Id).toBe(inject('baseImageId'));

    const report = await runClaim(script, 'reg-b');
    expect(report).toMatchObject({ outcome: 'done', exit_code: 0, stdout: 'shared\n', image_origin: 'pulled' });
    expect(await metric(agentB, /^rgrid_agent_registry_pulls_total\{kind="image",result="ok"\} (\d+)$/m)).toBe(1);
    expect(await metric(agentB, /^rgrid_agent_builds_total\{kind="image",result="ok"\} (\d+)$/m)).toBeUndefined();
    const pulled = { kind: 'image', key, origin: 'pulled', registry_digest: digest };
    const entry = (await cliJson<Array<Record<string, unknown>>>(['ls', '--account', account], agentB.socket)).find((e) => e.key === key);
    expect(entry).toMatchObject(pulled);
    // Named by the local tag only (no second repository), so the pruner's remove by ID is not refused.
    const image = await engineB.docker.getImage(entry!.image_id as string).inspect();
    expect(image.RepoTags).toEqual([entry!.image_tag]);
    // …and it names the builder (agent A) as its owner, which the restart's reconcile below must accept.
    expect(image.Config.Labels?.['io.rgrid.owner']).toBe((await agentA.client.health()).agent_id);
    // The pulled image names the builder as its owner: reconcile at the next start keeps it all the same.
    await agentB.stop();
    agentB = await startB();
    expect((await cliJson<Array<Record<string, unknown>>>(['ls', '--account', account], agentB.socket)).find((e) => e.key === key)).toMatchObject(pulled);
    // A second run is a plain local hit, which asks neither the control plane's build lease nor the
    // registry: a warm hit costs nothing more with sharing on.
    const acquiresBefore = acquiresFor(script).length;
    const pullsBefore = await metric(agentB, /^rgrid_agent_registry_pulls_total\{kind="image",result="ok"\} (\d+)$/m);
    expect(await runClaim(script, 'reg-b')).toMatchObject({ exit_code: 0, image_origin: 'local' });
    expect(acquiresFor(script)).toHaveLength(acquiresBefore);
    expect(await metric(agentB, /^rgrid_agent_registry_pulls_total\{kind="image",result="ok"\} (\d+)$/m)).toBe(pullsBefore);
  });

  it('script image missing but its dependency layer pushed: pulls the layer and builds only the script layer', async () => {
    const requirements = Buffer.from('rgtest-regshare==1.0\n');
    const requirementsSha = requirementsDigest(requirements).sha256;
    const leases = new Map<string, string>();
    fake.onAcquire = (_w, body) => {
      const leaseId = randomUUID();
      leases.set(`${String(body.kind)}/${String(body.key)}`, leaseId);
      return { state: 'lease', lease_id: leaseId, lease_ms: 30_000, lease_expires_at: new Date(Date.now() + 30_000).toISOString(), attempt: 1 };
    };
    const scriptA = nonceScript('import rgtest_regshare\nprint("deps on a")');
    expect(await runClaim(scriptA, 'reg-a', requirements)).toMatchObject({ exit_code: 0, stdout: 'deps on a\n', image_origin: 'built' });
    const depsKey = fake.requests.map((r) => r.body as Record<string, unknown>)
      .find((b) => b?.kind === 'deps' && b.requirements_sha256 === requirementsSha)?.key as string;
    const [depsComplete] = completesOf(leases.get(`deps/${depsKey}`)!);
    expect(depsComplete?.body).toMatchObject({ outcome: 'pushed' });
    const depsDigest = (depsComplete!.body as { manifest_digest: string }).manifest_digest;

    // Worker B: another script with the same requirements. The grid has the layer, not the script image.
    fake.onAcquire = (worker, body) => {
      if (worker === 'reg-b' && body.kind === 'deps' && body.key === depsKey) {
        return { state: 'pushed', registry: registry.address, manifest_digest: depsDigest, size_bytes: null, pushed_by: 'reg-a' };
      }
      const leaseId = randomUUID();
      leases.set(`${String(body.kind)}/${String(body.key)}`, leaseId);
      return { state: 'lease', lease_id: leaseId, lease_ms: 30_000, lease_expires_at: new Date(Date.now() + 30_000).toISOString(), attempt: 1 };
    };
    const scriptB = nonceScript('import rgtest_regshare\nprint("deps on b")');
    expect(await runClaim(scriptB, 'reg-b', requirements)).toMatchObject({ exit_code: 0, stdout: 'deps on b\n', image_origin: 'built' });
    expect(await metric(agentB!, /^rgrid_agent_registry_pulls_total\{kind="deps",result="ok"\} (\d+)$/m)).toBe(1);
    // No pip install on B: no dependency build at all, one script image build.
    expect(await metric(agentB!, /^rgrid_agent_builds_total\{kind="deps",result="ok"\} (\d+)$/m)).toBeUndefined();
    expect(await metric(agentB!, /^rgrid_agent_builds_total\{kind="image",result="ok"\} (\d+)$/m)).toBe(1);
    const imageKey = acquiresFor(scriptB)[0]!.key as string;
    const [imageComplete] = completesOf(leases.get(`image/${imageKey}`)!);
    expect(imageComplete?.body).toMatchObject({ outcome: 'pushed' });
    const entries = await cliJson<Array<Record<string, unknown>>>(['ls', '--account', account], agentB!.socket);
    expect(entries.find((e) => e.kind === 'deps' && e.key === depsKey)).toMatchObject({ origin: 'pulled', registry_digest: depsDigest });
    expect(entries.find((e) => e.kind === 'image' && e.key === imageKey)).toMatchObject({ origin: 'built', deps_key: depsKey });
    await agentB!.stop();
    agentB = undefined;
  });

  it('lease: renewed while building; a lease taken over (409) only stops the recording, not the build', async () => {
    const leaseId = randomUUID();
    // 600 ms leases: renewals every 200 ms during the build; every renewal says the lease is gone.
    fake.onAcquire = (_w, body) => ({
      state: 'lease', lease_id: body.kind === 'image' ? leaseId : randomUUID(), lease_ms: 600, lease_expires_at: new Date(Date.now() + 600).toISOString(), attempt: 1,
    });
    fake.fail('build_renew', Number.POSITIVE_INFINITY, 409);
    const script = nonceScript('print("built under a lost lease")');
    try {
      expect(await runClaim(script)).toMatchObject({ exit_code: 0, stdout: 'built under a lost lease\n', image_origin: 'built' });
    } finally {
      fake.fail('build_renew', 0);
    }
    expect(fake.requests.filter((r) => r.url.includes(`/image-builds/${leaseId}/renew`)).length).toBeGreaterThanOrEqual(1);
    expect(agentA.log()).toContain('build lease lost');
    // Not completed, and not queued for recording either: the new holder records its own build.
    expect(completesOf(leaseId)).toEqual([]);
    expect(await metric(agentA, /^rgrid_agent_push_outbox_depth (\d+)$/m)).toBe(0);
  });

  it('failed: fails with the recorded message and tail, without building', async () => {
    const script = nonceScript('print("never built")');
    fake.onAcquire = () => ({ state: 'failed', error: 'build_failed', message: 'dependency install failed: pip exited 1', log_tail: 'ERROR: tail-marker-42', failed_by: 'reg-x', failed_at: new Date().toISOString() });
    const report = await runClaim(script);
    expect(report).toMatchObject({ outcome: 'done', failure: 'build_failed' });
    expect(String(report.error)).toContain('pip exited 1');
    expect(String(report.stderr)).toContain('tail-marker-42');
    const key = acquiresFor(script)[0]!.key;
    expect((await cliJson<Array<Record<string, unknown>>>(['ls', '--account', account], agentA.socket)).some((e) => e.key === key)).toBe(false);
  });

  it('a digest of another image is refused and the image is built locally', async () => {
    const script = nonceScript('print("not the pushed one")');
    // The grid says "pushed" with the digest of the first test's image: its labels name another key.
    fake.onAcquire = () => ({ state: 'pushed', registry: registry.address, manifest_digest: shared!.digest, size_bytes: null, pushed_by: 'reg-x' });
    const report = await runClaim(script);
    expect(report).toMatchObject({ outcome: 'done', exit_code: 0, stdout: 'not the pushed one\n', image_origin: 'built' });
    expect(await metric(agentA, /^rgrid_agent_registry_pulls_total\{kind="image",result="mismatch"\} (\d+)$/m)).toBe(1);
    expect(agentA.log()).toContain('refused the image in the registry');
    // The first image is untouched by the refusal (only the pulled reference went).
    const entries = await cliJson<Array<Record<string, unknown>>>(['ls', '--account', account], agentA.socket);
    const first = entries.find((e) => e.key === shared!.key);
    expect(first).toBeDefined();
    expect((await docker.getImage(first!.image_id as string).inspect()).Id).toBe(first!.image_id);
  });

  it('registry down: builds locally, queues the push, and delivers and records it once the registry is back', async () => {
    const leaseId = grantLease();
    await registry.stop();
    const script = nonceScript('print("while the registry is down")');
    try {
      const report = await runClaim(script);
      expect(report).toMatchObject({ outcome: 'done', exit_code: 0, image_origin: 'built' });
      expect(completesOf(leaseId).map((r) => r.body)).toEqual([{ outcome: 'released' }]);
      expect(await metric(agentA, /^rgrid_agent_push_outbox_depth (\d+)$/m)).toBe(1);
    } finally {
      await registry.start();
    }
    const key = acquiresFor(script)[0]!.key as string;
    const [record] = await eventually('the queued push to be recorded', () => (recordsFor(key).length > 0 ? recordsFor(key) : undefined));
    const digest = (record!.body as { manifest_digest: string }).manifest_digest;
    expect(record!.body).toMatchObject({ account, kind: 'image', key, registry: registry.address });
    expect(await manifestStatus(key, digest)).toBe(200);
    await eventually('the outbox to empty', async () => ((await metric(agentA, /^rgrid_agent_push_outbox_depth (\d+)$/m)) === 0 ? true : undefined));
  });

  it('control plane unreachable: builds locally (degraded) and records the push when it answers again', async () => {
    fake.fail('build_acquire', Number.POSITIVE_INFINITY);
    fake.fail('registry_images', Number.POSITIVE_INFINITY);
    const script = nonceScript('print("while the control plane is away")');
    const report = await runClaim(script).finally(() => fake.fail('build_acquire', 0));
    expect(report).toMatchObject({ outcome: 'done', exit_code: 0, image_origin: 'built' });
    expect(agentA.log()).toContain('image sharing degraded');
    const key = (fake.requests.find((r) => r.url.endsWith('/image-builds') && (r.body as { script_sha256?: unknown }).script_sha256 === sha256(script))!.body as { key: string }).key;
    // Pushed or not, the job stays until the control plane has recorded it.
    expect(await metric(agentA, /^rgrid_agent_push_outbox_depth (\d+)$/m)).toBe(1);
    fake.fail('registry_images', 0);
    await eventually('the push to be recorded', async () => ((await metric(agentA, /^rgrid_agent_push_outbox_depth (\d+)$/m)) === 0 ? true : undefined));
    const record = recordsFor(key).at(-1);
    expect(record?.body).toMatchObject({ account, kind: 'image', key });
    expect(await manifestStatus(key, (record!.body as { manifest_digest: string }).manifest_digest)).toBe(200);
  });

  it('kill -9 with a push queued: the restarted agent pushes and records it', async () => {
    grantLease();
    await registry.stop();
    const script = nonceScript('print("queued before the crash")');
    let key = '';
    try {
      expect(await runClaim(script)).toMatchObject({ exit_code: 0, image_origin: 'built' });
      key = acquiresFor(script)[0]!.key as string;
      expect(await metric(agentA, /^rgrid_agent_push_outbox_depth (\d+)$/m)).toBeGreaterThanOrEqual(1);
      await agentA.kill();
    } finally {
      await registry.start();
    }
    expect(recordsFor(key)).toEqual([]);
    agentA = await startA();
    const [record] = await eventually('the push queued before the crash to be recorded', () => (recordsFor(key).length > 0 ? recordsFor(key) : undefined));
    expect(await manifestStatus(key, (record!.body as { manifest_digest: string }).manifest_digest)).toBe(200);
  });
});
