/**
 * Control-plane benchmark:
 * 1. POST /v1/resolve under load (autocannon, 127.0.0.1 only, bounded duration) on a database seeded
 *    with 1,000 workers, 1,000,000 cache entries and 30,000 registry images (every other script image and
 *    every dependency layer): throughput and p50/p99, at saturation and at a
 *    fixed offered rate of 2,000 requests/s.
 * 2. A full snapshot sync of 100,000 entries from one worker: seconds, first and repeated.
 *
 * The server is a real `rgrid-control serve` process from dist/ (not in this process, so the load
 * generator does not share its event loop); PostgreSQL is DATABASE_URL or an embedded one in a temp
 * directory. Everything runs on the same machine: server, database and load generator share the CPUs,
 * and the figures say so. Prints a table and writes bench-output/control.json.
 *
 * Where the time goes, for each resolve phase: the CPU of the server process, of PostgreSQL (the
 * embedded server and its backends) and of this process (the load generator) per request, from /proc;
 * and from the server's /metrics, scraped just before and after the phase, its own request durations
 * (rgrid_control_http_request_duration_seconds: the share of requests over 5 and 10 ms inside the
 * server, from its onRequest to its answer), its event-loop delay (p99 and max over the phase) and its
 * GC time.
 *
 * The like-for-like reference of resolve at 2,000 requests/s: the same server's GET /healthz at the same
 * rate, connections and duration (its HTTP path plus one `SELECT 1` round trip to PostgreSQL, no auth, no
 * placement): the floor a resolve cannot go below on this machine. Each round at the target rate is
 * resolve, then /healthz (then the reference build's resolve, below), so the machine's load moves all alike.
 * `runControlBench({ phases: 'at-rate' })` runs only those rounds (the cached-path suite).
 *
 * `RGRID_BENCH_REF_ROOT=<dir>` (a directory holding an earlier commit's dist/ and node_modules) also
 * starts that commit's server on the same database and runs the 2,000 requests/s phase on both,
 * interleaved (this build, /healthz, the reference, this build, …: RGRID_BENCH_AB_ROUNDS rounds, default
 * 2, of RGRID_BENCH_RATE_SECONDS each, default 20): the A/B in one run.
 *
 * For iteration on the resolve path, `RGRID_BENCH_KEEP_DB=<dir>` keeps the embedded PostgreSQL and the
 * seeded database under <dir> (seeded on the first run, reused afterwards: migrations are applied, the
 * workers are marked seen now, the snapshot worker's rows are removed) and `RGRID_BENCH_SKIP_SNAPSHOT=1`
 * skips the snapshot phase. Without them (`npm run bench`) every run seeds a fresh database and removes it.
 */
import { spawn } from 'node:child_process';
import { randomBytes, createHash } from 'node:crypto';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import autocannon from 'autocannon';
import pg from 'pg';
import { migrate } from '../control/db/migrate.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../control/db/embedded.js';
import { childEnv, freeLoopbackPort, startControlProcess, waitForHttp, type ControlProcess } from '../tools/harness/processes.js';

const WORKERS = 1000;
const ENTRIES_PER_WORKER = 1000; // 500 script images + 500 dependency layers
const SCRIPTS = 50_000; // each script image sits on ~10 workers
const REQUIREMENTS = 5_000; // each dependency layer sits on ~100 workers
const SNAPSHOT_ENTRIES = 100_000;
const SATURATION_SECONDS = 10;
const RATE_SECONDS = Number(process.env.RGRID_BENCH_RATE_SECONDS ?? 20);
/** A/B pairs (this build, then the reference) at the target rate when RGRID_BENCH_REF_ROOT is set. */
const AB_ROUNDS = Number(process.env.RGRID_BENCH_AB_ROUNDS ?? 2);
const TARGET_RATE = 2000;
const CONNECTIONS = 16;
const ADMIN = `bench-admin-${randomBytes(12).toString('hex')}`;
const ACCOUNT = 'bench';

const sha = (text: string): string => createHash('sha256').update(text).digest('hex');
const quiet = { info: () => undefined, warn: (m: string) => console.warn(m), error: (m: string) => console.error(m) };

