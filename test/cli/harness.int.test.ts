/**
 * The process harness ends what it started: a `whileRunning` look that fails kills the command it was
 * looking at, instead of leaving it running after the test (a client held in a wait would never end).
 */
import { createServer, type Socket } from 'node:net';
import { expect, it } from 'vitest';
import { runCli } from '../support/processes.js';

it('kills the command when the look at it while it runs fails', async () => {
  // A control plane that accepts and never answers: `rgrid status` waits on it.
  const sockets: Socket[] = [];
  const silent = createServer((s) => sockets.push(s));
  await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
  const { port } = silent.address() as { port: number };
  let pid = 0;
  try {
    const run = runCli('rgrid', ['status', '0f8b3a52-5a0e-4a8e-9a39-5b2f0e4c1d77'], {
      env: { RGRID_CONTROL_URL: `http://127.0.0.1:${port}`, RGRID_TOKEN: 'rgrid_harness_test' },
      whileRunning: async (childPid) => {
        pid = childPid;
        while (sockets.length === 0) await new Promise((r) => setTimeout(r, 20));
        throw new Error('the look failed');
      },
    });
    await expect(run).rejects.toThrow('the look failed');
    expect(pid).toBeGreaterThan(0);
    expect(() => process.kill(pid, 0)).toThrow(/ESRCH/);
  } finally {
    for (const s of sockets) s.destroy();
    silent.close();
  }
});
