/**
 * Writing an execution's outputs under the user's output directory. The names come from a worker by way
 * of the control plane, so neither is trusted with the user's file system: every name is checked before
 * the first file is written (answers.ts), each file is opened through `openInside` (no `..`, no absolute
 * path, no symbolic link followed, in the file's name or in a directory on its way), and the bytes are
 * checked against the announced size while they arrive and against the sha256 when they are all in
 * (common/content-store.ts: a file appears under its name only once verified). A file that fails is not
 * kept; files already verified stay.
 */
import { mkdir } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { writeContent } from '../common/content-store.js';
import { isRgridError, RgridError } from '../common/errors.js';
import { shown } from '../common/names.js';
import type { OutputFile } from '../common/wire/control-api.js';
import type { ControlApi } from './api.js';
import { checkOutputs } from './answers.js';

/** Downloads at once: enough to hide latency, few enough not to open thousands of sockets. */
const PARALLEL_DOWNLOADS = 8;

/** Writes every output under `dir` (created if missing; the user's own choice, so trusted itself). */
export async function writeOutputs(api: ControlApi, dir: string, outputs: readonly unknown[]): Promise<OutputFile[]> {
  const files = checkOutputs(outputs);
  await mkdir(dir, { recursive: true });
  let next = 0;
  let firstError: Error | undefined;
  const worker = async (): Promise<void> => {
    while (next < files.length && firstError === undefined) {
      const file = files[next++]!;
      try {
        await api.withRetry(`downloading output ${shown(file.name)}`, () => writeOne(api, dir, file));
      } catch (err) {
        firstError ??= err as Error;
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(PARALLEL_DOWNLOADS, files.length) }, worker));
  if (firstError !== undefined) throw firstError;
  return files;
}

async function writeOne(api: ControlApi, dir: string, file: OutputFile): Promise<void> {
  // Modes as a plain create would have them: the user's umask decides.
  const options = { label: `output ${shown(file.name)}`, mode: 0o666, dirMode: 0o777 };
  try {
    // The download starts once the name is checked (no link, no `..` on its way).
    const download = async (): Promise<Readable> => (await api.getBlob(file.sha256)) as Readable;
    await writeContent(download, dir, file.name, { sha256: file.sha256, size: file.size }, options);
  } catch (err) {
    if (isRgridError(err) && err.code === 'digest_mismatch') throw new RgridError('digest_mismatch', `${err.message}; the file was not kept`, err.detail);
    throw err;
  }
}
