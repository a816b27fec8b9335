import type { Pair } from './bench-pairs.js';
import { round } from './bench-pairs.js';

/**
 * "The cached path": the table the project is judged on, from the results of one bench run — the
 * fast-path bench's rows (bench/fast-path-bench.ts, its heavy row from bench/heavy-run-bench.ts) and
 * the control bench's rounds at 2,000 requests/s (bench/control-bench.ts). Each row is a subject against
 * its like-for-like reference measured in the same run, with the goal it is held to.
 */
export interface CachedPathRow {
  measure: string;
  subject: string;
  subject_ms: number | null;
  reference: string;
  reference_ms: number | null;
  ratio: number | null;
  delta_ms: number | null;
  goal: string;
  /** null: not measured in this run (`note` says why). */
  met: boolean | null;
  note?: string;
}

/** Which figure a goal is held to: the difference from the reference, or the subject itself. */
type Goal = { text: string; check: (p: { subject: number; delta: number }) => boolean };
const DELTA_150: Goal = { text: '≤ 150 ms over the reference', check: (p) => p.delta <= 150 };
const WHOLE_150: Goal = { text: '≤ 150 ms (whole command)', check: (p) => p.subject <= 150 };

function fromPair(measure: string, rows: readonly Pair[], id: string, goal: Goal, missing: string): CachedPathRow {
  const p = rows.find((r) => r.id === id);
  if (!p) return { measure, subject: '-', subject_ms: null, reference: '-', reference_ms: null, ratio: null, delta_ms: null, goal: goal.text, met: null, note: missing };
  return {
    measure, subject: p.name, subject_ms: p.subject_ms, reference: p.reference, reference_ms: p.reference_ms, ratio: p.ratio, delta_ms: p.delta_ms,
    goal: goal.text, met: goal.check({ subject: p.subject_ms, delta: p.delta_ms }),
  };
}

interface RatePhase { latency_p99_ms: number; throughput_rps: number; offered_rate_rps: number; non_2xx: number; errors: number; timeouts: number; load_1min_at_start?: number }

/** Resolve's p99 against the /healthz floor's, each the worst of its rounds; met only at the offered rate without errors. */
function resolveRows(control: Record<string, unknown> | undefined): CachedPathRow[] {
  const measure = 'POST /v1/resolve, 1M entries, 1,000 workers, 2,000 req/s: p99';
  const goal = 'p99 < 10 ms';
  const resolves = control?.resolve_at_target_rate_rounds as RatePhase[] | undefined;
  const floors = control?.http_floor_at_target_rate_rounds as RatePhase[] | undefined;
  if (!resolves?.length || !floors?.length) {
    const note = control && 'error' in control ? `failed: ${String(control.error)}` : 'not run';
    return [{ measure, subject: '-', subject_ms: null, reference: '-', reference_ms: null, ratio: null, delta_ms: null, goal, met: null, note }];
  }
  const worst = (phases: RatePhase[]): number => Math.max(...phases.map((p) => p.latency_p99_ms));
  const clean = (phases: RatePhase[]): boolean => phases.every((p) => p.non_2xx + p.errors + p.timeouts === 0 && p.throughput_rps >= 0.95 * p.offered_rate_rps);
  const s = worst(resolves);
  const f = worst(floors);
  const n = resolves.length;
  const rows: CachedPathRow[] = [{
    measure, subject: `resolve at ${resolves[0]!.offered_rate_rps} req/s, p99 (worst of ${n} round${n === 1 ? '' : 's'})`, subject_ms: s,
    reference: `GET /healthz on the same server at the same rate (HTTP + SELECT 1), p99 (worst of ${floors.length})`, reference_ms: f,
    ratio: round(s / f, 2), delta_ms: round(s - f, 2), goal, met: s < 10 && clean(resolves),
    ...(clean(resolves) ? {} : { note: 'the offered rate was not reached, or requests failed' }),
  }];
  const ab = control?.resolve_at_target_rate_ab as Array<RatePhase & { server: string }> | undefined;
  const referenceBuild = ab?.filter((p) => p.server === 'reference') ?? [];
  if (referenceBuild.length > 0) {
    const r = worst(referenceBuild);
    rows.push({
      measure: `the same, against the reference build (${String(control?.reference)})`, subject: rows[0]!.subject, subject_ms: s,
      reference: `the reference build's resolve, p99 (worst of ${referenceBuild.length})`, reference_ms: r, ratio: round(s / r, 2), delta_ms: round(s - r, 2),
      goal: '(A/B, no goal)', met: null,
    });
  }
  return rows;
}

export function cachedPathTable(fastpath: Record<string, unknown> | undefined, control: Record<string, unknown> | undefined): CachedPathRow[] {
  const rows = (fastpath?.rows as Pair[] | undefined) ?? [];
  const fastMissing = fastpath && 'error' in fastpath ? `failed: ${String(fastpath.error)}` : 'not run';
  const heavy = fastpath?.heavy as { error?: string } | undefined;
  const heavyMissing = heavy?.error ? `failed: ${heavy.error}` : fastpath && !heavy ? 'skipped (RGRID_BENCH_HEAVY=0)' : fastMissing;
  return [
    fromPair('warm run − bare docker run (network none, 1 CPU, 1 GiB, 256 PIDs, no caps, uid 65534), small script', rows, 'warm_run', DELTA_150, fastMissing),
    fromPair('the same, numpy + scipy + requests + pydantic from real wheels, imported', rows, 'heavy_warm_run', DELTA_150, heavyMissing),
    fromPair('rgrid-agent --help, whole command', rows, 'cli_help', WHOLE_150, fastMissing),
    fromPair('rgrid-agent ls, whole command', rows, 'cli_ls', WHOLE_150, fastMissing),
    fromPair('rgrid-agent ensure (hit), whole command', rows, 'cli_ensure', WHOLE_150, fastMissing),
    fromPair('ensure hit over the socket, p99 of 1,000', rows, 'socket_ensure_p99', { text: 'p99 < 5 ms', check: (p) => p.subject < 5 }, fastMissing),
    ...resolveRows(control),
  ];
}

const ms = (v: number | null): string => (v === null ? '-' : `${v} ms`);
const verdict = (r: CachedPathRow): string => (r.met === null ? (r.note ?? '-') : r.met ? 'met' : `not met${r.note ? ` (${r.note})` : ''}`);

/** The table as Markdown (what docs/benchmarks.md quotes), with the machine's load around the run. */
export function formatCachedPath(rows: readonly CachedPathRow[], load: { at_start: number[]; at_end: number[] }): string {
  const lines = [
    '| measure | subject | reference | ratio | delta | goal | |',
    '| --- | --- | --- | --- | --- | --- | --- |',
    ...rows.map((r) => `| ${r.measure} | ${r.subject}: ${ms(r.subject_ms)} | ${r.reference}: ${ms(r.reference_ms)} | ${r.ratio === null ? '-' : `${r.ratio}×`} | ${r.delta_ms === null ? '-' : `${r.delta_ms >= 0 ? '+' : ''}${r.delta_ms} ms`} | ${r.goal} | ${verdict(r)} |`),
    '',
    `1-minute load: ${load.at_start[0]} at the start, ${load.at_end[0]} at the end (1/5/15 min: ${load.at_start.join(' / ')} → ${load.at_end.join(' / ')})`,
  ];
  return lines.join('\n');
}
