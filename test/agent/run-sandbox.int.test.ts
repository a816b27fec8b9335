// Runs are bounded by the agent, not only by what the submitter asks: memory, CPU and time requests are
// clamped to the agent's ceilings; nothing is writable but size-limited tmpfs (/tmp, /dev/shm,
// /work/outputs); files are bounded by a file-size ulimit; outputs are counted while they are copied out
// and cut at the limit (the old runner passed 1 TiB of memory and 7 days through, had a writable root and
// unbounded /tmp, and copied a 200 MiB sparse output to the host in full).
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { AgentEvent } from '../../agent/client/agent-client.js';
import { nonceScript, removeAccountImages, startAgent, tempDir, uniqueAccount, type AgentProcess } from './helpers.js';

const MiB = 1024 * 1024;
const limits = {
  run_max_memory_mb: 256, run_memory_mb: 128, run_max_timeout_s: 8, run_timeout_s: 8,
  run_tmp_mb: 8, run_shm_mb: 4, run_max_output_mb: 16, run_max_output_file_mb: 8, run_max_output_files: 5,
};

describe('the run sandbox and its limits', () => {
  const account = uniqueAccount('sandbox');
  const dir = tempDir('sandbox');
  let agent: AgentProcess;

  beforeAll(async () => {
    const config = join(dir, 'agent.json');
    writeFileSync(config, JSON.stringify(limits));
    agent = await startAgent({ dataDir: join(dir, 'data'), socket: join(dir, 'agent.sock'), baseImage: inject('baseImage'), args: ['--config', config] });
  });

  afterAll(async () => {
    await agent?.stop();
    await removeAccountImages(account);
  });

  /** Runs a script through the socket API, collecting outputs; returns the result and the bytes received. */
  async function run(body: string, params: { memory_mb?: number; timeout_s?: number } = {}) {
    const outputs = new Map<string, Buffer>();
    let received = 0;
    let stdout = '';
    const onEvent = (e: AgentEvent): void => {
      if (e.type === 'stdout') stdout += e.data as string;
      if (e.type !== 'output') return;
      const data = Buffer.from(e.data as string, 'base64');
      received += data.length;
      outputs.set(e.name as string, Buffer.concat([outputs.get(e.name as string) ?? Buffer.alloc(0), data]));
    };
    const result = await agent.client.run({ script: Buffer.from(nonceScript(body)), account, collect_outputs: true, ...params }, onEvent);
    return { result: { ...result, stdout } as Record<string, unknown>, outputs, received };
  }

  it('clamps a 1 TiB memory request, and runs as nobody with nothing writable but bounded tmpfs', async () => {
    const probe = [
      'import json, os, resource',
      'out = {"uid": os.getuid()}',
      'def writable(path):',
      '    try:',
      '        open(path, "w").close()',
      '        return "writable"',
      '    except OSError as e:',
      '        return e.errno',
      'out["root"] = writable("/x")',
      'out["work"] = writable("/work/x")',
      'size = lambda p: os.statvfs(p).f_blocks * os.statvfs(p).f_frsize',
      'out.update(tmp=size("/tmp"), shm=size("/dev/shm"), outputs=size("/work/outputs"))',
      'out["fsize"] = resource.getrlimit(resource.RLIMIT_FSIZE)[0]',
      'for path in ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory.max"):',
      '    if os.path.exists(path):',
      '        out["memory"] = int(open(path).read())',
      'try:',
      '    with open("/tmp/fill", "wb") as f:',
      '        for _ in range(64):',
      '            f.write(b"x" * (1 << 20))',
      '    out["tmp_fill"] = "fit"',
      'except OSError as e:',
      '    out["tmp_fill"] = e.errno',
      'os.remove("/tmp/fill")',
      'open("/work/outputs/probe.json", "w").write(json.dumps(out))',
      'print(json.dumps(out))',
    ].join('\n');
    const { result, outputs } = await run(probe, { memory_mb: 1_048_576 });
    expect(result).toMatchObject({ exit_code: 0, timed_out: false, oom_killed: false, output_limit: null, outputs: ['probe.json'] });
    const seen = JSON.parse(String(result.stdout)) as Record<string, unknown>;
    expect(seen).toEqual({
      uid: 65534,
      root: 30, // EROFS
      work: 30,
      tmp: 8 * MiB,
      shm: 4 * MiB,
      outputs: 17 * MiB, // the limit plus the slack that lets a run be seen going past it
      fsize: 4096 * MiB,
      memory: 256 * MiB, // 1 TiB asked, run_max_memory_mb given
      tmp_fill: 28, // ENOSPC
    });
    // The outputs of a run as nobody on a tmpfs are still read back in full.
    expect(JSON.parse(outputs.get('probe.json')!.toString('utf8'))).toEqual(seen);
    expect(agent.log()).toContain('run request lowered to the agent\'s ceilings');
  });

  it('cuts a 2 GiB sparse output at its header with output_limit: nothing of it reaches the host', async () => {
    const { result, outputs, received } = await run('with open("/work/outputs/big", "wb") as f:\n    f.truncate(2 << 30)\nprint("made")');
    expect(result).toMatchObject({ exit_code: 0, stdout: 'made\n', outputs: [] });
    expect(result.output_limit).toMatch(/output "big" is 2048 MiB, over the 8 MiB limit per file/);
    expect(received).toBe(0);
    expect(outputs.size).toBe(0);
  });

  it('cuts outputs that together pass the limit, having sent no more than the limit', async () => {
    const script = 'for i in range(3):\n    with open(f"/work/outputs/part{i}", "wb") as f:\n        f.write(b"x" * (6 << 20))';
    const { result, received } = await run(script);
    // The third file does not fit the tmpfs either (the script fails), but the limit is the story.
    expect(result.output_limit).toMatch(/outputs total more than 16 MiB/);
    expect(result.outputs).toEqual([]);
    expect(received).toBeLessThanOrEqual(16 * MiB);
  });

  it('clamps a long timeout to run_max_timeout_s', async () => {
    const { result } = await run('import time\ntime.sleep(60)', { timeout_s: 7 * 86_400 });
    expect(result).toMatchObject({ timed_out: true });
  });
});
