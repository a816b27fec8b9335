import { join } from 'node:path';
import fp from 'fastify-plugin';
import type { BlobStorage } from '../storage/blob-storage.js';
import { createFsBlobStorage } from '../storage/fs-storage.js';

declare module 'fastify' {
  interface FastifyInstance {
    storage: BlobStorage;
  }
}

/** Blob storage: the filesystem store under `<data-dir>/blobs` unless another backend is handed in. */
export default fp<{ dataDir: string; storage?: BlobStorage }>(
  (app, opts, done) => {
    const storage = opts.storage ?? createFsBlobStorage(join(opts.dataDir, 'blobs'));
    app.decorate('storage', storage);
    // Uploads interrupted by a crash leave staged files behind; an hour is far past any live upload.
    app.addHook('onReady', async () => {
      await storage.prepare();
      await storage.sweepTemporary(3_600_000);
    });
    done();
  },
  { name: 'rgrid-storage' },
);
