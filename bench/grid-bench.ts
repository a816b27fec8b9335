/**
 * Measurements on a whole local grid (real processes: control plane on embedded PostgreSQL,
 * one agent, the `rgrid` CLI):
 *  1. the seed's table: first (cold) vs cached `rgrid run` wall time and the speedup, with three ~10 MB
 *     wheels as requirements; the cached run against a bare `docker run --rm --network none IMAGE` of
 *     the same image with the same input mounted (goal: within 150 ms), and a bare run with the agent's
 *     container flags (user 65534, no capabilities, memory/cpu/pids limits) as a like-for-like reference;
 *  2. a batch of 100 executions of one new script (submitted over HTTP) against 100 bare `docker run`s
 *     of its image in sequence.
 * Prints a summary and writes bench-output/grid.json. Runnable standalone: node dist/bench/grid-bench.js
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import Docker from 'dockerode';
import { demoWheelhouse, sampleProject } from '../demo/main.js';
import { ROOT, rgridRun, startLocalGrid, type LocalGrid } from '../demo/grid-process.js';

const CACHED_RUNS = Number(process.env.RGRID_BENCH_CACHED_RUNS ?? 10);
const BATCH = Number(process.env.RGRID_BENCH_BATCH ?? 100);

const median = (xs: readonly number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};
const round = (n: number): number => Math.round(n * 10) / 10;

function dockerRun(args: string[]): Promise<number> {
  const started = performance.now();
  return new Promise((resolve, reject) => {
    execFile('docker', ['run', '--rm', '--network', 'none', ...args], (err, _out, stderr) => (err ? reject(new Error(stderr)) : resolve(performance.now() - started)));
  });
}

async function scriptImage(account: string, scriptSha: string): Promise<string> {
  const images = await new Docker().listImages({ filters: { label: [`io.rgrid.account=${account}`, `io.rgrid.script-sha256=${scriptSha}`] } });
  if (!images[0]) throw new Error(`no script image for ${scriptSha}`);
  return images[0].Id;
}

async function api(grid: LocalGrid, method: string, path: string, body?: unknown, raw?: Buffer): Promise<Record<string, unknown>> {
  const res = await fetch(`${grid.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${grid.clientToken}`, 'content-type': raw ? 'application/octet-stream' : 'application/json' },
    body: raw ?? (body === undefined ? null : JSON.stringify(body)),
  });
  const json = (await res.json()) as Record<string, unknown>;
  if (res.status >= 400) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

async function batch(grid: LocalGrid): Promise<Record<string, unknown>> {
  const script = Buffer.from(`# batch ${Date.now()}\nprint("item")\n`);
  const sha = createHash('sha256').update(script).digest('hex');
  await api(grid, 'POST', '/v1/manifests', { files: [{ name: 'script.py', sha256: sha, size: script.length }] });
  await api(grid, 'PUT', `/v1/blobs/${sha}`, undefined, script);
  const started = performance.now();
  const submitted = await Promise.all(Array.from({ length: BATCH }, () => api(grid, 'POST', '/v1/executions/submit', { runtime: 'python3.11', script_sha256: sha })));
  const finished = await Promise.all(submitted.map(async (e) => {
    for (;;) {
      const x = await api(grid, 'GET', `/v1/executions/${String(e.id)}/wait?timeout_ms=20000`);
      if (x.status === 'succeeded' || x.status === 'failed') return x;
    }
  }));
  const gridMs = performance.now() - started;
  const image = await scriptImage(grid.account, sha);
  const bareStart = performance.now();
  for (let i = 0; i < BATCH; i++) await dockerRun([image]);
  const bareMs = performance.now() - bareStart;
  return {
    executions: BATCH,
    succeeded: finished.filter((x) => x.status === 'succeeded').length,
    script_misses: finished.filter((x) => x.script_cache_hit === false).length,
    grid_total_ms: round(gridMs),
    bare_docker_run_sequential_total_ms: round(bareMs),
    ratio_grid_over_bare: Math.round((gridMs / bareMs) * 100) / 100,
  };
}

export async function runGridBench(): Promise<Record<string, unknown>> {
  const load0 = round(loadavg()[0]!);
  const log = (m: string): void => void process.stderr.write(`grid-bench: ${m}\n`);
  const wheelhouse = demoWheelhouse();
  const work = mkdtempSync(join(tmpdir(), 'rgrid-grid-bench-'));
  const grid = await startLocalGrid({ wheelhouse, log, capacity: 2 });
  try {
    const p = sampleProject(work);
    writeFileSync(p.script, `# bench ${Date.now()}\n${readFileSync(p.script, 'utf8')}`);
    const args = [p.script, p.input, '-r', p.requirements, '--output-dir', join(work, 'out')];
    log('cold run…');
    const cold = await rgridRun(grid, args);
    if (cold.code !== 0) throw new Error(`cold run exited ${cold.code}: ${cold.stderr}`);
    log(`${CACHED_RUNS} cached runs…`);
    const cached = [];
    for (let i = 0; i < CACHED_RUNS; i++) cached.push(await rgridRun(grid, args));
    if (!cached.every((c) => c.json.script_cache_hit === true && c.json.uploaded_blobs === 0)) throw new Error('a cached run was not a full hit');
    const image = await scriptImage(grid.account, createHash('sha256').update(readFileSync(p.script)).digest('hex'));
    log(`${CACHED_RUNS} bare docker runs of the same image…`);
    const mount = ['-v', `${p.input}:/work/inputs/measurements.csv:ro`];
    const bare = [];
    for (let i = 0; i < CACHED_RUNS; i++) bare.push(await dockerRun([...mount, image]));
    // The same container as the agent starts (user, capabilities, limits: its defaults), for a like-for-like
    // reference; the goal is still stated against the plain `docker run` above. Both include the docker
    // CLI's own start-up, as `rgrid run` includes Node's.
    const locked = ['--user', '65534:65534', '--cap-drop', 'ALL', '--security-opt', 'no-new-privileges', '--memory', '1024m', '--memory-swap', '1024m', '--cpus', '1', '--pids-limit', '256'];
    const bareLocked = [];
    for (let i = 0; i < CACHED_RUNS; i++) bareLocked.push(await dockerRun([...locked, ...mount, image]));
    const cachedMs = cached.map((c) => c.wallMs);
    const seed = {
      wheels: '3 x ~10 MB (random payload, incompressible)',
      input: `${readFileSync(p.input).length} bytes`,
      first_run_ms: round(cold.wallMs),
      cached_run_median_ms: round(median(cachedMs)),
      cached_run_samples_ms: cachedMs.map(round),
      speedup: round(cold.wallMs / median(cachedMs)),
      bare_docker_run_median_ms: round(median(bare)),
      bare_docker_run_samples_ms: bare.map(round),
      bare_docker_run_agent_flags_median_ms: round(median(bareLocked)),
      cached_minus_bare_ms: round(median(cachedMs) - median(bare)),
      goal_within_150ms: median(cachedMs) - median(bare) <= 150,
      cold_timings_ms: cold.json.timings,
      cached_timings_ms: cached[cached.length - 1]!.json.timings,
    };
    log(`batch of ${BATCH}…`);
    const batchResult = await batch(grid);
    const result = { machine: { cpus: cpus().length, loadavg_1m_at_start: load0, loadavg_1m_at_end: round(loadavg()[0]!) }, seed_table: seed, batch: batchResult };
    mkdirSync(join(ROOT, 'bench-output'), { recursive: true });
    writeFileSync(join(ROOT, 'bench-output', 'grid.json'), `${JSON.stringify(result, null, 2)}\n`);
    return result;
  } finally {
    await grid.stop();
    rmSync(work, { recursive: true, force: true });
    rmSync(wheelhouse, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  runGridBench().then(
    (r) => process.stdout.write(`${JSON.stringify(r, null, 2)}\n`),
    (err: unknown) => {
      process.stderr.write(`grid-bench failed: ${(err as Error).stack ?? String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
