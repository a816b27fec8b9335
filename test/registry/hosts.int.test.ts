/**
 * The test hosts themselves: a real registry on loopback and two extra engines side by side. The base
 * image pushed once and pulled into each engine keeps its ID there, which is what lets workers on
 * different hosts compute the same cache keys.
 */
import Docker from 'dockerode';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import { pullImage, pushImage, startEngine, type TestEngine } from '../support/engines.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

let registry: TestRegistry;
const engines: TestEngine[] = [];

beforeAll(async () => {
  registry = await startRegistry();
  engines.push(await startEngine('host-a'), await startEngine('host-b'));
});

afterAll(async () => {
  await Promise.all(engines.map((e) => e.stop()));
  await registry?.destroy();
});

it('shares the base image between engines through the registry with one image ID', async () => {
  const main = new Docker();
  const ref = await pushImage(main, inject('baseImage'), registry.address, 'rgrid-test/python', 'bookworm');
  const ids = [];
  for (const engine of engines) {
    await expect(engine.docker.getImage(ref).inspect()).rejects.toThrow();
    ids.push(await pullImage(engine.docker, ref));
  }
  expect(ids).toEqual([inject('baseImageId'), inject('baseImageId')]);

  // An engine runs a container from it with the same sandbox the agent uses (no network).
  const engine = engines[0]!;
  const container = await engine.docker.createContainer({
    Image: ref, Cmd: ['python3', '-c', 'print(6 * 7)'], HostConfig: { NetworkMode: 'none' },
  });
  try {
    await container.start();
    const exit = (await container.wait()) as { StatusCode: number };
    expect(exit.StatusCode).toBe(0);
    const logs = await container.logs({ stdout: true });
    expect(logs.toString('utf8')).toContain('42');
  } finally {
    await container.remove({ force: true });
  }

  // Stopped, the registry refuses; started again on the same storage, it serves the same image.
  await registry.stop();
  await expect(pullImage(engines[1]!.docker, `${registry.address}/rgrid-test/python:missing`)).rejects.toThrow();
  await registry.start();
  await engines[1]!.docker.getImage(ref).remove();
  expect(await pullImage(engines[1]!.docker, ref)).toBe(inject('baseImageId'));
});
