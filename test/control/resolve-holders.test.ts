// control/placement/query.ts parseHolders: the aggregated holder string → one holder per worker, split
// into holders of the newest lock and holders of an older one only.
import { describe, expect, it } from 'vitest';
import { parseHolders } from '../../control/placement/query.js';

describe('parseHolders', () => {
  it('keeps one holder per worker, its largest entry, ordered by worker id', () => {
    expect(parseHolders('w2 300 n w10 5 n w1 7 n w2 900 n w2 100 n')).toEqual({
      current: [
        { worker_id: 'w1', size_bytes: 7 },
        { worker_id: 'w10', size_bytes: 5 },
        { worker_id: 'w2', size_bytes: 900 },
      ],
      older: [],
    });
  });

  it('puts a worker with any entry of the newest lock among the current holders, the others among the older', () => {
    expect(parseHolders('a 10 o b 20 o a 5 n c 30 n c 40 o')).toEqual({
      current: [{ worker_id: 'a', size_bytes: 10 }, { worker_id: 'c', size_bytes: 40 }],
      older: [{ worker_id: 'b', size_bytes: 20 }],
    });
  });

  it('answers no holders for no rows', () => {
    expect(parseHolders(null)).toEqual({ current: [], older: [] });
    expect(parseHolders('')).toEqual({ current: [], older: [] });
  });

  it('reads sizes beyond 2^32 exactly', () => {
    expect(parseHolders('host-a.example:1 1099511627776 n').current).toEqual([{ worker_id: 'host-a.example:1', size_bytes: 1099511627776 }]);
  });
});
