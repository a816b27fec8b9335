import { readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createWheelhouse } from '../../tools/wheelhouse/wheelhouse.js';
import { type AgentProcess, cli, docker, nonceScript, removeAccountImages, runsCleanedUp, startAgent, tempDir, uniqueAccount, writeFiles } from './helpers.js';

// Local runs in the cached image, locked down, inputs in, outputs out, output streamed.
interface RunJson {
  exit_code: number;
  image_id: string;
  script_cache_hit: boolean;
  dependency_cache_hit: boolean | null;
  build_ms: number;
  run_ms: number;
  total_ms: number;
  outputs: string[];
  stdout: string;
  stderr: string;
  timed_out: boolean;
  oom_killed: boolean;
  input_sha256: string;
}

describe('rgrid-agent run against a real Docker engine', () => {
  const account = uniqueAccount('run');
  const dir = tempDir('run');
  let agent: AgentProcess;
  let files: Record<string, string>;
  const run = (args: string[]): ReturnType<typeof cli> => cli(['run', '--account', account, ...args], agent.socket);

  beforeAll(async () => {
    const wheelhouse = createWheelhouse([{ name: 'rgtest-alpha', version: '1.0' }], tempDir('wheels-run'));
    files = writeFiles(dir, {
      'process.py': nonceScript(
        [
          'import os, sys, rgtest_alpha',
          'rows = open("/work/inputs/a.csv").read().split()',
          'print("alpha", rgtest_alpha.VERSION, "rows", len(rows))',
          'print("to stderr", file=sys.stderr)',
          'os.makedirs("/work/outputs/sub", exist_ok=True)',
          'open("/work/outputs/sum.txt", "w").write(str(sum(int(r) for r in rows)))',
          'open("/work/outputs/sub/b-copy.csv", "w").write(open("/work/inputs/b.csv").read())',
          'open("/work/outputs/empty.txt", "w").close()',
        ].join('\n'),
      ),
      'a.csv': '1\n2\n3\n',
      'b.csv': 'x,y\n',
      'sandbox.py': nonceScript(
        [
          'import os, json',
          'def try_write(path):',
          '    try:',
          '        open(path, "w").write("x"); return "writable"',
          '    except OSError as e:',
          '        return type(e).__name__',
          'print(json.dumps({"uid": os.getuid(), "gid": os.getgid(), "net": sorted(os.listdir("/sys/class/net")),',
          '  "inputs": try_write("/work/inputs/new"), "root": try_write("/etc/x"), "cwd": os.getcwd()}))',
        ].join('\n'),
      ),
      'sleep.py': nonceScript('import time\nprint("sleeping", flush=True)\ntime.sleep(30)'),
      'short-sleep.py': nonceScript('import time\ntime.sleep(3)\nprint("done")'),
      'hog.py': nonceScript('x = b"x" * (300 * 1024 * 1024)\nprint(len(x))'),
      'fail.py': nonceScript('import sys\nprint("bad things", file=sys.stderr)\nsys.exit(3)'),
      'reqs.txt': 'rgtest-alpha==1.0\n',
    });
    agent = await startAgent({ dataDir: join(dir, 'data'), socket: join(dir, 'agent.sock'), baseImage: inject('baseImage'), wheelhouse });
  });

  afterAll(async () => {
    await agent?.stop();
    await removeAccountImages(account);
    rmSync(dir, { recursive: true, force: true });
  });

  it('runs cold, then warm from the cached image; inputs in, outputs out, output captured', async () => {
    const args = ['--script', files['process.py']!, '--requirements', files['reqs.txt']!, '--input', files['a.csv']!, '--input', files['b.csv']!];
    const outCold = join(dir, 'out-cold');
    const cold = await run([...args, '--output-dir', outCold, '--json']);
    expect(cold.code, cold.stderr).toBe(0);
    const coldJson = JSON.parse(cold.stdout) as RunJson;
    expect(coldJson).toMatchObject({ exit_code: 0, script_cache_hit: false, dependency_cache_hit: false, timed_out: false, oom_killed: false });
    expect(coldJson.stdout).toBe('alpha 1.0 rows 3\n');
    expect(coldJson.stderr).toBe('to stderr\n');
    expect(coldJson.outputs.sort()).toEqual(['empty.txt', 'sub/b-copy.csv', 'sum.txt']);
    expect(readFileSync(join(outCold, 'sum.txt'), 'utf8')).toBe('6');
    expect(readFileSync(join(outCold, 'sub', 'b-copy.csv'), 'utf8')).toBe('x,y\n');
    expect(readFileSync(join(outCold, 'empty.txt'), 'utf8')).toBe('');
    // The phases are whole milliseconds from one clock and lie inside the whole: the build ends before
    // the run starts, and the total spans both (agent/runner/run.ts). No duration is compared with a bound.
    const phasesWithin = (r: RunJson): void => {
      for (const field of ['build_ms', 'run_ms', 'total_ms'] as const) expect(Number.isInteger(r[field]), field).toBe(true);
      expect(r.total_ms).toBeGreaterThanOrEqual(r.build_ms + r.run_ms);
    };
    phasesWithin(coldJson);

    const warm = await run([...args, '--json']);
    const warmJson = JSON.parse(warm.stdout) as RunJson;
    expect(warmJson).toMatchObject({ exit_code: 0, script_cache_hit: true, dependency_cache_hit: true, image_id: coldJson.image_id, input_sha256: coldJson.input_sha256 });
    phasesWithin(warmJson);
    // No run container is left behind once the runs' clean-up (after their answers) has settled: what
    // remains is at most the hot containers made ahead for the next run (created, never started).
    await runsCleanedUp(agent.client);
    const left = await docker.listContainers({ all: true, filters: { label: ['io.rgrid.role=run', `io.rgrid.account=${account}`] } });
    expect(left.filter((c) => c.State !== 'created' || c.Labels['io.rgrid.hot'] === undefined)).toEqual([]);
    expect(left.length).toBeLessThanOrEqual(2);
  });

  it('streams the script output to the CLI stderr without --json', async () => {
    const res = await run(['--script', files['process.py']!, '--requirements', files['reqs.txt']!, '--input', files['a.csv']!, '--input', files['b.csv']!]);
    expect(res.code).toBe(0);
    expect(res.stderr).toContain('alpha 1.0 rows 3\n');
    expect(res.stderr).toContain('to stderr\n');
    expect(res.stdout).toMatch(/^exit 0 /);
  });

  it('runs as 65534 without network, with read-only inputs', async () => {
    const res = await run(['--script', files['sandbox.py']!, '--input', files['a.csv']!, '--json']);
    expect(res.code, res.stderr).toBe(0);
    const seen = JSON.parse((JSON.parse(res.stdout) as RunJson).stdout) as Record<string, unknown>;
    expect(seen).toMatchObject({ uid: 65534, gid: 65534, net: ['lo'], cwd: '/work' });
    expect(seen.inputs).not.toBe('writable');
    expect(seen.root).not.toBe('writable');
  });

  it('kills a run at its timeout and reports timed_out (exit status 124)', async () => {
    const res = await run(['--script', files['sleep.py']!, '--timeout', '2', '--json']);
    expect(res.code).toBe(124);
    const out = JSON.parse(res.stdout) as RunJson;
    expect(out.timed_out).toBe(true);
    expect(out.exit_code).not.toBe(0);
    expect(out.stdout).toBe('sleeping\n');
  });

  it('reports an out-of-memory kill', async () => {
    const res = await run(['--script', files['hog.py']!, '--memory', '64', '--json']);
    const out = JSON.parse(res.stdout) as RunJson;
    expect(out.oom_killed).toBe(true);
    expect(out.exit_code).toBe(137);
    expect(res.code).toBe(137);
  });

  it("passes the script's failure through as data and as the exit status", async () => {
    const res = await run(['--script', files['fail.py']!, '--json']);
    expect(res.code).toBe(3);
    expect(JSON.parse(res.stdout)).toMatchObject({ exit_code: 3, stderr: 'bad things\n' });
  });

  it('leases the entry while the container runs, and releases it afterwards', async () => {
    const running = run(['--script', files['short-sleep.py']!, '--json']);
    let leased: Array<{ kind: string; account: string }> = [];
    for (let i = 0; i < 200 && leased.length === 0; i++) {
      const health = await agent.client.health();
      leased = (health.leases as Array<{ kind: string; account: string }>).filter((l) => l.account === account);
      if (leased.length === 0) await new Promise((r) => setTimeout(r, 50));
    }
    expect(leased.map((l) => l.kind)).toEqual(['image']);
    expect((await running).code).toBe(0);
    expect(((await agent.client.health()).leases as unknown[]).length).toBe(0);
  });

  it('rejects an unsafe or duplicate input name and a missing input file', async () => {
    const dup = await run(['--script', files['sandbox.py']!, '--input', files['a.csv']!, '--input', files['a.csv']!]);
    expect(dup.code).toBe(2); // refused input: a usage error, as on every CLI (common/cli.ts)
    expect(dup.stderr).toMatch(/^rgrid-agent: bad_file_name: .*a\.csv.*twice\n$|^rgrid-agent: bad_request: .*a\.csv appears twice\n$/);
    const missing = await run(['--script', files['sandbox.py']!, '--input', join(dir, 'nope.csv')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toMatch(/^rgrid-agent: bad_request: cannot read input .*nope\.csv/);
  });
});
