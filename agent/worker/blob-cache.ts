/**
 * The worker's content-addressed blob cache: files under `<data_dir>/blobs/<sha[0:2]>/<sha>`, their size
 * and last use in LMDB. A blob already here is not downloaded again (that is the worker side of
 * input_cache_hit); a download is verified against its digest and its expected size while it is written,
 * and becomes visible only once both match (common/content-store.ts, staged in `blobs/tmp`, which is
 * emptied at start); concurrent requests for one blob share one download. What is removed, and when, is
 * the blob pruner's business (agent/prune/blob-pruner.ts: TTL on last use and a size bound, least
 * recently used first, like images); a blob pinned by a run in progress is never removed.
 *
 * At rest the files are 0600 in 0700 directories: only the agent reads them. A run that uses a blob as an
 * input gets it hard-linked into its inputs directory, and the container's uid must be able to read it,
 * which widens the shared inode to 0644 while the blob is pinned; the last unpin narrows it again.
 *
 * The LMDB environment is its own (`<data_dir>/blob-index`) rather than a sub-db of the entry index, so
 * the blob cache and the entry index evolve independently (and no migration of either is needed).
 */
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import { rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { open, type RootDatabase } from 'lmdb';
import { writeContent } from '../../common/content-store.js';
import { RgridError } from '../../common/errors.js';
import { isSha256, shown } from '../../common/names.js';
import { SingleFlight } from '../builder/single-flight.js';

const FILE_MODE = 0o600;
const DIR_MODE = 0o700;

export interface BlobRecord {
  size: number;
  created_at: number;
  last_used_at: number;
}

export interface BlobCacheOptions {
  dataDir: string;
  now?: () => number;
}

/** A cached blob as the pruner sees it. */
export interface CachedBlob extends BlobRecord {
  sha256: string;
}

export interface EnsureLimits {
  /** The size the blob must have (from a manifest); checked for a cached blob too. */
  size?: number | undefined;
  /** When the size is not known: the most bytes accepted before the download is abandoned. */
  maxBytes: number;
}

export interface BlobCache {
  pathOf(sha256: string): string;
  /** True when the blob is here (and then counts as used). */
  has(sha256: string): Promise<boolean>;
  /** The blob's local path; downloads it (verified: digest and size) when absent. */
  ensure(sha256: string, download: () => Promise<Readable>, limits: EnsureLimits): Promise<{ path: string; downloaded: boolean }>;
  /** Pins blobs for a run; the returned function unpins. */
  pin(sha256s: readonly string[]): () => void;
  isPinned(sha256: string): boolean;
  /** Every cached blob with its size and last use (for the pruner). */
  list(): CachedBlob[];
  /** Removes a blob unless a run has it pinned at this moment; true when removed. */
  remove(sha256: string): Promise<boolean>;
  stats(): { entries: number; bytes: number };
  close(): Promise<void>;
}

export function createBlobCache(options: BlobCacheOptions): BlobCache {
  const now = options.now ?? Date.now;
  const dir = join(options.dataDir, 'blobs');
  const tmp = join(dir, 'tmp');
  // Directories made by an older version may be wider: narrowed once here.
  mkdirSync(dir, { recursive: true, mode: DIR_MODE });
  chmodSync(dir, DIR_MODE);
  // Downloads cut off by an earlier life of the agent: none is in flight yet.
  rmSync(tmp, { recursive: true, force: true });
  const root: RootDatabase<BlobRecord, string> = open({ path: join(options.dataDir, 'blob-index') });
  // LMDB creates its directory with the process umask; the digests in it are the agent's business only.
  chmodSync(join(options.dataDir, 'blob-index'), DIR_MODE);
  const flights = new SingleFlight<{ path: string; size: number }, never>();
  const pins = new Map<string, number>();
  const pathOf = (sha: string): string => {
    // The one place a digest becomes a path: nothing else may (`../`, a separator, an absolute path).
    if (!isSha256(sha)) throw new RgridError('bad_digest', `${shown(sha)} is not a sha256; no blob path for it`);
    return join(dir, sha.slice(0, 2), sha);
  };

  async function present(sha: string): Promise<boolean> {
    const record = root.get(sha);
    if (!record) return false;
    const st = await stat(pathOf(sha)).catch(() => undefined);
    if (st?.size === record.size) return true;
    // The file vanished or was damaged behind our back: forget it, download again.
    await root.remove(sha);
    return false;
  }

  async function download(sha: string, source: () => Promise<Readable>, limits: EnsureLimits): Promise<{ path: string; size: number }> {
    const { size } = await writeContent(source, dir, `${sha.slice(0, 2)}/${sha}`, { sha256: sha, size: limits.size, maxBytes: limits.maxBytes }, {
      label: `blob ${sha}`, mode: FILE_MODE, dirMode: DIR_MODE, stagingDir: tmp,
    });
    const at = now();
    await root.put(sha, { size, created_at: at, last_used_at: at });
    return { path: pathOf(sha), size };
  }

  /** Back to 0600 once no run uses the blob (see the module comment). Synchronous: no run can pin in between. */
  function narrow(sha: string): void {
    try {
      chmodSync(pathOf(sha), FILE_MODE);
    } catch {
      // Already removed, or never downloaded: nothing to narrow.
    }
  }

  return {
    pathOf,
    async has(sha) {
      if (!(await present(sha))) return false;
      const record = root.get(sha);
      if (record) await root.put(sha, { ...record, last_used_at: now() });
      return true;
    },
    async ensure(sha, source, limits) {
      const path = pathOf(sha);
      if (await this.has(sha)) {
        const size = root.get(sha)?.size;
        if (limits.size !== undefined && size !== limits.size) {
          throw new RgridError('digest_mismatch', `blob ${sha} has ${size} bytes, not the ${limits.size} its manifest says`);
        }
        return { path, downloaded: false };
      }
      const flight = flights.run(sha, () => download(sha, source, limits));
      const got = await flight.promise;
      // A follower's expectation is checked too: the leader's download was checked against the leader's.
      if (limits.size !== undefined && got.size !== limits.size) {
        throw new RgridError('digest_mismatch', `blob ${sha} has ${got.size} bytes, not the ${limits.size} its manifest says`);
      }
      // Only the leader moved bytes; followers of the same flight found nothing to download themselves.
      return { path, downloaded: flight.leader };
    },
    pin(shas) {
      for (const s of shas) pins.set(s, (pins.get(s) ?? 0) + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        for (const s of shas) {
          const n = (pins.get(s) ?? 1) - 1;
          if (n <= 0) {
            pins.delete(s);
            narrow(s);
          } else pins.set(s, n);
        }
      };
    },
    isPinned: (sha) => pins.has(sha),
    list() {
      const blobs: CachedBlob[] = [];
      for (const { key, value } of root.getRange()) blobs.push({ sha256: key, ...value });
      return blobs;
    },
    async remove(sha) {
      const path = pathOf(sha);
      // Checked right before removal: a run may have pinned it since the pruner planned.
      if (pins.has(sha)) return false;
      await root.remove(sha);
      await rm(path, { force: true });
      return true;
    },
    stats() {
      let entries = 0;
      let bytes = 0;
      for (const { value } of root.getRange()) {
        entries++;
        bytes += value.size;
      }
      return { entries, bytes };
    },
    close: () => root.close(),
  };
}
