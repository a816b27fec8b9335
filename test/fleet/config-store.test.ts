import { describe, expect, it } from 'vitest';
import { resolveConfig } from '../../agent/config.js';
import { createConfigStore, mergeLive } from '../../agent/config-store.js';

const base = { socket: '/tmp/s', data_dir: '/tmp/d', runtimes: { py: 'img' } };

describe('live config merge', () => {
  it('applies live keys, keeps restart-only keys at their running values, and notifies listeners', () => {
    const running = resolveConfig(base, {});
    const candidate = resolveConfig({ ...base, socket: '/tmp/other', prune_ttl_s: 5, build_concurrency: 3, control_url: 'http://127.0.0.1:1' }, {});
    const { merged, changed, needsRestart } = mergeLive(running, candidate);
    expect(changed).toEqual(['build_concurrency', 'control_url', 'prune_ttl_s']);
    expect(needsRestart).toEqual(['socket']);
    expect(merged).toMatchObject({ socket: '/tmp/s', prune_ttl_s: 5, build_concurrency: 3, control_url: 'http://127.0.0.1:1' });
    // A live key removed from the file goes back to unset.
    expect(mergeLive(merged, running).merged.control_url).toBeUndefined();

    const store = createConfigStore(running, '/etc/agent.json');
    const seen: number[] = [];
    store.onChange((next, prev) => seen.push(prev.build_concurrency, next.build_concurrency));
    store.set(merged);
    expect(store.get().prune_ttl_s).toBe(5);
    expect(seen).toEqual([1, 3]);
  });

  it('rejects watermarks in the wrong order', () => {
    expect(() => resolveConfig({ ...base, disk_high_percent: 70, disk_low_percent: 80 }, {})).toThrow(/disk_low_percent/);
  });
});
