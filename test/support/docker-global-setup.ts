import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import Docker from 'dockerode';
import type { TestProject } from 'vitest/node';
import type {} from 'vitest';

/**
 * Integration tests need a real Docker engine and the locally built Python base image. A missing engine
 * is a failure, never a skip: CI must not go green without having run the engine tests.
 */
export const TEST_BASE_IMAGE = process.env.RGRID_TEST_BASE_IMAGE ?? 'rgrid-test/python:bookworm';

declare module 'vitest' {
  export interface ProvidedContext {
    baseImage: string;
    baseImageId: string;
  }
}

export default async function setup(project: TestProject): Promise<void> {
  const docker = new Docker();
  try {
    await docker.ping();
  } catch (err) {
    throw new Error(`integration tests need a Docker engine on /var/run/docker.sock (run scripts/setup-host.sh): ${String(err)}`);
  }
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');
  // Builds the image once per machine (debootstrap, about a minute); a no-op when it exists.
  execFileSync('bash', [join(root, 'scripts', 'ensure-base-image.sh')], {
    stdio: 'inherit',
    env: { ...process.env, RGRID_TEST_BASE_IMAGE: TEST_BASE_IMAGE },
  });
  const info = await docker.getImage(TEST_BASE_IMAGE).inspect();
  project.provide('baseImage', TEST_BASE_IMAGE);
  project.provide('baseImageId', info.Id);
}
