/**
 * Image sharing through a registry, measured on real processes: `rgrid-control serve` on embedded
 * PostgreSQL, a real registry on loopback (tools/harness/registry.ts), one extra Docker engine per worker
 * host (tools/harness/engines.ts; the base image pushed to the registry once and pulled into each) and
 * one `rgrid-agent serve --docker-host … --registry …` per engine.
 *  1. a cold worker (fresh engine, empty index) running a script whose image another worker built — the
 *     pull path — against the full build of the same script on the first, equally fresh, worker; with the
 *     demo wheelhouse (three ~10 MB wheels) as requirements;
 *  2. builds per N identical submissions of one new script with requirements over K workers (expected:
 *     one dependency build and one script image build in the whole grid).
 * Prints a summary and writes bench-output/registry.json. Runnable standalone: node dist/bench/registry-bench.js
 */
import { createHash, randomBytes } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import Docker from 'dockerode';
import { requirementsDigest } from '../common/cache-keys.js';
import { BASE_IMAGE } from '../demo/grid-process.js';
import { demoWheelhouse, sampleProject } from '../demo/main.js';
import { pullImage, pushImage, startEngine, type TestEngine } from '../tools/harness/engines.js';
import {
  agentMetrics, createTokenOver, removeAccountResources, ROOT, runCli, startAgentProcess, startControlProcess, type AgentProcess, type ControlProcess,
} from '../tools/harness/processes.js';
import { startRegistry, type TestRegistry } from '../tools/harness/registry.js';
import { createWheelhouse } from '../tools/wheelhouse/wheelhouse.js';

const SUBMISSIONS = Number(process.env.RGRID_BENCH_REGISTRY_N ?? 100);
const WORKERS = 3;
const DEAD_AFTER_S = 10;
/** Payload of each of the three sample wheels: 10 MB by default; RGRID_BENCH_WHEEL_MB=60 gives a set of about 180 MB. */
const WHEEL_MB = Number(process.env.RGRID_BENCH_WHEEL_MB ?? 10);

const round = (n: number): number => Math.round(n * 10) / 10;
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

const counter = (text: string, line: RegExp): number => Number(line.exec(text)?.[1] ?? 0);
const BUILDS = (kind: string): RegExp => new RegExp(`^rgrid_agent_builds_total\\{kind="${kind}",result="ok"\\} (\\d+)$`, 'm');
const PULLS = (kind: string): RegExp => new RegExp(`^rgrid_agent_registry_pulls_total\\{kind="${kind}",result="ok"\\} (\\d+)$`, 'm');
const LEASES_GRANTED = /^rgrid_control_build_leases_total\{how="granted"\} (\d+)$/m;
const LEASES_TAKEN_OVER = /^rgrid_control_build_leases_total\{how="taken_over"\} (\d+)$/m;

interface Host { id: string; engine: TestEngine; dataDir: string; agent?: AgentProcess }

