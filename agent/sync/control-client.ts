import type {
  HeartbeatRequest, RegisterWorkerRequest, RegisterWorkerResponse, SnapshotRequest, SnapshotResponse, SyncOpsRequest,
  SyncOpsResponse, SyncStatusResponse,
} from '../../common/wire/control-api.js';

/**
 * The agent's side of the control plane's worker endpoints (control/routes/workers.ts), typed with the
 * shared wire schemas. Every failure becomes a ControlError that says whether retrying can help and
 * whether the control plane asked for a full resync (409 with `detail.resync_required`).
 */
export class ControlError extends Error {
  constructor(
    message: string,
    readonly status: number | undefined,
    readonly resync: boolean,
  ) {
    super(message);
    this.name = 'ControlError';
  }
}

export interface ControlClientOptions {
  baseUrl: string;
  token: string;
  workerId: string;
  timeoutMs: number;
}

export interface ControlClient {
  register(body: RegisterWorkerRequest): Promise<RegisterWorkerResponse>;
  heartbeat(body: HeartbeatRequest): Promise<SyncStatusResponse>;
  snapshot(body: SnapshotRequest): Promise<SnapshotResponse>;
  ops(body: SyncOpsRequest): Promise<SyncOpsResponse>;
}

export function createControlClient(o: ControlClientOptions): ControlClient {
  const base = `${o.baseUrl.replace(/\/+$/, '')}/v1/workers/${encodeURIComponent(o.workerId)}`;

  async function call<T>(method: 'POST' | 'PUT', path: string, body: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(`${base}${path}`, {
        method,
        headers: { authorization: `Bearer ${o.token}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(o.timeoutMs),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string } }).cause?.code ?? (err as Error).name;
      throw new ControlError(`control plane unreachable (${cause})`, undefined, false);
    }
    const text = await res.text().catch(() => '');
    let parsed: unknown;
    try {
      parsed = text ? JSON.parse(text) : undefined;
    } catch {
      parsed = undefined;
    }
    if (res.ok) return parsed as T;
    const b = (parsed ?? {}) as { error?: string; message?: string; detail?: { resync_required?: boolean } };
    throw new ControlError(
      `control plane answered ${res.status} ${b.error ?? ''}: ${b.message ?? text.slice(0, 200)}`.trim(),
      res.status,
      b.detail?.resync_required === true,
    );
  }

  return {
    register: (body) => call('POST', '/register', body),
    heartbeat: (body) => call('POST', '/heartbeat', body),
    snapshot: (body) => call('PUT', '/snapshot', body),
    ops: (body) => call('POST', '/ops', body),
  };
}
