import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { collectProcessMetrics } from '../common/process-metrics.js';
import type { Resolution } from '../common/lock.js';
import type { ImageProbeStats } from './builder/image-probe.js';
import type { ResolutionOutcome } from './builder/resolver.js';
import type { AgentIndex } from './index/index.js';
import type { OutboxOpType } from './index/outbox.js';
import type { SyncStatus } from './sync/sync-loop.js';

/**
 * The agent's Prometheus metrics (one registry per daemon, so tests can run several). Counters are
 * incremented where things happen (the cache, the pruner), or copied at scrape time from a count the
 * outbox or the sync loop keeps since start; gauges are computed when scraped from the index, the
 * outbox and the sync loop, so they can never drift from the source. Names follow Prometheus's rules
 * (counters end in `_total`, units are in the name) and the scrape passes `promtool check metrics`.
 */
export type CacheKindLabel = 'image' | 'deps';

export interface AgentMetrics {
  readonly registry: Registry;
  lookup(kind: CacheKindLabel, hit: boolean): void;
  build(kind: CacheKindLabel, ok: boolean, seconds: number): void;
  pruned(kind: CacheKindLabel, reason: string, bytes: number): void;
  drift(type: string, count: number): void;
  /** The image probe's counts (agent/builder/image-probe.ts), read at scrape time. */
  setImageProbe(stats: () => ImageProbeStats): void;
  /** Image sharing (agent/registry/sharing.ts). */
  registryPull(kind: CacheKindLabel, result: 'ok' | 'mismatch' | 'failed'): void;
  registryPush(kind: CacheKindLabel, ok: boolean): void;
  leaseWait(kind: CacheKindLabel, outcome: string, seconds: number): void;
  /** The resolution service (agent/builder/resolution.ts): one pip resolution and how it ended. */
  resolution(outcome: ResolutionOutcome, seconds: number): void;
  /** The resolution service: how a lock it answered was obtained. */
  lockAnswer(resolution: Resolution): void;
  /** The resolution service's resolutions running now (foreground and background), read at scrape time. */
  setResolutionsRunning(running: () => number): void;
  /** Wires the scrape-time sources in (they exist after the metrics object). */
  setSources(sources: MetricSources): void;
  text(): Promise<string>;
  readonly contentType: string;
}

export interface MetricSources {
  index: AgentIndex;
  sync?: () => SyncStatus;
  queue?: () => { queued: number; building: number };
  warm?: () => { total: number; done: number; failed: number; building: number };
}

const SYNC_STATES = ['ok', 'retrying', 'open', 'disabled'] as const;

/** Sets a counter to counts kept elsewhere since start (they only grow, so the counter does too). */
function mirror<L extends string>(counter: Counter<L>, values: Array<[Partial<Record<L, string>>, number]>): void {
  counter.reset();
  for (const [labels, n] of values) counter.inc(labels, n);
}

