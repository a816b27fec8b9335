// client/summary.ts: what `rgrid run` and `rgrid status` print about the dependencies a run used.
import { describe, expect, it } from 'vitest';
import type { RunSummary } from '../../client/run.js';
import { dependenciesText, summaryLine } from '../../client/summary.js';
import type { Execution } from '../../common/wire/control-api.js';
import { execution } from './fake-control.js';

const ID = '0f8b3a52-5a0e-4a8e-9a39-5b2f0e4c1d77';
const LOCK = '3f2a9c1b7d4e'.padEnd(64, '0');
const REQS = 'd'.repeat(64);

function summaryOf(e: Execution): RunSummary {
  return {
    execution_id: e.id, worker_id: e.worker_id, exit_code: e.exit_code, script_cache_hit: e.script_cache_hit, dependency_cache_hit: e.dependency_cache_hit,
    input_cache_hit: e.input_cache_hit, uploaded_blobs: 0, downloaded_blobs: e.downloaded_blobs, image_origin: e.image_origin,
    lock_sha256: e.lock_sha256 ?? null, resolved: e.resolved ?? null, resolution: e.resolution ?? null, timings: { run_ms: 2 }, outputs: [],
  };
}

describe('the dependencies on the summary line', () => {
  it('names the resolution, the number of pins and the lock when the run had requirements', () => {
    const e = {
      ...execution(ID, { status: 'succeeded', requirementsSha256: REQS, lock: { lock_sha256: LOCK, resolved: ['attrs==24.2.0', 'numpy==2.1.0'], resolution: 'cached' } }),
      dependency_cache_hit: true,
    } as unknown as Execution;
    expect(dependenciesText(e)).toBe('dependencies hit (resolution cached, 2 pinned, lock 3f2a9c1b7d4e)');
    expect(summaryLine(summaryOf(e), e).split('\n')[1]).toBe(
      'rgrid: script hit, dependencies hit (resolution cached, 2 pinned, lock 3f2a9c1b7d4e), inputs n/a; uploaded 0 blob(s), worker downloaded 0',
    );
    expect(dependenciesText({ ...e, resolution: 'stale', resolved: null, dependency_cache_hit: false })).toBe('dependencies miss (resolution stale, lock 3f2a9c1b7d4e)');
  });

  it('says the resolution is not known when requirements came back without one (a worker older than locks)', () => {
    const e = { ...execution(ID, { status: 'succeeded', requirementsSha256: REQS }), dependency_cache_hit: false } as unknown as Execution;
    expect(dependenciesText(e)).toBe('dependencies miss (resolution n/a)');
    // A control plane older than locks sends none of the three fields.
    const older = Object.fromEntries(Object.entries(e).filter(([k]) => !['lock_sha256', 'resolved', 'resolution'].includes(k))) as Omit<Execution, 'lock_sha256' | 'resolved' | 'resolution'>;
    expect(dependenciesText(older)).toBe('dependencies miss (resolution n/a)');
  });

  it('mentions no resolution without requirements', () => {
    const e = execution(ID, { status: 'succeeded' }) as unknown as Execution;
    expect(dependenciesText(e)).toBe('dependencies n/a');
    expect(summaryLine(summaryOf(e), e)).not.toMatch(/resolution/);
  });
});
