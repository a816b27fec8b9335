import type { Readable } from 'node:stream';

/**
 * Where input blob bytes live. Content-addressed: a blob is named by its sha256 and written at most
 * once. Visibility (which account may read it) is the database's business, not the store's: the bytes
 * are shared, the `blobs` rows are per account.
 */
export interface BlobStorage {
  /** Creates the store's directories (private to the control plane's user) before first use. */
  prepare(): Promise<void>;
  /**
   * Streams `body` to a temporary place while hashing and counting; commits it under `sha256` only when
   * the digest matches (throws `digest_mismatch`) and the size stays within `maxBytes` (throws
   * `payload_too_large`). On any failure nothing is kept. `commit` runs between verification and the
   * final rename so the caller can hold a lock over "file appears + row inserted".
   */
  put(sha256: string, body: Readable, maxBytes: number): Promise<StagedBlob>;
  /** A readable stream of a stored blob, or undefined when the bytes are not there. */
  get(sha256: string): Promise<{ stream: Readable; size: number } | undefined>;
  exists(sha256: string): Promise<boolean>;
  delete(sha256: string): Promise<void>;
  /** Removes leftovers of interrupted uploads. */
  sweepTemporary(olderThanMs: number): Promise<number>;
}

/** A verified upload waiting to be placed: `commit` moves it into the store, `discard` drops it. */
export interface StagedBlob {
  size: number;
  /** Reference stored with the row (the relative path for the filesystem store). */
  ref: string;
  commit(): Promise<void>;
  discard(): Promise<void>;
}
