// Through the real `rgrid run`: cold then warm (all three hits, nothing
// uploaded, nothing downloaded on the worker, on the worker holding the image), then a changed script
// with the same requirements (script miss, dependency hit, input hit). Outputs come back verified.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { cliJson, nonceScript, tempDir, uniqueAccount } from '../agent/helpers.js';
import { rgrid, rgridRun, useGrid } from './grid.js';

const grid = useGrid();

describe('rgrid run: cold, warm, changed script', () => {
  it('reuses image, dependency layer and inputs; uploads and downloads only what changed', async () => {
    const account = uniqueAccount('coldwarm');
    const agent = await grid.agent(account, 'cw-1');
    const env = { url: grid.url(), token: await grid.clientToken(account) };
    const dir = tempDir('e2e-cw');
    const body = [
      'import rgrid_e2e_dep, pathlib, sys',
      'data = pathlib.Path("/work/inputs/data.csv").read_text()',
      'pathlib.Path("/work/outputs").mkdir(exist_ok=True)',
      'pathlib.Path("/work/outputs/count.txt").write_text(str(len(data.splitlines())))',
      'print("rows", len(data.splitlines()), "dep", rgrid_e2e_dep.VERSION)',
      'print("to stderr", file=sys.stderr)',
    ].join('\n');
    writeFileSync(join(dir, 'job.py'), nonceScript(body));
    writeFileSync(join(dir, 'requirements.txt'), 'rgrid-e2e-dep==1.0.0\n');
    writeFileSync(join(dir, 'data.csv'), 'a,b\n1,2\n3,4\n');
    const args = (out: string) => [join(dir, 'job.py'), join(dir, 'data.csv'), '-r', join(dir, 'requirements.txt'), '--output-dir', join(dir, out)];

    const cold = await rgridRun(args('out1'), env);
    expect(cold.code, cold.stderr).toBe(0);
    expect(cold).toMatchObject({ worker_id: 'cw-1', exit_code: 0, script_cache_hit: false, dependency_cache_hit: false, input_cache_hit: false, uploaded_blobs: 3, downloaded_blobs: 3, outputs: ['count.txt'] });
    expect(Object.keys(cold).sort()).toEqual(['code', 'dependency_cache_hit', 'downloaded_blobs', 'execution_id', 'exit_code', 'image_origin', 'input_cache_hit', 'lock_sha256', 'outputs', 'resolution', 'resolved', 'script_cache_hit', 'stderr', 'timings', 'uploaded_blobs', 'worker_id']);
    for (const phase of ['queue_ms', 'build_ms', 'input_fetch_ms', 'run_ms', 'output_upload_ms']) expect(cold.timings[phase]).toEqual(expect.any(Number));
    expect(readFileSync(join(dir, 'out1', 'count.txt'), 'utf8')).toBe('3');
    expect(cold.stderr).toContain('rows 3 dep 1.0.0');
    // The exact dependency set travels from the worker to the execution and the client.
    expect(cold).toMatchObject({ resolution: 'resolved', resolved: ['rgrid-e2e-dep==1.0.0'] });
    expect(cold.lock_sha256).toMatch(/^[0-9a-f]{64}$/);

    const warm = await rgridRun(args('out2'), env);
    expect(warm).toMatchObject({ worker_id: 'cw-1', exit_code: 0, script_cache_hit: true, dependency_cache_hit: true, input_cache_hit: true, uploaded_blobs: 0, downloaded_blobs: 0 });
    expect(warm).toMatchObject({ resolution: 'cached', lock_sha256: cold.lock_sha256, resolved: cold.resolved });
    expect(readFileSync(join(dir, 'out2', 'count.txt'), 'utf8')).toBe('3');

    // One-line change of the script, same requirements and inputs.
    writeFileSync(join(dir, 'job.py'), `${readFileSync(join(dir, 'job.py'), 'utf8')}print("changed")\n`);
    const changed = await rgridRun(args('out3'), env);
    expect(changed).toMatchObject({ exit_code: 0, script_cache_hit: false, dependency_cache_hit: true, input_cache_hit: true, uploaded_blobs: 1, downloaded_blobs: 1 });
    expect(changed.stderr).toContain('changed');

    // status and logs of the first run.
    const status = await rgrid(['status', cold.execution_id, '--json'], env);
    expect(JSON.parse(status.stdout)).toMatchObject({ id: cold.execution_id, status: 'succeeded', attempts: 1, failure: null, lock_sha256: cold.lock_sha256, resolution: 'resolved' });
    const logs = await rgrid(['logs', cold.execution_id], env);
    expect(logs.stdout).toContain('rows 3');
    expect(logs.stderr).toContain('to stderr');

    // Registration at start took one full snapshot (the claim loop waits for the sync's, it does not force
    // a second); the builds since then travelled as deltas.
    const sync = await cliJson<{ snapshots_sent: number; ops_sent: number }>(['sync', '--json'], agent.socket);
    expect(sync.snapshots_sent).toBe(1);
    expect(sync.ops_sent).toBeGreaterThan(0);
  });
});
