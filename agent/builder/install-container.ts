import { demuxText, type StreamName } from '../engine-streams.js';
import type Docker from 'dockerode';
import type { Logger } from 'pino';
import { RgridError } from '../../common/errors.js';
import { memoryLimitError, timeLimitError, type BuildPolicy } from './build-policy.js';
import { engineError, failureReason, packFiles, TAIL_LINES, type ContextFile } from './engine-build.js';
import { INSTALL_ROOT, INSTALL_USER, installCommand, WHEELHOUSE_IN_BUILD, type LockInstall } from './recipe.js';

/**
 * pip in a container this agent creates, starts, watches and removes itself — network, memory, CPU and
 * PID limits from the build policy, user 65534, no capabilities, no new privileges. A container that
 * outlives the deadline is killed; one the kernel killed for memory is reported as such. Two uses: the
 * dependency install (withInstallContainer; the caller reads /opt/rgrid out of the stopped container
 * before it is removed) and the resolution's dry run (agent/builder/resolver.ts), which runs pip's own
 * resolver — and any sdist's build code — and so gets exactly the same sandbox.
 */
export interface SandboxInput {
  baseImageId: string;
  /** Labels that let start-up repair remove what a crashed agent left behind. */
  labels: Record<string, string>;
  /** Wheelhouse files as `name`: file name in the wheelhouse, `path`: host path. */
  wheelhouse: ContextFile[];
  policy: BuildPolicy;
  /** Drain abandonment (shutting_down). */
  signal: AbortSignal;
  /** The deadline (build_timeout_s). */
  deadline: AbortSignal;
  onLine: (line: string) => void;
  logger: Logger;
}

export interface InstallInput extends SandboxInput {
  requirementsFileText: string;
  /** How pip treats the file when it is a lock (hash-checked, and --no-deps for a resolved lock). */
  lockInstall?: LockInstall;
}

/** What runs in the sandbox: a shell command and the files it reads (root's, unless a file says otherwise). */
export interface SandboxTask {
  /** `install` or `resolution`: names the container in messages. */
  container: string;
  /** What the time and memory limit messages call the work (`dependency install`, `resolution`). */
  what: string;
  command: string;
  files: ContextFile[];
}

const [BUILD_UID, BUILD_GID] = INSTALL_USER.split(':').map(Number) as [number, number];

/** The wheelhouse files where pip's --find-links looks for them (workerPipArgs), read-only for pip. */
export function wheelhouseInSandbox(wheelhouse: readonly ContextFile[]): ContextFile[] {
  return wheelhouse.map((f) => ({ ...f, name: `${WHEELHOUSE_IN_BUILD.slice(1)}/${f.name.split('/').pop()!}` }));
}

/** Runs the install; calls `use` with the stopped container when pip succeeded; removes the container in every case. */
export function withInstallContainer<T>(docker: Docker, input: InstallInput, use: (container: Docker.Container) => Promise<T>): Promise<T> {
  // /opt/rgrid belongs to the build user (pip writes the venv there); what pip reads stays root's.
  const files: ContextFile[] = [
    { name: INSTALL_ROOT.slice(1), directory: true, mode: 0o755, uid: BUILD_UID, gid: BUILD_GID },
    { name: `${INSTALL_ROOT.slice(1)}/requirements.txt`, content: input.requirementsFileText },
    ...wheelhouseInSandbox(input.wheelhouse),
  ];
  return withSandboxContainer(docker, input, { container: 'install', what: 'dependency install', command: installCommand(input.policy.pip, input.lockInstall), files }, use);
}

