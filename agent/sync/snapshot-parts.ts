import { randomUUID } from 'node:crypto';
import type { CacheEntry, SnapshotRequest } from '../../common/wire/control-api.js';

/**
 * A full snapshot cut into requests that each fit a byte budget, measured on the serialized body (what
 * the control plane's body limit counts), not on the number of entries: entries differ in size, and the
 * `accounts` list repeated in every part can be large too.
 *
 * A snapshot that fits the budget whole goes as one request without `snapshot` (what every control
 * plane version takes). A larger one goes as parts 0..n of one snapshot id, in order; the control plane
 * removes the worker's entries missing from the snapshot only when the final part arrives. The snapshot
 * keeps its position across failures: the next attempt sends the part that was not acknowledged again
 * (the control plane applies a repeated part once), so a lost answer costs one part, not the snapshot.
 */
export class PartedSnapshot {
  readonly id = randomUUID();
  /** Entries acknowledged so far (parts are contiguous slices of `entries`). */
  private offset = 0;
  /** The number of the next part to send. */
  private part = 0;
  /** Budget lowered after the control plane refused a part as too large (its limit is below ours). */
  private lowered: number | undefined;
  private readonly sizes: number[];
  private readonly total: number;

  constructor(
    readonly accounts: readonly string[],
    readonly entries: readonly CacheEntry[],
    /** The outbox seq sealed with this snapshot: those ops are acknowledged after the final part. */
    readonly through: number,
  ) {
    this.sizes = entries.map((e) => Buffer.byteLength(JSON.stringify(e)));
    this.total = envelopeBytes(accounts, false) + this.sizes.reduce((sum, n) => sum + n, 0) + Math.max(0, entries.length - 1);
  }

  get partsSent(): number {
    return this.part;
  }

  /** The next request to send, within `budget` bytes if any entry fits at all (one entry always goes). */
  next(budget: number): { body: SnapshotRequest; count: number; final: boolean; bytes: number } {
    const limit = Math.min(budget, this.lowered ?? Infinity);
    if (this.part === 0 && this.offset === 0 && this.total <= limit) {
      return { body: { accounts: [...this.accounts], entries: [...this.entries] }, count: this.entries.length, final: true, bytes: this.total };
    }
    const room = limit - envelopeBytes(this.accounts, true);
    let end = this.offset;
    let used = 0;
    while (end < this.entries.length) {
      const add = this.sizes[end]! + (end > this.offset ? 1 : 0);
      if (end > this.offset && used + add > room) break;
      used += add;
      end++;
    }
    const final = end === this.entries.length;
    return {
      body: { accounts: [...this.accounts], entries: this.entries.slice(this.offset, end), snapshot: { id: this.id, part: this.part, final } },
      count: end - this.offset,
      final,
      bytes: envelopeBytes(this.accounts, true) + used,
    };
  }

  /** The part just sent was acknowledged. */
  acknowledged(count: number): void {
    this.offset += count;
    this.part++;
  }

  /**
   * The control plane refused a request of `bytes` as too large: later parts get half of it. Returns
   * false when that request held a single entry (nothing smaller can be sent).
   */
  tooLarge(bytes: number, count: number): boolean {
    if (count <= 1) return false;
    this.lowered = Math.floor(bytes / 2);
    return true;
  }
}

const LONGEST_PART_INFO = { id: '00000000-0000-0000-0000-000000000000', part: 2_147_483_647, final: false };

/** Bytes of a request with no entries: what every part carries besides its entries. */
export function envelopeBytes(accounts: readonly string[], parted: boolean): number {
  return Buffer.byteLength(JSON.stringify({ accounts, entries: [], ...(parted ? { snapshot: LONGEST_PART_INFO } : {}) }));
}
