/**
 * Copies a run's /work/outputs out of the engine's archive stream (a tar whose entries start with
 * `outputs/`), counting while it streams: files, bytes per file, bytes in total and the time taken. The
 * sizes are checked against the limits from each entry's header, before a byte of it is read, so a 2 GiB
 * sparse file never reaches the host; at the first limit crossed the copy stops and says which.
 *
 * Regular files only: symlinks, devices and names outside the naming contract are skipped, so a script
 * cannot make anyone write outside their output directory. Relative paths keep subdirectories (`a/b.csv`).
 */
import { Writable, type Readable } from 'node:stream';
import type Docker from 'dockerode';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { fileNameProblem, shown } from '../../common/names.js';
import { OUTPUTS_DIR, type OutputLimits } from './sandbox.js';

export interface OutputFileInfo {
  name: string;
  size: number;
}

/** Where one output file's bytes go; called once per file, in archive order. */
export type OutputSink = (file: OutputFileInfo) => Promise<NodeJS.WritableStream>;

export interface CopiedOutputs {
  files: OutputFileInfo[];
  /** Entries that are not regular files or whose names are not safe: not copied. */
  skipped: string[];
  /** Why the copy stopped early (a limit was crossed), or null when every output was copied. */
  exceeded: string | null;
}

const MiB = 1024 * 1024;
const mib = (bytes: number): string => `${Math.round((bytes / MiB) * 10) / 10} MiB`;

/** Why `file` cannot be copied within the limits, given what was copied before it; undefined if it can. */
export function outputLimitProblem(file: OutputFileInfo, before: { files: number; bytes: number }, limits: OutputLimits): string | undefined {
  if (before.files + 1 > limits.maxFiles) return `more than ${limits.maxFiles} output files (run_max_output_files)`;
  if (file.size > limits.maxFileBytes) {
    return `output ${shown(file.name)} is ${mib(file.size)}, over the ${mib(limits.maxFileBytes)} limit per file (run_max_output_file_mb)`;
  }
  if (before.bytes + file.size > limits.maxBytes) {
    return `outputs total more than ${mib(limits.maxBytes)} (run_max_output_mb); ${shown(file.name)} would bring them to ${mib(before.bytes + file.size)}`;
  }
  return undefined;
}

export async function copyOutputTar(archive: Readable, limits: OutputLimits, sink: OutputSink | undefined): Promise<CopiedOutputs> {
  const files: OutputFileInfo[] = [];
  const skipped: string[] = [];
  let exceeded: string | null = null;
  let bytes = 0;
  let timedOut = false;
  const extract = tar.extract();
  const timer = setTimeout(() => {
    timedOut = true;
    archive.destroy();
    extract.destroy(new Error('output copy timed out'));
  }, limits.copyTimeoutMs);
  archive.on('error', (err) => extract.destroy(err));
  archive.pipe(extract);
  try {
    for await (const entry of extract) {
      const { header } = entry;
      const relative = header.name.replace(/^outputs\/?/, '').replace(/\/$/, '');
      const safe = relative !== '' && fileNameProblem(relative, true) === undefined;
      if (header.type !== 'file' || !safe) {
        if (relative !== '' && header.type !== 'directory') skipped.push(relative);
        entry.resume();
        continue;
      }
      const file = { name: relative, size: header.size ?? 0 };
      const problem = outputLimitProblem(file, { files: files.length, bytes }, limits);
      if (problem) {
        exceeded = problem;
        break;
      }
      files.push(file);
      bytes += file.size;
      const out = sink ? await sink(file) : undefined;
      if (out) await pipeline(entry, out);
      else entry.resume();
    }
  } catch (err) {
    if (!timedOut) throw err;
    exceeded = `copying the outputs took longer than ${limits.copyTimeoutMs / 1000} s (run_output_copy_timeout_s)`;
  } finally {
    clearTimeout(timer);
    // Stops the engine producing the rest of the archive (possibly gigabytes of a sparse file's zeros).
    archive.destroy();
  }
  return { files: exceeded ? [] : files, skipped, exceeded };
}

export interface OutputChunk {
  name: string;
  /** base64 of this chunk; the last chunk of a file has `eof: true` (an empty file: one such chunk). */
  data: string;
  eof: boolean;
}

const CHUNK = 256 * 1024;

/** A sink that turns each file into base64 chunk events (the socket API's `output` events). */
export function chunkEventSink(onChunk: (chunk: OutputChunk) => void): OutputSink {
  return (file) => {
    let pending: Buffer = Buffer.alloc(0);
    return Promise.resolve(
      new Writable({
        write(data: Buffer, _enc, cb) {
          pending = pending.length ? Buffer.concat([pending, data]) : data;
          while (pending.length >= CHUNK) {
            onChunk({ name: file.name, data: pending.subarray(0, CHUNK).toString('base64'), eof: false });
            pending = pending.subarray(CHUNK);
          }
          cb();
        },
        final(cb) {
          onChunk({ name: file.name, data: pending.toString('base64'), eof: true });
          cb();
        },
      }),
    );
  };
}

/**
 * What the engine says of the outputs directory (`HEAD …/archive`, a holder's mount of the tmpfs): its
 * size, mode and modification time. Taken once when a holder is made (the directory is empty then) and
 * again after the run: a directory whose size, mode and modification time are all unchanged has had no
 * entry created or removed in it — it is still empty, and the archive (a tar stream the engine makes in a
 * process of its own, 50–300 ms on a loaded host) need not be read. A directory's size on a tmpfs counts
 * its entries, so a script cannot hide a file by setting the time back; all it could hide that way is
 * its own outputs, from itself.
 */
export interface OutputsDirStat {
  size: number;
  mode: number;
  mtime: string;
}

export async function statOutputsDir(holder: Docker.Container): Promise<OutputsDirStat | undefined> {
  const res = (await holder.infoArchive({ path: OUTPUTS_DIR })) as { headers?: Record<string, unknown> };
  return parsePathStat(res.headers?.['x-docker-container-path-stat']);
}

/** The engine's path-stat header (base64 of JSON); undefined when it is not one. */
export function parsePathStat(header: unknown): OutputsDirStat | undefined {
  if (typeof header !== 'string' || header.length > 4096) return undefined;
  try {
    const parsed = JSON.parse(Buffer.from(header, 'base64').toString('utf8')) as Record<string, unknown>;
    const { size, mode, mtime } = parsed;
    if (typeof size !== 'number' || typeof mode !== 'number' || typeof mtime !== 'string' || mtime === '') return undefined;
    return { size, mode, mtime };
  } catch {
    return undefined;
  }
}

/** True only when both stats are known and equal (see OutputsDirStat): nothing to copy. */
export function outputsUnchanged(before: OutputsDirStat | undefined, after: OutputsDirStat | undefined): boolean {
  return before !== undefined && after !== undefined && before.size === after.size && before.mode === after.mode && before.mtime === after.mtime;
}
