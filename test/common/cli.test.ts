/**
 * The pieces the three CLIs share (common/cli.ts, common/cli-flags.ts): the exit status of each kind of
 * error, and number and duration flags checked against the ranges of the daemons' config schemas.
 */
import { describe, expect, it } from 'vitest';
import { AgentConfigSchema } from '../../agent/config.js';
import { exitStatusOfError, envHelp, oneLine } from '../../common/cli.js';
import { durationFlag, numberFlag, rangeOf } from '../../common/cli-flags.js';
import { RgridError, type RgridErrorCode } from '../../common/errors.js';
import { EXIT } from '../../common/executions.js';
import { ControlConfigSchema } from '../../control/config.js';

describe('exit status of an error', () => {
  it('is 2 for refused input, whichever side refused it, and 1 for everything else', () => {
    for (const code of ['bad_request', 'bad_digest', 'bad_file_name', 'bad_requirements', 'unknown_runtime'] as RgridErrorCode[]) {
      expect(exitStatusOfError(new RgridError(code, 'x')), code).toBe(EXIT.usage);
    }
    for (const code of ['not_found', 'unauthorized', 'build_failed', 'unavailable', 'engine_unavailable', 'bad_response', 'conflict'] as RgridErrorCode[]) {
      expect(exitStatusOfError(new RgridError(code, 'x')), code).toBe(EXIT.failure);
    }
    expect(exitStatusOfError(new Error('ECONNREFUSED'))).toBe(EXIT.failure);
    expect(exitStatusOfError('thrown text')).toBe(EXIT.failure);
  });

  it('folds a reason to one line and names the environment behind a flag', () => {
    expect(oneLine('pip failed:\n  ERROR: no match\n')).toBe('pip failed: ERROR: no match');
    expect(envHelp('agent socket', 'RGRID_AGENT_SOCKET')).toBe('agent socket (env RGRID_AGENT_SOCKET)');
  });
});

describe('number and duration flags', () => {
  it('read their ranges from the config schemas', () => {
    expect(rangeOf(AgentConfigSchema.properties.build_concurrency)).toEqual({ integer: true, min: 1, max: 64 });
    expect(rangeOf(AgentConfigSchema.properties.run_cpus)).toEqual({ integer: false, exclusiveMin: 0 });
    expect(rangeOf(ControlConfigSchema.properties.fleetCacheMs)).toEqual({ integer: true, min: 0, max: 60_000 });
  });

  it('take plain decimal numbers inside the range, and name the flag and range otherwise', () => {
    const range = { integer: true, min: 1, max: 64 };
    expect(numberFlag(undefined, '--n', range)).toBeUndefined();
    expect(numberFlag('4', '--n', range)).toBe(4);
    expect(numberFlag(' 64 ', '--n', range)).toBe(64);
    for (const bad of ['0', '65', '2.5', '1e1', '0x10', 'Infinity', '', '-1', 'four']) {
      expect(() => numberFlag(bad, '--n', range), bad).toThrow(/^--n must be a whole number at least 1 and at most 64, got /);
    }
    expect(() => numberFlag('0', '--n', range)).toThrow(expect.objectContaining({ code: 'bad_request' }));
    expect(numberFlag('0.5', '--cpus', { exclusiveMin: 0 })).toBe(0.5);
    expect(() => numberFlag('0', '--cpus', { exclusiveMin: 0 })).toThrow(/^--cpus must be a number more than 0, got "0"$/);
  });

  it('read durations into the unit of their config key', () => {
    expect(durationFlag('90', '--drain-timeout', { min: 0 }, 1000)).toBe(90);
    expect(durationFlag('2m', '--drain-timeout', { min: 0 }, 1000)).toBe(120);
    expect(durationFlag('1500ms', '--fleet-cache', { min: 0, max: 60_000 })).toBe(1500);
    expect(() => durationFlag('2m', '--fleet-cache', { min: 0, max: 60_000 })).toThrow(/^--fleet-cache must be at least 0ms and at most 1m, got "2m"$/);
    expect(() => durationFlag('soon', '--ttl', { min: 0 }, 1000)).toThrow(/^--ttl: "soon" is not a duration/);
  });
});
