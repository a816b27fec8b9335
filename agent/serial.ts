/**
 * Runs tasks one at a time, in call order. The pruner and the reconciler share one, so a prune never
 * removes an image that a concurrent reconcile is adopting back into the index.
 */
export type Serial = <T>(task: () => Promise<T>) => Promise<T>;

export function createSerial(): Serial {
  let tail: Promise<unknown> = Promise.resolve();
  return <T>(task: () => Promise<T>): Promise<T> => {
    const next = tail.then(task, task);
    tail = next.catch(() => undefined);
    return next;
  };
}
