import { isOciDigest } from '../../common/names.js';

/**
 * What the agent knows about the engine's images from its event stream, without asking: an image ID is
 * `present` (listed at the last full resync, or added or confirmed since), `gone` (a delete event since
 * the last resync), or `unknown`. Unknown is common and harmless — the engine's classic builder emits no
 * event for an untagged image it built, and a pull names a reference rather than an ID — so an unknown
 * ID is asked of the engine once and its answer learnt. Only image IDs of the one definition in
 * common/names.ts (`sha256:<64 hex>`) are ever stored; anything else in an event is ignored.
 */
export type ImageState = 'present' | 'gone' | 'unknown';

/** The fields of an engine event this reads (type=image events). */
export interface ImageEvent {
  Action?: unknown;
  Actor?: { ID?: unknown };
  id?: unknown;
}

/** Events that can make an image appear (or reappear under an ID deleted before). */
const ADDS = new Set(['pull', 'import', 'load', 'tag', 'build', 'create', 'save']);
/** Bound on remembered deletions: one forgotten becomes `unknown`, which only costs one engine ask. */
export const MAX_GONE = 4096;

export class ImageSet {
  private present = new Set<string>();
  private readonly gone = new Set<string>();

  state(id: string): ImageState {
    if (this.present.has(id)) return 'present';
    return this.gone.has(id) ? 'gone' : 'unknown';
  }

  /** The engine's full list: everything else is unknown again (deletions before it are in the list). */
  resync(ids: Iterable<unknown>): void {
    this.present = new Set([...ids].filter(isOciDigest));
    this.gone.clear();
  }

  /**
   * An answer of the engine's to an ID that was unknown when asked. "Exists" is not learnt when a
   * deletion of the same ID arrived while the question was out: the event is the newer news.
   */
  learn(id: string, exists: boolean): void {
    if (!isOciDigest(id)) return;
    if (!exists) this.markGone(id);
    else if (!this.gone.has(id)) this.present.add(id);
  }

  /** The engine said "no such image" for this ID somewhere else (a container create). */
  forget(id: string): void {
    if (isOciDigest(id)) this.markGone(id);
  }

  apply(event: ImageEvent): void {
    const action = typeof event.Action === 'string' ? event.Action : undefined;
    const actor = event.Actor?.ID ?? event.id;
    if (!action) return;
    if (action === 'delete') {
      if (isOciDigest(actor)) this.markGone(actor);
      return;
    }
    if (!ADDS.has(action)) return; // untag leaves the image; others say nothing about presence.
    if (isOciDigest(actor)) {
      this.present.add(actor);
      this.gone.delete(actor);
    } else {
      // A reference (a pull names `repo:tag`): whichever ID it brought, it may be one deleted before.
      this.gone.clear();
    }
  }

  get size(): number {
    return this.present.size;
  }

  private markGone(id: string): void {
    this.present.delete(id);
    this.gone.delete(id);
    this.gone.add(id);
    if (this.gone.size > MAX_GONE) this.gone.delete(this.gone.values().next().value!);
  }
}
