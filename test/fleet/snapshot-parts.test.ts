// Cutting a full snapshot into requests by serialized size: every request fits the budget (unless one
// entry alone is larger), the parts are contiguous and numbered in order, the last one is final, and a
// snapshot that fits goes as one request in the shape every control plane takes.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PartedSnapshot } from '../../agent/sync/snapshot-parts.js';
import { SnapshotRequest, type CacheEntry } from '../../common/wire/control-api.js';
import { Value } from 'typebox/value';

const hex = (n: number): string => n.toString(16).padStart(64, '0');
function entry(i: number, imageIdLength = 10): CacheEntry {
  return {
    kind: 'image', account: i % 3 === 0 ? 'acme' : 'org:team', key: hex(i), image_id: `sha256:${'a'.repeat(imageIdLength)}`, runtime: 'python3.11',
    requirements_sha256: null, script_sha256: hex(i + 1), deps_key: null, size_bytes: i, created_at: '2026-01-01T00:00:00.000Z',
    last_used_at: '2026-01-01T00:00:00.000Z', use_count: i,
  };
}

/** Sends the whole snapshot through `PartedSnapshot` with the given budget; returns the bodies. */
function sendAll(snap: PartedSnapshot, budget: number): Array<{ body: SnapshotRequest; bytes: number }> {
  const sent: Array<{ body: SnapshotRequest; bytes: number }> = [];
  for (;;) {
    const part = snap.next(budget);
    sent.push({ body: part.body, bytes: part.bytes });
    snap.acknowledged(part.count);
    if (part.final) return sent;
    if (sent.length > 100_000) throw new Error('no end');
  }
}

describe('snapshot parts', () => {
  it('sends a snapshot that fits as one request without `snapshot`, byte count exact', () => {
    const entries = Array.from({ length: 5 }, (_, i) => entry(i));
    const snap = new PartedSnapshot(['acme', 'org:team'], entries, 7);
    const part = snap.next(1_000_000);
    expect(part).toMatchObject({ final: true, count: 5 });
    expect(part.body).toEqual({ accounts: ['acme', 'org:team'], entries });
    expect(part.bytes).toBe(Buffer.byteLength(JSON.stringify(part.body)));
    expect(Value.Check(SnapshotRequest, part.body)).toBe(true);
    // An empty snapshot is one request too: it still removes what the control plane holds.
    expect(new PartedSnapshot(['acme'], [], 0).next(4096)).toMatchObject({ final: true, count: 0, body: { accounts: ['acme'], entries: [] } });
  });

  it('cuts by serialized size, not count: every part within the budget, contiguous, numbered, last final', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 190 }), { minLength: 0, maxLength: 120 }),
        fc.integer({ min: 700, max: 6000 }),
        fc.array(fc.constantFrom('acme', 'org:team', 'x@y', 'a'.repeat(64)), { minLength: 1, maxLength: 4 }),
        (lengths, budget, accounts) => {
          const entries = lengths.map((n, i) => entry(i, n));
          const snap = new PartedSnapshot(accounts, entries, 0);
          const sent = sendAll(snap, budget);
          const whole = sent.length === 1 && sent[0]!.body.snapshot === undefined;
          const id = sent[0]!.body.snapshot?.id;
          sent.forEach(({ body, bytes }, i) => {
            const actual = Buffer.byteLength(JSON.stringify(body));
            // The size computed up front is at least the real one (the envelope is counted at its longest).
            expect(actual).toBeLessThanOrEqual(bytes);
            if (body.entries.length > 1) expect(actual).toBeLessThanOrEqual(budget);
            expect(body.accounts).toEqual(accounts);
            expect(Value.Check(SnapshotRequest, body)).toBe(true);
            if (!whole) expect(body.snapshot).toEqual({ id, part: i, final: i === sent.length - 1 });
          });
          expect(sent.flatMap((s) => s.body.entries)).toEqual(entries);
          if (!whole) expect(sent.every((s) => s.body.entries.length > 0)).toBe(true);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('sends one entry per part when a single entry is larger than the budget', () => {
    const entries = [entry(1, 190), entry(2, 190), entry(3, 190)];
    const sent = sendAll(new PartedSnapshot(['acme'], entries, 0), 100);
    expect(sent.map((s) => s.body.entries.length)).toEqual([1, 1, 1]);
    expect(sent.map((s) => s.body.snapshot?.part)).toEqual([0, 1, 2]);
  });

  it('resumes at the unacknowledged part with the same id, and halves the parts after a 413', () => {
    const entries = Array.from({ length: 40 }, (_, i) => entry(i, 100));
    const snap = new PartedSnapshot(['acme', 'org:team'], entries, 0);
    const first = snap.next(4096);
    snap.acknowledged(first.count);
    const second = snap.next(4096);
    // Not acknowledged (the answer was lost): the same part again.
    const again = snap.next(4096);
    expect(again.body).toEqual(second.body);
    // Refused as too large: the same part number, fewer entries, half the bytes at most.
    expect(snap.tooLarge(again.bytes, again.count)).toBe(true);
    const smaller = snap.next(4096);
    expect(smaller.body.snapshot).toEqual(second.body.snapshot);
    expect(smaller.count).toBeLessThan(second.count);
    expect(smaller.bytes).toBeLessThanOrEqual(Math.floor(again.bytes / 2));
    // A whole snapshot refused as too large is sent in parts from then on.
    const whole = new PartedSnapshot(['acme'], entries.slice(0, 4), 0);
    const one = whole.next(1_000_000);
    expect(one.body.snapshot).toBeUndefined();
    expect(whole.tooLarge(one.bytes, one.count)).toBe(true);
    expect(whole.next(1_000_000).body.snapshot).toMatchObject({ part: 0 });
    // A single entry refused as too large cannot be cut further.
    const single = new PartedSnapshot(['acme'], entries.slice(0, 1), 0);
    const alone = single.next(100);
    expect(single.tooLarge(alone.bytes, alone.count)).toBe(false);
  });
});
