import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { chmod, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { RgridError } from '../../common/errors.js';
import type { BlobStorage, StagedBlob } from './blob-storage.js';

/** Blob bytes are the accounts' inputs and outputs: readable by the control plane's user only. */
const FILE_MODE = 0o600;
const DIR_MODE = 0o700;

/**
 * Filesystem blob store: `<root>/sha256/<first 2 hex>/<sha256>`, uploads staged in `<root>/tmp` on the
 * same file system so the final rename is atomic. The temp file is fsynced before the rename and the
 * directory after it, so a blob that is visible is complete after a crash too. Files are created 0600
 * and directories 0700 whatever the umask (outside systemd it is usually 022).
 */
export function createFsBlobStorage(root: string): BlobStorage {
  const tmpDir = join(root, 'tmp');
  // mkdir's mode is filtered by the umask, which can only remove bits: 0700 stays 0700 or less.
  const mkdirPrivate = (dir: string): Promise<string | undefined> => mkdir(dir, { recursive: true, mode: DIR_MODE });
  const pathOf = (sha256: string): string => join(root, 'sha256', sha256.slice(0, 2), sha256);
  const refOf = (sha256: string): string => `sha256/${sha256.slice(0, 2)}/${sha256}`;

  async function fsyncPath(path: string): Promise<void> {
    const handle = await open(path, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
  }

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
      await mkdirPrivate(tmpDir);
      const tmp = join(tmpDir, `${sha256}.${randomBytes(6).toString('hex')}.part`);
      const hash = createHash('sha256');
      let size = 0;
      const meter = new Transform({
        transform(chunk: Buffer, _enc, done) {
          size += chunk.length;
          if (size > maxBytes) {
            done(new RgridError('payload_too_large', `blob exceeds the limit of ${maxBytes} bytes`, { limit_bytes: maxBytes }));
            return;
          }
          hash.update(chunk);
          done(null, chunk);
        },
      });
      try {
        // The request is piped (not pipelined) into the meter: when the limit trips, the request stream
        // is only unpiped, not destroyed, so the server can still answer 413 on it. A client abort
        // still ends the write with an error.
        const sink = pipeline(meter, createWriteStream(tmp, { flags: 'wx', mode: FILE_MODE }));
        body.once('error', (err) => meter.destroy(err));
        body.once('aborted', () => meter.destroy(new RgridError('bad_request', 'upload aborted by the client')));
        body.pipe(meter);
        await sink;
        await fsyncPath(tmp);
      } catch (err) {
        await rm(tmp, { force: true });
        throw err;
      }
      const actual = hash.digest('hex');
      if (actual !== sha256) {
        await rm(tmp, { force: true });
        throw new RgridError('digest_mismatch', `uploaded bytes hash to ${actual}, not ${sha256}; nothing was stored`, { expected: sha256, actual, size });
      }
      const staged: StagedBlob = {
        size,
        ref: refOf(sha256),
        async commit() {
          const final = pathOf(sha256);
          await mkdirPrivate(dirname(final));
          await rename(tmp, final);
          await fsyncPath(dirname(final));
        },
        async discard() {
          await rm(tmp, { force: true });
        },
      };
      return staged;
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