/** Seeds in SQL (generate_series): no million-row round trips through the client. */
async function seed(client: pg.Client): Promise<{ seconds: number }> {
  const t0 = performance.now();
  await client.query(`INSERT INTO accounts (account_id) VALUES ('${ACCOUNT}')`);
  await client.query(
    `INSERT INTO workers (worker_id, host, capacity, running, last_seen_at, snapshot_at)
     SELECT 'w' || w, 'host-' || w, 8, w % 9, now(), now() FROM generate_series(1, ${WORKERS}) AS w`,
  );
  // Each worker id belongs to the account of its tokens (worker_bindings; the API binds it at the first token).
  await client.query(`INSERT INTO worker_bindings (worker_id, account_id) SELECT 'w' || w, '${ACCOUNT}' FROM generate_series(1, ${WORKERS}) AS w`);
  await client.query(
    `INSERT INTO tokens (token_sha256, role, account_id, worker_id)
     SELECT encode(sha256(('bench-worker-token-' || w)::bytea), 'hex'), 'worker', '${ACCOUNT}', 'w' || w FROM generate_series(1, ${WORKERS}) AS w`,
  );
  // Script s is held by the workers with (w*7919 + j*4729) mod SCRIPTS = s; 4729 is coprime with
  // SCRIPTS, so a worker's 500 scripts are distinct. Requirements of script s: s mod REQUIREMENTS.
  await client.query(
    `INSERT INTO cache_entries (worker_id, account_id, kind, key, image_id, runtime, requirements_sha256, script_sha256,
       deps_key, size_bytes, created_at, last_used_at, use_count)
     SELECT 'w' || w, '${ACCOUNT}', 'image', encode(sha256(('img:' || s)::bytea), 'hex'), 'sha256:' || encode(sha256(('id:' || s)::bytea), 'hex'),
       'python3.11', encode(sha256(('req:' || (s % ${REQUIREMENTS}))::bytea), 'hex'), encode(sha256(('script:' || s)::bytea), 'hex'),
       encode(sha256(('deps:' || (s % ${REQUIREMENTS}))::bytea), 'hex'), (50 + s % 900) * 1048576::bigint, now(), now() - (s % 30) * interval '1 day', 1 + s % 100
     FROM generate_series(1, ${WORKERS}) AS w, generate_series(1, ${ENTRIES_PER_WORKER / 2}) AS j,
       LATERAL (SELECT ((w::bigint * 7919 + j::bigint * 4729) % ${SCRIPTS})::int AS s) AS x`,
  );
  // Dependency layers: (w*31 + j*2003) mod REQUIREMENTS, 2003 coprime with REQUIREMENTS.
  await client.query(
    `INSERT INTO cache_entries (worker_id, account_id, kind, key, image_id, runtime, requirements_sha256, script_sha256,
       deps_key, size_bytes, created_at, last_used_at, use_count)
     SELECT 'w' || w, '${ACCOUNT}', 'deps', encode(sha256(('deps:' || r)::bytea), 'hex'), 'sha256:' || encode(sha256(('depsid:' || r)::bytea), 'hex'),
       'python3.11', encode(sha256(('req:' || r)::bytea), 'hex'), NULL, NULL, (200 + r % 600) * 1048576::bigint, now(), now(), 1
     FROM generate_series(1, ${WORKERS}) AS w, generate_series(1, ${ENTRIES_PER_WORKER / 2}) AS j,
       LATERAL (SELECT ((w::bigint * 31 + j::bigint * 2003) % ${REQUIREMENTS})::int AS r) AS x`,
  );
  await seedRegistry(client);
  // Index-only scans need the visibility map, and the planner needs statistics.
  await client.query('VACUUM (ANALYZE) cache_entries');
  await client.query('VACUUM (ANALYZE) workers');
  await client.query('VACUUM (ANALYZE) tokens');
  return { seconds: (performance.now() - t0) / 1000 };
}

/**
 * Images in the registry, so resolve's registry lookups find rows: the script image of every even script
 * (half the resolves can pull it) and every dependency layer.
 */
