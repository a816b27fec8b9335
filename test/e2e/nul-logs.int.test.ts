// Through the real control plane: a script whose output contains NUL bytes completes with its logs. The
// old worker sent them as they were, PostgreSQL cannot store NUL in text, the control plane answered 500,
// the worker gave the report up, and the execution ended lost with no logs.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { nonceScript, tempDir, uniqueAccount } from '../agent/helpers.js';
import { rgrid, rgridRun, useGrid } from './grid.js';

const grid = useGrid();

describe('what a script prints cannot cost its result', () => {
  it('keeps the logs of a script that prints NUL bytes (stored as U+FFFD)', async () => {
    const account = uniqueAccount('nul');
    const dir = tempDir('e2e-nul');
    await grid.agent(account, 'nul-1');
    const env = { url: grid.url(), token: await grid.clientToken(account) };
    writeFileSync(join(dir, 'nul.py'), nonceScript('import sys\nsys.stdout.write("a\\0b\\n")\nsys.stderr.write("c\\0d\\n")\nopen("/work/outputs/ok.txt", "w").write("ok")'));
    const nul = await rgridRun([join(dir, 'nul.py'), '--output-dir', join(dir, 'out')], env);
    expect(nul.code).toBe(0);
    expect(nul.outputs).toEqual(['ok.txt']);
    const status = JSON.parse((await rgrid(['status', nul.execution_id, '--json'], env)).stdout) as Record<string, unknown>;
    expect(status).toMatchObject({ status: 'succeeded', failure: null, exit_code: 0, attempts: 1 });
    const logs = JSON.parse((await rgrid(['logs', nul.execution_id, '--json'], env)).stdout) as Record<string, unknown>;
    expect(logs).toMatchObject({ stdout: 'a\uFFFDb\n', stderr: 'c\uFFFDd\n', truncated: false });
  });
});