export function createAgentMetrics(): AgentMetrics {
  const registry = new Registry();
  collectProcessMetrics(registry, 'rgrid_agent_');
  const r = [registry];
  let sources: MetricSources | undefined;

  const lookups = new Counter({ name: 'rgrid_agent_cache_lookups_total', help: 'Cache lookups by kind and result (hit|miss)', labelNames: ['kind', 'result'], registers: r });
  const builds = new Counter({ name: 'rgrid_agent_builds_total', help: 'Image builds by kind and result (ok|failed)', labelNames: ['kind', 'result'], registers: r });
  const buildSeconds = new Histogram({
    name: 'rgrid_agent_build_seconds',
    help: 'Build duration by kind',
    labelNames: ['kind'],
    buckets: [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800],
    registers: r,
  });
  const prunes = new Counter({ name: 'rgrid_agent_prune_removed_total', help: 'Entries removed by the pruner, by kind and reason (ttl|disk)', labelNames: ['kind', 'reason'], registers: r });
  const freed = new Counter({ name: 'rgrid_agent_prune_freed_bytes_total', help: 'Image bytes of pruned entries (engine image size; shared layers count in full)', registers: r });
  let probeStats: (() => ImageProbeStats) | undefined;
  new Counter({
    name: 'rgrid_agent_image_engine_checks_total',
    help: 'Image presence questions asked of the engine (the image events were down, or did not know the ID)',
    registers: r,
    collect() {
      if (probeStats) mirror(this, [[{}, probeStats().engine_checks]]);
    },
  });
  new Gauge({
    name: 'rgrid_agent_image_events_live',
    help: '1 while hits are verified from the engine\'s image event stream, 0 while the engine is asked',
    registers: r,
    collect() {
      this.set(probeStats?.().live ? 1 : 0);
    },
  });
  const drift = new Counter({ name: 'rgrid_agent_reconcile_drift_total', help: 'Index/engine drift found by reconcile, by type', labelNames: ['type'], registers: r });
  const pulls = new Counter({
    name: 'rgrid_agent_registry_pulls_total',
    help: 'Pulls of images other workers built, by kind and result (ok|mismatch: refused, labels not the ones asked for|failed: registry unavailable)',
    labelNames: ['kind', 'result'],
    registers: r,
  });
  const pushes = new Counter({ name: 'rgrid_agent_registry_pushes_total', help: 'Pushes of images built here, by kind and result (ok|failed)', labelNames: ['kind', 'result'], registers: r });
  const leaseWaits = new Histogram({
    name: 'rgrid_agent_build_lease_wait_seconds',
    help: 'Time from a miss to the grid\'s answer (pushed|lease|failed|timeout|unreachable), by kind and outcome',
    labelNames: ['kind', 'outcome'],
    buckets: [0.01, 0.1, 0.5, 1, 5, 15, 30, 60, 120, 300, 900],
    registers: r,
  });
  const resolutions = new Counter({
    name: 'rgrid_agent_resolutions_total',
    help: 'pip resolutions by outcome (resolved: a first one|refreshed: the same lock again|changed: a new lock|failed)',
    labelNames: ['outcome'],
    registers: r,
  });
  const resolutionSeconds = new Histogram({
    name: 'rgrid_agent_resolution_seconds',
    help: 'Duration of a pip resolution (its container included), whatever its outcome',
    buckets: [0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 900],
    registers: r,
  });
  let resolutionsRunning: (() => number) | undefined;
  new Gauge({
    name: 'rgrid_agent_resolutions_running',
    help: 'pip resolutions running now (a first resolution a request waits for, or a background refresh)',
    registers: r,
    collect() {
      this.set(resolutionsRunning?.() ?? 0);
    },
  });
  const lockAnswers = new Counter({
    name: 'rgrid_agent_lock_answers_total',
    help: 'Locks answered for requirements files, by resolution (locked|cached|resolved|stale)',
    labelNames: ['resolution'],
    registers: r,
  });
  new Gauge({
    name: 'rgrid_agent_push_outbox_depth',
    help: 'Images built here still to be pushed to the registry or recorded with the control plane',
    registers: r,
    collect() {
      if (sources) this.set(sources.index.pushes.depth());
    },
  });

  new Gauge({
    name: 'rgrid_agent_index_entries',
    help: 'Index entries by kind',
    labelNames: ['kind'],
    registers: r,
    collect() {
      if (!sources) return;
      for (const kind of ['image', 'deps'] as const) this.set({ kind }, sources.index.list({ kind }).length);
    },
  });
  new Gauge({
    name: 'rgrid_agent_index_bytes',
    help: 'Sum of the engine image sizes of index entries, by kind',
    labelNames: ['kind'],
    registers: r,
    collect() {
      if (!sources) return;
      for (const kind of ['image', 'deps'] as const) this.set({ kind }, sources.index.list({ kind }).reduce((n, e) => n + e.size_bytes, 0));
    },
  });
  new Gauge({
    name: 'rgrid_agent_outbox_depth',
    help: 'Sync ops waiting in the durable outbox',
    registers: r,
    collect() {
      if (sources) this.set(sources.index.outbox.depth());
    },
  });
  new Gauge({
    name: 'rgrid_agent_outbox_oldest_op_age_seconds',
    help: 'Age of the oldest op in the outbox (0 when empty)',
    registers: r,
    collect() {
      const oldest = sources?.index.outbox.oldestAt();
      this.set(oldest === undefined ? 0 : Math.max(0, (Date.now() - oldest) / 1000));
    },
  });
  new Counter({
    name: 'rgrid_agent_outbox_ops_enqueued_total',
    help: 'Outbox ops created since start, by type (touches are coalesced per key: far fewer than hits)',
    labelNames: ['type'],
    registers: r,
    collect() {
      if (!sources) return;
      mirror(this, Object.entries(sources.index.outbox.enqueued).map(([type, n]: [string, number]) => [{ type: type as OutboxOpType }, n]));
    },
  });
  new Gauge({
    name: 'rgrid_agent_sync_state',
    help: 'Sync state: 1 for the current one of ok|retrying|open|disabled',
    labelNames: ['state'],
    registers: r,
    collect() {
      const state = sources?.sync?.().state ?? 'disabled';
      for (const s of SYNC_STATES) this.set({ state: s }, s === state ? 1 : 0);
    },
  });
  new Gauge({
    name: 'rgrid_agent_sync_last_success_timestamp_seconds',
    help: 'Unix time of the last successful conversation with the control plane (0: never)',
    registers: r,
    collect() {
      const at = sources?.sync?.().last_success_at;
      this.set(at ? Date.parse(at) / 1000 : 0);
    },
  });
  for (const [what, field] of [['batches', 'batches_sent'], ['ops', 'ops_sent'], ['snapshots', 'snapshots_sent']] as const) {
    new Counter({
      name: `rgrid_agent_sync_${what}_sent_total`,
      help: `Sync ${what === 'batches' ? 'op batches' : what} acknowledged by the control plane since start`,
      registers: r,
      collect() {
        const s = sources?.sync?.();
        if (s) mirror(this, [[{}, s[field]]]);
      },
    });
  }
  new Gauge({
    name: 'rgrid_agent_build_queue',
    help: 'Builds waiting (queued) and running (building)',
    labelNames: ['state'],
    registers: r,
    collect() {
      const q = sources?.queue?.();
      if (!q) return;
      this.set({ state: 'queued' }, q.queued);
      this.set({ state: 'building' }, q.building);
    },
  });
  new Gauge({
    name: 'rgrid_agent_warm_layers',
    help: 'Cache-warming dependency layers by state (total|done|failed|building)',
    labelNames: ['state'],
    registers: r,
    collect() {
      const w = sources?.warm?.();
      if (!w) return;
      for (const [state, n] of Object.entries(w)) this.set({ state }, n);
    },
  });

  return {
    registry,
    lookup: (kind, hit) => lookups.inc({ kind, result: hit ? 'hit' : 'miss' }),
    build(kind, ok, seconds) {
      builds.inc({ kind, result: ok ? 'ok' : 'failed' });
      if (ok) buildSeconds.observe({ kind }, seconds);
    },
    pruned(kind, reason, bytes) {
      prunes.inc({ kind, reason });
      freed.inc(bytes);
    },
    drift: (type, count) => drift.inc({ type }, count),
    registryPull: (kind, result) => pulls.inc({ kind, result }),
    registryPush: (kind, ok) => pushes.inc({ kind, result: ok ? 'ok' : 'failed' }),
    leaseWait: (kind, outcome, seconds) => leaseWaits.observe({ kind, outcome }, seconds),
    resolution(outcome, seconds) {
      resolutions.inc({ outcome });
      resolutionSeconds.observe(seconds);
    },
    lockAnswer: (resolution) => lockAnswers.inc({ resolution }),
    setSources(s) {
      sources = s;
    },
    setImageProbe(stats) {
      probeStats = stats;
    },
    setResolutionsRunning(running) {
      resolutionsRunning = running;
    },
    text: () => registry.metrics(),
    contentType: registry.contentType,
  };
}
