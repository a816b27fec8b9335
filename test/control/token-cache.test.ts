// control/token-cache.ts: how long a token lookup is reused (the revocation and expiry bounds of docs/control.md).
import { describe, expect, it } from 'vitest';
import { createTokenCache } from '../../control/token-cache.js';
import { hashToken, type TokenLookup } from '../../control/repositories/tokens.js';

function row(over: Partial<TokenLookup> = {}): TokenLookup {
  return {
    id: 't1', role: 'scheduler', account: 'A', worker_id: null, created_at: new Date(0), expires_at: null,
    revoked: false, expired: false, worker_accounts: [], expires_in_ms: null, ...over,
  };
}

function setup(ttlMs: number, answer: () => TokenLookup | undefined) {
  let clock = 1_000_000;
  const seen: string[] = [];
  const cache = createTokenCache(
    (hash) => {
      seen.push(hash);
      return Promise.resolve(answer());
    },
    { ttlMs, now: () => clock },
  );
  return { cache, seen, advance: (ms: number) => (clock += ms) };
}

describe('token cache', () => {
  it('reuses a valid lookup for ttlMs, keyed by the hash, then reads again', async () => {
    const current = row();
    const { cache, seen, advance } = setup(1000, () => current);
    expect(await cache.get('secret')).toEqual(current);
    advance(999);
    await cache.get('secret');
    expect(seen).toEqual([hashToken('secret')]);
    advance(1);
    await cache.get('secret');
    expect(seen).toHaveLength(2);
  });

  it('never keeps a token past its expiry on the database clock', async () => {
    const { cache, seen, advance } = setup(60_000, () => row({ expires_at: new Date(), expires_in_ms: 300 }));
    await cache.get('secret');
    advance(299);
    await cache.get('secret');
    expect(seen).toHaveLength(1);
    advance(1);
    await cache.get('secret');
    expect(seen).toHaveLength(2);
  });

  it('does not keep unknown, revoked or expired tokens', async () => {
    for (const answer of [undefined, row({ revoked: true }), row({ expired: true, expires_in_ms: -5 })]) {
      const { cache, seen } = setup(60_000, () => answer);
      expect(await cache.get('secret')).toEqual(answer);
      await cache.get('secret');
      expect(seen).toHaveLength(2);
    }
  });

  it('shares one lookup between concurrent requests', async () => {
    const { cache, seen } = setup(1000, () => row());
    await Promise.all([cache.get('secret'), cache.get('secret'), cache.get('secret')]);
    expect(seen).toHaveLength(1);
  });

  it('forgets everything on clear (a revocation or creation in this process)', async () => {
    let current = row();
    const { cache, seen } = setup(60_000, () => current);
    await cache.get('secret');
    current = row({ revoked: true });
    cache.clear();
    expect((await cache.get('secret'))?.revoked).toBe(true);
    expect(seen).toHaveLength(2);
  });

  it('does not keep a failed lookup', async () => {
    let fail = true;
    let calls = 0;
    const cache = createTokenCache(() => {
      calls++;
      return fail ? Promise.reject(new Error('db down')) : Promise.resolve(row());
    }, { ttlMs: 60_000 });
    await expect(cache.get('secret')).rejects.toThrow('db down');
    fail = false;
    expect(await cache.get('secret')).toEqual(row());
    expect(calls).toBe(2);
  });

  it('looks up every time with ttlMs 0', async () => {
    const { cache, seen } = setup(0, () => row());
    await cache.get('secret');
    await cache.get('secret');
    expect(seen).toHaveLength(2);
    expect(cache.size).toBe(0);
  });
});
