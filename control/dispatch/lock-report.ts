/**
 * What a worker reports at `complete` about the lock a run used (common/lock.ts), checked beyond what the
 * wire schema checks field by field. The three fields describe one lock: the pins and how the lock was
 * obtained come with its digest, and only an execution with requirements has a lock. A lock holds one
 * version of each project, so a project pinned twice is a broken report, not a lock. The pins are stored
 * in the order the wire promises (sorted), whatever order they arrived in.
 */
import { RgridError } from '../../common/errors.js';
import type { Resolution } from '../../common/lock.js';
import type { CompleteRequest } from '../../common/wire/dispatch-api.js';

export interface LockReport {
  lock_sha256: string | null;
  resolved: string[] | null;
  resolution: Resolution | null;
}

export const NO_LOCK: LockReport = { lock_sha256: null, resolved: null, resolution: null };

/** The lock fields to store for a run of an execution with `requirementsSha256` (null: none); 400 when they do not fit. */
export function lockReportOf(body: Pick<CompleteRequest, 'lock_sha256' | 'resolved' | 'resolution'>, requirementsSha256: string | null): LockReport {
  const report: LockReport = { lock_sha256: body.lock_sha256 ?? null, resolved: body.resolved ?? null, resolution: body.resolution ?? null };
  if (report.lock_sha256 === null) {
    if (report.resolved !== null || report.resolution !== null) {
      throw new RgridError('bad_request', 'resolved and resolution describe a lock: they need lock_sha256');
    }
    return NO_LOCK;
  }
  if (requirementsSha256 === null) throw new RgridError('bad_request', 'lock_sha256 given for an execution without requirements');
  if (report.resolved === null) return report;
  const resolved = [...report.resolved].sort();
  // The pins of one project share the prefix `name==`, so once sorted they are neighbours.
  const nameOf = (pin: string): string => pin.slice(0, pin.indexOf('=='));
  for (let i = 1; i < resolved.length; i++) {
    if (nameOf(resolved[i - 1]!) === nameOf(resolved[i]!)) throw new RgridError('bad_request', `resolved pins project ${nameOf(resolved[i]!)} twice`);
  }
  return { ...report, resolved };
}
