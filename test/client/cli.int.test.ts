/**
 * The real `rgrid` CLI (dist/) against a fake control plane on 127.0.0.1: hostile output names end in one
 * line on stderr and a failing exit with nothing written outside the output directory; an outage on the
 * wait is ridden out and the script's status comes back; a token read from a file appears in no command
 * line (`ps`, /proc/PID/cmdline); a token on the command line prints a warning; bad numbers are usage
 * errors. No Docker or PostgreSQL is used, but the CLI must be built (npm test builds first).
 */
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { BIN, runCli, type CliResult, allCommandLines } from '../support/processes.js';
import { startFakeControl, type FakeControl } from './fake-control.js';

let fake: FakeControl | undefined;
const roots: string[] = [];
afterEach(async () => {
  await fake?.close();
  fake = undefined;
  for (const root of roots.splice(0)) rmSync(root, { recursive: true, force: true });
});

function workspace(): { root: string; script: string; out: string; tokenFile: string } {
  const root = mkdtempSync(join(tmpdir(), 'rgrid-cli-'));
  roots.push(root);
  mkdirSync(join(root, 'work'));
  const script = join(root, 'work', 'job.py');
  writeFileSync(script, 'print("hi")\n');
  const tokenFile = join(root, 'token');
  writeFileSync(tokenFile, `${TOKEN}\n`);
  chmodSync(tokenFile, 0o600);
  return { root, script, out: join(root, 'work', 'out'), tokenFile };
}

const TOKEN = 'rgrid_cli_secret_7f3a9c1e5b';
const RGRID_BIN = BIN.rgrid;

/** Runs the CLI with only `env` of its own variables (the harness drops inherited ones); `whileRunning` sees its pid before it ends. */
function rgrid(args: string[], env: Record<string, string>, whileRunning?: (pid: number) => Promise<void>): Promise<CliResult> {
  return runCli('rgrid', args, { env, ...(whileRunning ? { whileRunning } : {}) });
}

function files(dir: string): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => !e.isDirectory())
    .map((e) => join(e.parentPath, e.name).slice(dir.length + 1))
    .sort();
}

const lines = (text: string): string[] => text.split('\n').filter(Boolean);

