// control/dispatch/lock-report.ts: the lock fields a worker reports at complete, checked as one lock.
import { describe, expect, it } from 'vitest';
import { lockReportOf, NO_LOCK } from '../../control/dispatch/lock-report.js';

const LOCK = 'c'.repeat(64);
const REQS = 'd'.repeat(64);
const refused = (fn: () => unknown, message: RegExp): void => {
  let thrown: unknown;
  try {
    fn();
  } catch (err) {
    thrown = err;
  }
  expect(thrown).toMatchObject({ code: 'bad_request', message: expect.stringMatching(message) as unknown });
};

describe('lockReportOf', () => {
  it('stores nothing when no lock is reported, with or without requirements', () => {
    expect(lockReportOf({}, REQS)).toEqual(NO_LOCK);
    expect(lockReportOf({ lock_sha256: null, resolved: null, resolution: null }, null)).toEqual(NO_LOCK);
  });

  it('keeps a lock with its pins sorted, and one without pins', () => {
    expect(lockReportOf({ lock_sha256: LOCK, resolved: ['numpy==2.1.0', 'attrs==24.2.0', 'a-b==1'], resolution: 'resolved' }, REQS)).toEqual({
      lock_sha256: LOCK, resolved: ['a-b==1', 'attrs==24.2.0', 'numpy==2.1.0'], resolution: 'resolved',
    });
    expect(lockReportOf({ lock_sha256: LOCK, resolution: 'locked' }, REQS)).toEqual({ lock_sha256: LOCK, resolved: null, resolution: 'locked' });
  });

  it('refuses pins or a resolution without the lock they describe', () => {
    refused(() => lockReportOf({ resolution: 'cached' }, REQS), /need lock_sha256/);
    refused(() => lockReportOf({ lock_sha256: null, resolved: ['numpy==2.1.0'] }, REQS), /need lock_sha256/);
  });

  it('refuses a lock for an execution without requirements', () => {
    refused(() => lockReportOf({ lock_sha256: LOCK, resolution: 'locked' }, null), /without requirements/);
  });

  it('refuses a project pinned twice, wherever the two pins are in the list', () => {
    refused(() => lockReportOf({ lock_sha256: LOCK, resolved: ['numpy==2.1.0', 'attrs==1', 'numpy==1.26.4'] }, REQS), /numpy twice/);
    refused(() => lockReportOf({ lock_sha256: LOCK, resolved: ['a==1', 'a-b==1', 'a0==2', 'a==1'] }, REQS), /project a twice/);
    // Names that share a prefix are different projects.
    expect(lockReportOf({ lock_sha256: LOCK, resolved: ['a==1', 'a-b==1', 'a0==2', 'ab==3'] }, REQS).resolved).toEqual(['a-b==1', 'a0==2', 'a==1', 'ab==3']);
  });
});
