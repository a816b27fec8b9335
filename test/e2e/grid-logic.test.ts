// Pure logic of the grid: log tails, result status, dispatch load, exit codes.
import { describe, expect, it } from 'vitest';
import { TailBuffer } from '../../agent/worker/tail-buffer.js';
import { capLog, resultStatus } from '../../control/dispatch/repository.js';
import { dispatchLoad, pick } from '../../control/placement/index.js';
import { loadRatio, rankPlacement } from '../../control/placement/rank.js';
import { exitStatusOf as exitStatus } from '../../common/executions.js';
import { formatBar } from '../../client/progress.js';

describe('TailBuffer', () => {
  it('keeps the last bytes and says it dropped some', () => {
    const t = new TailBuffer(10);
    for (let i = 0; i < 100; i++) t.push(`${i % 10}`);
    expect(t.text()).toBe('0123456789');
    expect(t.truncated).toBe(true);
    const small = new TailBuffer(10);
    small.push('abc');
    expect(small.text()).toBe('abc');
    expect(small.truncated).toBe(false);
  });
});

describe('result status and logs', () => {
  it('maps exit codes and failures', () => {
    expect(resultStatus({ exit_code: 0 })).toEqual({ status: 'succeeded', failure: null });
    expect(resultStatus({ exit_code: 3 })).toEqual({ status: 'failed', failure: 'nonzero_exit' });
    expect(resultStatus({ exit_code: 137, failure: 'memory_limit' })).toEqual({ status: 'failed', failure: 'memory_limit' });
    expect(resultStatus({ failure: 'build_failed' })).toEqual({ status: 'failed', failure: 'build_failed' });
    expect(resultStatus({})).toEqual({ status: 'failed', failure: 'error' });
  });
  it('caps a log to its tail', () => {
    expect(capLog('abcdef', 3)).toEqual({ text: 'def', truncated: true });
    expect(capLog('ab', 3)).toEqual({ text: 'ab', truncated: false });
    expect(capLog(undefined, 3)).toEqual({ text: '', truncated: false });
  });
  it('exits like docker run', () => {
    expect(exitStatus({ exit_code: 0, failure: null })).toBe(0);
    expect(exitStatus({ exit_code: 3, failure: 'nonzero_exit' })).toBe(3);
    expect(exitStatus({ exit_code: 137, failure: 'timeout' })).toBe(124);
    expect(exitStatus({ exit_code: 137, failure: 'memory_limit' })).toBe(137);
    expect(exitStatus({ exit_code: null, failure: 'build_failed' })).toBe(1);
    expect(exitStatus({ exit_code: null, failure: 'lost' })).toBe(1);
    // The script exited 0 but wrote more than the output limit: not a success.
    expect(exitStatus({ exit_code: 0, failure: 'output_limit' })).toBe(1);
  });
});

describe('dispatch load', () => {
  it('never saturates, so deeper queues always rank lower', () => {
    expect(loadRatio(dispatchLoad({ worker_id: 'a', capacity: 2 }, 49))).toBeLessThan(loadRatio(dispatchLoad({ worker_id: 'a', capacity: 2 }, 50)));
    expect(loadRatio(dispatchLoad({ worker_id: 'a', capacity: 0 }, 0))).toBe(0);
  });
  it('alternates a batch over two workers that both hold the image', () => {
    const counts: Record<string, number> = { a: 0, b: 0 };
    for (let i = 0; i < 10; i++) {
      const ranked = rankPlacement({
        liveWorkers: 2,
        imageHolders: [{ worker_id: 'a' }, { worker_id: 'b' }],
        depsHolders: [],
        registry: { image: null, deps: null },
        hasRequirements: true,
        cost: { pullBytesPerS: 100 * 1024 * 1024 },
        candidates: ['a', 'b'].map((w) => dispatchLoad({ worker_id: w, capacity: 2 }, counts[w]!)),
        limit: 2,
      });
      counts[pick(ranked)!]!++;
    }
    expect(counts).toEqual({ a: 5, b: 5 });
  });
  it('prefers the image holder on an idle grid, and avoids a worker that lost the claim', () => {
    const ranked = rankPlacement({
      liveWorkers: 2, imageHolders: [{ worker_id: 'b' }], depsHolders: [], registry: { image: null, deps: null },
      hasRequirements: true, cost: { pullBytesPerS: 100 * 1024 * 1024 },
      candidates: [dispatchLoad({ worker_id: 'a', capacity: 2 }, 0), dispatchLoad({ worker_id: 'b', capacity: 2 }, 0)], limit: 2,
    });
    expect(pick(ranked)).toBe('b');
    expect(pick(ranked, ['b'])).toBe('a');
    expect(pick(ranked.slice(0, 1), ['b'])).toBe('b');
    expect(pick([], ['b'])).toBeNull();
  });
});

describe('progress bar', () => {
  it('formats', () => {
    expect(formatBar(5 * 1024 * 1024, 10 * 1024 * 1024, 10)).toBe('[#####.....] 50% 5.0/10.0 MB');
  });
});
