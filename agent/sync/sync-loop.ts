import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { RegisterWorkerRequest, SnapshotResponse } from '../../common/wire/control-api.js';
import { durationsOf, type AgentConfig } from '../config.js';
import type { AgentIndex } from '../index/index.js';
import { CircuitBreaker, type SyncState } from './breaker.js';
import { isRgridError } from '../../common/errors.js';
import { HttpStatusError, UnreachableError } from '../../common/http-answer.js';
import { ControlPlaneClient } from '../control/client.js';
import { workerIdOf } from '../control/credentials.js';
import { PartedSnapshot } from './snapshot-parts.js';
import { toCacheEntry, toSyncOp } from './wire-ops.js';

/**
 * Sync with the control plane: register → full snapshot → deltas from the durable outbox, heartbeats in
 * between. Runs on its own timer and never on the hit path: a hit only appends to (or increments) an
 * outbox op in its own LMDB transaction, whatever the control plane's state.
 *
 * A snapshot is read in one transaction that also seals every op so far; once the control plane has
 * acknowledged it (all its parts, when it is too large for one request: agent/sync/snapshot-parts.ts),
 * those ops are deleted (their effect is in the snapshot). Op batches are deleted only after a 200. A
 * 409 with `resync_required` (the control plane lost or never saw this worker, has no snapshot since its
 * registration, or a newer snapshot superseded ours) and every restart of the agent lead to register +
 * snapshot again.
 */
export interface SyncStatus {
  enabled: boolean;
  state: SyncState | 'disabled';
  worker_id: string | null;
  outbox_depth: number;
  oldest_op_age_s: number | null;
  last_success_at: string | null;
  last_error: string | null;
  consecutive_failures: number;
  registered: boolean;
  /** The accounts this worker serves, as the control plane answered the last registration. */
  accounts: string[];
  /** Since start: op batches taken from the outbox (sealed) for sending, whatever the outcome … */
  batches_taken: number;
  /** … and those acknowledged by the control plane, and the ops in them. */
  batches_sent: number;
  ops_sent: number;
  snapshots_sent: number;
  /** Snapshot requests acknowledged (one per snapshot unless it was sent in parts). */
  snapshot_parts_sent: number;
}

export interface SyncLoop {
  readonly status: () => SyncStatus;
  /** Sends everything now (registering and snapshotting first when needed), ignoring backoff and breaker. */
  flush(): Promise<SyncStatus>;
  /** Registers and snapshots again, then flushes (the control plane refused this worker's session). */
  resync(): Promise<SyncStatus>;
  stop(): Promise<void>;
}

export interface SyncLoopDeps {
  index: AgentIndex;
  settings: () => AgentConfig;
  logger: Logger;
  version: string;
  /** The agent's one control-plane client, shared with the claim loop; without it the loop makes (and closes) its own. */
  control?: ControlPlaneClient;
  /** Host facts for registration and heartbeats. */
  hostInfo: () => Promise<Pick<RegisterWorkerRequest, 'engine' | 'disk' | 'load'>>;
  now?: () => number;
}

const HEARTBEAT_FALLBACK_MS = 15_000;
/** Batches one background tick sends at most before yielding (the rest follows on the next tick). */
const BATCHES_PER_TICK = 20;

/** Failures worth resuming a snapshot after: the control plane was unreachable, busy or failing. */
function resumable(err: unknown): boolean {
  if (err instanceof UnreachableError) return true;
  return err instanceof HttpStatusError && (err.status >= 500 || err.status === 408 || err.status === 429);
}

/** The sync's calls, each bounded by sync_timeout_s (see currentClient). */
type ControlClient = { [K in 'register' | 'heartbeat' | 'snapshot' | 'ops']: (body: Parameters<ControlPlaneClient[K]>[0]) => ReturnType<ControlPlaneClient[K]> };

