import type Docker from 'dockerode';
import tar from 'tar-stream';
import { fileNameProblem } from '../../common/names.js';

/**
 * Copies /work/outputs out of a stopped container (the engine's archive endpoint: a tar whose entries
 * start with `outputs/`). Regular files only; symlinks and devices are skipped, so a script cannot make
 * the client write outside its output directory. Relative paths keep subdirectories (`a/b.csv`).
 */
export interface OutputChunk {
  name: string;
  /** base64 of this chunk; the last chunk of a file has `eof: true` (an empty file: one such chunk). */
  data: string;
  eof: boolean;
}

const CHUNK = 256 * 1024;

export async function copyOutputs(
  container: Docker.Container,
  onChunk: ((chunk: OutputChunk) => void) | undefined,
): Promise<{ files: string[]; skipped: string[] }> {
  const files: string[] = [];
  const skipped: string[] = [];
  const archive = await container.getArchive({ path: '/work/outputs' });
  const extract = tar.extract();
  const done = new Promise<void>((resolve, reject) => {
    extract.on('entry', (header, stream, next) => {
      const relative = header.name.replace(/^outputs\/?/, '').replace(/\/$/, '');
      const safe = relative !== '' && fileNameProblem(relative, true) === undefined;
      if (header.type !== 'file' || !safe) {
        if (relative !== '' && header.type !== 'directory') skipped.push(relative);
        stream.on('end', () => next());
        stream.resume();
        return;
      }
      files.push(relative);
      let pending: Buffer = Buffer.alloc(0);
      stream.on('data', (data: unknown) => {
        if (!onChunk) return;
        const bytes = data as Buffer;
        pending = pending.length ? Buffer.concat([pending, bytes]) : bytes;
        while (pending.length >= CHUNK) {
          onChunk({ name: relative, data: pending.subarray(0, CHUNK).toString('base64'), eof: false });
          pending = pending.subarray(CHUNK);
        }
      });
      stream.on('end', () => {
        onChunk?.({ name: relative, data: pending.toString('base64'), eof: true });
        next();
      });
      stream.on('error', reject);
    });
    extract.on('finish', resolve);
    extract.on('error', reject);
  });
  archive.pipe(extract);
  await done;
  return { files, skipped };
}
