/**
 * The client's answer checks (client/answers.ts) are hand-written to keep TypeBox out of the CLI's
 * start-up; these tests hold them to the wire schemas: an answer the schema accepts is never refused,
 * and an output entry the client would write is one the schema accepts.
 */
import fc from 'fast-check';
import { Value } from 'typebox/value';
import { describe, expect, it } from 'vitest';
import { checkExecution, checkLogs, checkManifestAnswer, checkOutputs, EXECUTION_FAILURES, EXECUTION_STATUSES } from '../../client/answers.js';
import { MAX_LOCKED_DISTRIBUTIONS, RESOLUTIONS } from '../../common/lock.js';
import { Execution, ExecutionFailure, ExecutionStatus, OutputFile } from '../../common/wire/control-api.js';
import { LogsResponse } from '../../common/wire/dispatch-api.js';
import { execution } from './fake-control.js';

const ID = '0f8b3a52-5a0e-4a8e-9a39-5b2f0e4c1d77';
const accepts = (fn: () => unknown): boolean => {
  try {
    fn();
    return true;
  } catch (err) {
    expect((err as { code?: string }).code).toBe('bad_response');
    return false;
  }
};
const literals = (union: { anyOf: Array<{ const: unknown }> }): unknown[] => union.anyOf.map((s) => s.const);

