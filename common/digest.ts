import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { RgridError } from './errors.js';

/** Every rgrid digest: SHA-256, lower-case hex, 64 characters (design.md §3). */
export const SHA256_HEX = /^[0-9a-f]{64}$/;

export function isSha256Hex(value: unknown): value is string {
  return typeof value === 'string' && SHA256_HEX.test(value);
}

/** Throws `bad_digest` naming the field, so a caller sees which of several digests was wrong. */
export function assertSha256Hex(value: unknown, field: string): asserts value is string {
  if (!isSha256Hex(value)) {
    const shown = typeof value === 'string' ? JSON.stringify(value.slice(0, 80)) : typeof value;
    throw new RgridError('bad_digest', `${field} must be 64 lower-case hex characters (sha256), got ${shown}`);
  }
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export interface FileDigest {
  sha256: string;
  size: number;
}

/**
 * Hashes a file as a stream, so a multi-gigabyte input never sits in memory. The 1 MiB read size keeps
 * the per-chunk overhead of the stream machinery small next to the hashing itself.
 */
export async function sha256File(path: string): Promise<FileDigest> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(path, { highWaterMark: 1 << 20 })) {
    const buf = chunk as Buffer;
    size += buf.length;
    hash.update(buf);
  }
  return { sha256: hash.digest('hex'), size };
}

/**
 * sha256 over a domain tag and fields, each written as a netstring (`<byte length>:<bytes>,`), so that
 * no two different field lists can produce the same byte stream ("ab","c" vs "a","bc").
 */
export function compositeKey(domain: string, fields: readonly string[]): string {
  const hash = createHash('sha256');
  for (const field of [domain, ...fields]) {
    const bytes = Buffer.from(field, 'utf8');
    hash.update(`${bytes.length}:`);
    hash.update(bytes);
    hash.update(',');
  }
  return hash.digest('hex');
}