/** Runs the task; calls `use` with the stopped container when its command exited 0; removes the container in every case. */
export async function withSandboxContainer<T>(
  docker: Docker,
  input: SandboxInput,
  task: SandboxTask,
  use: (container: Docker.Container) => Promise<T>,
): Promise<T> {
  const { policy } = input;
  let container: Docker.Container;
  try {
    container = await docker.createContainer({
      Image: input.baseImageId,
      Entrypoint: ['/bin/sh', '-c'],
      Cmd: [task.command],
      User: INSTALL_USER,
      Env: ['HOME=/tmp'],
      WorkingDir: '/tmp',
      AttachStdout: true,
      AttachStderr: true,
      Tty: false,
      Labels: input.labels,
      HostConfig: {
        NetworkMode: policy.network,
        Memory: policy.limits.memoryBytes,
        MemorySwap: policy.limits.memoryBytes,
        NanoCpus: policy.limits.nanoCpus,
        PidsLimit: policy.limits.pidsLimit,
        CapDrop: ['ALL'],
        SecurityOpt: ['no-new-privileges'],
      },
    });
  } catch (err) {
    throw engineError(`creating the ${task.container} container failed`, err);
  }
  try {
    // Files under /tmp would otherwise bring a root-owned 0755 `tmp/` parent that the engine applies to
    // the container's /tmp: pip (user 65534) could then not write there. /tmp stays what it always is.
    const files = task.files.some((f) => f.name.startsWith('tmp/')) ? [{ name: 'tmp', directory: true, mode: 0o1777 }, ...task.files] : task.files;
    await container.putArchive(packFiles(files), { path: '/' }).catch((err: unknown) => {
      throw engineError(`copying requirements into the ${task.container} container failed`, err);
    });
    const tail: string[] = [];
    const attached = await container.attach({ stream: true, stdout: true, stderr: true }).catch((err: unknown) => {
      throw engineError(`attaching to the ${task.container} container failed`, err);
    });
    const streamed = attachLines(attached, docker, (line) => {
      tail.push(line);
      if (tail.length > TAIL_LINES) tail.shift();
      input.onLine(line);
    });
    const { limits } = policy;
    input.onLine(
      `${task.container} container (network ${policy.network}, ${limits.memoryBytes / 1024 / 1024} MB, ${limits.nanoCpus / 1e9} CPUs, ${limits.pidsLimit} processes, ${limits.timeoutMs / 1000} s, user ${INSTALL_USER}): ${redactUserinfo(task.command)}`,
    );
    const kill = (): void => void container.kill({ signal: 'SIGKILL' }).catch(() => undefined);
    input.signal.addEventListener('abort', kill, { once: true });
    input.deadline.addEventListener('abort', kill, { once: true });
    try {
      if (input.signal.aborted || input.deadline.aborted) kill();
      else await container.start();
      await container.wait();
    } catch (err) {
      throw engineError(`the ${task.container} container failed`, err);
    } finally {
      input.signal.removeEventListener('abort', kill);
      input.deadline.removeEventListener('abort', kill);
    }
    // The attach stream normally ends with the container; never hang on one that does not.
    await Promise.race([streamed, new Promise((resolve) => setTimeout(resolve, 5000).unref())]);
    if (input.signal.aborted) throw new RgridError('shutting_down', 'build abandoned: the agent is shutting down');
    if (input.deadline.aborted) throw timeLimitError(policy, task.what, tail);
    const state = (await container.inspect()).State;
    if (state.OOMKilled) throw memoryLimitError(policy, task.what, tail);
    if (state.ExitCode !== 0) {
      const reason = failureReason(tail, state.ExitCode) ?? `pip exited with ${state.ExitCode}`;
      throw new RgridError('build_failed', `${task.what} failed: ${reason}`, { output_tail: tail, exit_code: state.ExitCode });
    }
    return await use(container);
  } finally {
    await container.remove({ force: true }).catch((err: unknown) => input.logger.warn({ err }, `${task.container} container not removed`));
  }
}

/** The command as shown to users and logs: an index URL's `user:password@` is not theirs to see. */
export function redactUserinfo(text: string): string {
  return text.replace(/(https?:\/\/)[^/@\s']+@/g, '$1***@');
}

/** The attach stream as lines (ANSI colours removed), stdout and stderr alike. */
function attachLines(stream: NodeJS.ReadWriteStream, docker: Docker, onLine: (line: string) => void): Promise<void> {
  const pending: Record<StreamName, string> = { stdout: '', stderr: '' };
  return demuxText(stream, docker, (name, text, final) => {
    pending[name] += text.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '');
    const parts = pending[name].split(/\r\n|\n|\r/);
    pending[name] = final ? '' : (parts.pop() ?? '');
    for (const part of parts) if (part.trim()) onLine(part.trimEnd());
  });
}