describe('rgrid run against hostile answers', () => {
  it('exits 1 with one line for outputs named ../../x.sh, /etc/x and a\\u001b[2J, writing nothing anywhere', async () => {
    const w = workspace();
    fake = await startFakeControl({
      stdout: 'script output\n', error: 'worker said \u001b[2J\u001b]0;pwned\u0007',
      outputs: [{ name: '../../x.sh', content: Buffer.from('#!/bin/sh\n') }, { name: '/etc/rgrid-cli-x', content: Buffer.from('x') }, { name: 'a\u001b[2J', content: Buffer.from('y') }],
    });
    const res = await rgrid(['run', w.script, '--output-dir', w.out], { RGRID_CONTROL_URL: fake.url, RGRID_TOKEN_FILE: w.tokenFile });
    expect(res.code).toBe(1);
    expect(files(w.root)).toEqual(['token', 'work/job.py']);
    expect(existsSync('/etc/rgrid-cli-x')).toBe(false);
    expect(res.stderr).not.toMatch(/[\u001b\u0007]/);
    const last = lines(res.stderr).at(-1)!;
    expect(last).toMatch(/^rgrid: bad_response: refused the control plane's answer: output file name "\.\.\/\.\.\/x\.sh"/);
    // The script's own output is still shown.
    expect(res.stdout).toBe('script output\n');
  });

  it('does not follow a link planted in the output directory, and says so in one line', async () => {
    const w = workspace();
    mkdirSync(w.out);
    writeFileSync(join(w.root, 'precious'), 'keep me');
    symlinkSync(join(w.root, 'precious'), join(w.out, 'result.txt'));
    fake = await startFakeControl({ outputs: [{ name: 'result.txt', content: Buffer.from('overwritten') }] });
    const res = await rgrid(['run', w.script, '--output-dir', w.out, '--json'], { RGRID_CONTROL_URL: fake.url, RGRID_TOKEN_FILE: w.tokenFile });
    expect(res.code).toBe(1);
    expect(readFileSync(join(w.root, 'precious'), 'utf8')).toBe('keep me');
    expect(lines(res.stderr).at(-1)).toMatch(/^rgrid: bad_file_name: .*is a symbolic link; nothing written there$/);
    const summary = JSON.parse(res.stdout) as { outputs: string[]; outputs_error: string };
    expect(summary.outputs).toEqual(['result.txt']);
    expect(summary.outputs_error).toContain('symbolic link');
  });
});

describe('rgrid status and logs show server text escaped', () => {
  const hostile = 'worker said \u001b[2J\u001b]0;pwned\u0007 \u009b31m \u202egpj.exe';

  it('status --json is valid JSON holding the same text, with no raw control character', async () => {
    const w = workspace();
    fake = await startFakeControl({ exitCode: 1, failure: 'error', error: hostile });
    const res = await rgrid(['status', fake.executionId, '--json'], { RGRID_CONTROL_URL: fake.url, RGRID_TOKEN_FILE: w.tokenFile });
    expect(res.code).toBe(0);
    expect(res.stdout).not.toMatch(/[\u001b\u0007\u009b\u202e]/);
    expect((JSON.parse(res.stdout) as { error: string }).error).toBe(hostile);
  });

  it('status prints the error escaped on one line; logs --json keeps the script output intact', async () => {
    const w = workspace();
    fake = await startFakeControl({ exitCode: 1, failure: 'error', error: `${hostile}\nsecond line`, stdout: 'colour \u001b[32mgreen\u001b[0m\n' });
    const status = await rgrid(['status', fake.executionId], { RGRID_CONTROL_URL: fake.url, RGRID_TOKEN_FILE: w.tokenFile });
    expect(status.stdout).not.toMatch(/[\u001b\u0007\u009b\u202e]/);
    expect(lines(status.stdout).find((l) => l.startsWith('error: '))).toContain('\\u000asecond line');
    const logs = await rgrid(['logs', fake.executionId, '--json'], { RGRID_CONTROL_URL: fake.url, RGRID_TOKEN_FILE: w.tokenFile });
    expect((JSON.parse(logs.stdout) as { stdout: string }).stdout).toBe('colour \u001b[32mgreen\u001b[0m\n');
  });
});

describe('rgrid run through a control-plane restart', () => {
  it('exits with the script status after the wait met a restart, dropped connections and 503s', async () => {
    const w = workspace();
    fake = await startFakeControl({ exitCode: 3, stdout: 'finished\n' });
    const control = fake;
    let waits = 0;
    control.intercept(async (req, res) => {
      if (!req.url?.includes('/wait')) return false;
      waits++;
      if (waits === 1) {
        await control.goDown();
        setTimeout(() => void control.comeBack(), 2000);
        return true;
      }
      if (waits === 2) {
        req.socket.destroy();
        return true;
      }
      if (waits <= 4) {
        res.writeHead(503, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'shutting_down', message: 'restarting' }));
        return true;
      }
      return false;
    });
    const res = await rgrid(['run', w.script, '--output-dir', w.out], { RGRID_CONTROL_URL: control.url, RGRID_TOKEN_FILE: w.tokenFile });
    expect(res.stderr).toContain('control plane unreachable, retrying');
    expect(res.code).toBe(3);
    expect(res.stdout).toBe('finished\n');
    expect(control.requests.filter((r) => r.path === '/v1/executions/submit')).toHaveLength(1);
  });

  it('with --retry-for 0, fails at the first 503 in one line (the behaviour before retries)', async () => {
    const w = workspace();
    fake = await startFakeControl({ exitCode: 3 });
    fake.intercept((req, res) => {
      if (!req.url?.includes('/wait')) return false;
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'unavailable', message: 'down\nfor maintenance' }));
      return true;
    });
    const res = await rgrid(['run', w.script, '--retry-for', '0'], { RGRID_CONTROL_URL: fake.url, RGRID_TOKEN_FILE: w.tokenFile });
    expect(res.code).toBe(1);
    expect(lines(res.stderr)).toEqual(['rgrid: unavailable: down\\u000afor maintenance']);
  });
});