describe('answer checks agree with the wire schemas', () => {
  it('know the same statuses and failure kinds', () => {
    expect([...EXECUTION_STATUSES].sort()).toEqual((literals(ExecutionStatus as never) as string[]).sort());
    expect([...EXECUTION_FAILURES].sort()).toEqual((literals(ExecutionFailure as never) as string[]).sort());
  });

  it('accept a valid execution, finished or not', () => {
    for (const status of EXECUTION_STATUSES) {
      const e = execution(ID, { status, outputs: [{ name: 'plots/a.png', content: Buffer.from('x') }] });
      expect(Value.Check(Execution, e)).toBe(true);
      expect(checkExecution(e, ID)).toBe(e);
    }
  });

  it('never refuse an execution the schema accepts, whatever its fields hold', () => {
    const base = execution(ID, { status: 'succeeded', exitCode: 3 });
    const fields = [
      'id', 'status', 'failure', 'exit_code', 'worker_id', 'error', 'attempts', 'max_attempts', 'downloaded_blobs', 'image_origin', 'script_cache_hit', 'timings',
      'outputs', 'requirements_sha256', 'lock_sha256', 'resolved', 'resolution',
    ];
    const pin = fc.oneof(fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,4}==[0-9][0-9.a-z+!_-]{0,6}$/), fc.string({ maxLength: 12 }), fc.constantFrom('Numpy==1', 'numpy>=1', 'a==1\u001b[2J'));
    const value = fc.oneof(
      fc.anything(), fc.integer(), fc.double(), fc.string(), fc.constant(null), fc.constantFrom(...EXECUTION_STATUSES, ...EXECUTION_FAILURES, ...RESOLUTIONS, 'fresh'),
      fc.uuid().map((u) => u.toLowerCase()), fc.dictionary(fc.stringMatching(/^[a-z][a-z0-9_]{0,8}$/), fc.double({ min: 0, max: 1e12, noNaN: true })),
      fc.stringMatching(/^[0-9a-f]{64}$/), fc.constant('A'.repeat(64)), fc.array(pin, { maxLength: 4 }),
    );
    fc.assert(
      fc.property(fc.constantFrom(...fields), value, (field, v) => {
        const e = { ...base, [field]: v };
        if (Value.Check(Execution, e)) expect(accepts(() => checkExecution(e))).toBe(true);
      }),
      { numRuns: 3000 },
    );
  });

  it('accept the lock a run used, absent (an older control plane), null or as the schema has it, and refuse anything else', () => {
    const base = execution(ID, { status: 'succeeded', requirementsSha256: 'd'.repeat(64) });
    const lock = { lock_sha256: 'c'.repeat(64), resolved: ['attrs==24.2.0', 'numpy==2.1.0'], resolution: 'cached' };
    const older: Record<string, unknown> = { ...base };
    for (const field of ['lock_sha256', 'resolved', 'resolution']) delete older[field];
    expect(Value.Check(Execution, { ...base, ...lock })).toBe(true);
    expect(Value.Check(Execution, base)).toBe(true);
    for (const e of [{ ...base, ...lock }, base, older]) expect(accepts(() => checkExecution(e, ID))).toBe(true);
    const hostile: Record<string, unknown>[] = [
      { lock_sha256: 'C'.repeat(64) }, { lock_sha256: '../lock' }, { resolution: 'fresh' }, { resolution: 3 },
      { resolved: ['numpy==2.1.0\u001b[2J'] }, { resolved: ['numpy>=2'] }, { resolved: 'numpy==2.1.0' }, { resolved: [`a==${'1'.repeat(200)}`] },
      { resolved: Array.from({ length: MAX_LOCKED_DISTRIBUTIONS + 1 }, (_, i) => `p${i}==1`) },
    ];
    for (const bad of hostile) {
      const e = { ...base, ...lock, ...bad };
      expect(Value.Check(Execution, e), JSON.stringify(bad).slice(0, 80)).toBe(false);
      expect(accepts(() => checkExecution(e, ID)), JSON.stringify(bad).slice(0, 80)).toBe(false);
    }
  });

  it('refuse an execution whose id is not a UUID or not the one asked for', () => {
    const base = execution(ID, { status: 'running' });
    for (const id of ['../../admin', ID.toUpperCase(), '', 7, null]) expect(accepts(() => checkExecution({ ...base, id }))).toBe(false);
    expect(accepts(() => checkExecution(base, '1f8b3a52-5a0e-4a8e-9a39-5b2f0e4c1d77'))).toBe(false);
    expect(accepts(() => checkExecution([base]))).toBe(false);
  });

  it('write only output entries the schema accepts, and refuse those it does not', () => {
    const entry = fc.record({
      name: fc.oneof(fc.string({ unit: 'binary', maxLength: 30 }), fc.constantFrom('../../x.sh', '/etc/x', 'a\u001b[2J', 'a/./b', 'ok.txt', 'sub/ok.txt')),
      sha256: fc.oneof(fc.stringMatching(/^[0-9a-f]{64}$/), fc.string({ maxLength: 70 }), fc.constant('A'.repeat(64))),
      size: fc.oneof(fc.integer({ min: -5, max: 1e9 }), fc.double(), fc.constant(Number.MAX_SAFE_INTEGER + 2)),
    });
    fc.assert(
      fc.property(entry, (out) => {
        expect(accepts(() => checkOutputs([out]))).toBe(Value.Check(OutputFile, out));
      }),
      { numRuns: 3000 },
    );
  });

  it('accept logs the schema accepts, and only the logs of the execution asked for', () => {
    const logs = { execution_id: ID, status: 'succeeded', stdout: 'a\u001b[2Jb', stderr: '', truncated: true };
    expect(Value.Check(LogsResponse, logs)).toBe(true);
    expect(checkLogs(logs, ID)).toBe(logs);
    expect(accepts(() => checkLogs({ ...logs, execution_id: '1f8b3a52-5a0e-4a8e-9a39-5b2f0e4c1d77' }, ID))).toBe(false);
    expect(accepts(() => checkLogs({ ...logs, stdout: 5 }, ID))).toBe(false);
  });

  it('accept a manifest answer asking only for offered blobs', () => {
    const offered = new Set(['a'.repeat(64), 'b'.repeat(64)]);
    expect(accepts(() => checkManifestAnswer({ missing: ['a'.repeat(64)] }, offered))).toBe(true);
    expect(accepts(() => checkManifestAnswer({ missing: ['c'.repeat(64)] }, offered))).toBe(false);
    expect(accepts(() => checkManifestAnswer({ missing: ['../x'] }, offered))).toBe(false);
    expect(accepts(() => checkManifestAnswer({}, offered))).toBe(false);
  });
});
