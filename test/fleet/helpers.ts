import { startControlProcess, type ControlProcess } from '../support/processes.js';

/**
 * Fleet integration helpers: the real `rgrid-control serve` from dist/ on a per-file database (through
 * the shared process harness, test/support/processes.ts), worker tokens through its admin API, and
 * polling with a deadline (never a timing assertion).
 */
export const ADMIN = 'fleet-admin-token-0123456789abcdef';

export type { ControlProcess };

/** Starts `rgrid-control serve` on 127.0.0.1:<port> (a free port when none or 0 is given) over databaseUrl, with `extra` serve flags. */
export function startControl(databaseUrl: string, port?: number, extra: string[] = []): Promise<ControlProcess> {
  return startControlProcess({
    databaseUrl, adminToken: ADMIN, logLevel: 'info', args: ['--cleanup-interval', '0', ...extra], ...(port ? { port } : {}),
  });
}

export async function controlApi<T = Record<string, unknown>>(url: string, method: string, path: string, token: string, body?: unknown): Promise<{ status: number; json: T }> {
  const res = await fetch(`${url}${path}`, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.text();
  return { status: res.status, json: (text ? JSON.parse(text) : {}) as T };
}

export async function workerToken(url: string, account: string, workerId: string): Promise<string> {
  const res = await controlApi<{ token: string }>(url, 'POST', '/v1/admin/tokens', ADMIN, { account, role: 'worker', worker_id: workerId });
  if (res.status !== 201) throw new Error(`token create failed: ${res.status} ${JSON.stringify(res.json)}`);
  return res.json.token;
}

export interface CentralEntry {
  kind: string;
  account: string;
  key: string;
  image_id: string;
  use_count: number;
  last_used_at: string;
  created_at: string;
}

/** What the control plane holds for a worker (the agent's own view endpoint). */
export async function centralEntries(url: string, token: string, workerId: string): Promise<CentralEntry[]> {
  const res = await controlApi<{ entries: CentralEntry[] }>(url, 'GET', `/v1/workers/${workerId}/entries`, token);
  if (res.status !== 200) throw new Error(`entries failed: ${res.status} ${JSON.stringify(res.json)}`);
  return res.json.entries;
}

/** Polls `probe` until it returns a value other than undefined, or fails with `what` at the deadline. */
export async function eventually<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 60_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last instanceof Error ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The comparable part of an entry, central or local. */
export function entryView(entry: object): string {
  const e = entry as Record<string, unknown>;
  return JSON.stringify([e.kind, e.account, e.key, e.image_id, Number(e.use_count), new Date(String(e.last_used_at)).toISOString(), new Date(String(e.created_at)).toISOString()]);
}

/** Prometheus text → value of one sample (name with labels exactly as printed). */
export function metricValue(text: string, sample: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${sample} `)) return Number(line.slice(sample.length + 1));
  }
  return undefined;
}
