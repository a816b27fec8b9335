/**
 * The claim keeper's rhythm: a renewal every third of the lease while they succeed, sooner after one
 * failed (the control plane may come back with little of the lease left), and a 409 ends it as lost.
 */
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import { RgridError } from '../../common/errors.js';
import { keepClaim, renewalIntervalMs } from '../../agent/worker/claim-keeper.js';

const claim = { execution_id: '0f8b3a52-5a0e-4a8e-9a39-5b2f0e4c1d77', claim_id: '1f8b3a52-5a0e-4a8e-9a39-5b2f0e4c1d77', lease_ms: 30_000 };

/** Runs the keeper over scripted renewal answers; returns the waits it asked for before each renewal. */
async function rhythm(answers: Array<'ok' | 'down' | 'lost'>): Promise<{ waits: number[]; lost: boolean }> {
  const waits: number[] = [];
  let call = 0;
  let finish: () => void = () => undefined;
  const done = new Promise<void>((r) => (finish = r));
  const client = {
    renew: () => {
      const answer = answers[call++];
      if (call >= answers.length) finish();
      if (answer === 'down') return Promise.reject(new RgridError('unavailable', 'control plane unreachable: ECONNREFUSED'));
      if (answer === 'lost') return Promise.reject(new RgridError('conflict', 'the claim is no longer held'));
      return Promise.resolve({ lease_expires_at: new Date().toISOString() });
    },
  };
  const keeper = keepClaim(client, claim, pino({ level: 'silent' }), (ms, signal) => {
    waits.push(ms);
    if (waits.length <= answers.length) return Promise.resolve();
    // Past the script: wait until stopped, as the real wait would.
    return new Promise((_resolve, reject) => signal.addEventListener('abort', () => reject(new Error('stopped')), { once: true }));
  });
  await done;
  await new Promise((r) => setTimeout(r, 10));
  keeper.stop();
  return { waits: waits.slice(0, answers.length), lost: keeper.lost.aborted };
}

describe('claim keeper', () => {
  const every = renewalIntervalMs(claim.lease_ms);

  it('renews every third of the lease while renewals succeed', async () => {
    expect(every).toBe(10_000);
    const { waits, lost } = await rhythm(['ok', 'ok', 'ok']);
    expect(waits).toEqual([every, every, every]);
    expect(lost).toBe(false);
  });

  it('tries again sooner after a failed renewal, and back to the interval once one succeeds', async () => {
    const { waits } = await rhythm(['down', 'down', 'down', 'ok', 'ok']);
    expect(waits[0]).toBe(every);
    for (const w of waits.slice(1, 4)) expect(w).toBeLessThan(every);
    // The backoff bound doubles from 250 ms: the first retry waits under 250 ms.
    expect(waits[1]).toBeLessThan(250);
    expect(waits[4]).toBe(every);
  });

  it('gives the claim up on a 409', async () => {
    const { lost } = await rhythm(['ok', 'lost']);
    expect(lost).toBe(true);
  });
});