async function seedRegistry(client: pg.Client): Promise<void> {
  await client.query(
    `INSERT INTO registry_images (account_id, kind, key, registry, manifest_digest, size_bytes, runtime, base_image_id,
       requirements_sha256, script_sha256, deps_key, pushed_by)
     SELECT '${ACCOUNT}', 'image', encode(sha256(('img:' || s)::bytea), 'hex'), '127.0.0.1:5000', 'sha256:' || encode(sha256(('man:' || s)::bytea), 'hex'),
       (50 + s % 900) * 1048576::bigint, 'python3.11', 'sha256:' || encode(sha256('base'::bytea), 'hex'),
       encode(sha256(('req:' || (s % ${REQUIREMENTS}))::bytea), 'hex'), encode(sha256(('script:' || s)::bytea), 'hex'),
       encode(sha256(('deps:' || (s % ${REQUIREMENTS}))::bytea), 'hex'), 'w1'
     FROM generate_series(0, ${SCRIPTS - 1}, 2) AS s`,
  );
  await client.query(
    `INSERT INTO registry_images (account_id, kind, key, registry, manifest_digest, size_bytes, runtime, base_image_id,
       requirements_sha256, script_sha256, deps_key, pushed_by)
     SELECT '${ACCOUNT}', 'deps', encode(sha256(('deps:' || r)::bytea), 'hex'), '127.0.0.1:5000', 'sha256:' || encode(sha256(('depsman:' || r)::bytea), 'hex'),
       (200 + r % 600) * 1048576::bigint, 'python3.11', 'sha256:' || encode(sha256('base'::bytea), 'hex'),
       encode(sha256(('req:' || r)::bytea), 'hex'), NULL, NULL, 'w1'
     FROM generate_series(0, ${REQUIREMENTS - 1}) AS r`,
  );
  await client.query('VACUUM (ANALYZE) registry_images');
}

/**
 * A real `rgrid-control serve` through the shared process harness, ready once /readyz answers; its output
 * goes to ours. Log level warn keeps per-request logging out of the measurement.
 */
async function startServer(databaseUrl: string, dataDir: string): Promise<ControlProcess> {
  // RGRID_BENCH_NODE_ARGS (e.g. `--cpu-prof --cpu-prof-dir=DIR`) and RGRID_BENCH_SERVER_ARGS (extra serve
  // flags) are for profiling and experiments; both empty by default.
  const nodeArgs = (process.env.RGRID_BENCH_NODE_ARGS ?? '').split(' ').filter(Boolean);
  const serverArgs = (process.env.RGRID_BENCH_SERVER_ARGS ?? '').split(' ').filter(Boolean);
  return startControlProcess({
    databaseUrl, adminToken: ADMIN, dataDir, logLevel: 'warn', nodeArgs,
    args: ['--worker-dead-after', '1h', '--cleanup-interval', '0', '--no-migrate',
      // The bench drives one token far past the per-token admission limits, and its snapshot is ~60 MB.
      '--token-rate-limit', '0', '--token-concurrency', '0', '--snapshot-body-limit', String(128 * 1024 * 1024), ...serverArgs],
    onOutput: (chunk) => void process.stderr.write(chunk),
  });
}

