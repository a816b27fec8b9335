// Two agents (separate data dirs and worker ids, one engine). An execution goes
// to the agent that holds the image; once both hold it, a batch spreads over both.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { nonceScript, tempDir, uniqueAccount } from '../agent/helpers.js';
import { rgridRun, useGrid } from './grid.js';

const grid = useGrid();

describe('placement over two agents', () => {
  it('sends work to the image holder, and spreads a batch when both hold it', async () => {
    const account = uniqueAccount('place');
    await grid.agent(account, 'pl-a');
    await grid.agent(account, 'pl-b');
    const env = { url: grid.url(), token: await grid.clientToken(account) };
    const dir = tempDir('e2e-place');
    writeFileSync(join(dir, 'one.py'), nonceScript('print("one")'));
    writeFileSync(join(dir, 'two.py'), nonceScript('print("two")'));

    const first = await rgridRun([join(dir, 'one.py')], env);
    expect(first).toMatchObject({ exit_code: 0, script_cache_hit: false });
    const holder = first.worker_id;
    for (let i = 0; i < 3; i++) {
      const again = await rgridRun([join(dir, 'one.py')], env);
      expect(again).toMatchObject({ worker_id: holder, script_cache_hit: true, exit_code: 0 });
    }

    // A new script submitted as a burst of 4: nobody holds it, load alternates, both build it.
    const burst = await Promise.all(Array.from({ length: 4 }, () => rgridRun([join(dir, 'two.py')], env)));
    expect(new Set(burst.map((r) => r.worker_id))).toEqual(new Set(['pl-a', 'pl-b']));
    // Now both hold it: a batch of 10 is spread over both, every run a script hit.
    const batch = await Promise.all(Array.from({ length: 10 }, () => rgridRun([join(dir, 'two.py')], env)));
    const per = (w: string): number => batch.filter((r) => r.worker_id === w).length;
    expect(per('pl-a')).toBeGreaterThanOrEqual(3);
    expect(per('pl-b')).toBeGreaterThanOrEqual(3);
    expect(batch.every((r) => r.script_cache_hit === true && r.exit_code === 0)).toBe(true);
  });
});
