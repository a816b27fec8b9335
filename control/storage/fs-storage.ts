import { createReadStream } from 'node:fs';
import { chmod, mkdir, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { stageContent } from '../../common/content-store.js';
import { RgridError } from '../../common/errors.js';
import type { BlobStorage, StagedBlob } from './blob-storage.js';

/** Blob bytes are the accounts' inputs and outputs: readable by the control plane's user only. */
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;

/**
 * Filesystem blob store: `<root>/sha256/<first 2 hex>/<sha256>`. Uploads are written and verified by
 * common/content-store.ts, staged in `<root>/tmp` on the same file system (so the final rename is atomic
 * and leftovers of a crash are swept from one place); the temp file is fsynced before the rename and the
 * directory after it, so a blob that is visible is complete after a crash too. Files are created 0600
 * and directories 0700 whatever the umask (outside systemd it is usually 022).
 */
export function createFsBlobStorage(root: string): BlobStorage {
  const tmpDir = join(root, 'tmp');
  // mkdir's mode is filtered by the umask, which can only remove bits: 0700 stays 0700 or less.
  const mkdirPrivate = (dir: string): Promise<string | undefined> => mkdir(dir, { recursive: true, mode: DIR_MODE });
  const pathOf = (sha256: string): string => join(root, 'sha256', sha256.slice(0, 2), sha256);
  const refOf = (sha256: string): string => `sha256/${sha256.slice(0, 2)}/${sha256}`;

  return {
    async prepare() {
      await mkdirPrivate(tmpDir);
      await mkdirPrivate(join(root, 'sha256'));
      // A store created by an older version (or under a looser umask) is tightened at the top; the
      // files inside keep their modes (docs/operations.md, Secrets: chmod -R go= for older stores).
      for (const dir of [root, tmpDir, join(root, 'sha256')]) {
        const st = await stat(dir);
        if ((st.mode & 0o077) !== 0) await chmod(dir, DIR_MODE);
      }
    },

    async put(sha256, body, maxBytes) {
      // A client that goes away mid-upload ends the write as a bad request, not as a server error.
      body.once('aborted', () => body.destroy(new RgridError('bad_request', 'upload aborted by the client')));
      // Piped, not pipelined (keepSource): when the limit trips, the request stream is only unpiped, so
      // the server can still answer 413 on it.
      const staged = await stageContent(body, join(root, 'sha256'), `${sha256.slice(0, 2)}/${sha256}`, { sha256, maxBytes }, {
        label: 'the uploaded blob', mode: FILE_MODE, dirMode: DIR_MODE, stagingDir: tmpDir, keepSource: true,
        tooLong: (limit) => new RgridError('payload_too_large', `blob exceeds the limit of ${limit} bytes`, { limit_bytes: limit }),
      });
      const blob: StagedBlob = { size: staged.size, ref: refOf(sha256), commit: () => staged.commit(), discard: () => staged.discard() };
      return blob;
    },

    async get(sha256) {
      const path = pathOf(sha256);
      try {
        const st = await stat(path);
        return { stream: createReadStream(path), size: st.size };
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      }
    },

    async exists(sha256) {
      try {
        await stat(pathOf(sha256));
        return true;
      } catch {
        return false;
      }
    },

    async delete(sha256) {
      await rm(pathOf(sha256), { force: true });
    },

    async sweepTemporary(olderThanMs) {
      let removed = 0;
      let names: string[];
      try {
        names = await readdir(tmpDir);
      } catch {
        return 0;
      }
      for (const name of names) {
        const p = join(tmpDir, name);
        const st = await stat(p).catch(() => undefined);
        if (st && Date.now() - st.mtimeMs > olderThanMs) {
          await rm(p, { force: true });
          removed++;
        }
      }
      return removed;
    },
  };
}
