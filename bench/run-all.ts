/**
 * `npm run bench`: runs every benchmark, prints its figures and writes them to bench-output/<name>.json
 * plus a machine-readable summary in bench-output/summary.json. docs/benchmarks.md quotes these files;
 * tests never assert timings.
 *
 * `npm run bench -- agent` (or `control`, `fastpath`, `hits`, `grid`, `registry`, `resolution`) runs one suite.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

type Suite = { name: string; run: () => Promise<Record<string, unknown>> };

const SUITES: Suite[] = [
  { name: 'agent', run: async () => (await import('./agent-bench.js')).runAgentBench() },
  { name: 'control', run: async () => (await import('./control-bench.js')).runControlBench() },
  { name: 'fastpath', run: async () => {
    const bench = await import('./fast-path-bench.js');
    const result = await bench.runFastPathBench();
    bench.printFastPath(result);
    return result;
  } },
  { name: 'hits', run: async () => {
    const bench = await import('./hits-bench.js');
    const result = await bench.runHitsBench();
    bench.printHits(result);
    return result;
  } },
  { name: 'grid', run: async () => (await import('./grid-bench.js')).runGridBench() },
  { name: 'registry', run: async () => (await import('./registry-bench.js')).runRegistryBench() },
  { name: 'resolution', run: async () => (await import('./resolution-bench.js')).runResolutionBench() },
];

export async function runAll(selected: readonly string[]): Promise<void> {
  const outDir = join(process.cwd(), 'bench-output');
  await mkdir(outDir, { recursive: true });
  const summary: Record<string, unknown> = {
    machine: { cpus: cpus().length, cpu_model: cpus()[0]?.model, memory_gb: Math.round(totalmem() / 2 ** 30), node: process.version },
    started_at: new Date().toISOString(),
  };
  let failed = false;
  for (const suite of SUITES) {
    if (selected.length > 0 && !selected.includes(suite.name)) continue;
    console.log(`\n=== bench: ${suite.name} ===`);
    try {
      summary[suite.name] = await suite.run();
    } catch (err) {
      failed = true;
      console.error(`bench ${suite.name} failed:`, err);
      summary[suite.name] = { error: String(err) };
    }
  }
  await writeFile(join(outDir, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
  console.log(`\nwrote ${join(outDir, 'summary.json')}`);
  if (failed) process.exitCode = 1;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await runAll(process.argv.slice(2));
}
