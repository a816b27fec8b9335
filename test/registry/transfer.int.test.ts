/**
 * Push and verified pull against a real registry and a second engine: a pull is by the recorded digest and
 * is checked against the labels, so a moved tag changes nothing and a digest of the wrong image is refused
 * and leaves nothing behind. A registry that is down is an `unavailable` within the bounded time.
 */
import Docker from 'dockerode';
import tar from 'tar-stream';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { pullVerified, pushImage, registryLocation } from '../../agent/registry/transfer.js';
import { sha256Hex } from '../../common/digest.js';
import { startEngine, type TestEngine } from '../support/engines.js';
import { startRegistry, type TestRegistry } from '../support/registry.js';

const main = new Docker();
let registry: TestRegistry;
let engine: TestEngine;
const built: string[] = [];

async function labelledImage(labels: Record<string, string>): Promise<string> {
  const pack = tar.pack();
  pack.entry({ name: 'Dockerfile' }, `FROM ${inject('baseImageId')}\n`);
  pack.finalize();
  const stream = await main.buildImage(pack as unknown as NodeJS.ReadableStream, { labels, nocache: false } as Docker.ImageBuildOptions);
  await new Promise<void>((resolve, reject) => main.modem.followProgress(stream, (err: Error | null) => (err ? reject(err) : resolve())));
  const images = await main.listImages({ filters: { label: [`io.rgrid.image-key=${labels['io.rgrid.image-key']}`] } });
  const id = images[0]!.Id;
  built.push(id);
  return id;
}

beforeAll(async () => {
  registry = await startRegistry();
  engine = await startEngine('transfer');
});

afterAll(async () => {
  await engine?.stop();
  await registry?.destroy();
  for (const id of built) await main.getImage(id).remove({ force: true }).catch(() => undefined);
});

describe('registry transfer', () => {
  const account = 'acme';
  const k1 = sha256Hex(`k1-${Date.now()}`);
  const k2 = sha256Hex(`k2-${Date.now()}`);

  it('pulls by digest, ignores a moved tag, refuses an image whose labels name another key', async () => {
    const one = await labelledImage({ 'io.rgrid.kind': 'image', 'io.rgrid.image-key': k1, 'io.rgrid.account': account });
    const two = await labelledImage({ 'io.rgrid.kind': 'image', 'io.rgrid.image-key': k2, 'io.rgrid.account': account });
    const where = registryLocation(registry.address, account, 'image', k1);
    expect(where.repository).not.toContain(account);

    const first = await pushImage(main, registry.address, one, where, { timeoutMs: 60_000 });
    // The tag now moves to another image (a careless or hostile push under the same tag).
    const moved = await pushImage(main, registry.address, two, where, { timeoutMs: 60_000 });
    expect(moved.digest).not.toBe(first.digest);

    const pulled = await pullVerified(engine.docker, registry.address, where, first.digest, { account, kind: 'image', key: k1 }, { timeoutMs: 60_000 });
    expect(pulled).toBe(one);

    // Asked for k1 but given the digest of k2's image: refused, and the engine keeps nothing of it.
    await expect(
      pullVerified(engine.docker, registry.address, where, moved.digest, { account, kind: 'image', key: k1 }, { timeoutMs: 60_000 }),
    ).rejects.toMatchObject({ code: 'digest_mismatch' });
    await expect(engine.docker.getImage(two).inspect()).rejects.toThrow();
    // The same image under another account's expectation is refused too.
    await expect(
      pullVerified(engine.docker, registry.address, where, first.digest, { account: 'other', kind: 'image', key: k1 }, { timeoutMs: 60_000 }),
    ).rejects.toMatchObject({ code: 'digest_mismatch' });
  });

  it('answers unavailable while the registry is down', async () => {
    await registry.stop();
    try {
      const where = registryLocation(registry.address, account, 'image', k2);
      await expect(
        pullVerified(engine.docker, registry.address, where, `sha256:${'0'.repeat(64)}`, { account, kind: 'image', key: k2 }, { timeoutMs: 20_000 }),
      ).rejects.toMatchObject({ code: 'unavailable' });
    } finally {
      await registry.start();
    }
  });

  it('refuses registry addresses and digests outside the naming contract', () => {
    expect(() => registryLocation('http://127.0.0.1:5000', account, 'image', k1)).toThrow(/registry/);
    expect(() => registryLocation('127.0.0.1:5000/UPPER', account, 'image', k1)).toThrow(/registry/);
    expect(() => registryLocation('127.0.0.1:99999', account, 'image', k1)).toThrow(/port/);
    expect(registryLocation('127.0.0.1:5000/team/cache', account, 'deps', k1).tag).toBe(`deps-${k1}`);
  });
});