/** The reference checkout's server (RGRID_BENCH_REF_ROOT) with the same flags, on the same database. */
async function startReferenceServer(root: string, databaseUrl: string, dataDir: string): Promise<{ url: string; pid: number; stop: () => Promise<void> }> {
  const port = await freeLoopbackPort();
  const proc = spawn(process.execPath, [
    join(root, 'dist', 'control', 'cli', 'main.js'), 'serve', '--listen', `127.0.0.1:${port}`, '--data-dir', dataDir, '--log-level', 'warn',
    '--worker-dead-after', '1h', '--cleanup-interval', '0', '--no-migrate', '--token-rate-limit', '0', '--token-concurrency', '0',
  ], { env: childEnv({ DATABASE_URL: databaseUrl, RGRID_CONTROL_ADMIN_TOKEN: ADMIN }), stdio: ['ignore', 'ignore', 'inherit'] });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/readyz`, 'the reference rgrid-control serve', 60_000);
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  return { url, pid: proc.pid!, stop: async () => { proc.kill('SIGTERM'); await exited; } };
}

/** User + system CPU time of the given processes, in ms (all their threads; 100 ticks per second). */
function cpuMsOf(pids: readonly number[], withReapedChildren = false): number {
  let ticks = 0;
  for (const pid of pids) {
    try {
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      ticks += Number(fields[11]) + Number(fields[12]);
      // cutime + cstime: children that ended and were waited for (a backend whose connection closed).
      if (withReapedChildren) ticks += Number(fields[13]) + Number(fields[14]);
    } catch {
      // gone between listing and reading: the postmaster counts it once it has waited for it
    }
  }
  return ticks * 10;
}

/**
 * The embedded PostgreSQL's CPU: the postmaster, the children it has waited for, and the live children
 * (backends, writers), so a backend that ends during a phase still counts.
 */
function postgresCpuMs(dataDir: string | undefined): number {
  if (!dataDir) return 0;
  const postmaster = Number(readFileSync(join(dataDir, 'postmaster.pid'), 'utf8').split('\n')[0]);
  const children = readdirSync('/proc').filter((d) => /^\d+$/.test(d)).flatMap((d) => {
    try {
      const ppid = Number(readFileSync(`/proc/${d}/stat`, 'utf8').split(') ')[1]!.split(' ')[1]);
      return ppid === postmaster ? [Number(d)] : [];
    } catch {
      return [];
    }
  });
  return cpuMsOf([postmaster], true) + cpuMsOf(children);
}

const EVENT_LOOP_SAMPLING_MS = 10;

/** What a load phase asks: resolve (POST, a body per request) or the HTTP floor (GET /healthz). */
export type LoadTarget = 'resolve' | 'healthz';
const ROUTE: Record<LoadTarget, string> = { resolve: '/v1/resolve', healthz: '/healthz' };

/** The server's own view: the target's durations (cumulative histogram buckets), event-loop delay, GC time. */
async function scrape(url: string, target: LoadTarget = 'resolve'): Promise<{ buckets: Map<number, number>; lagP99Ms: number; lagMaxMs: number; gcMs: number }> {
  const text = await (await fetch(`${url}/metrics`)).text();
  const buckets = new Map<number, number>();
  let lagP99Ms = 0;
  let lagMaxMs = 0;
  let gcMs = 0;
  const route = `route="${ROUTE[target]}"`;
  for (const line of text.split('\n')) {
    const ours = line.startsWith('rgrid_control_http_request_duration_seconds_bucket{') && line.includes(route) && line.includes('status="200"');
    const bucket = ours ? /le="([^"]+)".*\} (\S+)$/.exec(line) : null;
    if (bucket) buckets.set(bucket[1] === '+Inf' ? Infinity : Number(bucket[1]), (buckets.get(Number(bucket[1])) ?? 0) + Number(bucket[2]));
    const value = Number(line.split(' ').at(-1));
    // prom-client samples the delay with a 10 ms timer, and the histogram holds whole intervals: the
    // delay beyond the timer's own 10 ms is what the loop was late.
    if (line.startsWith('nodejs_eventloop_lag_p99_seconds')) lagP99Ms = value * 1000 - EVENT_LOOP_SAMPLING_MS;
    if (line.startsWith('nodejs_eventloop_lag_max_seconds')) lagMaxMs = value * 1000 - EVENT_LOOP_SAMPLING_MS;
    if (line.startsWith('nodejs_gc_duration_seconds_sum')) gcMs += value * 1000;
  }
  return { buckets, lagP99Ms, lagMaxMs, gcMs };
}

type Phase = LoadResult & Record<string, unknown>;

/** One load phase with the CPU and the server's metrics around it. */
async function measuredLoad(server: { url: string; pid: number }, pgDataDir: string | undefined, token: string, opts: { seconds: number; rate?: number; target?: LoadTarget }): Promise<Phase> {
  const target = opts.target ?? 'resolve';
  const before = await scrape(server.url, target); // also resets the event-loop delay histogram
  const cpu0 = { server: cpuMsOf([server.pid]), pg: postgresCpuMs(pgDataDir), self: process.cpuUsage() };
  const load1 = loadavg()[0]!;
  const result = await load(server.url, token, opts);
  const self = process.cpuUsage(cpu0.self);
  const cpu = { server: cpuMsOf([server.pid]) - cpu0.server, pg: postgresCpuMs(pgDataDir) - cpu0.pg, self: (self.user + self.system) / 1000 };
  const after = await scrape(server.url, target);
  const n = Math.max(1, result.requests);
  const served = (after.buckets.get(Infinity) ?? 0) - (before.buckets.get(Infinity) ?? 0);
  const over = (ms: number): number => served - ((after.buckets.get(ms / 1000) ?? 0) - (before.buckets.get(ms / 1000) ?? 0));
  return {
    target: ROUTE[target],
    ...result,
    load_1min_at_start: Number(load1.toFixed(2)),
    cpu_us_per_request: { server: Math.round((cpu.server / n) * 1000), postgres: pgDataDir ? Math.round((cpu.pg / n) * 1000) : null, load_generator: Math.round((cpu.self / n) * 1000) },
    cpu_cores_busy: { server: Number((cpu.server / 1000 / opts.seconds).toFixed(2)), postgres: pgDataDir ? Number((cpu.pg / 1000 / opts.seconds).toFixed(2)) : null, load_generator: Number((cpu.self / 1000 / opts.seconds).toFixed(2)) },
    server_side: {
      requests: served,
      share_over_5ms: Number((over(5) / Math.max(1, served)).toFixed(4)),
      share_over_10ms: Number((over(10) / Math.max(1, served)).toFixed(4)),
      event_loop_delay_p99_ms: Number(after.lagP99Ms.toFixed(2)),
      event_loop_delay_max_ms: Number(after.lagMaxMs.toFixed(2)),
      gc_ms_per_s: Number(((after.gcMs - before.gcMs) / opts.seconds).toFixed(1)),
    },
  };
}

async function post(url: string, path: string, token: string, body: unknown, method = 'POST'): Promise<{ status: number; json: unknown; ms: number }> {
  const t0 = performance.now();
  const res = await fetch(`${url}${path}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const json: unknown = await res.json();
  return { status: res.status, json, ms: performance.now() - t0 };
}

