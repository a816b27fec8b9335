/**
 * Extra Docker engines on this machine, each standing in for one worker host: its own dockerd with its own
 * --data-root, --exec-root, --pidfile and unix socket (--bridge=none --iptables=false, like the main one).
 * Images reach them the way they reach real hosts: pushed to a registry and pulled.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import Docker from 'dockerode';

export interface TestEngine {
  readonly name: string;
  /** `unix:///…/docker.sock`, for DOCKER_HOST or an agent's --docker-host. */
  readonly host: string;
  readonly socketPath: string;
  readonly docker: Docker;
  stop(): Promise<void>;
}

async function followProgress(docker: Docker, stream: NodeJS.ReadableStream): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    docker.modem.followProgress(stream, (err: Error | null, events: Array<{ error?: string }>) => {
      const failed = events.find((e) => e.error);
      if (err || failed) reject(err ?? new Error(failed?.error));
      else resolve();
    });
  });
}

/** Starts a dockerd; short paths under /tmp because unix socket paths are limited to 107 bytes. */
export async function startEngine(name: string): Promise<TestEngine> {
  const dir = mkdtempSync('/tmp/rgrid-e-');
  const socketPath = join(dir, 'docker.sock');
  const logPath = join(dir, 'dockerd.log');
  const logFd = openSync(logPath, 'a');
  const child: ChildProcess = spawn(
    'dockerd',
    [
      '--data-root', join(dir, 'data'), '--exec-root', join(dir, 'x'), '--pidfile', join(dir, 'docker.pid'),
      '-H', `unix://${socketPath}`, '--bridge=none', '--iptables=false', '--ip-masq=false',
    ],
    { stdio: ['ignore', logFd, logFd] },
  );
  closeSync(logFd);
  const docker = new Docker({ socketPath });
  const deadline = Date.now() + 60_000;
  for (;;) {
    try {
      await docker.ping();
      break;
    } catch {
      if (child.exitCode !== null || Date.now() > deadline) {
        child.kill('SIGKILL');
        const tail = readFileSync(logPath, 'utf8').split('\n').slice(-15).join('\n');
        rmSync(dir, { recursive: true, force: true });
        throw new Error(`engine ${name} did not start:\n${tail}`);
      }
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return {
    name,
    host: `unix://${socketPath}`,
    socketPath,
    docker,
    async stop() {
      if (child.exitCode === null) {
        await new Promise<void>((resolve) => {
          child.once('exit', () => resolve());
          child.kill('SIGTERM');
          setTimeout(() => child.kill('SIGKILL'), 20_000).unref();
        });
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Pushes `image` from `from` to the registry under `repository:tag` and returns the reference pushed. */
export async function pushImage(from: Docker, image: string, registry: string, repository: string, tag: string): Promise<string> {
  const ref = `${registry}/${repository}`;
  await from.getImage(image).tag({ repo: ref, tag });
  const stream = await from.getImage(`${ref}:${tag}`).push({}, undefined, {} as Docker.AuthConfig);
  await followProgress(from, stream);
  return `${ref}:${tag}`;
}

export async function pullImage(into: Docker, ref: string): Promise<string> {
  const stream = await into.pull(ref);
  await followProgress(into, stream);
  return (await into.getImage(ref).inspect()).Id;
}
