import { RgridError } from '../../common/errors.js';

/**
 * How long one engine call on the run path may go unanswered (a create, an attach, a start, a wait's
 * registration, an inspect, a holder's start, a removal) before it is given up. Seen on this project's
 * 2-core test host under a load of 16: `runc init` hung in its handshake with its parent, and the engine's
 * start of that container (and every later call naming it) never answered; a run waiting on it hung for
 * good, its claim renewed for ever. Given up, the run fails as `engine_unavailable`, which the claim
 * loop hands back (another attempt, here or elsewhere), and what the call left in the engine goes with
 * the run's clean-up or, failing that, at the next start. The longest healthy call seen there was about
 * 1 s (a start under load).
 */
export const ENGINE_STEP_TIMEOUT_MS = 60_000;

/**
 * `work`, or an `engine_unavailable` error naming `what` once `ms` have passed without an answer. A late
 * answer is handed to `late` (to undo what it made: remove a container created after all, close a
 * stream), and a late failure is dropped.
 */
export function withinDeadline<T>(work: Promise<T>, ms: number, what: string, late?: (value: T) => void): Promise<T> {
  let timedOut = false;
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timedOut = true;
      reject(new RgridError('engine_unavailable', `Docker engine: ${what} got no answer within ${Math.round(ms / 100) / 10} s`));
    }, ms);
    timer.unref();
  });
  work.then((value) => {
    if (timedOut) late?.(value);
  }, () => undefined);
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}