describe('client tokens stay out of command lines', () => {
  /** Holds the wait until the test has looked at the process table. */
  function holdWait(control: FakeControl): () => void {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    control.intercept(async (req) => {
      if (!req.url?.includes('/wait')) return false;
      await released;
      return false;
    });
    return release;
  }

  async function whenWaiting(control: FakeControl): Promise<void> {
    while (!control.requests.some((r) => r.path.includes('/wait'))) await new Promise((r) => setTimeout(r, 20));
  }

  for (const [how, flags, env] of [
    ['--token-file', (w: { tokenFile: string }) => ['--token-file', w.tokenFile], () => ({})],
    ['RGRID_TOKEN_FILE', () => [], (w: { tokenFile: string }) => ({ RGRID_TOKEN_FILE: w.tokenFile })],
  ] as const) {
    it(`a token from ${how} is used and appears in no process's command line while rgrid run waits`, async () => {
      const w = workspace();
      fake = await startFakeControl();
      const control = fake;
      const release = holdWait(control);
      let seen = '';
      let ownCmdline = '';
      const res = await rgrid(['run', w.script, ...flags(w)], { RGRID_CONTROL_URL: control.url, ...env(w) }, async (pid) => {
        await whenWaiting(control);
        seen = allCommandLines();
        ownCmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
        release();
      });
      expect(res.code, res.stderr).toBe(0);
      expect(ownCmdline).toContain('main.js');
      expect(seen).toContain(RGRID_BIN);
      expect(seen).not.toContain(TOKEN);
      expect(control.requests.every((r) => r.authorization === `Bearer ${TOKEN}`)).toBe(true);
      expect(res.stderr).not.toContain('warning');
    });
  }

  it('a token given with --token prints a one-line warning (and is still used)', async () => {
    const w = workspace();
    fake = await startFakeControl();
    const res = await rgrid(['run', w.script, '--token', TOKEN], { RGRID_CONTROL_URL: fake.url });
    expect(res.code).toBe(0);
    expect(lines(res.stderr)[0]).toBe('rgrid: warning: --token is visible to every local user (ps, /proc/PID/cmdline); prefer --token-file FILE or RGRID_TOKEN_FILE');
    expect(fake.requests.every((r) => r.authorization === `Bearer ${TOKEN}`)).toBe(true);
  });

  it('refuses a token file others can read, before any request', async () => {
    const w = workspace();
    chmodSync(w.tokenFile, 0o644);
    fake = await startFakeControl();
    const res = await rgrid(['run', w.script, '--token-file', w.tokenFile], { RGRID_CONTROL_URL: fake.url });
    expect(res.code).toBe(2);
    expect(lines(res.stderr)).toEqual([expect.stringMatching(/^rgrid: bad_request: the token file .* has mode 0644: group or others may access it; run chmod 600 on it$/)]);
    expect(fake.requests).toEqual([]);
  });
});

