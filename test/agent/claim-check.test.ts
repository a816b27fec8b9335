import { describe, expect, it } from 'vitest';
import { inputSha256 } from '../../common/cache-keys.js';
import { checkClaim } from '../../agent/worker/claim-check.js';

const sha = (c: string): string => c.repeat(64);
const EXEC = '0e3c8a8e-1b2c-4d5e-8f90-123456789abc';
const CLAIM = '0e3c8a8e-1b2c-4d5e-8f90-123456789abd';
const inputs = [{ name: 'a.csv', sha256: sha('b'), size: 3 }];
const valid = {
  execution_id: EXEC, claim_id: CLAIM, account: 'acme', runtime: 'python3.11', script_sha256: sha('a'),
  requirements_sha256: null, requirements_blob_sha256: null, input_sha256: inputSha256(inputs), inputs,
  timeout_s: null, memory_mb: null, attempt: 1, lease_ms: 30_000, lease_expires_at: '2030-01-01T00:00:00.000Z', queue_ms: 3,
};

describe('claims from the control plane', () => {
  it('accepts a well-formed claim', () => {
    expect(checkClaim(valid)).toEqual({ ok: true, claim: valid });
  });

  it('drops a claim whose execution id is a path, without reporting it anywhere', () => {
    const verdict = checkClaim({ ...valid, execution_id: '../../../victim' });
    expect(verdict.ok).toBe(false);
    expect(verdict).not.toHaveProperty('report');
    expect(verdict.ok === false && verdict.reason).toContain('/execution_id');
  });

  it('refuses, and reports as failed, a claim with usable ids but a hostile input name or digest', () => {
    const bad = [
      { ...valid, inputs: [{ name: '../x', sha256: sha('b'), size: 3 }] },
      { ...valid, inputs: [{ name: 'a\u001b[2Jb', sha256: sha('b'), size: 3 }] },
      { ...valid, script_sha256: '../../etc/passwd' },
      { ...valid, inputs: [{ name: 'a.csv', sha256: 'B'.repeat(64), size: 3 }] },
      { ...valid, account: '../other' },
      { ...valid, runtime: 'py/../../x' },
      { ...valid, inputs: [{ name: 'a.csv', sha256: sha('b'), size: -1 }] },
      { ...valid, lease_expires_at: 'tomorrow' },
    ];
    for (const claim of bad) {
      const verdict = checkClaim(claim);
      expect(verdict).toMatchObject({ ok: false, report: { execution_id: EXEC, claim_id: CLAIM } });
      // The reason is safe to log: no raw control character from the claim.
      expect(verdict.ok === false && /[\u0000-\u001f]/u.test(verdict.reason)).toBe(false);
    }
  });

  it('refuses inputs that do not add up to the claim\'s input_sha256, and duplicate names', () => {
    expect(checkClaim({ ...valid, inputs: [...inputs, { name: 'extra', sha256: sha('c'), size: 1 }] }).ok).toBe(false);
    expect(checkClaim({ ...valid, input_sha256: null }).ok).toBe(false);
    const twice = [...inputs, { name: 'a.csv', sha256: sha('c'), size: 1 }];
    const verdict = checkClaim({ ...valid, inputs: twice, input_sha256: sha('d') });
    expect(verdict.ok === false && verdict.reason).toContain('twice');
  });

  it('refuses half a requirements pair and anything that is not an object', () => {
    expect(checkClaim({ ...valid, requirements_sha256: sha('e') }).ok).toBe(false);
    expect(checkClaim(null)).toEqual({ ok: false, reason: expect.any(String) as string });
    expect(checkClaim('claim')).toEqual({ ok: false, reason: 'claim refused: the claim "claim" fails the claim schema (type)' });
    expect(checkClaim({ ...valid, claim_id: 'x' })).not.toHaveProperty('report');
  });
});