export function createSyncLoop(deps: SyncLoopDeps): SyncLoop {
  const { index, settings, logger } = deps;
  const log = logger.child({ component: 'sync' });
  const control = deps.control ?? new ControlPlaneClient(settings);
  const now = deps.now ?? Date.now;
  const breaker = new CircuitBreaker(() => {
    const c = settings();
    return { initialMs: durationsOf(c).sync_backoff_initial_ms, maxMs: durationsOf(c).sync_backoff_max_ms, threshold: c.sync_breaker_threshold, resetMs: durationsOf(c).sync_breaker_reset_ms };
  }, now);
  /** Address, identity and token the last conversation used: a change means registering again. */
  let identity: string | undefined;
  let served: string[] = [];
  let registered = false;
  let snapshotted = false;
  /** The snapshot being sent, kept across failed attempts until its final part is acknowledged. */
  let pending: PartedSnapshot | undefined;
  let heartbeatMs = HEARTBEAT_FALLBACK_MS;
  let lastHeartbeat = 0;
  let lastSuccessAt: number | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const sent = { taken: 0, batches: 0, ops: 0, snapshots: 0, snapshotParts: 0 };
  let chain: Promise<unknown> = Promise.resolve();

  const workerId = workerIdOf;

  /** One control-plane conversation at a time (background tick or an explicit flush). */
  function exclusive<T>(work: () => Promise<T>): Promise<T> {
    const next = chain.then(work, work);
    chain = next.catch(() => undefined);
    return next;
  }

  /** The agent's control-plane client (agent/control/), which reads the credentials for every request. */
  function currentClient(c: AgentConfig): ControlClient {
    const current = control.credentials();
    const id = JSON.stringify([current.url, current.token, current.workerId]);
    // New address, token or identity: start over with a registration.
    if (identity !== id) registered = false;
    identity = id;
    const call = { timeoutMs: durationsOf(c).sync_timeout_ms };
    return {
      register: (body) => control.register(body, call),
      heartbeat: (body) => control.heartbeat(body, call),
      snapshot: (body) => control.snapshot(body, call),
      ops: (body) => control.ops(body, call),
    };
  }

  async function register(api: ControlClient): Promise<void> {
    const c = settings();
    const info = await deps.hostInfo();
    const res = await api.register({ host: hostname(), capacity: c.worker_capacity ?? c.run_capacity, agent_version: deps.version, ...info });
    served = res.accounts;
    heartbeatMs = res.heartbeat_interval_ms > 0 ? res.heartbeat_interval_ms : HEARTBEAT_FALLBACK_MS;
    lastHeartbeat = now();
    registered = true;
    snapshotted = false;
    // A new registration supersedes any snapshot begun before it: the next one is read afresh.
    pending = undefined;
    log.info({ worker_id: res.worker_id, known: res.known, accounts: served }, 'registered with the control plane');
  }

  async function snapshot(api: ControlClient): Promise<void> {
    if (!pending) {
      const { entries, through } = index.syncSnapshot();
      const mine = entries.filter((e) => served.includes(e.account));
      pending = new PartedSnapshot(served, mine.map(toCacheEntry), through);
      const skipped = entries.length - mine.length;
      if (skipped) log.info({ not_served: skipped }, 'snapshot leaves out entries of accounts this worker does not serve');
    }
    const snap = pending;
    for (;;) {
      const part = snap.next(settings().sync_snapshot_part_bytes);
      let res: SnapshotResponse;
      try {
        res = await api.snapshot(part.body);
      } catch (err) {
        if (err instanceof HttpStatusError && err.status === 413 && snap.tooLarge(part.bytes, part.count)) {
          log.warn({ bytes: part.bytes }, 'control plane refused a snapshot part as too large; sending smaller parts');
          continue;
        }
        // Kept only for a failure a retry can outlast (the next attempt resumes at this part); anything
        // else starts over with a fresh read (a resync registers first, which drops it anyway).
        if (!resumable(err)) pending = undefined;
        throw err;
      }
      snap.acknowledged(part.count);
      sent.snapshotParts++;
      if (part.final) {
        log.info({ entries: res.entries, removed: res.removed, parts: snap.partsSent }, 'snapshot sent');
        break;
      }
      log.debug({ part: snap.partsSent - 1, entries: res.entries }, 'snapshot part sent');
    }
    // The ops sealed with the snapshot are in it: acknowledged only now that its final part is.
    await index.outbox.ackThrough(snap.through);
    pending = undefined;
    snapshotted = true;
    sent.snapshots++;
  }

  async function sendBatch(api: ControlClient, limit: number): Promise<number> {
    const batch = index.outbox.takeBatch(limit);
    if (batch.length === 0) return 0;
    sent.taken++;
    // Ops of accounts this worker's token does not serve would make the control plane reject the whole
    // batch forever; they are dropped (logged): the control plane could never hold those entries.
    const sendable = batch.filter((op) => served.includes(op.account));
    if (sendable.length < batch.length) log.warn({ dropped: batch.length - sendable.length }, 'dropped outbox ops of accounts this worker does not serve');
    if (sendable.length > 0) await api.ops({ ops: sendable.map((op) => toSyncOp(index.outbox.epoch, op)) });
    await index.outbox.ack(batch.map((op) => op.seq));
    sent.batches++;
    sent.ops += sendable.length;
    return batch.length;
  }

  /** Register/snapshot when needed, heartbeat when due, then send up to `maxBatches` batches. */
  async function converse(maxBatches: number, probe: boolean): Promise<void> {
    const c = settings();
    const api = currentClient(c);
    for (let attempt = 0; ; attempt++) {
      try {
        if (probe && registered && snapshotted) {
          // Half-open probe: a heartbeat seals no ops, so a failing probe adds nothing to the outbox.
          await heartbeat(api, true);
          probe = false;
        }
        if (!registered) await register(api);
        if (!snapshotted) await snapshot(api);
        if (now() - lastHeartbeat >= heartbeatMs) await heartbeat(api, false);
        // A short batch means the outbox is drained: ops that arrive meanwhile wait for the next tick, so a
        // hot key keeps folding hits into one open op instead of sealing one op per round trip.
        for (let i = 0; i < maxBatches; i++) if ((await sendBatch(api, c.sync_batch_size)) < c.sync_batch_size) break;
        return;
      } catch (err) {
        // The control plane does not know us (restored database, cleaned up): start over once, right away.
        if (isRgridError(err) && err.detail?.resync_required === true && attempt === 0) {
          log.warn({ reason: err.message }, 'control plane asks for a resync');
          registered = false;
          continue;
        }
        throw err;
      }
    }
  }

  async function heartbeat(api: ControlClient, force: boolean): Promise<void> {
    if (!force && now() - lastHeartbeat < heartbeatMs) return;
    const info = await deps.hostInfo();
    const res = await api.heartbeat({ load: info.load ?? { running: 0 }, ...(info.disk ? { disk: info.disk } : {}) });
    lastHeartbeat = now();
    if (res.resync_required) {
      log.warn('control plane asks for a resync (heartbeat)');
      registered = false;
    }
  }

  async function attempt(maxBatches: number, probe: boolean): Promise<void> {
    try {
      await converse(maxBatches, probe);
      if (breaker.state !== 'ok') log.info({ after_failures: breaker.consecutiveFailures }, 'control plane reachable again');
      breaker.success();
      lastSuccessAt = now();
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      const before = breaker.state;
      breaker.failure(message);
      if (breaker.state === 'open' && before !== 'open') log.warn({ reason: message, failures: breaker.consecutiveFailures }, 'sync circuit breaker open');
      else log.debug({ reason: message, state: breaker.state }, 'sync attempt failed');
      if (!isRgridError(err)) log.error({ err }, 'sync failed unexpectedly');
    }
  }

  function schedule(ms: number): void {
    if (stopped) return;
    clearTimeout(timer);
    timer = setTimeout(() => void tick(), Math.max(10, ms));
    timer.unref();
  }

  async function tick(): Promise<void> {
    const c = settings();
    const interval = durationsOf(c).sync_interval_ms;
    if (!c.control_url) {
      // Without a control plane nobody will ever read the ops; enabling sync later starts with a full
      // snapshot anyway, so dropping them loses nothing (and keeps the outbox from growing forever).
      await exclusive(async () => {
        for (let b = index.outbox.takeBatch(1000); b.length > 0; b = index.outbox.takeBatch(1000)) await index.outbox.ack(b.map((op) => op.seq));
      }).catch((err: unknown) => log.warn({ err }, 'clearing the outbox failed'));
      return schedule(Math.max(interval, 1000));
    }
    const { allowed, probe } = breaker.canAttempt();
    if (allowed) await exclusive(() => attempt(BATCHES_PER_TICK, probe));
    const wait = breaker.state === 'ok' ? interval : Math.max(breaker.nextAttempt - now(), interval);
    schedule(wait);
  }

  function status(): SyncStatus {
    const c = settings();
    const oldest = index.outbox.oldestAt();
    return {
      enabled: c.control_url !== undefined,
      state: c.control_url === undefined ? 'disabled' : breaker.state,
      worker_id: c.control_url === undefined ? null : workerId(c),
      outbox_depth: index.outbox.depth(),
      oldest_op_age_s: oldest === undefined ? null : Math.max(0, (now() - oldest) / 1000),
      last_success_at: lastSuccessAt === undefined ? null : new Date(lastSuccessAt).toISOString(),
      last_error: breaker.error ?? null,
      consecutive_failures: breaker.consecutiveFailures,
      registered: registered && snapshotted,
      accounts: [...served],
      batches_taken: sent.taken,
      batches_sent: sent.batches,
      ops_sent: sent.ops,
      snapshots_sent: sent.snapshots,
      snapshot_parts_sent: sent.snapshotParts,
    };
  }

  schedule(0);
  return {
    status,
    async flush() {
      const c = settings();
      // What is queued now (plus a little): under a steady stream of hits the outbox never stays empty.
      const batches = Math.ceil(index.outbox.depth() / c.sync_batch_size) + 2;
      if (c.control_url) await exclusive(() => attempt(batches, false));
      return status();
    },
    async resync() {
      await exclusive(() => {
        registered = false;
        return Promise.resolve();
      });
      return this.flush();
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await chain;
      if (!deps.control) await control.close();
    },
  };
}
