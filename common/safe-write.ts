/**
 * Writing a file whose name came from another process (an output a container wrote, a name the control
 * plane returned) inside a directory we own: the name is checked against the naming contract, every
 * directory on the way is created or checked without following a symbolic link, and the file itself is
 * opened with O_NOFOLLOW, so neither `../x` nor a link planted in the directory can move the write
 * elsewhere.
 */
import { constants } from 'node:fs';
import { lstat, mkdir, open, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { RgridError } from './errors.js';
import { assertOutputPath, shown } from './names.js';

/**
 * Creates the directories `segments` under `dir` one at a time, refusing any that is a link or not a
 * directory; returns the last one. `dir` itself is trusted.
 */
export async function ensureParents(dir: string, segments: readonly string[], dirMode: number): Promise<string> {
  let current = dir;
  for (const segment of segments) {
    current = join(current, segment);
    try {
      await mkdir(current, { mode: dirMode });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const stat = await lstat(current);
    if (!stat.isDirectory()) {
      throw new RgridError('bad_file_name', `${shown(current)} is not a directory (a link or file is in the way); nothing written there`);
    }
  }
  return current;
}

export interface SafeOpenOptions {
  /** File mode of a newly created file (default 0o644). */
  mode?: number;
  /** Mode of directories created on the way (default 0o755). */
  dirMode?: number;
}

/**
 * Opens `relative` under `dir` for writing (created or truncated). `dir` itself is trusted (the caller's
 * own choice); everything below it is not.
 */
export async function openInside(dir: string, relative: string, options: SafeOpenOptions = {}): Promise<FileHandle> {
  const name = assertOutputPath(relative);
  const segments = name.split('/');
  const parent = await ensureParents(dir, segments.slice(0, -1), options.dirMode ?? 0o755);
  const path = join(parent, segments[segments.length - 1]!);
  try {
    return await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, options.mode ?? 0o644);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ELOOP') {
      throw new RgridError('bad_file_name', `${shown(path)} is a symbolic link; nothing written there`);
    }
    throw err;
  }
}
