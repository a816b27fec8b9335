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
 */
export interface ContextFile {
  name: string;
  /** Inline content, or a host file streamed into the tar. */
  content?: string | Buffer;
  path?: string;
  size?: number;
}

export interface EngineBuildOptions {
  tag: string;
  networkMode: string;
  signal?: AbortSignal;
  onLine?: (line: string) => void;
}

const TAIL_LINES = 20;

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

function packContext(files: readonly ContextFile[]): NodeJS.ReadableStream {
  const pack = tar.pack();
  // Entries are written one at a time: a tar stream is sequential.
  void (async () => {
    try {
      const dirs = new Set(files.map((f) => f.name.split('/').slice(0, -1).join('/')).filter(Boolean));
      for (const dir of dirs) pack.entry({ name: `${dir}/`, type: 'directory', mode: 0o755 });
      for (const file of files) {
        if (file.content !== undefined) {
          pack.entry({ name: file.name, mode: 0o644 }, typeof file.content === 'string' ? Buffer.from(file.content) : file.content);
          continue;
        }
        await new Promise<void>((resolve, reject) => {
          const entry = pack.entry({ name: file.name, mode: 0o644, size: file.size ?? 0 }, (err) => (err ? reject(err) : resolve()));
          createReadStream(file.path!).on('error', reject).pipe(entry);
        });
      }
      pack.finalize();
    } catch (err) {
      pack.destroy(err as Error);
    }
  })();
  // tar-stream's Pack is a streamx Readable: the engine client only pipes it.
  return pack as unknown as NodeJS.ReadableStream;
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
  let response: NodeJS.ReadableStream;
  try {
    response = await docker.buildImage(packContext(files), {
      t: options.tag,
      networkmode: options.networkMode,
      rm: true,
      forcerm: true,
      pull: false,
      ...(options.signal ? { abortSignal: options.signal } : {}),
    } as Docker.ImageBuildOptions);
  } catch (err) {
    throw engineError('build could not start', err);
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
    if (options.signal?.aborted) throw new RgridError('shutting_down', 'build abandoned: the agent is shutting down');
    throw engineError('build stream broke', err);
  }
  if (failure !== undefined) {
    const output = tail.filter((l) => !/^(Step \d+\/\d+ :| ---> |Removing intermediate container )/.test(l)).slice(-TAIL_LINES);
    // pip's own verdict ("ERROR: No matching distribution found for …") says more than the engine's
    // "The command … returned a non-zero code: 1"; the exit code is kept from the latter.
    const verdict = [...output].reverse().find((l) => /^ERROR:/.test(l));
    const exit = /non-zero code: (\d+)/.exec(failure)?.[1];
    const reason = verdict ? `${verdict}${exit ? ` (exit ${exit})` : ''}` : failure.split('\n')[0];
    throw new RgridError('build_failed', `image build failed: ${reason}`, { output_tail: output, engine_message: failure.split('\n')[0] });
  }
  if (!imageId) throw new RgridError('build_failed', 'image build finished without reporting an image ID', { output_tail: tail });
  return imageId;
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
