/**
 * Content written where it is named only once it is known to be the content asked for: the one
 * verify-while-writing primitive of the control plane's blob store (control/storage/fs-storage.ts), the
 * agent's blob cache (agent/worker/blob-cache.ts) and the client's output downloads (client/outputs.ts).
 *
 * The bytes go to a temporary file (created exclusively, never through a link) in the target's
 * directory or in a staging directory of the same file system, are hashed and counted while they are
 * written, and are cut off as soon as they run past the expected size (a peer sending endless bytes must
 * not fill the disk). Then the SHA-256 and the size are compared with the expectation, the file is
 * fsynced, and renamed over the target name — rename replaces a name and never follows a link; a link or
 * a non-file already at the target is refused before a byte is read, and again right before the rename.
 * The directory is fsynced after the rename, so content that is visible is complete after a crash too.
 * On any failure the temporary file is removed and nothing is visible.
 *
 * `stageContent` stops before the rename, for a caller that must hold a lock over "the file appears and
 * its row is written" (the control plane); `writeContent` does both.
 */
import { createHash, randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { lstat, mkdir, open, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { RgridError } from './errors.js';
import { assertOutputPath, shown } from './names.js';
import { ensureParents } from './safe-write.js';

export interface ContentExpectation {
  sha256: string;
  /** The exact size, when the sender announced it (a manifest): more or fewer bytes are a mismatch. */
  size?: number | undefined;
  /** When the size is not known: the most bytes accepted. */
  maxBytes?: number;
}

export interface ContentWriteOptions {
  /** What the content is, for messages (`blob <sha>`, `output "a.csv"`). */
  label: string;
  /** Mode of the file (and of directories created on the way); the umask still applies. */
  mode: number;
  dirMode: number;
  /**
   * Where the temporary file is written: a directory on the target's file system, for a store that
   * sweeps leftovers of a crash from one place. Default: the target's own directory.
   */
  stagingDir?: string;
  /** The error for content longer than `maxBytes` (default: `digest_mismatch`). */
  tooLong?: (limit: number) => RgridError;
  /**
   * Leave the source open when the write fails (it is piped, not pipelined): the control plane still
   * answers on the request whose body was refused. Otherwise the source is destroyed on failure.
   */
  keepSource?: boolean;
}

/**
 * The bytes: a stream, or a function that opens one — called only once the target has been checked, so
 * nothing is downloaded for a name that leads through a link.
 */
export type ContentSource = Readable | (() => Promise<Readable>);

/** Verified content in its temporary file: `commit` moves it into place, `discard` drops it. */
export interface StagedContent {
  /** Where the content is once committed. */
  readonly path: string;
  readonly size: number;
  commit(): Promise<void>;
  discard(): Promise<void>;
}

/** What is at `path` must be nothing or a regular file: a link or a directory is never written through. */
async function refuseNonFile(path: string): Promise<void> {
  let st;
  try {
    st = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (st.isSymbolicLink()) throw new RgridError('bad_file_name', `${shown(path)} is a symbolic link; nothing written there`);
  if (!st.isFile()) throw new RgridError('bad_file_name', `${shown(path)} is not a regular file; nothing written there`);
}

async function fsync(path: string, flags: number): Promise<void> {
  const handle = await open(path, flags);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Writes `source` to a temporary file and verifies it against `expected` (see the module comment);
 * `name` is a relative path under `dir` (checked by the naming contract; `dir` itself is trusted).
 */
export async function stageContent(from: ContentSource, dir: string, name: string, expected: ContentExpectation, options: ContentWriteOptions): Promise<StagedContent> {
  let source = typeof from === 'function' ? undefined : from;
  const fail = (err: unknown): never => {
    if (!options.keepSource) source?.destroy();
    throw err;
  };
  const limit = expected.size ?? expected.maxBytes;
  if (limit === undefined) fail(new Error('stageContent: neither size nor maxBytes given'));
  let parent: string;
  let target: string;
  let tmp: string;
  try {
    const segments = assertOutputPath(name).split('/');
    parent = await ensureParents(dir, segments.slice(0, -1), options.dirMode);
    target = join(parent, segments[segments.length - 1]!);
    await refuseNonFile(target);
    const tmpDir = options.stagingDir ?? parent;
    if (options.stagingDir) await mkdir(tmpDir, { recursive: true, mode: options.dirMode });
    // Never the target's name: a fixed prefix and a random part, so it stays short and cannot collide.
    tmp = join(tmpDir, `.rgrid-${randomBytes(12).toString('hex')}.part`);
  } catch (err) {
    return fail(err);
  }
  const hash = createHash('sha256');
  let size = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      size += chunk.length;
      if (size > limit!) {
        const err = expected.size !== undefined
          ? new RgridError('digest_mismatch', `${options.label} is longer than its announced ${expected.size} bytes`)
          : (options.tooLong?.(limit!) ?? new RgridError('digest_mismatch', `${options.label} is longer than the ${limit} bytes accepted`));
        callback(err);
        return;
      }
      hash.update(chunk);
      callback(null, chunk);
    },
  });
  try {
    const handle = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, options.mode);
    // The stream owns the handle from here on: it closes it when it finishes or is destroyed.
    const out = handle.createWriteStream();
    try {
      // Opened last, so nothing stands between the source and the pipe that handles its errors.
      source ??= await (from as () => Promise<Readable>)();
    } catch (err) {
      out.destroy();
      throw err;
    }
    const input = source;
    if (options.keepSource) {
      const sink = pipeline(meter, out);
      input.once('error', (err) => meter.destroy(err));
      input.pipe(meter);
      await sink;
    } else {
      await pipeline(input, meter, out);
    }
    if (expected.size !== undefined && size !== expected.size) {
      throw new RgridError('digest_mismatch', `${options.label} arrived with ${size} bytes instead of the announced ${expected.size}`);
    }
    const actual = hash.digest('hex');
    if (actual !== expected.sha256) {
      throw new RgridError('digest_mismatch', `${options.label} arrived with digest ${actual}, not ${expected.sha256}`, { expected: expected.sha256, actual, size });
    }
    await fsync(tmp, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    await rm(tmp, { force: true });
    return fail(err);
  }
  let settled = false;
  return {
    path: target,
    size,
    async commit() {
      if (settled) throw new Error('stageContent: committed or discarded already');
      try {
        await refuseNonFile(target);
        await rename(tmp, target);
        settled = true;
      } catch (err) {
        await rm(tmp, { force: true });
        settled = true;
        throw err;
      }
      await fsync(parent, constants.O_RDONLY | constants.O_DIRECTORY);
    },
    async discard() {
      if (settled) return;
      settled = true;
      await rm(tmp, { force: true });
    },
  };
}

/** Stages and commits: the content is at the returned path, verified, or nowhere. */
export async function writeContent(source: ContentSource, dir: string, name: string, expected: ContentExpectation, options: ContentWriteOptions): Promise<{ path: string; size: number }> {
  const staged = await stageContent(source, dir, name, expected, options);
  await staged.commit();
  return { path: staged.path, size: staged.size };
}
