import { describe, expect, it } from 'vitest';
import { pair } from '../../bench/bench-pairs.js';
import { cachedPathTable, formatCachedPath } from '../../bench/cached-path.js';

const fastpath = (over: { warm?: number[]; heavy?: number[] | { error: string }; help?: number[]; hits?: number[] } = {}): Record<string, unknown> => {
  const bare = [400, 410, 420];
  const node = [60, 70, 80];
  const rows = [
    { ...pair('warm', 'bare', over.warm ?? [500, 520, 540], bare), id: 'warm_run' },
    { ...pair('help', 'node', over.help ?? [100, 110, 120], node), id: 'cli_help' },
    { ...pair('ls', 'node', [100, 110, 120], node), id: 'cli_ls' },
    { ...pair('ensure', 'node', [140, 150, 160], node), id: 'cli_ensure' },
    { ...pair('socket', 'inspect', over.hits ?? [1, 2, 4.9], [1, 1, 2], 99), id: 'socket_ensure_p99' },
  ];
  const heavy = over.heavy ?? [900, 950, 1000];
  if (Array.isArray(heavy)) rows.push({ ...pair('heavy', 'bare', heavy, [800, 850, 900]), id: 'heavy_warm_run' });
  return { rows, heavy: Array.isArray(heavy) ? { row: {} } : heavy };
};

const phase = (p99: number, throughput = 2000, non2xx = 0): Record<string, number> => ({
  latency_p99_ms: p99, throughput_rps: throughput, offered_rate_rps: 2000, non_2xx: non2xx, errors: 0, timeouts: 0,
});
const control = (resolves: Array<Record<string, number>>, floors = [phase(3), phase(4)], ab?: unknown[]): Record<string, unknown> => ({
  resolve_at_target_rate_rounds: resolves, http_floor_at_target_rate_rounds: floors, ...(ab ? { resolve_at_target_rate_ab: ab, reference: '/ref' } : {}),
});

describe('cachedPathTable', () => {
  it('holds the run rows to the difference from bare docker run and the CLI rows to the whole command', () => {
    const rows = cachedPathTable(fastpath({ warm: [560, 570, 580], help: [140, 151, 160] }), control([phase(8), phase(9)]));
    expect(rows.map((r) => r.met)).toEqual([false, true, false, true, true, true, true]);
    expect(rows[0]).toMatchObject({ subject_ms: 570, reference_ms: 410, delta_ms: 160, ratio: 1.39 });
    expect(rows[2]).toMatchObject({ subject_ms: 151, delta_ms: 81 });
  });

  it('holds resolve to the worst round, and to the offered rate without errors', () => {
    expect(cachedPathTable(fastpath(), control([phase(8), phase(12)])).at(-1)).toMatchObject({ subject_ms: 12, reference_ms: 4, met: false });
    const slow = cachedPathTable(fastpath(), control([phase(5), phase(6, 1800)])).at(-1)!;
    expect(slow.met).toBe(false);
    expect(slow.note).toMatch(/rate was not reached/);
    expect(cachedPathTable(fastpath(), control([phase(5, 2000, 3)])).at(-1)!.met).toBe(false);
    expect(cachedPathTable(fastpath(), control([phase(5, 1990)])).at(-1)!.met).toBe(true);
  });

  it('adds the reference build as a row of its own, held to no goal', () => {
    const rows = cachedPathTable(fastpath(), control([phase(5)], [phase(3)], [{ server: 'this build', ...phase(5) }, { server: 'reference', ...phase(10) }]));
    expect(rows.at(-1)).toMatchObject({ reference_ms: 10, ratio: 0.5, met: null });
  });

  it('says why a row is missing instead of judging it', () => {
    const rows = cachedPathTable(fastpath({ heavy: { error: 'apt offers no python3-scipy' } }), undefined);
    expect(rows[1]).toMatchObject({ met: null, note: 'failed: apt offers no python3-scipy' });
    expect(rows.at(-1)).toMatchObject({ met: null, note: 'not run' });
    const text = formatCachedPath(rows, { at_start: [1.5, 1, 1], at_end: [2.25, 1, 1] });
    expect(text).toContain('failed: apt offers no python3-scipy');
    expect(text).toContain('1-minute load: 1.5 at the start, 2.25 at the end');
  });
});
