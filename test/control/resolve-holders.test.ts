// control/placement/query.ts parseHolders: the aggregated holder string → one holder per worker.
import { describe, expect, it } from 'vitest';
import { parseHolders } from '../../control/placement/query.js';

describe('parseHolders', () => {
  it('keeps one holder per worker, its largest entry, ordered by worker id', () => {
    expect(parseHolders('w2 300 w10 5 w1 7 w2 900 w2 100')).toEqual([
      { worker_id: 'w1', size_bytes: 7 },
      { worker_id: 'w10', size_bytes: 5 },
      { worker_id: 'w2', size_bytes: 900 },
    ]);
  });

  it('answers no holders for no rows', () => {
    expect(parseHolders(null)).toEqual([]);
    expect(parseHolders('')).toEqual([]);
  });

  it('reads sizes beyond 2^32 exactly', () => {
    expect(parseHolders('host-a.example:1 1099511627776')).toEqual([{ worker_id: 'host-a.example:1', size_bytes: 1099511627776 }]);
  });
});