/** Distinct resolve bodies cycled by the load generator: random scripts, with their requirements. */
function resolveBodies(count: number): string[] {
  const bodies: string[] = [];
  for (let i = 0; i < count; i++) {
    const s = (i * 7907) % SCRIPTS;
    bodies.push(JSON.stringify({ runtime: 'python3.11', script_sha256: sha(`script:${s}`), requirements_sha256: sha(`req:${s % REQUIREMENTS}`) }));
  }
  return bodies;
}

interface LoadResult {
  duration_s: number; connections: number; offered_rate_rps: number; requests: number; throughput_rps: number;
  latency_p50_ms: number; latency_p90_ms: number; latency_p99_ms: number; latency_max_ms: number; non_2xx: number; errors: number; timeouts: number;
}

async function load(url: string, token: string, opts: { seconds: number; rate?: number; target?: LoadTarget }): Promise<LoadResult> {
  const target = opts.target ?? 'resolve';
  const bodies = target === 'resolve' ? resolveBodies(5000) : [];
  let n = 0;
  const result = await autocannon({
    url: `${url}${ROUTE[target]}`,
    connections: CONNECTIONS,
    duration: opts.seconds,
    ...(opts.rate ? { overallRate: opts.rate } : {}),
    requests: [
      target === 'resolve'
        ? {
          method: 'POST',
          headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
          setupRequest: (req) => ({ ...req, body: bodies[n++ % bodies.length] }),
        }
        : { method: 'GET' },
    ],
  });
  return {
    duration_s: opts.seconds,
    connections: CONNECTIONS,
    offered_rate_rps: opts.rate ?? 0,
    requests: result.requests.total,
    throughput_rps: Math.round(result.requests.average),
    latency_p50_ms: result.latency.p50,
    latency_p90_ms: result.latency.p90,
    latency_p99_ms: result.latency.p99,
    latency_max_ms: result.latency.max,
    non_2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
  };
}

function snapshotEntries(): unknown[] {
  const now = new Date().toISOString();
  const entries: unknown[] = [];
  for (let i = 0; i < SNAPSHOT_ENTRIES; i++) {
    const image = i % 2 === 0;
    entries.push({
      kind: image ? 'image' : 'deps',
      account: ACCOUNT,
      key: sha(`snap:${i}`),
      image_id: `sha256:${sha(`snapid:${i}`)}`,
      runtime: 'python3.11',
      requirements_sha256: sha(`req:${i % REQUIREMENTS}`),
      script_sha256: image ? sha(`snapscript:${i}`) : null,
      deps_key: image ? sha(`deps:${i % REQUIREMENTS}`) : null,
      size_bytes: 100 * 1048576,
      created_at: now,
      last_used_at: now,
      use_count: 1,
    });
  }
  return entries;
}

export interface ControlBenchOptions {
  /** `all` (default): saturation, the rounds at the target rate, the snapshot; `at-rate`: the rounds only. */
  phases?: 'all' | 'at-rate';
  /** Rounds at the target rate (resolve, /healthz, the reference build's resolve); default RGRID_BENCH_AB_ROUNDS with a reference, else 1. */
  rateRounds?: number;
}

