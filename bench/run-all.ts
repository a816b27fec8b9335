/**
 * `npm run bench`: runs every benchmark, prints its figures and writes them to bench-output/<name>.json
 * plus a machine-readable summary in bench-output/summary.json, and ends with "the cached path" table
 * (bench/cached-path.ts) built from the same run, also in summary.json and bench-output/cached-path.json.
 * docs/benchmarks.md quotes these files; tests never assert timings.
 *
 * `npm run bench -- agent` (or `control`, `fastpath`, `hits`, `grid`, `registry`, `resolution`) runs one suite.
 * `npm run bench -- cached-path` runs only what the table needs: the fast-path bench with its heavy row,
 * then the control bench's rounds at 2,000 requests/s (RGRID_BENCH_AB_ROUNDS rounds, default 2).
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { cpus, loadavg, totalmem } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { cachedPathTable, formatCachedPath } from './cached-path.js';

/** `onlyWhenNamed`: not part of a run of every suite (it repeats parts of others). */
type Suite = { name: string; run: () => Promise<Record<string, unknown>>; onlyWhenNamed?: boolean };

async function runFastPath(): Promise<Record<string, unknown>> {
  const bench = await import('./fast-path-bench.js');
  const result = await bench.runFastPathBench();
  bench.printFastPath(result);
  return result;
}

const SUITES: Suite[] = [
  { name: 'agent', run: async () => (await import('./agent-bench.js')).runAgentBench() },
  { name: 'control', run: async () => (await import('./control-bench.js')).runControlBench() },
  { name: 'fastpath', run: runFastPath },
  { name: 'hits', run: async () => {
    const bench = await import('./hits-bench.js');
    const result = await bench.runHitsBench();
    bench.printHits(result);
    return result;
  } },
  { name: 'grid', run: async () => (await import('./grid-bench.js')).runGridBench() },
  { name: 'registry', run: async () => (await import('./registry-bench.js')).runRegistryBench() },
  { name: 'resolution', run: async () => (await import('./resolution-bench.js')).runResolutionBench() },
  { name: 'cached-path', onlyWhenNamed: true, run: async () => {
    // Each part on its own: a failure of one still leaves the other's rows in the table.
    const part = (p: Promise<Record<string, unknown>>): Promise<Record<string, unknown>> => p.catch((err: unknown) => {
      console.error('cached-path part failed:', err);
      return { error: String(err) };
    });
    const fastpath = await part(runFastPath());
    const control = await part((async () => (await import('./control-bench.js')).runControlBench({ phases: 'at-rate', rateRounds: Number(process.env.RGRID_BENCH_AB_ROUNDS ?? 2) }))());
    return { fastpath, control };
  } },
];

export async function runAll(selected: readonly string[]): Promise<void> {
  const outDir = join(process.cwd(), 'bench-output');
  await mkdir(outDir, { recursive: true });
  const unknown = selected.filter((name) => !SUITES.some((s) => s.name === name));
  if (unknown.length > 0) throw new Error(`no suite ${unknown.join(', ')} (suites: ${SUITES.map((s) => s.name).join(', ')})`);
  const loadNow = (): number[] => loadavg().map((x) => Math.round(x * 100) / 100);
  const loadAtStart = loadNow();
  const summary: Record<string, unknown> = {
    machine: { cpus: cpus().length, cpu_model: cpus()[0]?.model, memory_gb: Math.round(totalmem() / 2 ** 30), node: process.version },
    started_at: new Date().toISOString(),
    command: `node dist/bench/run-all.js${selected.length ? ` ${selected.join(' ')}` : ''}`,
  };
  let failed = false;
  for (const suite of SUITES) {
    if (selected.length > 0 ? !selected.includes(suite.name) : suite.onlyWhenNamed === true) continue;
    console.log(`\n=== bench: ${suite.name} ===`);
    try {
      summary[suite.name] = await suite.run();
    } catch (err) {
      failed = true;
      console.error(`bench ${suite.name} failed:`, err);
      summary[suite.name] = { error: String(err) };
    }
  }
  // The table, from this run's results: those of the cached-path suite, or of the fastpath and control suites.
  const parts = (summary['cached-path'] ?? { fastpath: summary.fastpath, control: summary.control }) as Record<string, Record<string, unknown> | undefined>;
  const wholeTable = selected.length === 0 || selected.includes('cached-path') || (selected.includes('fastpath') && selected.includes('control'));
  if (wholeTable) {
    const rows = cachedPathTable(parts.fastpath, parts.control);
    const load = { at_start: loadAtStart, at_end: loadNow() };
    const text = formatCachedPath(rows, load);
    console.log(`\n=== the cached path (${summary.command as string}) ===\n${text}`);
    summary.cached_path_table = { command: summary.command, load, rows };
    await writeFile(join(outDir, 'cached-path.json'), `${JSON.stringify({ ...(summary.cached_path_table as object), machine: summary.machine, markdown: text }, null, 2)}\n`);
    if (rows.some((r) => r.met === null && r.note !== undefined && r.note.startsWith('failed'))) failed = true;
  }
  summary.finished_at = new Date().toISOString();
  await writeFile(join(outDir, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
  console.log(`\nwrote ${join(outDir, 'summary.json')}`);
  if (failed) process.exitCode = 1;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await runAll(process.argv.slice(2));
}
