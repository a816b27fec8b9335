import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { removeAccountResources, startAgentProcess, type AgentProcess } from '../tools/harness/processes.js';
import { agentCli, bareDockerRunArgs, pair, phaseMedians, round, timedExec, type Pair } from './bench-pairs.js';
import { ensureHeavyWheelhouse, HEAVY_PACKAGES, type Wheelhouse } from './heavy-wheelhouse.js';

/**
 * The heavy row of the cached path: a script importing numpy, scipy, requests and pydantic, installed
 * from real wheels (bench/heavy-wheelhouse.ts) by an agent whose wheelhouse they are (pip_find_links:
 * no index, no network). One cold `rgrid-agent run` resolves, installs and builds (its time is
 * reported); then warm `rgrid-agent run`s and bare `docker run`s of the same image with the same limits
 * alternate, both running the script (the image's CMD) and both checked to have printed its answer.
 */
export interface HeavyRow {
  row: Pair;
  cold: { command_ms: number; build_ms: number; run_ms: number; dependency_cache_hit: unknown; image_origin?: unknown };
  requirements: string;
  wheelhouse: Pick<Wheelhouse, 'versions' | 'built_seconds' | 'reused'> & { dir: string };
  warm_run_phases: Array<Record<string, unknown>>;
  warm_run_phases_p50: Record<string, number>;
}

/** The script: all four imported and used; it prints one line the bench looks for on both sides. */
const script = (tag: string): string => `# heavy row ${tag}
import numpy as np
import scipy.linalg
import requests
import pydantic

class Solution(pydantic.BaseModel):
    x: list[float]

a = np.array([[4.0, 1.0], [1.0, 3.0]])
s = Solution(x=scipy.linalg.solve(a, np.array([1.0, 2.0])).round(4).tolist())
url = requests.Request("GET", "http://127.0.0.1/", params={"x": s.x[0]}).prepare().url
print("heavy-ok", s.x, url)
`;
const EXPECTED = 'heavy-ok [0.0909, 0.6364] http://127.0.0.1/?x=0.0909';

export async function runHeavyRow(dir: string, baseImage: string, rounds: number): Promise<HeavyRow> {
  const wheelhouse = await ensureHeavyWheelhouse();
  const account = `heavy-${process.pid}-${Date.now().toString(36)}`;
  const scriptFile = join(dir, 'heavy.py');
  const requirementsFile = join(dir, 'heavy-requirements.txt');
  const requirements = HEAVY_PACKAGES.map((p) => `${p}==${wheelhouse.versions[p]}`).join('\n');
  writeFileSync(scriptFile, script(account));
  writeFileSync(requirementsFile, `${requirements}\n`);
  let agent: AgentProcess | undefined;
  try {
    agent = await startAgentProcess({
      dataDir: join(dir, 'data-heavy'), socket: join(dir, 'heavy.sock'), baseImage, logLevel: 'warn', wheelhouse: wheelhouse.wheels,
      onOutput: (c) => void process.stderr.write(c),
    });
    const runArgs = ['run', '--script', scriptFile, '--requirements', requirementsFile, '--account', account, '--cpus', '1', '--memory', '1024', '--json'];
    const runOnce = async (): Promise<{ ms: number; out: Record<string, unknown> }> => {
      const r = await agentCli(runArgs, agent!.socket);
      const out = JSON.parse(r.stdout) as Record<string, unknown>;
      if (out.exit_code !== 0 || !String(out.stdout).includes(EXPECTED)) throw new Error(`heavy run failed: ${r.stdout.slice(0, 2000)}`);
      return { ms: r.ms, out };
    };
    process.stderr.write(`heavy row: cold run (resolve, install ${HEAVY_PACKAGES.join(', ')} from the wheelhouse, build)\n`);
    const cold = await runOnce();
    if (cold.out.script_cache_hit !== false) throw new Error(`the cold run was a hit: ${JSON.stringify(cold.out)}`);
    const ensured = JSON.parse((await agentCli(['ensure', '--script', scriptFile, '--requirements', requirementsFile, '--account', account, '--json'], agent.socket)).stdout) as { image_id: string };
    const bareArgs = bareDockerRunArgs(ensured.image_id);
    // One of each first: the engine's and the page cache's warm-up, and the first hot container made.
    await runOnce();
    await timedExec('docker', bareArgs, EXPECTED);
    const warm: number[] = [];
    const bare: number[] = [];
    const phases: Array<Record<string, unknown>> = [];
    for (let i = 0; i < rounds; i++) {
      const r = await runOnce();
      if (r.out.script_cache_hit !== true) throw new Error(`warm heavy run was not a hit: ${JSON.stringify(r.out)}`);
      warm.push(r.ms);
      phases.push({ build_ms: r.out.build_ms, run_ms: r.out.run_ms, total_ms: r.out.total_ms, ...(r.out.phases as Record<string, unknown>) });
      bare.push(await timedExec('docker', bareArgs, EXPECTED));
    }
    return {
      row: pair(`warm rgrid-agent run, numpy + scipy + requests + pydantic (p50 of ${rounds})`, 'bare docker run, same image, limits and script', warm, bare),
      cold: {
        command_ms: round(cold.ms), build_ms: Number(cold.out.build_ms), run_ms: Number(cold.out.run_ms),
        dependency_cache_hit: cold.out.dependency_cache_hit, image_origin: cold.out.image_origin,
      },
      requirements,
      wheelhouse: { dir: wheelhouse.wheels, versions: wheelhouse.versions, built_seconds: wheelhouse.built_seconds, reused: wheelhouse.reused },
      warm_run_phases: phases,
      warm_run_phases_p50: phaseMedians(phases),
    };
  } finally {
    await agent?.stop();
    await removeAccountResources(account).catch(() => undefined);
  }
}