export async function runControlBench(options: ControlBenchOptions = {}): Promise<Record<string, unknown>> {
  const onlyAtRate = options.phases === 'at-rate';
  const keepDir = process.env.RGRID_BENCH_KEEP_DB || undefined;
  const skipSnapshot = onlyAtRate || process.env.RGRID_BENCH_SKIP_SNAPSHOT === '1';
  const dir = keepDir ?? mkdtempSync(join(tmpdir(), 'rgrid-control-bench-'));
  mkdirSync(dir, { recursive: true });
  chmodSync(dir, 0o711);
  let embedded: EmbeddedPostgres | undefined;
  let server: ControlProcess | undefined;
  let dropDatabase: (() => Promise<void>) | undefined;
  let stopReference: (() => Promise<void>) | undefined;
  try {
    let serverUrl = process.env.DATABASE_URL;
    if (!serverUrl) {
      embedded = await startEmbeddedPostgres({ dataDir: join(dir, 'postgres') });
      serverUrl = embedded.url;
    }
    const dbName = keepDir ? 'rgrid_bench_kept' : `rgrid_bench_${randomBytes(4).toString('hex')}`;
    const admin = new pg.Client({ connectionString: serverUrl });
    await admin.connect();
    const exists = (await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [dbName])).rowCount === 1;
    if (!exists) await admin.query(`CREATE DATABASE ${dbName}`);
    await admin.end();
    const adminUrl = serverUrl;
    if (!keepDir) dropDatabase = async () => {
      const c = new pg.Client({ connectionString: adminUrl });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
      await c.end();
    };
    const u = new URL(serverUrl);
    u.pathname = `/${dbName}`;
    const databaseUrl = u.toString();
    await migrate(databaseUrl, quiet);

    const client = new pg.Client({ connectionString: databaseUrl });
    await client.connect();
    const reuse = keepDir !== undefined && (await client.query('SELECT 1 FROM accounts WHERE account_id = $1', [ACCOUNT])).rowCount === 1;
    let seeded = { seconds: 0 };
    if (reuse) {
      // The kept database: same rows as a fresh seed, workers live again, no snapshot worker.
      await client.query(`DELETE FROM workers WHERE worker_id = 'snap-worker'`);
      await client.query(`DELETE FROM tokens WHERE worker_id = 'snap-worker'`);
      await client.query('UPDATE workers SET last_seen_at = now()');
      await client.query('VACUUM (ANALYZE) workers');
      await client.query('VACUUM (ANALYZE) tokens');
      await client.query('VACUUM (ANALYZE) cache_entries');
      // A database kept from before the registry was seeded gets its registry rows now.
      if ((await client.query('SELECT 1 FROM registry_images LIMIT 1')).rowCount === 0) await seedRegistry(client);
      console.log(`reusing the seeded database in ${dir}`);
    } else {
      console.log(`seeding ${WORKERS} workers and ${WORKERS * ENTRIES_PER_WORKER} entries ...`);
      seeded = await seed(client);
    }
    const { rows } = await client.query<{ n: number }>('SELECT count(*)::int AS n FROM cache_entries');
    console.log(`${reuse ? 'found' : 'seeded'} ${rows[0]!.n} entries${reuse ? '' : ` in ${seeded.seconds.toFixed(1)} s`}`);

    server = await startServer(databaseUrl, join(dir, 'data'));
    const sched = ((await post(server.url, '/v1/admin/tokens', ADMIN, { account: ACCOUNT, role: 'scheduler' })).json as { token: string }).token;
    const sample = await post(server.url, '/v1/resolve', sched, JSON.parse(resolveBodies(1)[0]!));
    const sampleBody = sample.json as { image: { workers: string[] }; deps: { workers: string[] }; registry?: { image: boolean; deps: boolean }; placement: unknown[] };
    console.log(`sample resolve: ${sampleBody.image.workers.length} image holders, ${sampleBody.deps.workers.length} deps holders, registry ${JSON.stringify(sampleBody.registry)}, ${sampleBody.placement.length} placed`);

    const pgDataDir = embedded ? join(dir, 'postgres') : undefined;
    const refRoot = process.env.RGRID_BENCH_REF_ROOT;
    const reference = refRoot ? await startReferenceServer(resolve(refRoot), databaseUrl, join(dir, 'ref-data')) : undefined;
    stopReference = reference?.stop;
    const self = { url: server.url, pid: server.pid };
    await load(server.url, sched, { seconds: 3 }); // warm-up: connections, plans, caches
    await load(server.url, sched, { seconds: 1, target: 'healthz' });
    if (reference) await load(reference.url, sched, { seconds: 3 });
    let saturation: Phase | undefined;
    if (!onlyAtRate) {
      console.log(`resolve at saturation (${SATURATION_SECONDS} s, ${CONNECTIONS} connections) ...`);
      saturation = await measuredLoad(self, pgDataDir, sched, { seconds: SATURATION_SECONDS });
    }
    const rounds = options.rateRounds ?? (reference ? AB_ROUNDS : 1);
    console.log(`resolve at ${TARGET_RATE} req/s offered, then GET /healthz at the same rate${reference ? ', then the reference build\'s resolve' : ''} (${RATE_SECONDS} s each, ${rounds} round${rounds === 1 ? '' : 's'}) ...`);
    const atRateRounds: Phase[] = [];
    const floorRounds: Phase[] = [];
    const ab: Array<Record<string, unknown>> = [];
    for (let round = 0; round < rounds; round++) {
      const mine = await measuredLoad(self, pgDataDir, sched, { seconds: RATE_SECONDS, rate: TARGET_RATE });
      atRateRounds.push(mine);
      floorRounds.push(await measuredLoad(self, pgDataDir, sched, { seconds: RATE_SECONDS, rate: TARGET_RATE, target: 'healthz' }));
      if (reference) {
        ab.push({ server: 'this build', ...mine });
        ab.push({ server: 'reference', ...(await measuredLoad(reference, pgDataDir, sched, { seconds: RATE_SECONDS, rate: TARGET_RATE })) });
      }
    }
    const atRate = atRateRounds[0]!;
    if (reference) {
      await reference.stop();
      stopReference = undefined;
    }

    // Snapshot of 100,000 entries from one worker (registered with its own token).
    let snapshot: { entries: number; body_mb: number; first_seconds: number; repeat_seconds: number } | undefined;
    if (!skipSnapshot) {
      const workerToken = ((await post(server.url, '/v1/admin/tokens', ADMIN, { account: ACCOUNT, role: 'worker', worker_id: 'snap-worker' })).json as { token: string }).token;
      await post(server.url, '/v1/workers/snap-worker/register', workerToken, { host: 'snap', capacity: 8 });
      const entries = snapshotEntries();
      const body = { entries };
      const bytes = Buffer.byteLength(JSON.stringify(body));
      const first = await post(server.url, '/v1/workers/snap-worker/snapshot', workerToken, body, 'PUT');
      const repeat = await post(server.url, '/v1/workers/snap-worker/snapshot', workerToken, body, 'PUT');
      if (first.status !== 200 || repeat.status !== 200) throw new Error(`snapshot failed: ${first.status} ${JSON.stringify(first.json)}`);
      snapshot = {
        entries: SNAPSHOT_ENTRIES,
        body_mb: Number((bytes / 1048576).toFixed(1)),
        first_seconds: Number((first.ms / 1000).toFixed(2)),
        repeat_seconds: Number((repeat.ms / 1000).toFixed(2)),
      };
    }
    await client.end();

    const result = {
      settings: {
        machine_cpus: cpus().length,
        database: embedded ? 'embedded PostgreSQL 18 (defaults: shared_buffers 128MB, fsync on)' : 'DATABASE_URL',
        server: '1 rgrid-control process from dist/, pool 10, fleet cache 1 s, token cache 1 s, log level warn; autocannon in the bench process on the same machine',
        workers: WORKERS,
        entries: WORKERS * ENTRIES_PER_WORKER,
        registry_images: SCRIPTS / 2 + REQUIREMENTS,
        distinct_script_images: SCRIPTS,
        image_holders_per_script: (WORKERS * ENTRIES_PER_WORKER) / 2 / SCRIPTS,
        deps_holders_per_requirements: (WORKERS * ENTRIES_PER_WORKER) / 2 / REQUIREMENTS,
        placement_limit: 10,
        seed_seconds: Number(seeded.seconds.toFixed(1)),
      },
      ...(saturation ? { resolve_saturation: saturation } : {}),
      resolve_at_target_rate: atRate,
      resolve_at_target_rate_rounds: atRateRounds,
      http_floor_at_target_rate_rounds: floorRounds,
      ...(ab.length ? { reference: refRoot, resolve_at_target_rate_ab: ab } : {}),
      ...(snapshot ? { snapshot } : {}),
    };
    printTable(result);
    // The at-rate rounds alone are part of the cached-path table (its own file), not the control bench's.
    if (!onlyAtRate) {
      const out = join(process.cwd(), 'bench-output');
      mkdirSync(out, { recursive: true });
      writeFileSync(join(out, 'control.json'), `${JSON.stringify(result, null, 2)}\n`);
      console.log(`wrote ${join(out, 'control.json')}`);
    }
    return result;
  } finally {
    await stopReference?.();
    await server?.stop();
    // An external server keeps nothing of the run; the embedded one goes away with its directory.
    if (!embedded) await dropDatabase?.().catch((err: unknown) => console.error(`could not drop the bench database: ${String(err)}`));
    await embedded?.stop();
    if (!keepDir) rmSync(dir, { recursive: true, force: true });
  }
}