export async function runRegistryBench(): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'rgrid-bench-registry-'));
  chmodSync(dir, 0o711); // the embedded PostgreSQL may run as another user (root → postgres)
  const admin = randomBytes(24).toString('hex');
  const account = `bench-${randomBytes(4).toString('hex')}`;
  const main = new Docker();
  const hosts: Host[] = [];
  let control: ControlProcess | undefined;
  let registry: TestRegistry | undefined;
  let baseRef = '';
  let wheelhouse = '';
  try {
    // A stopped worker stays a placement target until it has been silent this long: short, so the cold
    // run below is not held for the stopped builder (the default 60 s would be measured as queueing).
    control = await startControlProcess({ adminToken: admin, dataDir: join(dir, 'control'), args: ['--worker-dead-after', `${DEAD_AFTER_S}s`] });
    registry = await startRegistry();
    baseRef = await pushImage(main, BASE_IMAGE, registry.address, 'rgrid-test/python', 'bookworm');
    wheelhouse = demoWheelhouse(WHEEL_MB);
    createWheelhouse([{ name: 'rgrid-bench-share', version: '1.0' }], wheelhouse);
    const clientToken = await createTokenOver(control.url, admin, { account, role: 'client' });
    const env = { RGRID_CONTROL_URL: control.url, RGRID_TOKEN: clientToken };

    const addHost = async (id: string): Promise<Host> => {
      const engine = await startEngine(id);
      const host: Host = { id, engine, dataDir: join(dir, id) };
      hosts.push(host);
      await pullImage(engine.docker, baseRef);
      return host;
    };
    const start = async (host: Host): Promise<AgentProcess> => {
      mkdirSync(host.dataDir, { recursive: true });
      const workerToken = await createTokenOver(control!.url, admin, { account, role: 'worker', worker_id: host.id });
      host.agent = await startAgentProcess({
        dataDir: host.dataDir, baseImage: baseRef, wheelhouse, logLevel: 'warn',
        control: { url: control!.url, workerToken, workerId: host.id, capacity: 2 },
        args: ['--docker-host', host.engine.host, '--registry', registry!.address],
        awaitRegistration: true,
      });
      return host.agent;
    };
    const stop = async (host: Host): Promise<void> => {
      await host.agent?.stop();
      delete host.agent;
    };
    const run = async (args: string[]): Promise<{ wallMs: number; json: Record<string, unknown> }> => {
      // Outputs (the sample writes some) land in the run's temp directory, not in the caller's.
      const res = await runCli('rgrid', ['run', ...args, '--json'], { env, cwd: dir });
      if (res.code !== 0 || !res.stdout.trim()) throw new Error(`rgrid run exited ${res.code}: ${res.stdout.slice(-1000)}${res.stderr.slice(-2000)}`);
      const json = JSON.parse(res.stdout) as Record<string, unknown>;
      return { wallMs: res.wallMs, json };
    };

    // ---- 1. the pull path on a cold worker against the full build ------------------------------------
    const [builder, cold] = await Promise.all([addHost('bench-w1'), addHost('bench-w2')]);
    const project = sampleProject(mkdtempSync(join(dir, 'project-')));
    await start(builder);
    const built = await run([project.script, project.input, '--requirements', project.requirements]);
    // Only the cold worker claims the second run: the builder is stopped.
    await stop(builder);
    await start(cold);
    await new Promise((r) => setTimeout(r, (DEAD_AFTER_S + 1) * 1000));
    const pulled = await run([project.script, project.input, '--requirements', project.requirements]);
    const coldMetrics = await agentMetrics(cold.agent!.socket);
    const pullPath = {
      requirements: `demo wheelhouse: three wheels of ~${WHEEL_MB} MB each`,
      full_build: { wall_ms: round(built.wallMs), image_origin: built.json.image_origin, worker_id: built.json.worker_id, timings: built.json.timings },
      cold_pull: {
        wall_ms: round(pulled.wallMs), image_origin: pulled.json.image_origin, worker_id: pulled.json.worker_id, timings: pulled.json.timings,
        builds_on_cold_worker: counter(coldMetrics, BUILDS('deps')) + counter(coldMetrics, BUILDS('image')),
        image_pulls_on_cold_worker: counter(coldMetrics, PULLS('image')),
      },
      speedup: Math.round((built.wallMs / pulled.wallMs) * 100) / 100,
      // The worker's own time to have the image (timings.build_ms): the whole build against the pull.
      image_ms: { full_build: (built.json.timings as Record<string, number>).build_ms, cold_pull: (pulled.json.timings as Record<string, number>).build_ms },
    };
    console.log(`pull path: full build ${Math.round(built.wallMs)} ms (${String(built.json.image_origin)}), cold worker ${Math.round(pulled.wallMs)} ms (${String(pulled.json.image_origin)}), x${pullPath.speedup}`);

    // ---- 2. builds per N identical submissions over K workers ----------------------------------------
    await Promise.all([start(builder), addHost('bench-w3').then((h) => start(h))]);
    const script = Buffer.from(`# registry bench ${Date.now()}\nimport rgrid_bench_share\nprint("item")\n`);
    const requirements = Buffer.from('rgrid-bench-share==1.0\n');
    const scriptSha = sha256(script);
    const requirementsBlob = sha256(requirements);
    const api = async (method: string, path: string, body?: unknown, raw?: Buffer): Promise<Record<string, unknown>> => {
      const res = await fetch(`${control!.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${clientToken}`, 'content-type': raw ? 'application/octet-stream' : 'application/json' },
        body: raw ?? (body === undefined ? null : JSON.stringify(body)),
      });
      const json = (await res.json()) as Record<string, unknown>;
      if (res.status >= 400) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
      return json;
    };
    await api('POST', '/v1/manifests', { files: [{ name: 'script.py', sha256: scriptSha, size: script.length }, { name: 'requirements.txt', sha256: requirementsBlob, size: requirements.length }] });
    await api('PUT', `/v1/blobs/${scriptSha}`, undefined, script);
    await api('PUT', `/v1/blobs/${requirementsBlob}`, undefined, requirements);
    const controlMetrics = async (): Promise<string> => (await fetch(`${control!.url}/metrics`)).text();
    const agentSum = async (line: RegExp): Promise<number> =>
      (await Promise.all(hosts.filter((h) => h.agent).map(async (h) => counter(await agentMetrics(h.agent!.socket), line)))).reduce((a, b) => a + b, 0);
    const before = { control: await controlMetrics(), deps: await agentSum(BUILDS('deps')), image: await agentSum(BUILDS('image')) };
    const started = performance.now();
    const submitted = await Promise.all(Array.from({ length: SUBMISSIONS }, () => api('POST', '/v1/executions/submit', {
      runtime: 'python3.11', script_sha256: scriptSha, requirements_sha256: requirementsDigest(requirements).sha256, requirements_blob_sha256: requirementsBlob,
    })));
    const finished = await Promise.all(submitted.map(async (e) => {
      for (;;) {
        const x = await api('GET', `/v1/executions/${String(e.id)}/wait?timeout_ms=20000`);
        if (x.status === 'succeeded' || x.status === 'failed') return x;
      }
    }));
    const totalMs = performance.now() - started;
    const after = { control: await controlMetrics(), deps: await agentSum(BUILDS('deps')), image: await agentSum(BUILDS('image')) };
    const count = (pick: (x: Record<string, unknown>) => unknown): Record<string, number> => {
      const out: Record<string, number> = {};
      for (const x of finished) out[String(pick(x))] = (out[String(pick(x))] ?? 0) + 1;
      return out;
    };
    const perN = {
      submissions: SUBMISSIONS,
      workers: WORKERS,
      succeeded: finished.filter((x) => x.status === 'succeeded').length,
      dependency_builds: after.deps - before.deps,
      image_builds: after.image - before.image,
      build_leases_granted: counter(after.control, LEASES_GRANTED) - counter(before.control, LEASES_GRANTED),
      build_leases_taken_over: counter(after.control, LEASES_TAKEN_OVER) - counter(before.control, LEASES_TAKEN_OVER),
      image_origin: count((x) => x.image_origin),
      per_worker: count((x) => x.worker_id),
      total_ms: round(totalMs),
    };
    console.log(`builds per ${SUBMISSIONS} submissions over ${WORKERS} workers: ${perN.dependency_builds} dependency, ${perN.image_builds} image (leases granted ${perN.build_leases_granted}); origins ${JSON.stringify(perN.image_origin)}`);

    const result = {
      machine: { cpus: cpus().length, load_1m_5m_15m: loadavg().map((l) => Math.round(l * 100) / 100) },
      pull_path: pullPath,
      builds_per_submissions: perN,
    };
    const outDir = join(ROOT, 'bench-output');
    mkdirSync(outDir, { recursive: true });
    writeFileSync(join(outDir, 'registry.json'), `${JSON.stringify(result, null, 2)}\n`);
    return result;
  } finally {
    for (const host of hosts) await host.agent?.stop();
    await control?.stop();
    for (const host of hosts) await host.engine.stop();
    await registry?.destroy();
    if (baseRef) await main.getImage(baseRef).remove({ noprune: true }).catch(() => undefined);
    await removeAccountResources(account, main);
    rmSync(dir, { recursive: true, force: true });
    if (wheelhouse) rmSync(wheelhouse, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  console.log(JSON.stringify(await runRegistryBench(), null, 2));
}
