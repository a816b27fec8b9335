import { describe, expect, it } from 'vitest';
import { SingleFlight } from '../../agent/builder/single-flight.js';

describe('SingleFlight', () => {
  it('100 concurrent calls for one key run the work once; exactly one is the leader', async () => {
    const flights = new SingleFlight<string, string>();
    let runs = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const calls = Array.from({ length: 100 }, () =>
      flights.run('k', async () => {
        runs++;
        await gate;
        return `image-${runs}`;
      }),
    );
    release();
    const results = await Promise.all(calls.map((c) => c.promise));
    expect(runs).toBe(1);
    expect(new Set(results)).toEqual(new Set(['image-1']));
    expect(calls.filter((c) => c.leader).length).toBe(1);
    expect(flights.size).toBe(0);
  });

  it('different keys run separately, and a finished key runs again', async () => {
    const flights = new SingleFlight<number>();
    let runs = 0;
    await Promise.all([flights.run('a', () => Promise.resolve(++runs)).promise, flights.run('b', () => Promise.resolve(++runs)).promise]);
    await flights.run('a', () => Promise.resolve(++runs)).promise;
    expect(runs).toBe(3);
  });

  it('shares a failure with every waiter and forgets it', async () => {
    const flights = new SingleFlight<number>();
    const a = flights.run('k', () => Promise.reject(new Error('pip failed')));
    const b = flights.run('k', () => Promise.resolve(1));
    await expect(a.promise).rejects.toThrow('pip failed');
    await expect(b.promise).rejects.toThrow('pip failed');
    await expect(flights.run('k', () => Promise.resolve(2)).promise).resolves.toBe(2);
  });

  it('delivers progress events to followers, and a throwing listener does not break the work', async () => {
    const flights = new SingleFlight<string, string>();
    let emitLater!: (e: string) => void;
    let finish!: () => void;
    const leader = flights.run('k', (emit) => {
      emitLater = emit;
      return new Promise<string>((resolve) => (finish = () => resolve('done')));
    });
    const follower = flights.run('k', () => Promise.resolve('never'));
    const seen: string[] = [];
    follower.subscribe((e) => seen.push(e));
    leader.subscribe(() => {
      throw new Error('client went away');
    });
    await Promise.resolve();
    await Promise.resolve();
    emitLater('Step 1/3');
    finish();
    await expect(follower.promise).resolves.toBe('done');
    expect(seen).toEqual(['Step 1/3']);
  });
});
