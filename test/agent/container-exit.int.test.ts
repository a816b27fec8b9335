/**
 * A run container's exit, watched from before its start (agent/runner/container-exit.ts), against a real
 * engine. The hang this guards against: an earlier version sent the engine's `next-exit` wait alongside
 * the start without waiting for the engine to have it; when the wait reached the engine after a quick
 * container had already exited, it was never answered — the run never ended and its claim was renewed
 * for ever (the batch of 100 hung in 2 of ~8 runs). Here that late wait is made on purpose.
 */
import { afterAll, describe, expect, inject, it } from 'vitest';
import type Docker from 'dockerode';
import { watchExit } from '../../agent/runner/container-exit.js';
import { docker, uniqueAccount } from './helpers.js';

const label = `io.rgrid.test=${uniqueAccount('exit')}`;
const made: Docker.Container[] = [];

async function container(cmd: string[]): Promise<Docker.Container> {
  const [k, v] = label.split('=') as [string, string];
  const c = await docker.createContainer({ Image: inject('baseImage'), Cmd: cmd, Labels: { [k]: v }, HostConfig: { NetworkMode: 'none', LogConfig: { Type: 'none', Config: {} } } });
  made.push(c);
  return c;
}

afterAll(async () => {
  for (const c of made) await c.remove({ force: true }).catch(() => undefined);
});

describe('the exit of a run container', () => {
  it('registered before the start, the exit of a container that ends at once is answered by the wait, every time', async () => {
    for (let i = 0; i < 8; i++) {
      const code = i % 2 === 0 ? 0 : 3;
      const c = await container(['sh', '-c', `exit ${code}`]);
      const watch = await watchExit(docker, c);
      await c.start();
      expect(await watch.exited).toEqual({ exitCode: code, via: 'wait' });
    }
  });

  it('a wait that reaches the engine after the exit (the earlier hang) still ends, with the real exit status', async () => {
    const c = await container(['sh', '-c', 'exit 7']);
    await c.start();
    await c.wait(); // not-running: the container has exited now
    // The engine's plain next-exit wait, sent now, is never answered: the exit it waits for is over.
    const abort = new AbortController();
    const plain = c.wait({ condition: 'next-exit', abortSignal: abort.signal }).then(() => 'the plain wait' as const, () => 'aborted' as const);
    const watch = await watchExit(docker, c, { pollMs: 200 });
    const first = await Promise.race([plain, watch.exited.then(() => 'the watch' as const)]);
    abort.abort();
    expect(first).toBe('the watch');
    expect(await watch.exited).toEqual({ exitCode: 7, via: 'inspect' });
    expect(await plain).toBe('aborted');
  });

  it('a killed container is seen exiting, and a cancelled watch rejects without hanging', async () => {
    const c = await container(['sleep', '60']);
    const watch = await watchExit(docker, c);
    await c.start();
    await c.kill({ signal: 'SIGKILL' });
    watch.check();
    expect((await watch.exited).exitCode).toBe(137);

    const idle = await container(['sleep', '60']);
    const cancelled = await watchExit(docker, idle);
    cancelled.cancel();
    await expect(cancelled.exited).rejects.toThrow(/cancelled/);
  });
});
