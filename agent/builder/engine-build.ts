import { readdir, stat } from 'node:fs/promises';
import { createReadStream } from 'node:fs';
import { join } from 'node:path';
import type Docker from 'dockerode';
import tar from 'tar-stream';
import { RgridError } from '../../common/errors.js';

/**
 * One `docker build` through the engine API (classic builder: the engine here has no BuildKit session),
 * with the context streamed as a tar and the engine's JSON progress parsed line by line. A failed step
 * becomes `build_failed` carrying the last lines the step printed (pip's own error), never a stack.
 * The build's RUN containers get the build policy's memory and CPU limits, and the build is stopped at
 * its deadline: the engine kills and removes the step's container when the request is aborted.
 */
export interface ContextFile {
  name: string;
  /** Inline content, or a host file streamed into the tar. */
  content?: string | Buffer;
  path?: string;
  size?: number;
  /** An explicit directory entry (e.g. with an owner other than root). */
  directory?: boolean;
  mode?: number;
  uid?: number;
  gid?: number;
  /** A tar stream (the engine's archive of a container path) whose entries are copied in, all under `name/`. */
  archive?: NodeJS.ReadableStream;
}

export interface EngineBuildOptions {
  tag: string;
  networkMode: string;
  /** Memory and CPU of the build's RUN containers. */
  limits?: { memoryBytes: number; cpuPeriodUs: number; cpuQuotaUs: number };
  /** The agent's drain abandonment: the build ends with shutting_down. */
  signal?: AbortSignal;
  /** The build's deadline: the build ends with `onDeadline()`'s error. */
  deadline?: AbortSignal;
  onDeadline?: () => RgridError;
  onLine?: (line: string) => void;
  /** Entries of an archive that were left out (neither files, directories nor links, or outside their root). */
  onSkipped?: (name: string) => void;
}

export const TAIL_LINES = 20;

/** Lists the top-level regular files of a wheelhouse (pip's --find-links does not recurse either). */
export async function wheelhouseFiles(dir: string): Promise<ContextFile[]> {
  const out: ContextFile[] = [];
  for (const name of (await readdir(dir)).sort()) {
    const path = join(dir, name);
    const info = await stat(path);
    if (info.isFile()) out.push({ name: `wheelhouse/${name}`, path, size: info.size });
  }
  return out;
}

/** A tar of the files, written entry by entry (a tar stream is sequential); parents get root-owned entries. */
export function packFiles(files: readonly ContextFile[], onSkipped?: (name: string) => void): NodeJS.ReadableStream {
  const pack = tar.pack();
  void (async () => {
    try {
      const explicit = new Set(files.filter((f) => f.directory).map((f) => f.name.replace(/\/$/, '')));
      const parents = new Set<string>();
      for (const f of files) {
        const parts = f.name.replace(/\/$/, '').split('/');
        for (let i = 1; i < parts.length; i++) parents.add(parts.slice(0, i).join('/'));
      }
      for (const dir of [...parents].sort()) if (!explicit.has(dir)) pack.entry({ name: `${dir}/`, type: 'directory', mode: 0o755 });
      for (const file of files) {
        const owner = { uid: file.uid ?? 0, gid: file.gid ?? 0 };
        if (file.directory) {
          pack.entry({ name: `${file.name.replace(/\/$/, '')}/`, type: 'directory', mode: file.mode ?? 0o755, ...owner });
        } else if (file.archive) {
          await appendArchive(pack, file.archive, file.name, onSkipped);
        } else if (file.content !== undefined) {
          pack.entry({ name: file.name, mode: file.mode ?? 0o644, ...owner }, typeof file.content === 'string' ? Buffer.from(file.content) : file.content);
        } else {
          await new Promise<void>((resolve, reject) => {
            const entry = pack.entry({ name: file.name, mode: file.mode ?? 0o644, size: file.size ?? 0, ...owner }, (err) => (err ? reject(err) : resolve()));
            createReadStream(file.path!).on('error', reject).pipe(entry);
          });
        }
      }
      pack.finalize();
    } catch (err) {
      pack.destroy(err as Error);
    }
  })();
  // tar-stream's Pack is a streamx Readable: the engine client only pipes it.
  return pack as unknown as NodeJS.ReadableStream;
}

/** True when `name` is `root` or lies under it, with no `..`, `.` or empty segment. */
function isUnder(name: string, root: string): boolean {
  const clean = name.replace(/\/$/, '');
  if (clean !== root && !clean.startsWith(`${root}/`)) return false;
  return clean.split('/').every((segment) => segment !== '' && segment !== '.' && segment !== '..');
}

/**
 * Copies the entries of an engine archive into the pack. What a build's user code left there is not
 * trusted: entries outside `root`, devices and FIFOs are dropped, and setuid/setgid/sticky bits and
 * group/other write permission are cleared (COPY would otherwise turn a setuid file into a setuid-root one).
 */
