/**
 * `npm run demo`: the seed workflow on a whole local grid (control plane on embedded PostgreSQL, one
 * agent, the real `rgrid` CLI). A sample script with three ~10 MB wheels as requirements and a 2 MB
 * input file runs cold, warm, and after a one-line change of the script; a table shows times and hits.
 * Everything it starts is stopped and removed at the end (processes, temp dirs, containers, images).
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { createWheelhouse } from '../tools/wheelhouse/wheelhouse.js';
import { rgridRun, startLocalGrid, type CliRun } from './grid-process.js';

const SCRIPT = `import csv, pathlib
import rgrid_demo_stats, rgrid_demo_plot, rgrid_demo_io
rows = list(csv.reader(open("/work/inputs/measurements.csv")))
total = sum(float(r[1]) for r in rows[1:])
out = pathlib.Path("/work/outputs")
out.mkdir(exist_ok=True)
(out / "summary.txt").write_text(f"rows={len(rows) - 1} total={total:.2f}\\n")
print(f"{len(rows) - 1} rows, total {total:.2f}")
`;

export function sampleProject(dir: string): { script: string; requirements: string; input: string } {
  const csv = ['id,value', ...Array.from({ length: 100_000 }, (_, i) => `${i},${(i % 97) / 7}`)].join('\n');
  writeFileSync(join(dir, 'analyze.py'), SCRIPT);
  writeFileSync(join(dir, 'requirements.txt'), 'rgrid-demo-stats==1.0\nrgrid-demo-plot==1.0\nrgrid-demo-io==1.0\n');
  writeFileSync(join(dir, 'measurements.csv'), csv);
  return { script: join(dir, 'analyze.py'), requirements: join(dir, 'requirements.txt'), input: join(dir, 'measurements.csv') };
}

/** The sample's three wheels; `payloadMb` per wheel (the registry bench also measures a heavier set). */
export function demoWheelhouse(payloadMb = 10): string {
  return createWheelhouse(['rgrid-demo-stats', 'rgrid-demo-plot', 'rgrid-demo-io'].map((name) => ({ name, version: '1.0', payloadMb, payloadFiles: 4 })));
}

const flag = (v: unknown): string => (v === null || v === undefined ? 'n/a' : v ? 'hit' : 'miss');

function table(rows: Array<[string, CliRun]>): string {
  const head = ['run', 'wall', 'script', 'deps', 'inputs', 'uploaded', 'downloaded', 'worker', 'exit'];
  const body = rows.map(([name, r]) => [
    name, `${Math.round(r.wallMs)} ms`, flag(r.json.script_cache_hit), flag(r.json.dependency_cache_hit), flag(r.json.input_cache_hit),
    String(r.json.uploaded_blobs), String(r.json.downloaded_blobs), String(r.json.worker_id), String(r.json.exit_code),
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  return [line(head), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n');
}

async function main(): Promise<void> {
  const say = (m: string): void => void process.stderr.write(`demo: ${m}\n`);
  say('building a local wheelhouse (3 wheels of ~10 MB; no PyPI here)…');
  const wheelhouse = demoWheelhouse();
  const work = mkdtempSync(join(tmpdir(), 'rgrid-demo-'));
  const grid = await startLocalGrid({ wheelhouse, log: say });
  let stopping = false;
  const cleanup = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    await grid.stop();
    rmSync(work, { recursive: true, force: true });
    rmSync(wheelhouse, { recursive: true, force: true });
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    const p = sampleProject(work);
    // A fresh comment makes this demo's script new to the engine even if an earlier demo left images.
    writeFileSync(p.script, `# demo ${randomBytes(4).toString('hex')}\n${readFileSync(p.script, 'utf8')}`);
    const args = (n: number): string[] => [p.script, p.input, '-r', p.requirements, '--output-dir', join(work, `out-${n}`)];
    const rows: Array<[string, CliRun]> = [];
    say('1/3 cold run: builds the dependency layer (pip install) and the script image, uploads everything…');
    rows.push(['cold', await rgridRun(grid, args(1))]);
    say('2/3 warm run: same script, requirements and input…');
    rows.push(['warm', await rgridRun(grid, args(2))]);
    writeFileSync(p.script, `${readFileSync(p.script, 'utf8')}print("one more line")\n`);
    say('3/3 the script changed by one line…');
    rows.push(['changed script', await rgridRun(grid, args(3))]);
    for (const [name, r] of rows) if (r.code !== 0) throw new Error(`${name} run exited ${r.code}: ${r.stderr}`);
    process.stdout.write(`\n${table(rows)}\n\n`);
    const cold = rows[0]![1].wallMs;
    const warm = rows[1]![1].wallMs;
    process.stdout.write(`cached run ${(cold / warm).toFixed(1)}x faster than the first; output: ${readFileSync(join(work, 'out-2', 'summary.txt'), 'utf8')}`);
  } finally {
    say('stopping the agent and the control plane, removing containers, images and temp dirs…');
    await cleanup();
  }
}

// Only as the entry point: the grid benchmark imports the sample project from here.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main().catch((err: unknown) => {
    process.stderr.write(`demo failed: ${(err as Error).message}\n`);
    process.exitCode = 1;
  });
}
