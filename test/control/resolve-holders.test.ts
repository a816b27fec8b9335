// control/placement/query.ts parseHolders: the aggregated holder string → one holder per worker, split
// into holders of the newest lock and holders of an older one only.
import { describe, expect, it } from 'vitest';
import { parseHolders } from '../../control/placement/query.js';

describe('parseHolders', () => {
  it('keeps one holder per worker, ordered by worker id', () => {
    expect(parseHolders('w2 n w10 n w1 n w2 n w2 n')).toEqual({
      current: [{ worker_id: 'w1' }, { worker_id: 'w10' }, { worker_id: 'w2' }],
      older: [],
    });
  });

  it('puts a worker with any entry of the newest lock among the current holders, the others among the older', () => {
    expect(parseHolders('a o b o a n c n c o')).toEqual({
      current: [{ worker_id: 'a' }, { worker_id: 'c' }],
      older: [{ worker_id: 'b' }],
    });
  });

  it('answers no holders for no rows', () => {
    expect(parseHolders(null)).toEqual({ current: [], older: [] });
    expect(parseHolders('')).toEqual({ current: [], older: [] });
  });

  it('reads worker ids with dots, colons and digits whole', () => {
    expect(parseHolders('host-a.example:1 n 10.0.0.7 o').current).toEqual([{ worker_id: 'host-a.example:1' }]);
    expect(parseHolders('host-a.example:1 n 10.0.0.7 o').older).toEqual([{ worker_id: '10.0.0.7' }]);
  });
});
