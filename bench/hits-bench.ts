import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { AgentClient } from '../agent/client/agent-client.js';
import { createIndex } from '../agent/index/index.js';
import type { IndexEntry } from '../agent/index/types.js';
import { BIN, childEnv, removeAccountResources, startAgentProcess, type AgentProcess } from '../tools/harness/processes.js';

/**
 * Hits and CLI start-up, each against like-for-like references measured in the same run, interleaved
 * (this machine is shared: only pairs inside one run compare cleanly):
 *  1. ensure hits over the agent's socket (blocks of 100, HITS each after 100 warm-up): this build's
 *     agent; the agent of a reference checkout (RGRID_BENCH_REF_ROOT: a directory holding an earlier
 *     commit's dist/ and node_modules, e.g. the commit before a change); and a bare `node:http` server on
 *     a Unix socket that answers every request with a hit's result line (the floor: Node's HTTP on both
 *     sides and the scheduler, no Fastify, no cache). The agents' CPU per hit is read from /proc.
 *  2. In this process, on an index of its own: a touch awaited to its commit (what a hit used to wait
 *     for) against an index read.
 *  3. `rgrid-agent --help`, `ls` and `ensure` (a hit) as whole commands, this build's and the
 *     reference's (each against its own agent), against a bare `node -e 0`.
 * `npm run bench -- hits`; writes bench-output/hits.json with every sample.
 */
const BASE_IMAGE = process.env.RGRID_TEST_BASE_IMAGE ?? 'rgrid-test/python:bookworm';
const HITS = Number(process.env.RGRID_BENCH_HITS ?? 1000);
const CLI_ROUNDS = Number(process.env.RGRID_BENCH_CLI_ROUNDS ?? 20);
const REF_ROOT = process.env.RGRID_BENCH_REF_ROOT;

const round = (n: number, digits = 2): number => Math.round(n * 10 ** digits) / 10 ** digits;
function percentile(samples: readonly number[], p: number): number {
  const sorted = [...samples].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}
const stats = (samples: readonly number[]): Record<string, number> => ({
  n: samples.length,
  p50_ms: round(percentile(samples, 50), 3),
  p90_ms: round(percentile(samples, 90), 3),
  p99_ms: round(percentile(samples, 99), 3),
  max_ms: round(Math.max(...samples), 3),
});

