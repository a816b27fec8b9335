/**
 * Concurrent requests for one key share one execution and one result (docs/architecture.md, the index lifecycle): 1000 identical
 * submissions at once → exactly one build. The first caller is the leader; everyone who arrives while its
 * promise is pending is a follower and gets the same promise. Followers can also listen to the progress
 * events the leader's work emits, so every waiting client sees the build's output.
 */
export interface Flight<T, E> {
  promise: Promise<T>;
  leader: boolean;
  /** Subscribes to the flight's events; returns the unsubscribe function. */
  subscribe(listener: (event: E) => void): () => void;
}

export class SingleFlight<T, E = never> {
  private readonly inflight = new Map<string, { promise: Promise<T>; listeners: Set<(event: E) => void> }>();

  run(key: string, work: (emit: (event: E) => void) => Promise<T>): Flight<T, E> {
    const existing = this.inflight.get(key);
    if (existing) return this.flight(existing, false);
    const listeners = new Set<(event: E) => void>();
    const emit = (event: E): void => {
      for (const listener of listeners) {
        try {
          listener(event);
        } catch {
          // A listener's failure (e.g. a disconnected client) must not break the shared work.
        }
      }
    };
    const slot = { listeners, promise: undefined as unknown as Promise<T> };
    // The work starts on a later microtask so that `slot` is registered before it can emit or settle.
    slot.promise = Promise.resolve()
      .then(() => work(emit))
      .finally(() => {
        if (this.inflight.get(key) === slot) this.inflight.delete(key);
      });
    this.inflight.set(key, slot);
    return this.flight(slot, true);
  }

  has(key: string): boolean {
    return this.inflight.has(key);
  }

  get size(): number {
    return this.inflight.size;
  }

  private flight(slot: { promise: Promise<T>; listeners: Set<(event: E) => void> }, leader: boolean): Flight<T, E> {
    return {
      promise: slot.promise,
      leader,
      subscribe(listener) {
        slot.listeners.add(listener);
        return () => slot.listeners.delete(listener);
      },
    };
  }
}
