/**
 * Writing an execution's outputs under the user's output directory. The names come from a worker by way
 * of the control plane, so neither is trusted with the user's file system: every name is checked before
 * the first file is written (answers.ts), each file is opened through `openInside` (no `..`, no absolute
 * path, no symbolic link followed, in the file's name or in a directory on its way), and the bytes are
 * checked against the announced size while they arrive and against the sha256 when they are all in. A
 * file that fails is removed; files already verified stay.
 */
import { createHash } from 'node:crypto';
import { mkdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { RgridError } from '../common/errors.js';
import { shown } from '../common/names.js';
import { openInside } from '../common/safe-write.js';
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
  const handle = await openInside(dir, file.name, { mode: 0o666, dirMode: 0o777 });
  // The stream owns the handle from here on: it closes it when it finishes or is destroyed.
  const out = handle.createWriteStream();
  let verified = false;
  try {
    const hash = createHash('sha256');
    let bytes = 0;
    const verify = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        bytes += chunk.length;
        // Stop at once: a lying size must not fill the disk before the digest is compared.
        if (bytes > file.size) return callback(mismatch(file, `is longer than its announced ${file.size} bytes`));
        hash.update(chunk);
        callback(null, chunk);
      },
    });
    await pipeline(await api.getBlob(file.sha256), verify, out);
    if (bytes !== file.size) throw mismatch(file, `has ${bytes} bytes, not the announced ${file.size}`);
    if (hash.digest('hex') !== file.sha256) throw mismatch(file, `does not match its sha256 ${file.sha256}`);
    verified = true;
  } finally {
    if (!out.destroyed) out.destroy();
    if (!verified) await unlink(join(dir, file.name)).catch(() => undefined);
  }
}

const mismatch = (file: OutputFile, what: string): RgridError =>
  new RgridError('digest_mismatch', `output ${shown(file.name)} ${what}; the file was removed`);