/** User + system CPU of a whole process (all its threads), in ms. */
function cpuMs(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  // utime and stime are fields 14 and 15 of the file, 12 and 13 after the command name; 100 ticks/s.
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

async function waitForAgent(client: AgentClient, what: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const phase = await client.health().then((h) => h.phase, () => undefined);
    if (phase === 'running') return;
    if (Date.now() > deadline) throw new Error(`${what} did not start`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

interface Served {
  name: string;
  socket: string;
  pid: number;
  /** The CLI that talks to this server (absent for the bare server). */
  cli?: string;
}

/** The reference checkout's agent, started as this build's harness starts its own. */
async function startReferenceAgent(root: string, dir: string): Promise<{ served: Served; proc: ChildProcess }> {
  const socket = join(dir, 'ref.sock');
  const cli = join(root, 'dist', 'agent', 'cli', 'main.js');
  const proc = spawn(process.execPath, [cli, 'serve', '--socket', socket, '--data-dir', join(dir, 'ref-data'), '--runtime', `python3.11=${BASE_IMAGE}`, '--log-level', 'warn'], {
    env: childEnv(), stdio: ['ignore', 'ignore', 'inherit'],
  });
  const client = new AgentClient(socket);
  try {
    await waitForAgent(client, `the reference agent (${root})`);
  } finally {
    await client.close();
  }
  return { served: { name: 'reference agent', socket, pid: proc.pid!, cli }, proc };
}

/** A bare node:http server answering every request with `line` as one NDJSON body. */
async function startBareServer(dir: string, line: string): Promise<{ served: Served; proc: ChildProcess }> {
  const socket = join(dir, 'bare.sock');
  const code = `
    const http = require('node:http');
    const body = ${JSON.stringify(line)};
    http.createServer((req, res) => {
      req.resume();
      req.on('end', () => { res.writeHead(200, { 'content-type': 'application/x-ndjson; charset=utf-8', 'content-length': Buffer.byteLength(body) }); res.end(body); });
    }).listen(${JSON.stringify(socket)}, () => process.stdout.write('ready\\n'));`;
  const proc = spawn(process.execPath, ['-e', code], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((res, rej) => {
    proc.stdout.once('data', () => res());
    proc.once('exit', (c) => rej(new Error(`bare server exited ${String(c)}`)));
  });
  return { served: { name: 'bare node:http server (same answer)', socket, pid: proc.pid! }, proc };
}

/** Interleaved blocks of 100 ensure calls on each server; the agents' CPU per call alongside. */
async function socketHits(servers: Served[], params: { script: Buffer; account: string }): Promise<Array<Record<string, unknown>>> {
  const clients = servers.map((s) => new AgentClient(s.socket));
  const samples = servers.map(() => [] as number[]);
  const cpu = servers.map(() => 0);
  try {
    for (const client of clients) for (let i = 0; i < 100; i++) await client.ensure(params);
    for (let block = 0; block < HITS / 100; block++) {
      for (const [k, client] of clients.entries()) {
        const before = cpuMs(servers[k]!.pid);
        for (let i = 0; i < 100; i++) {
          const started = performance.now();
          const r = await client.ensure(params);
          samples[k]!.push(performance.now() - started);
          if (r.script_cache_hit !== true) throw new Error(`${servers[k]!.name}: expected a hit`);
        }
        cpu[k]! += cpuMs(servers[k]!.pid) - before;
      }
    }
  } finally {
    for (const client of clients) await client.close();
  }
  return servers.map((s, k) => ({ server: s.name, ...stats(samples[k]!), server_cpu_us_per_call: round((cpu[k]! / samples[k]!.length) * 1000, 0), samples_ms: samples[k]!.map((x) => round(x, 3)) }));
}

/** The touch as a hit used to await it, against a read, on an index of the bench's own. */
async function touchCommit(dir: string): Promise<Record<string, unknown>> {
  const index = createIndex({ path: join(dir, 'touch-index') });
  const entry: IndexEntry = {
    kind: 'image', account: 'bench', key: 'a'.repeat(64), image_id: `sha256:${'1'.repeat(64)}`, image_tag: 'rgrid-exec:bench', runtime: 'python3.11',
    base_image_id: `sha256:${'0'.repeat(64)}`, script_sha256: '5'.repeat(64), requirements_sha256: null, deps_key: null, size_bytes: 1,
    created_at: Date.now(), last_used_at: Date.now(), use_count: 1,
  };
  const ref = { kind: 'image' as const, account: 'bench', key: entry.key };
  const commits: number[] = [];
  const reads: number[] = [];
  try {
    await index.putBuilt(entry);
    for (let i = 0; i < 100; i++) await index.touch([ref]);
    for (let i = 0; i < HITS; i++) {
      let started = performance.now();
      await index.touch([ref]);
      commits.push(performance.now() - started);
      started = performance.now();
      index.get(ref);
      reads.push(performance.now() - started);
    }
  } finally {
    await index.close();
  }
  return { touch_awaited: stats(commits), read: stats(reads) };
}

function timedRun(args: string[], socket: string | undefined): Promise<number> {
  const started = performance.now();
  return new Promise((res, rej) => {
    const child = spawn(process.execPath, args, { env: childEnv(socket ? { RGRID_AGENT_SOCKET: socket } : {}), stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.once('error', rej);
    child.once('close', (code) => (code === 0 ? res(performance.now() - started) : rej(new Error(`${args.join(' ')} exited ${String(code)}: ${stderr}`))));
  });
}

/** Whole commands, round-robin: node -e 0, then each CLI's --help, ls and ensure. */
async function cliStartup(clis: Served[], script: string, account: string): Promise<Record<string, Record<string, number | number[]>>> {
  const commands: Array<[string, string[], string | undefined]> = [['node -e 0', ['-e', '0'], undefined]];
  for (const s of clis) {
    const label = s.name === 'agent' ? 'this build' : 'reference';
    commands.push([`${label}: rgrid-agent --help`, [s.cli!, '--help'], s.socket]);
    commands.push([`${label}: rgrid-agent ls`, [s.cli!, 'ls', '--account', account], s.socket]);
    commands.push([`${label}: rgrid-agent ensure (hit)`, [s.cli!, 'ensure', '--script', script, '--account', account, '--json'], s.socket]);
  }
  const samples = new Map(commands.map(([name]) => [name, [] as number[]]));
  for (const [, args, socket] of commands) await timedRun(args, socket);
  for (let i = 0; i < CLI_ROUNDS; i++) {
    for (const [name, args, socket] of commands) samples.get(name)!.push(await timedRun(args, socket));
  }
  return Object.fromEntries([...samples].map(([name, s]) => [name, { p50_ms: round(percentile(s, 50), 1), min_ms: round(Math.min(...s), 1), samples_ms: s.map((x) => round(x, 1)) }]));
}

export async function runHitsBench(): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), 'rgrid-hits-bench-'));
  const account = `hits-${process.pid}-${Date.now().toString(36)}`;
  const script = join(dir, 'script.py');
  const scriptText = `# hits bench ${account}\nprint("hello")\n`;
  writeFileSync(script, scriptText);
  const load = { at_start: loadavg().map((x) => round(x)) };
  let agent: AgentProcess | undefined;
  const others: ChildProcess[] = [];
  try {
    agent = await startAgentProcess({ dataDir: join(dir, 'data'), socket: join(dir, 'agent.sock'), baseImage: BASE_IMAGE, logLevel: 'warn', onOutput: (c) => void process.stderr.write(c) });
    const servers: Served[] = [{ name: 'agent', socket: agent.socket, pid: agent.pid, cli: BIN['rgrid-agent'] }];
    if (REF_ROOT) {
      const ref = await startReferenceAgent(resolve(REF_ROOT), dir);
      others.push(ref.proc);
      servers.push(ref.served);
    }
    const params = { script: Buffer.from(scriptText), account };
    const built = await agent.client.ensure(params);
    for (const s of servers.slice(1)) {
      const client = new AgentClient(s.socket);
      await client.ensure(params).finally(() => client.close());
    }
    const bare = await startBareServer(dir, `${JSON.stringify({ type: 'result', ...built, script_cache_hit: true, built: false, image_origin: 'local', duration_ms: 0 })}\n`);
    others.push(bare.proc);

    const hits = await socketHits([...servers, bare.served], params);
    const touch = await touchCommit(dir);
    const cli = await cliStartup(servers, script, account);
    return { machine: { cpus: cpus().length, node: process.version }, reference: REF_ROOT ?? null, load: { ...load, at_end: loadavg().map((x) => round(x)) }, hits, touch, cli };
  } finally {
    for (const proc of others) proc.kill('SIGTERM');
    await agent?.stop();
    await removeAccountResources(account).catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}

export function printHits(r: Record<string, unknown>): void {
  for (const h of r.hits as Array<Record<string, unknown>>) {
    process.stdout.write(`ensure hit over the socket, ${String(h.server)}: p50 ${String(h.p50_ms)} ms, p90 ${String(h.p90_ms)}, p99 ${String(h.p99_ms)}, max ${String(h.max_ms)}; server CPU ${String(h.server_cpu_us_per_call)} µs/call\n`);
  }
  const touch = r.touch as Record<string, Record<string, number>>;
  process.stdout.write(`touch awaited to its commit: p50 ${touch.touch_awaited!.p50_ms} ms, p99 ${touch.touch_awaited!.p99_ms}; index read: p50 ${touch.read!.p50_ms}, p99 ${touch.read!.p99_ms}\n`);
  for (const [name, s] of Object.entries(r.cli as Record<string, Record<string, number>>)) process.stdout.write(`${name}: p50 ${s.p50_ms} ms (min ${s.min_ms})\n`);
  process.stdout.write(`load: ${JSON.stringify(r.load)}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  runHitsBench().then(
    (results) => {
      printHits(results);
      const out = join(process.cwd(), 'bench-output');
      mkdirSync(out, { recursive: true });
      writeFileSync(join(out, 'hits.json'), `${JSON.stringify(results, null, 2)}\n`);
    },
    (err: unknown) => {
      process.stderr.write(`hits bench failed: ${(err as Error).stack ?? String(err)}\n`);
      process.exit(1);
    },
  );
}
