import { RgridError } from './errors.js';

/**
 * An input file name as it appears under /work/inputs: one path segment, no traversal, no NUL or other
 * control characters, at most 255 bytes (the common file-system limit).
 */
export function assertSafeFileName(name: unknown): asserts name is string {
  const reason = unsafeFileNameReason(name);
  if (reason) throw new RgridError('bad_file_name', `input file name ${JSON.stringify(name)}: ${reason}`);
}

function unsafeFileNameReason(name: unknown): string | undefined {
  if (typeof name !== 'string' || name.length === 0) return 'must be a non-empty string';
  if (name === '.' || name === '..') return 'must not be . or ..';
  if (name.includes('/') || name.includes('\\')) return 'must not contain a path separator';
  if (name.includes('..')) return 'must not contain ..';
  if (/[\u0000-\u001f\u007f]/.test(name)) return 'must not contain NUL or control characters';
  if (Buffer.byteLength(name, 'utf8') > 255) return 'must be at most 255 bytes';
  return undefined;
}
