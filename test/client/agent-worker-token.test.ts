/**
 * Where `rgrid-agent serve` takes its worker token from, and the refusal of token files others could
 * read: at start (agent/cli/worker-token.ts) and when an edited config file names a new one.
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { afterAll, describe, expect, it } from 'vitest';
import {
  checkWorkerTokenFile, warnIfConfigExposesToken, WORKER_TOKEN_ON_COMMAND_LINE_WARNING, workerTokenSettings,
} from '../../agent/cli/worker-token.js';
import { resolveConfig } from '../../agent/config.js';
import { createConfigStore, watchConfigFile } from '../../agent/config-store.js';

const dir = mkdtempSync(join(tmpdir(), 'rgrid-agent-token-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, content: string, mode: number): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  chmodSync(path, mode);
  return path;
}

describe('worker token sources', () => {
  const warnings: string[] = [];
  const warn = (line: string): void => void warnings.push(line);

  it('warns in one line when the token is on the command line, and only then', () => {
    warnings.length = 0;
    expect(workerTokenSettings({ workerToken: 'tok' }, {}, {}, warn)).toEqual({ worker_token: 'tok' });
    expect(warnings).toEqual([WORKER_TOKEN_ON_COMMAND_LINE_WARNING]);
    expect(workerTokenSettings({ workerTokenFile: '/f' }, {}, { workerToken: 'env' }, warn)).toEqual({ worker_token_file: '/f' });
    expect(warnings).toHaveLength(1);
  });

  it('lets the config file win over the environment, then RGRID_WORKER_TOKEN, RGRID_WORKER_TOKEN_FILE, the systemd credential', () => {
    const creds = join(dir, 'creds');
    mkdirSync(creds, { recursive: true });
    file('creds/worker-token', 'cred\n', 0o440);
    const env = { workerToken: 'env', workerTokenFile: '/env-file', credentialsDirectory: creds };
    expect(workerTokenSettings({}, { worker_token_file: '/cfg' }, env, warn)).toEqual({});
    expect(workerTokenSettings({}, {}, env, warn)).toEqual({ worker_token: 'env' });
    expect(workerTokenSettings({}, {}, { ...env, workerToken: undefined }, warn)).toEqual({ worker_token_file: '/env-file' });
    expect(workerTokenSettings({}, {}, { credentialsDirectory: creds }, warn)).toEqual({ worker_token_file: join(creds, 'worker-token') });
    expect(workerTokenSettings({}, {}, {}, warn)).toEqual({});
  });
});

describe('worker token files', () => {
  it('refuses at start a token file others may read, accepts a private one and a systemd credential', () => {
    expect(() => checkWorkerTokenFile({ worker_token_file: file('loose', 'tok\n', 0o644) }, undefined)).toThrow(/mode 0644: group or others may access it/);
    expect(() => checkWorkerTokenFile({ worker_token_file: file('tight', 'tok\n', 0o600) }, undefined)).not.toThrow();
    const creds = join(dir, 'creds2');
    mkdirSync(creds);
    const credential = join(creds, 'worker-token');
    writeFileSync(credential, 'tok\n');
    chmodSync(credential, 0o440); // what systemd's ACL makes the mode read
    expect(() => checkWorkerTokenFile({ worker_token_file: credential }, creds)).not.toThrow();
    expect(() => checkWorkerTokenFile({ worker_token_file: credential }, undefined)).toThrow(/mode 0440/);
    expect(() => checkWorkerTokenFile({}, undefined)).not.toThrow();
  });

  it('warns when a config file others can read holds the token itself', () => {
    const warnings: string[] = [];
    warnIfConfigExposesToken(file('open.json', '{}', 0o644), { worker_token: 'tok' }, (l) => warnings.push(l));
    warnIfConfigExposesToken(file('closed.json', '{}', 0o600), { worker_token: 'tok' }, (l) => warnings.push(l));
    warnIfConfigExposesToken(file('nofile.json', '{}', 0o644), { worker_token_file: '/x' }, (l) => warnings.push(l));
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toMatch(/holds worker_token and has mode 0644/);
    expect(warnings[0]).not.toContain('tok"');
  });

  it('rejects a config reload that names a token file others may read, keeping the running config', async () => {
    const base = { socket: join(dir, 's'), data_dir: join(dir, 'd'), runtimes: { py: 'img' } };
    const configPath = file('agent.json', JSON.stringify(base), 0o600);
    const store = createConfigStore(resolveConfig(base, {}), configPath);
    const watcher = watchConfigFile(store, {}, pino({ level: 'silent' }));
    try {
      writeFileSync(configPath, JSON.stringify({ ...base, worker_token_file: file('reload-loose', 'tok\n', 0o644) }));
      const refused = await watcher.reload();
      expect(refused).toMatchObject({ ok: false, error: expect.stringMatching(/group or others may access it/) as unknown });
      expect(store.get().worker_token_file).toBeUndefined();
      const tight = file('reload-tight', 'tok\n', 0o600);
      writeFileSync(configPath, JSON.stringify({ ...base, worker_token_file: tight }));
      expect(await watcher.reload()).toMatchObject({ ok: true, changed: ['worker_token_file'] });
      expect(store.get().worker_token_file).toBe(tight);
    } finally {
      await watcher.close();
    }
  });
});