describe('rgrid run numeric flags', () => {
  for (const args of [['--timeout', 'abc'], ['--timeout', '0'], ['--timeout', '-3'], ['--memory', 'lots'], ['--memory', '0'], ['--retry-for', 'forever']]) {
    it(`${args.join(' ')} is a one-line usage error, exit 2, nothing sent`, async () => {
      const w = workspace();
      fake = await startFakeControl();
      const res = await rgrid(['run', w.script, ...args], { RGRID_CONTROL_URL: fake.url, RGRID_TOKEN_FILE: w.tokenFile });
      expect(res.code).toBe(2);
      expect(lines(res.stderr)).toEqual([expect.stringMatching(/^rgrid: bad_request: --(timeout|memory|retry-for)/)]);
      expect(fake.requests).toEqual([]);
    });
  }

  it('status and logs take only an execution id (a UUID), else a usage error with nothing sent', async () => {
    const w = workspace();
    fake = await startFakeControl();
    for (const command of ['status', 'logs']) {
      const res = await rgrid([command, '../../v1/admin'], { RGRID_CONTROL_URL: fake.url, RGRID_TOKEN_FILE: w.tokenFile });
      expect(res.code).toBe(2);
      expect(lines(res.stderr)).toEqual([expect.stringMatching(/^rgrid: bad_request: execution id "\.\.\/\.\.\/v1\/admin" is not valid/)]);
    }
    expect(fake.requests).toEqual([]);
    const upper = await rgrid(['status', fake.executionId.toUpperCase(), '--json'], { RGRID_CONTROL_URL: fake.url, RGRID_TOKEN_FILE: w.tokenFile });
    expect(upper.code, upper.stderr).toBe(0);
  });

  it('--timeout 90s reaches the submit as timeout_s 90', async () => {
    const w = workspace();
    fake = await startFakeControl();
    let submitted: unknown;
    fake.intercept((req, _res, body) => {
      if (req.url === '/v1/executions/submit') submitted = JSON.parse(body.toString());
      return false;
    });
    const res = await rgrid(['run', w.script, '--timeout', '90s', '--memory', '256'], { RGRID_CONTROL_URL: fake.url, RGRID_TOKEN_FILE: w.tokenFile });
    expect(res.code).toBe(0);
    expect(submitted).toMatchObject({ timeout_s: 90, memory_mb: 256 });
  });
});

describe('rgrid run reports the lock the run used', () => {
  const lock = { lock_sha256: '3f2a9c1b7d4e'.padEnd(64, '0'), resolved: ['attrs==24.2.0', 'numpy==2.1.0'], resolution: 'resolved' };

  function withRequirements(): ReturnType<typeof workspace> & { requirements: string } {
    const w = workspace();
    const requirements = join(w.root, 'work', 'requirements.txt');
    writeFileSync(requirements, 'numpy>=2\n');
    return { ...w, requirements };
  }

  it('--json carries lock_sha256, resolved and resolution; the summary line names the resolution', async () => {
    const w = withRequirements();
    fake = await startFakeControl({ requirementsSha256: 'd'.repeat(64), lock });
    const json = await rgrid(['run', w.script, '-r', w.requirements, '--json'], { RGRID_CONTROL_URL: fake.url, RGRID_TOKEN_FILE: w.tokenFile });
    expect(json.code, json.stderr).toBe(0);
    expect(JSON.parse(json.stdout)).toMatchObject(lock);
    const human = await rgrid(['run', w.script, '-r', w.requirements], { RGRID_CONTROL_URL: fake.url, RGRID_TOKEN_FILE: w.tokenFile });
    expect(human.code, human.stderr).toBe(0);
    expect(lines(human.stderr)).toContainEqual(expect.stringMatching(/^rgrid: script hit, dependencies n\/a \(resolution resolved, 2 pinned, lock 3f2a9c1b7d4e\), inputs n\/a;/));
  });

  it('refuses a lock the wire forbids (pins with escape sequences) in one line, exit 1', async () => {
    const w = withRequirements();
    fake = await startFakeControl({ requirementsSha256: 'd'.repeat(64), lock: { ...lock, resolved: ['numpy==2.1.0\u001b]0;pwned\u0007'] } });
    const res = await rgrid(['run', w.script, '-r', w.requirements, '--json'], { RGRID_CONTROL_URL: fake.url, RGRID_TOKEN_FILE: w.tokenFile });
    expect(res.code).toBe(1);
    expect(res.stdout).toBe('');
    expect(res.stderr).not.toMatch(/[\u001b\u0007]/);
    expect(lines(res.stderr).at(-1)).toMatch(/^rgrid: bad_response: refused the control plane's answer: resolved .* is not a list of at most 2000 pins/);
  });
});