function where(p: Record<string, unknown>): string {
  const cpu = p.cpu_us_per_request as Record<string, number | null> | undefined;
  const side = p.server_side as Record<string, number> | undefined;
  if (!cpu || !side) return '';
  return `; CPU/request: server ${cpu.server} µs, PostgreSQL ${cpu.postgres ?? '-'} µs, load generator ${cpu.load_generator} µs; in the server: ${(side.share_over_10ms! * 100).toFixed(2)}% over 10 ms, event-loop delay p99 ${side.event_loop_delay_p99_ms} ms (max ${side.event_loop_delay_max_ms}), GC ${side.gc_ms_per_s} ms/s; load ${String(p.load_1min_at_start)}`;
}

function printTable(r: { resolve_saturation?: Phase; resolve_at_target_rate_rounds: Phase[]; http_floor_at_target_rate_rounds: Phase[]; resolve_at_target_rate_ab?: Array<Record<string, unknown>>; snapshot?: Record<string, number> }): void {
  const rows: [string, string][] = [];
  const sat = r.resolve_saturation;
  if (sat) {
    rows.push(['resolve, saturation: throughput', `${sat.throughput_rps} req/s`]);
    rows.push(['resolve, saturation: p50 / p99', `${sat.latency_p50_ms} / ${sat.latency_p99_ms} ms${where(sat)}`]);
  }
  for (const [i, p] of r.resolve_at_target_rate_rounds.entries()) {
    const floor = r.http_floor_at_target_rate_rounds[i]!;
    rows.push([`resolve, ${TARGET_RATE} req/s offered (round ${i + 1}): achieved, p50 / p99`, `${p.throughput_rps} req/s, ${p.latency_p50_ms} / ${p.latency_p99_ms} ms${where(p)}`]);
    rows.push([`GET /healthz, ${TARGET_RATE} req/s offered (round ${i + 1}): achieved, p50 / p99`, `${floor.throughput_rps} req/s, ${floor.latency_p50_ms} / ${floor.latency_p99_ms} ms${where(floor)}`]);
  }
  const phases = [...(sat ? [sat] : []), ...r.resolve_at_target_rate_rounds, ...r.http_floor_at_target_rate_rounds];
  const sum = (key: 'non_2xx' | 'errors' | 'timeouts'): number => phases.reduce((n, p) => n + p[key], 0);
  rows.push(['errors of these phases (non-2xx, errors, timeouts)', `${sum('non_2xx')}, ${sum('errors')}, ${sum('timeouts')}`]);
  for (const [i, p] of (r.resolve_at_target_rate_ab ?? []).entries()) {
    rows.push([`A/B ${i + 1}, ${String(p.server)}: achieved, p50 / p99`, `${String(p.throughput_rps)} req/s, ${String(p.latency_p50_ms)} / ${String(p.latency_p99_ms)} ms${where(p)}`]);
  }
  if (r.snapshot) {
    rows.push([`snapshot of ${SNAPSHOT_ENTRIES} entries (${r.snapshot.body_mb} MB): first`, `${r.snapshot.first_seconds} s`]);
    rows.push(['snapshot, repeated (all rows replaced)', `${r.snapshot.repeat_seconds} s`]);
  }
  const width = Math.max(...rows.map(([k]) => k.length));
  console.log('\ncontrol plane');
  for (const [k, v] of rows) console.log(`  ${k.padEnd(width)}  ${v}`);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  await runControlBench();
}
