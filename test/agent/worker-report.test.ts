import { describe, expect, it } from 'vitest';
import { isStorableText } from '../../common/names.js';
import { ERROR_MAX_CHARS, reportError, runError, runFailure } from '../../agent/worker/report.js';

const ok = { timed_out: false, output_limit: null, oom_killed: false, exit_code: 0 };

describe('what the worker reports', () => {
  it('makes error text storable and cuts it between code points', () => {
    expect(reportError('a\u0000b')).toBe('a\uFFFDb');
    expect(reportError('lone \ud800 surrogate')).toBe('lone \uFFFD surrogate');
    const emoji = '😀'.repeat(3000);
    const cut = reportError(emoji);
    expect(cut.length).toBeLessThanOrEqual(ERROR_MAX_CHARS);
    expect(isStorableText(cut)).toBe(true);
    expect(cut.endsWith('😀…')).toBe(true);
    const shifted = reportError(`x${emoji}`);
    expect(shifted.length).toBeLessThanOrEqual(ERROR_MAX_CHARS);
    expect(isStorableText(shifted)).toBe(true);
    expect(reportError('short')).toBe('short');
  });

  it('names the failure: timeout, then outputs over the limit, then memory, then the exit code', () => {
    expect(runFailure(ok)).toBeNull();
    expect(runFailure({ ...ok, exit_code: 3 })).toBe('nonzero_exit');
    expect(runFailure({ ...ok, exit_code: 137, oom_killed: true })).toBe('memory_limit');
    expect(runFailure({ ...ok, exit_code: 1, oom_killed: true, output_limit: 'too big' })).toBe('output_limit');
    expect(runFailure({ ...ok, timed_out: true, output_limit: 'too big' })).toBe('timeout');
    expect(runError({ ...ok, output_limit: 'output "big" is 2048 MiB' }, 1000)).toBe('outputs cut at the output limit, none kept: output "big" is 2048 MiB');
    expect(runError({ ...ok, timed_out: true }, 2500)).toBe('killed after the 2.5 s timeout');
    expect(runError({ ...ok, exit_code: 2 }, 1000)).toBeNull();
  });
});
