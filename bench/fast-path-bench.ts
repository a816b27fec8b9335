import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Client } from 'undici';
import { AgentClient } from '../agent/client/agent-client.js';
import { removeAccountResources, startAgentProcess, type AgentProcess } from '../tools/harness/processes.js';
import { agentCli, bareDockerRunArgs, pair, phaseMedians, round, timedExec, type Pair } from './bench-pairs.js';
import { runHeavyRow, type HeavyRow } from './heavy-run-bench.js';

/**
 * The cached path against its like-for-like references, each pair measured back to back (interleaved,
 * one after the other) in one run, so that the load of this shared machine moves both sides alike:
 *  1. a warm `rgrid-agent run` of a small script (its image cached) vs a bare `docker run` of the same
 *     image with the same container settings (network none, 1 CPU, 1 GiB, 256 PIDs, no capabilities,
 *     uid 65534, read-only root) — both whole commands, the CLI's start-up included on each side; the
 *     same run through the socket API from this process (no CLI start-up: what the claim loop and any
 *     client of the socket pays); and two A/Bs on agents of their own: without hot containers
 *     (run_hot_containers 0), and without anything made ahead (run_hot_containers 0 and
 *     run_holder_pool_size 0: each run makes its outputs holder and its container);
 *  2. `rgrid-agent --help`, `ls` and `ensure` (a hit) as whole commands vs a bare `node -e 0`;
 *  3. ensure hits over the socket (p99 of 1,000 after 100 warm-up) vs the engine's own image inspect
 *     over its socket (what a hit used to ask on every call);
 *  4. the heavy row (bench/heavy-run-bench.ts): row 1 with numpy, scipy, requests and pydantic installed
 *     from real wheels and imported by the script, on an agent of its own (RGRID_BENCH_HEAVY_ROUNDS pairs,
 *     default 20; RGRID_BENCH_HEAVY=0 skips it).
 * Prints the rows and the warm runs' phases (p50 of each, from the agent's `phases`), and writes
 * bench-output/fast-path.json. `npm run bench -- fastpath`.
 */
const BASE_IMAGE = process.env.RGRID_TEST_BASE_IMAGE ?? 'rgrid-test/python:bookworm';
const ROUNDS = Number(process.env.RGRID_BENCH_FAST_ROUNDS ?? 10);
const HITS = Number(process.env.RGRID_BENCH_HITS ?? 1000);

/** The heavy row (bench/heavy-run-bench.ts) runs unless RGRID_BENCH_HEAVY=0. */
const HEAVY = process.env.RGRID_BENCH_HEAVY !== '0';
/** Its runs take ~1 s a side and vary more under load than the small script's: more pairs for the same p50. */
const HEAVY_ROUNDS = Number(process.env.RGRID_BENCH_HEAVY_ROUNDS ?? 20);

