/**
 * Where `rgrid` takes its token from (files that others cannot read, the environment, the command line
 * with a warning), and the numeric flags that used to be dropped silently when they were not numbers.
 */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseMemory, parseRetryFor, parseTimeout } from '../../client/cli/options.js';
import { DEFAULT_RETRY_FOR_MS } from '../../client/retry.js';
import { resolveToken, TOKEN_ON_COMMAND_LINE_WARNING } from '../../client/token.js';
import { readTokenFile } from '../../common/token-file.js';

const dir = mkdtempSync(join(tmpdir(), 'rgrid-client-token-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function tokenFile(name: string, content: string, mode: number): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  chmodSync(path, mode);
  return path;
}

describe('token files', () => {
  it('reads a private token file, trimming the newline an editor adds', () => {
    expect(readTokenFile(tokenFile('ok', 'rgrid_abc123\n', 0o600), '--token-file')).toBe('rgrid_abc123');
    expect(readTokenFile(tokenFile('ro', 'rgrid_abc123', 0o400), '--token-file')).toBe('rgrid_abc123');
  });

  it('refuses a token file the group or others may read or write, naming the fix', () => {
    for (const mode of [0o644, 0o640, 0o604, 0o620, 0o602]) {
      const path = tokenFile(`m${mode.toString(8)}`, 'rgrid_abc123\n', mode);
      expect(() => readTokenFile(path, '--token-file')).toThrow(/group or others may access it; run chmod 600/);
    }
  });

  it('reads a systemd credential whatever its mode shows (its directory is private to the service)', () => {
    expect(readTokenFile(tokenFile('cred', 'rgrid_abc123\n', 0o440), 'credential', { inPrivateDirectory: true })).toBe('rgrid_abc123');
  });

  it('refuses empty files, directories, oversized files and tokens that cannot travel in a header', () => {
    expect(() => readTokenFile(tokenFile('empty', '\n', 0o600), 'f')).toThrow(/empty/);
    expect(() => readTokenFile(dir, 'f')).toThrow(/not a regular file/);
    expect(() => readTokenFile(tokenFile('big', 'x'.repeat(5000), 0o600), 'f')).toThrow(/over 4096 bytes/);
    expect(() => readTokenFile(tokenFile('two', 'abc\r\nX-Injected: 1', 0o600), 'f')).toThrow(/visible ASCII/);
    expect(() => readTokenFile(join(dir, 'missing'), 'f')).toThrow(/ENOENT/);
  });
});

describe('client token sources', () => {
  const warnings: string[] = [];
  const warn = (line: string): void => void warnings.push(line);

  it('prefers --token-file, then --token (with a one-line warning), then RGRID_TOKEN, then RGRID_TOKEN_FILE', () => {
    const file = tokenFile('client', 'from_file\n', 0o600);
    warnings.length = 0;
    expect(resolveToken({ flagFile: file, envToken: 'from_env', envFile: file }, warn)).toBe('from_file');
    expect(warnings).toEqual([]);
    expect(resolveToken({ flagToken: 'from_flag', envToken: 'from_env' }, warn)).toBe('from_flag');
    expect(warnings).toEqual([TOKEN_ON_COMMAND_LINE_WARNING]);
    expect(TOKEN_ON_COMMAND_LINE_WARNING).not.toContain('\n');
    expect(resolveToken({ envToken: 'from_env', envFile: file }, warn)).toBe('from_env');
    expect(resolveToken({ envFile: file }, warn)).toBe('from_file');
    expect(warnings).toHaveLength(1);
  });

  it('refuses both --token and --token-file, and no token at all, as usage errors', () => {
    expect(() => resolveToken({ flagToken: 'a', flagFile: 'b' }, warn)).toThrow(expect.objectContaining({ code: 'bad_request' }));
    expect(() => resolveToken({}, warn)).toThrow(/no token/);
    expect(() => resolveToken({ envFile: tokenFile('loose', 'x', 0o644) }, warn)).toThrow(/RGRID_TOKEN_FILE/);
  });
});

describe('numeric flags', () => {
  it('parses --timeout as seconds or a duration', () => {
    expect(parseTimeout(undefined)).toBeUndefined();
    expect(parseTimeout('90')).toBe(90);
    expect(parseTimeout('1.5')).toBe(1.5);
    expect(parseTimeout('15m')).toBe(900);
  });

  it('refuses --timeout abc, 0, negative and over 7 days as usage errors (never dropped)', () => {
    for (const bad of ['abc', '0', '0s', '-5', '8d', '', '1e3']) {
      expect(() => parseTimeout(bad), bad).toThrow(expect.objectContaining({ code: 'bad_request' }));
    }
  });

  it('parses --memory as whole MB from 16 and refuses the rest', () => {
    expect(parseMemory('512')).toBe(512);
    for (const bad of ['abc', '0', '15', '1.5', '-1', '1048577', '']) {
      expect(() => parseMemory(bad), bad).toThrow(expect.objectContaining({ code: 'bad_request' }));
    }
  });

  it('parses --retry-for, 0 turning retries off, 10 minutes by default', () => {
    expect(parseRetryFor(undefined, 'RGRID_RETRY_FOR')).toBe(DEFAULT_RETRY_FOR_MS);
    expect(DEFAULT_RETRY_FOR_MS).toBe(600_000);
    expect(parseRetryFor('0', '--retry-for')).toBe(0);
    expect(parseRetryFor('30s', '--retry-for')).toBe(30_000);
    expect(() => parseRetryFor('soon', '--retry-for')).toThrow(/--retry-for/);
  });
});
