/**
 * The waiting half of "pull before build", pure so the unit tests drive it with a fake acquire and a fake
 * clock: ask the control plane who builds (account, kind, key), and while another worker holds the lease
 * (`building`) ask again — each request is a long poll of up to `pollMs` — until the answer changes or
 * `buildWaitMs` has passed. Any failure of the conversation (unreachable, an error answer, an answer that
 * breaks the wire contract) ends the wait as `unreachable`: the caller then builds locally, degraded,
 * never failing because the control plane is away.
 */
import type { BuildAcquireResponse } from '../../common/wire/registry-api.js';

type Answer<S extends BuildAcquireResponse['state']> = Extract<BuildAcquireResponse, { state: S }>;

export type AcquireDecision =
  | { type: 'pushed'; answer: Answer<'pushed'> }
  | { type: 'lease'; answer: Answer<'lease'> }
  | { type: 'failed'; answer: Answer<'failed'> }
  /** Another worker was still building when build_wait_s ran out. */
  | { type: 'timeout'; waitedMs: number }
  | { type: 'unreachable'; error: unknown };

export interface AcquireLoopOptions {
  /** One acquire request holding up to `waitMs` (the request's wait_ms). */
  acquire: (waitMs: number) => Promise<BuildAcquireResponse>;
  buildWaitMs: number;
  /** Longest hold asked of one request (the wire allows 30 s). */
  pollMs: number;
  /**
   * Least time between two requests while another worker builds: a control plane that answers
   * `building` at once instead of holding the request is not hammered.
   */
  minIntervalMs: number;
  now: () => number;
  sleep: (ms: number) => Promise<void>;
  /** Called once, when the first `building` answer starts the wait. */
  onWaiting?: (holder: string) => void;
}

export async function acquireLoop(o: AcquireLoopOptions): Promise<AcquireDecision> {
  const started = o.now();
  for (;;) {
    const asked = o.now();
    const remaining = Math.max(0, started + o.buildWaitMs - asked);
    let answer: BuildAcquireResponse;
    try {
      answer = await o.acquire(Math.min(o.pollMs, remaining));
    } catch (error) {
      return { type: 'unreachable', error };
    }
    if (answer.state !== 'building') return { type: answer.state, answer } as AcquireDecision;
    if (asked === started) o.onWaiting?.(answer.holder);
    const at = o.now();
    if (at - started >= o.buildWaitMs) return { type: 'timeout', waitedMs: at - started };
    const early = o.minIntervalMs - (at - asked);
    if (early > 0) await o.sleep(Math.min(early, started + o.buildWaitMs - at));
  }
}
