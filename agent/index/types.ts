/**
 * Index entries: what the agent knows it has built on this host. Entries are scoped per account (an
 * account never hits another account's entry: a shared key space is poisoned by whoever can write to it), so the identity of an entry is
 * (kind, account, key).
 */
export type EntryKind = 'image' | 'deps';

export interface EntryRef {
  kind: EntryKind;
  account: string;
  /** image_key for kind "image", deps_key for kind "deps". */
  key: string;
}

export interface IndexEntry extends EntryRef {
  /** Full engine image ID (`sha256:…`): what a hit is verified against. */
  image_id: string;
  /** The engine tag the agent gave the image (`rgrid-exec:…` / `rgrid-deps:…`). */
  image_tag: string;
  runtime: string;
  base_image_id: string;
  /** Script images only. */
  script_sha256: string | null;
  /** Null for a script image without requirements. */
  requirements_sha256: string | null;
  /** The deps layer a script image was built FROM (null without requirements); equals key for kind "deps". */
  deps_key: string | null;
  /**
   * The lock the dependency layer installs (common/lock.ts), on both the layer and the script images built
   * FROM it. Absent or null: keyed on the requirements text (entries from before locks, `resolve_ttl: never`).
   */
  lock_sha256?: string | null;
  /** The engine's image size (including the layers shared with its base). */
  size_bytes: number;
  /** Epoch milliseconds. */
  created_at: number;
  last_used_at: number;
  use_count: number;
  /**
   * `built` here, or `pulled` from the registry (another worker built it). Absent in entries written
   * before image sharing: read as `built` (entryOrigin).
   */
  origin?: EntryOrigin;
  /** The registry manifest digest this image was pulled by or pushed as; absent/null: none known. */
  registry_digest?: string | null;
}

export type EntryOrigin = 'built' | 'pulled';

export const entryOrigin = (e: Pick<IndexEntry, 'origin'>): EntryOrigin => e.origin ?? 'built';

export function refOf(entry: EntryRef): EntryRef {
  return { kind: entry.kind, account: entry.account, key: entry.key };
}

export function refId(ref: EntryRef): string {
  return `${ref.kind}/${ref.account}/${ref.key}`;
}
