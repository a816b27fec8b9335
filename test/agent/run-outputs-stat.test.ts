// The outputs directory's stat, which lets a run skip reading an empty outputs archive
// (agent/runner/outputs.ts): the engine's header is parsed strictly, and only a stat equal in every field
// to the one taken when the holder was made counts as "unchanged".
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { outputsUnchanged, parsePathStat, type OutputsDirStat } from '../../agent/runner/outputs.js';

const header = (value: unknown): string => Buffer.from(JSON.stringify(value)).toString('base64');
// What dockerd 20.10 sent for an empty outputs tmpfs (a directory, mode 0700: 2^31 | 0o700).
const empty = { name: 'outputs', size: 40, mode: 2147484096, mtime: '2026-12-02T04:48:19.915710544Z', linkTarget: '' };

describe('the outputs directory stat', () => {
  it('parses the engine\'s path-stat header, and nothing else', () => {
    expect(parsePathStat(header(empty))).toEqual({ size: 40, mode: 2147484096, mtime: '2026-12-02T04:48:19.915710544Z' });
    expect(parsePathStat(undefined)).toBeUndefined();
    expect(parsePathStat(['a'])).toBeUndefined();
    expect(parsePathStat('not base64 json')).toBeUndefined();
    expect(parsePathStat(header({ ...empty, size: '40' }))).toBeUndefined();
    expect(parsePathStat(header({ ...empty, mtime: '' }))).toBeUndefined();
    expect(parsePathStat(header({ size: 40, mode: 1 }))).toBeUndefined();
    expect(parsePathStat(header({ ...empty, linkTarget: 'x'.repeat(5000) }))).toBeUndefined();
  });

  it('is unchanged only when both stats are known and equal in size, mode and time', () => {
    const base: OutputsDirStat = { size: 40, mode: 2147484096, mtime: empty.mtime };
    expect(outputsUnchanged(base, { ...base })).toBe(true);
    expect(outputsUnchanged(undefined, base)).toBe(false);
    expect(outputsUnchanged(base, undefined)).toBe(false);
    // One file written: the directory's size counts it, even with the time set back.
    expect(outputsUnchanged(base, { ...base, size: 60 })).toBe(false);
    // A file written and removed again: same size, a new time.
    expect(outputsUnchanged(base, { ...base, mtime: '2026-12-02T04:48:20.000000001Z' })).toBe(false);
    fc.assert(fc.property(
      fc.record({ size: fc.nat(), mode: fc.nat(), mtime: fc.string({ minLength: 1 }) }),
      fc.record({ size: fc.nat(), mode: fc.nat(), mtime: fc.string({ minLength: 1 }) }),
      (a, b) => outputsUnchanged(a, b) === (a.size === b.size && a.mode === b.mode && a.mtime === b.mtime),
    ));
  });
});