function appendArchive(pack: tar.Pack, archive: NodeJS.ReadableStream, root: string, onSkipped?: (name: string) => void): Promise<void> {
  const extract = tar.extract();
  return new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, stream, next) => {
      const skip = (): void => {
        onSkipped?.(header.name);
        stream.on('end', () => next());
        stream.resume();
      };
      const kind = header.type;
      const linkOk = kind !== 'link' || (header.linkname !== undefined && header.linkname !== null && isUnder(header.linkname, root));
      if (!isUnder(header.name, root) || !linkOk || !(kind === 'file' || kind === 'directory' || kind === 'symlink' || kind === 'link')) {
        skip();
        return;
      }
      const base = { name: header.name, type: kind, uid: 0, gid: 0, mtime: header.mtime ?? new Date(0) };
      if (kind === 'file') {
        const entry = pack.entry({ ...base, mode: (header.mode ?? 0o644) & 0o755, size: header.size ?? 0 }, (err) => (err ? reject(err) : next()));
        stream.pipe(entry);
        return;
      }
      if (kind === 'directory') pack.entry({ ...base, mode: (header.mode ?? 0o755) & 0o755 });
      else pack.entry({ ...base, mode: header.mode ?? 0o777, linkname: header.linkname ?? '' });
      stream.on('end', () => next());
      stream.resume();
    });
    extract.on('finish', resolve);
    extract.on('error', reject);
    archive.on('error', reject);
    archive.pipe(extract);
  });
}

interface BuildMessage {
  stream?: string;
  status?: string;
  error?: string;
  errorDetail?: { message?: string };
  aux?: { ID?: string };
}

/** Runs the build and resolves to the new image's ID (as reported by the engine). */
export async function engineBuild(docker: Docker, files: readonly ContextFile[], options: EngineBuildOptions): Promise<string> {
  const signals = [options.signal, options.deadline].filter((s): s is AbortSignal => s !== undefined);
  const abortSignal = signals.length > 1 ? AbortSignal.any(signals) : signals[0];
  const stopped = (): RgridError | undefined => {
    if (options.signal?.aborted) return new RgridError('shutting_down', 'build abandoned: the agent is shutting down');
    if (options.deadline?.aborted) return options.onDeadline?.() ?? new RgridError('build_failed', 'build stopped at its deadline');
    return undefined;
  };
  let response: NodeJS.ReadableStream;
  try {
    response = await docker.buildImage(packFiles(files, options.onSkipped), {
      t: options.tag,
      networkmode: options.networkMode,
      rm: true,
      forcerm: true,
      pull: false,
      ...(options.limits
        ? { memory: options.limits.memoryBytes, memswap: options.limits.memoryBytes, cpuperiod: options.limits.cpuPeriodUs, cpuquota: options.limits.cpuQuotaUs }
        : {}),
      ...(abortSignal ? { abortSignal } : {}),
    } as Docker.ImageBuildOptions);
  } catch (err) {
    throw stopped() ?? engineError('build could not start', err);
  }
  const tail: string[] = [];
  let imageId: string | undefined;
  let failure: string | undefined;
  let pending = '';
  const handleLine = (raw: string): void => {
    if (!raw.trim()) return;
    let message: BuildMessage;
    try {
      message = JSON.parse(raw) as BuildMessage;
    } catch {
      return;
    }
    if (message.aux?.ID) imageId = message.aux.ID;
    if (message.error || message.errorDetail) failure = message.errorDetail?.message ?? message.error ?? 'build failed';
    const text = message.stream ?? message.status;
    if (text === undefined) return;
    // The classic builder colours a step's stderr with ANSI escapes: strip them for logs and errors.
    for (const line of text.replace(/\x1b\[[0-9;]*[A-Za-z]/g, '').replace(/\r/g, '\n').split('\n')) {
      const trimmed = line.trimEnd();
      if (!trimmed) continue;
      // Each "Step n/m" starts a new step: the tail should show only the failing step's output.
      if (/^Step \d+\/\d+ :/.test(trimmed)) tail.length = 0;
      tail.push(trimmed);
      if (tail.length > TAIL_LINES + 1) tail.shift();
      options.onLine?.(trimmed);
    }
  };
  try {
    for await (const chunk of response as AsyncIterable<Buffer>) {
      pending += chunk.toString('utf8');
      const lines = pending.split('\n');
      pending = lines.pop() ?? '';
      lines.forEach(handleLine);
    }
    handleLine(pending);
  } catch (err) {
    throw stopped() ?? engineError('build stream broke', err);
  }
  const stop = stopped();
  if (stop) throw stop;
  if (failure !== undefined) {
    const output = tail.filter((l) => !/^(Step \d+\/\d+ :| ---> |Removing intermediate container )/.test(l)).slice(-TAIL_LINES);
    const exit = /non-zero code: (\d+)/.exec(failure)?.[1];
    const reason = failureReason(output, exit) ?? failure.split('\n')[0];
    throw new RgridError('build_failed', `image build failed: ${reason}`, { output_tail: output, engine_message: failure.split('\n')[0] });
  }
  if (!imageId) throw new RgridError('build_failed', 'image build finished without reporting an image ID', { output_tail: tail });
  return imageId;
}

/**
 * pip's own verdict ("ERROR: No matching distribution found for …") says more than the engine's "The
 * command … returned a non-zero code: 1"; the exit code is kept with it.
 */
export function failureReason(outputTail: readonly string[], exitCode: string | number | undefined): string | undefined {
  const verdict = [...outputTail].reverse().find((l) => /^ERROR:/.test(l));
  return verdict ? `${verdict}${exitCode !== undefined ? ` (exit ${exitCode})` : ''}` : undefined;
}

export function engineError(what: string, err: unknown): RgridError {
  const status = (err as { statusCode?: number }).statusCode;
  const code = (err as NodeJS.ErrnoException).code;
  // The engine's own message can carry host paths; the code/status is enough to act on.
  return new RgridError('engine_unavailable', `Docker engine: ${what} (${code ?? (status ? `HTTP ${status}` : 'error')})`);
}

/** True for the engine's "no such image/container" answer. */
export function isNotFound(err: unknown): boolean {
  return (err as { statusCode?: number }).statusCode === 404;
}
