/**
 * Shared helpers of the control-plane integration tests: a fresh database per test file (CREATE
 * DATABASE on the run's PostgreSQL, migrated, dropped at the end), and a `build()` that readies the app,
 * checks every answer it gives against its OpenAPI document (response-check.ts) and always closes it.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, beforeAll, inject, onTestFinished } from 'vitest';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { buildControlApp } from '../../control/app.js';
import { loadControlConfig, type ControlConfig } from '../../control/config.js';
import { migrate } from '../../control/db/migrate.js';
import { createPool, type Db } from '../../control/db/pool.js';
import { sha256Hex } from '../../common/digest.js';
import { checkResponses } from './response-check.js';

export const ADMIN_TOKEN = 'test-admin-token-0123456789abcdef';
const quiet = { info: () => undefined, warn: () => undefined, error: (m: string) => console.error(m) };

export interface TestDatabase {
  name: string;
  url: string;
  pool: Db;
  dataDir: string;
}

function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}

/** Creates a database for this file only (migrated unless `migrated: false`), dropped after the file. */
export function useTestDatabase(opts: { migrated?: boolean } = {}): TestDatabase {
  const db = {} as TestDatabase;
  const serverUrl = inject('databaseUrl');
  beforeAll(async () => {
    db.name = `rgrid_test_${randomBytes(6).toString('hex')}`;
    const admin = new pg.Client({ connectionString: serverUrl });
    await admin.connect();
    await admin.query(`CREATE DATABASE ${db.name}`);
    await admin.end();
    db.url = withDatabase(serverUrl, db.name);
    if (opts.migrated !== false) await migrate(db.url, quiet);
    db.pool = createPool(db.url, 5);
    db.dataDir = mkdtempSync(join(tmpdir(), 'rgrid-control-test-'));
  });
  afterAll(async () => {
    await db.pool?.end();
    const admin = new pg.Client({ connectionString: serverUrl });
    await admin.connect();
    await admin.query(`DROP DATABASE IF EXISTS ${db.name} WITH (FORCE)`);
    await admin.end();
    if (db.dataDir) rmSync(db.dataDir, { recursive: true, force: true });
  });
  return db;
}

export function testConfig(db: TestDatabase, overrides: Partial<ControlConfig> = {}): ControlConfig {
  // fleetCacheMs 0: tests change loads and liveness and resolve right after, so they read every time.
  return loadControlConfig({ databaseUrl: db.url, dataDir: db.dataDir, adminToken: ADMIN_TOKEN, cleanupIntervalMs: 0, fleetCacheMs: 0, logLevel: 'silent', ...overrides });
}

/**
 * Builds and readies the app; it is closed when the calling test finishes, pass or fail. Every answer is
 * checked against the OpenAPI document (status declared, body matching the declared schema): the test
 * fails at its end on any answer that breaks the contract. `prepare` runs before the app is ready.
 */
export async function build(db: TestDatabase, overrides: Partial<ControlConfig> = {}, prepare?: (app: FastifyInstance) => void): Promise<FastifyInstance> {
  const app = await buildControlApp(testConfig(db, overrides), { logger: false });
  onTestFinished(async () => {
    await app.close();
  });
  checkContract(app);
  prepare?.(app);
  await app.ready();
  return app;
}

/**
 * Checks every answer of `app` (not ready yet) against its OpenAPI document; the calling test fails when
 * it finishes if any answer broke the contract. build() does this; tests that build the app themselves call it.
 */
export function checkContract(app: FastifyInstance): void {
  const violations = checkResponses(app);
  onTestFinished(() => {
    if (violations.length > 0) {
      throw new Error(`${violations.length} answer(s) broke the OpenAPI contract:\n${[...new Set(violations)].slice(0, 20).join('\n')}`);
    }
  });
}

type Method = 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export async function call(app: FastifyInstance, method: Method, url: string, token: string | null, body?: unknown): Promise<LightMyRequestResponse> {
  return app.inject({
    method,
    url,
    headers: token ? { authorization: `Bearer ${token}` } : {},
    ...(body === undefined ? {} : { payload: body as object }),
  });
}

export async function createToken(app: FastifyInstance, account: string, role: 'scheduler' | 'client' | 'worker', workerId?: string, extra: Record<string, unknown> = {}): Promise<string> {
  const res = await call(app, 'POST', '/v1/admin/tokens', ADMIN_TOKEN, { account, role, ...(workerId ? { worker_id: workerId } : {}), ...extra });
  if (res.statusCode !== 201) throw new Error(`token create failed: ${res.statusCode} ${res.body}`);
  return res.json<{ token: string }>().token;
}

/** A deterministic sha256 for fixtures. */
export const sha = (label: string | number): string => sha256Hex(`fixture:${label}`);

export const MB = 1024 * 1024;

export interface EntryOpts {
  account: string;
  kind?: 'image' | 'deps';
  runtime?: string;
  script?: string;
  requirements?: string | null;
  size?: number;
  lastUsed?: string;
  useCount?: number;
  key?: string;
}

/** A cache entry as an agent would report it; the keys are derived from the labels. */
export function entry(o: EntryOpts) {
  const kind = o.kind ?? 'image';
  const requirements = o.requirements === undefined ? sha('reqs') : o.requirements;
  const script = sha(o.script ?? 'script');
  const depsKey = requirements ? sha(`deps:${o.runtime ?? 'python3.11'}:${requirements}`) : null;
  const key = o.key ?? (kind === 'image' ? sha(`image:${depsKey}:${script}`) : (depsKey ?? sha('nodeps')));
  const now = new Date().toISOString();
  return {
    kind,
    account: o.account,
    key,
    image_id: `sha256:${sha(`id:${key}`)}`,
    runtime: o.runtime ?? 'python3.11',
    requirements_sha256: requirements,
    script_sha256: kind === 'image' ? script : null,
    deps_key: kind === 'image' ? depsKey : null,
    size_bytes: o.size ?? 100 * MB,
    created_at: o.lastUsed ?? now,
    last_used_at: o.lastUsed ?? now,
    use_count: o.useCount ?? 1,
  };
}

export async function registerWorker(app: FastifyInstance, token: string, workerId: string, opts: { capacity?: number; running?: number } = {}): Promise<void> {
  const res = await call(app, 'POST', `/v1/workers/${workerId}/register`, token, {
    host: `${workerId}.test`, capacity: opts.capacity ?? 4, load: { running: opts.running ?? 0 }, labels: { zone: 'a' }, engine: { version: '27' },
  });
  if (res.statusCode !== 200) throw new Error(`register failed: ${res.statusCode} ${res.body}`);
}

export async function snapshot(app: FastifyInstance, token: string, workerId: string, entries: unknown[], accounts?: string[]): Promise<LightMyRequestResponse> {
  return call(app, 'PUT', `/v1/workers/${workerId}/snapshot`, token, { entries, ...(accounts ? { accounts } : {}) });
}