export async function runFastPathBench(): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'rgrid-fast-bench-'));
  const account = `fast-${process.pid}-${Date.now().toString(36)}`;
  const script = join(dir, 'script.py');
  writeFileSync(script, `# fast path ${account}\nprint("hello")\n`);
  const load = { at_start: loadavg().map((x) => round(x, 2)) };
  const agents: AgentProcess[] = [];
  try {
    const start = async (name: string, config: Record<string, unknown>): Promise<AgentProcess> => {
      writeFileSync(join(dir, `${name}.json`), JSON.stringify(config));
      const started = await startAgentProcess({
        dataDir: join(dir, `data-${name}`), socket: join(dir, `${name}.sock`), baseImage: BASE_IMAGE, logLevel: 'warn',
        args: ['--config', join(dir, `${name}.json`)], onOutput: (c) => void process.stderr.write(c),
      });
      agents.push(started);
      return started;
    };
    const agent = await start('agent', {});
    const noHot = await start('no-hot', { run_hot_containers: 0 });
    const nothingAhead = await start('nothing-ahead', { run_hot_containers: 0, run_holder_pool_size: 0 });
    const socket = agent.socket;
    const ensured = JSON.parse((await agentCli(['ensure', '--script', script, '--account', account, '--json'], socket)).stdout) as { image_id: string };
    const runArgs = ['run', '--script', script, '--account', account, '--cpus', '1', '--memory', '1024', '--json'];
    const bareArgs = bareDockerRunArgs(ensured.image_id);
    const client = new AgentClient(socket);
    const runParams = { script: Buffer.from(`# fast path ${account}\nprint("hello")\n`), account, cpus: 1, memory_mb: 1024 };
    const socketRun = async (): Promise<number> => {
      const t = performance.now();
      const r = await client.run(runParams);
      if (r.exit_code !== 0) throw new Error(`socket run failed: ${JSON.stringify(r)}`);
      return performance.now() - t;
    };
    // One of each to warm the engine and the page cache (and to have the first hot container made).
    for (const a of agents) await agentCli(runArgs, a.socket);
    await timedExec('docker', bareArgs);
    await socketRun();
    const warm: number[] = [];
    const warmSocket: number[] = [];
    const warmNoHot: number[] = [];
    const warmNothingAhead: number[] = [];
    const bare: number[] = [];
    const phases: Array<Record<string, unknown>> = [];
    const phasesNoHot: Array<Record<string, unknown>> = [];
    const warmRun = async (a: AgentProcess, into: number[], phaseLog: Array<Record<string, unknown>>): Promise<void> => {
      const r = await agentCli(runArgs, a.socket);
      into.push(r.ms);
      const out = JSON.parse(r.stdout) as Record<string, unknown>;
      if (out.script_cache_hit !== true || out.exit_code !== 0) throw new Error(`warm run was not a successful hit: ${r.stdout}`);
      phaseLog.push({ build_ms: out.build_ms, run_ms: out.run_ms, total_ms: out.total_ms, ...(out.phases as Record<string, unknown>) });
    };
    for (let i = 0; i < ROUNDS; i++) {
      await warmRun(agent, warm, phases);
      bare.push(await timedExec('docker', bareArgs));
      warmSocket.push(await socketRun());
      await warmRun(noHot, warmNoHot, phasesNoHot);
      warmNothingAhead.push((await agentCli(runArgs, nothingAhead.socket)).ms);
    }
    const node: number[] = [];
    const help: number[] = [];
    const ls: number[] = [];
    const ensure: number[] = [];
    for (let i = 0; i < ROUNDS; i++) {
      node.push(await timedExec(process.execPath, ['-e', '0']));
      help.push((await agentCli(['--help'], socket)).ms);
      ls.push((await agentCli(['ls', '--account', account], socket)).ms);
      ensure.push((await agentCli(['ensure', '--script', script, '--account', account, '--json'], socket)).ms);
    }

    // Socket round trips: ensure hits through the CLI's client, and the engine's inspect of the same image
    // over one kept-alive connection, interleaved in blocks of 100.
    const engine = new Client('http://localhost', { socketPath: '/var/run/docker.sock', keepAliveTimeout: 30_000 });
    const params = { script: Buffer.from(`# fast path ${account}\nprint("hello")\n`), account };
    const inspect = async (): Promise<void> => {
      const res = await engine.request({ method: 'GET', path: `/images/${encodeURIComponent(ensured.image_id)}/json` });
      await res.body.dump();
      if (res.statusCode !== 200) throw new Error(`engine inspect answered ${res.statusCode}`);
    };
    for (let i = 0; i < 100; i++) {
      await client.ensure(params);
      await inspect();
    }
    const hits: number[] = [];
    const inspects: number[] = [];
    for (let block = 0; block < HITS / 100; block++) {
      for (let i = 0; i < 100; i++) {
        const t = performance.now();
        const r = await client.ensure(params);
        hits.push(performance.now() - t);
        if (r.script_cache_hit !== true) throw new Error('expected a hit');
      }
      for (let i = 0; i < 100; i++) {
        const t = performance.now();
        await inspect();
        inspects.push(performance.now() - t);
      }
    }
    await client.close();
    await engine.close();
    // `id`: the rows of the cached-path table (bench/cached-path.ts) are found by it.
    const rows: Pair[] = [
      { ...pair(`warm rgrid-agent run (p50 of ${ROUNDS})`, 'bare docker run, same image and limits', warm, bare), id: 'warm_run' },
      pair(`warm run over the socket, no CLI start-up (p50 of ${ROUNDS})`, 'bare docker run, same image and limits', warmSocket, bare),
      pair(`warm rgrid-agent run, hot containers (p50 of ${ROUNDS})`, 'the same without (run_hot_containers 0)', warm, warmNoHot),
      pair(`warm rgrid-agent run, nothing made ahead (p50 of ${ROUNDS})`, 'bare docker run, same image and limits', warmNothingAhead, bare),
      { ...pair(`rgrid-agent --help (p50 of ${ROUNDS})`, 'node -e 0', help, node), id: 'cli_help' },
      { ...pair(`rgrid-agent ls (p50 of ${ROUNDS})`, 'node -e 0', ls, node), id: 'cli_ls' },
      { ...pair(`rgrid-agent ensure, hit (p50 of ${ROUNDS})`, 'node -e 0', ensure, node), id: 'cli_ensure' },
      { ...pair(`ensure hit over the socket, p99 of ${HITS}`, `engine image inspect over its socket, p99 of ${HITS}`, hits, inspects, 99), id: 'socket_ensure_p99' },
      pair(`ensure hit over the socket, p50 of ${HITS}`, `engine image inspect over its socket, p50 of ${HITS}`, hits, inspects, 50),
    ];
    let heavy: HeavyRow | { error: string } | undefined;
    if (HEAVY) {
      // Its own agent and account; the agents above stay idle meanwhile. A failure here keeps the rows above.
      heavy = await runHeavyRow(dir, BASE_IMAGE, HEAVY_ROUNDS).catch((err: unknown) => ({ error: (err as Error).message }));
      if ('row' in heavy) rows.splice(1, 0, { ...heavy.row, id: 'heavy_warm_run' });
    }
    return {
      machine: { cpus: cpus().length, node: process.version }, load: { ...load, at_end: loadavg().map((x) => round(x, 2)) }, rows,
      warm_run_phases: phases, warm_run_phases_p50: phaseMedians(phases),
      warm_run_phases_no_hot: phasesNoHot, warm_run_phases_no_hot_p50: phaseMedians(phasesNoHot),
      ...(heavy ? { heavy } : {}),
    };
  } finally {
    for (const a of agents) await a.stop();
    await removeAccountResources(account).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

export function printFastPath(r: Record<string, unknown>): void {
  const rows = r.rows as Pair[];
  const width = Math.max(...rows.map((x) => x.name.length));
  for (const x of rows) {
    process.stdout.write(`${x.name.padEnd(width)}  ${String(x.subject_ms).padStart(8)} ms  vs ${String(x.reference_ms).padStart(8)} ms ${x.reference}: ${x.ratio}x (${x.delta_ms >= 0 ? '+' : ''}${x.delta_ms} ms)\n`);
  }
  process.stdout.write(`warm run phases, p50 (hot containers): ${JSON.stringify(r.warm_run_phases_p50)}\n`);
  process.stdout.write(`warm run phases, p50 (run_hot_containers 0): ${JSON.stringify(r.warm_run_phases_no_hot_p50)}\n`);
  const heavy = r.heavy as HeavyRow | { error: string } | undefined;
  if (heavy && 'error' in heavy) process.stdout.write(`heavy row not measured: ${heavy.error}\n`);
  if (heavy && 'row' in heavy) {
    process.stdout.write(`heavy row: ${heavy.requirements.split('\n').join(' ')}; cold run ${heavy.cold.command_ms} ms (build ${heavy.cold.build_ms} ms); wheelhouse ${heavy.wheelhouse.reused ? 'reused' : `built in ${heavy.wheelhouse.built_seconds} s`} (${heavy.wheelhouse.dir})\n`);
    process.stdout.write(`warm heavy run phases, p50: ${JSON.stringify(heavy.warm_run_phases_p50)}\n`);
  }
  process.stdout.write(`load: ${JSON.stringify(r.load)}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  runFastPathBench().then(
    (results) => {
      printFastPath(results);
      const out = join(process.cwd(), 'bench-output');
      mkdirSync(out, { recursive: true });
      writeFileSync(join(out, 'fast-path.json'), `${JSON.stringify(results, null, 2)}\n`);
    },
    (err: unknown) => {
      process.stderr.write(`fast-path bench failed: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
