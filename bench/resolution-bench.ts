import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { AgentClient } from '../agent/client/agent-client.js';
import { removeAccountResources, startAgentProcess, type AgentProcess } from '../tools/harness/processes.js';
import { createWheelhouse, type WheelSpec } from '../tools/wheelhouse/wheelhouse.js';
import { percentile } from './stats.js';

/**
 * What resolving requirements to a lock costs (`npm run bench -- resolution`), in one run:
 *  1. a resolution: ensures of requirements files that are new to the agent but resolve to a lock whose
 *     layer and script image already exist (`pkg`, `pkg>=0.1`, `pkg>=0.2`, …), so each ensure is one
 *     resolution plus a hit; the first is reported apart (cold engine and page cache), the rest as p50/max,
 *     for a set of 1 and of 20 distributions. The agent keeps no pip cache between resolutions by design
 *     (architecture.md, Locks), so "warm" here means the engine's and the kernel's caches only.
 *  2. the hit within the window: p50/p99 of ensure hits over the socket with an unpinned requirements file
 *     (resolution cached) on an agent with the default resolve_ttl, against the same hits on an agent with
 *     `--resolve-ttl never` (keyed on the text, no resolution at all), interleaved in blocks of 100.
 * Writes bench-output/resolution.json through run-all.
 */
const BASE_IMAGE = process.env.RGRID_TEST_BASE_IMAGE ?? 'rgrid-test/python:bookworm';
const HITS = Number(process.env.RGRID_BENCH_HITS ?? 1000);
const RESOLUTIONS = Number(process.env.RGRID_BENCH_RESOLUTIONS ?? 8);

const round = (n: number, digits = 2): number => Math.round(n * 10 ** digits) / 10 ** digits;

interface EnsureAnswer { resolution?: string; script_cache_hit?: boolean; lock_sha256?: string | null }

async function resolutionCost(client: AgentClient, account: string, script: Buffer, top: string): Promise<{ first_ms: number; p50_ms: number; max_ms: number; samples_ms: number[] }> {
  // The layer and the script image for the lock, built once (not measured).
  const built = (await client.ensure({ script, requirements: Buffer.from(`${top}\n`), account })) as EnsureAnswer;
  const samples: number[] = [];
  for (let i = 1; i <= RESOLUTIONS; i++) {
    // A new file each time (a new requirements_sha256), the same lock: one resolution, then a hit.
    const requirements = Buffer.from(`${top}>=0.${i}\n`);
    const t = performance.now();
    const answer = (await client.ensure({ script, requirements, account })) as EnsureAnswer;
    samples.push(performance.now() - t);
    if (answer.resolution !== 'resolved' || answer.script_cache_hit !== true || answer.lock_sha256 !== built.lock_sha256) {
      throw new Error(`expected a resolution to the same lock and a hit, got ${JSON.stringify(answer)}`);
    }
  }
  const rest = samples.slice(1);
  return { first_ms: round(samples[0]!, 1), p50_ms: round(percentile(rest, 50), 1), max_ms: round(Math.max(...rest), 1), samples_ms: samples.map((s) => round(s, 1)) };
}

export async function runResolutionBench(): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'rgrid-resolution-bench-'));
  const account = `resolve-${process.pid}-${Date.now().toString(36)}`;
  const load = { at_start: loadavg().map((x) => round(x)) };
  const wide: WheelSpec[] = Array.from({ length: 19 }, (_, i) => ({ name: `rgbench-leaf${i}`, version: '1.0' }));
  const wheelhouse = createWheelhouse([
    { name: 'rgbench-one', version: '1.0' },
    { name: 'rgbench-wide', version: '1.0', requires: wide.map((w) => w.name) },
    ...wide,
  ], join(dir, 'wheels'));
  let locking: AgentProcess | undefined;
  let textKeyed: AgentProcess | undefined;
  try {
    const log = (c: string): void => void process.stderr.write(c);
    locking = await startAgentProcess({ dataDir: join(dir, 'a'), baseImage: BASE_IMAGE, wheelhouse, logLevel: 'warn', onOutput: log });
    textKeyed = await startAgentProcess({ dataDir: join(dir, 'b'), baseImage: BASE_IMAGE, wheelhouse, logLevel: 'warn', args: ['--resolve-ttl', 'never'], onOutput: log });
    const a = new AgentClient(locking.socket);
    const b = new AgentClient(textKeyed.socket);
    const script = Buffer.from(`# resolution bench ${account}\nimport rgbench_one\nprint(rgbench_one.VERSION)\n`);

    console.log('resolution cost: one distribution, then twenty …');
    const one = await resolutionCost(a, account, script, 'rgbench-one');
    const twenty = await resolutionCost(a, account, script, 'rgbench-wide');

    console.log(`hits: ${HITS} on each agent, interleaved in blocks of 100 …`);
    const params = { script, requirements: Buffer.from('rgbench-one\n'), account };
    for (let i = 0; i < 100; i++) {
      await a.ensure(params);
      await b.ensure(params);
    }
    const locked: number[] = [];
    const plain: number[] = [];
    for (let block = 0; block < HITS / 100; block++) {
      for (const [client, into, want] of [[a, locked, 'cached'], [b, plain, undefined]] as const) {
        for (let i = 0; i < 100; i++) {
          const t = performance.now();
          const r = (await client.ensure(params)) as EnsureAnswer;
          into.push(performance.now() - t);
          if (r.script_cache_hit !== true || (want !== undefined && r.resolution !== want)) throw new Error(`expected a hit, got ${JSON.stringify(r)}`);
        }
      }
    }
    await a.close();
    await b.close();
    const hits = {
      with_locks: { p50_ms: round(percentile(locked, 50)), p99_ms: round(percentile(locked, 99)) },
      keyed_on_text: { p50_ms: round(percentile(plain, 50)), p99_ms: round(percentile(plain, 99)) },
      p99_delta_ms: round(percentile(locked, 99) - percentile(plain, 99)),
    };
    const result = { machine: { cpus: cpus().length, node: process.version }, load: { ...load, at_end: loadavg().map((x) => round(x)) }, resolution: { one_distribution: one, twenty_distributions: twenty }, hits };
    console.log(`resolution, 1 distribution:   first ${one.first_ms} ms, then p50 ${one.p50_ms} ms (max ${one.max_ms})`);
    console.log(`resolution, 20 distributions: first ${twenty.first_ms} ms, then p50 ${twenty.p50_ms} ms (max ${twenty.max_ms})`);
    console.log(`hit within the window: p50 ${hits.with_locks.p50_ms} ms, p99 ${hits.with_locks.p99_ms} ms; keyed on the text: p50 ${hits.keyed_on_text.p50_ms} ms, p99 ${hits.keyed_on_text.p99_ms} ms; p99 delta ${hits.p99_delta_ms} ms (goal ≤ 0.5)`);
    console.log(`load ${JSON.stringify(result.load)}`);
    return result;
  } finally {
    await locking?.stop();
    await textKeyed?.stop();
    await removeAccountResources(account).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  console.log(JSON.stringify(await runResolutionBench(), null, 2));
}
