/**
 * The three CLIs behave alike (common/cli.ts): `--version`, usage errors as one line and exit 2, the
 * same flag names for the same things, the environment variable behind a flag named in its help, numbers
 * range-checked before anything starts, the same exit status for the same kind of error, and pretty logs
 * on a terminal (JSON otherwise) for both daemons. Runs the built CLIs from dist/; the only services are
 * a fake control plane on 127.0.0.1 and, for the agent's log, the Docker engine.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { BIN, childEnv, freeLoopbackPort, removeSecretFile, ROOT, runCli, secretFile, startAgentProcess, type CliName } from '../support/processes.js';
import { startFakeControl } from '../client/fake-control.js';

const dir = mkdtempSync(join(tmpdir(), 'rgrid-cli-conventions-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const VERSION = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const CLIS: CliName[] = ['rgrid', 'rgrid-agent', 'rgrid-control'];
const lines = (text: string): string[] => text.split('\n').filter(Boolean);
const escape = (text: string): string => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

describe('--version and usage errors', () => {
  it.each(CLIS)('%s --version prints the package version', async (cli) => {
    const res = await runCli(cli, ['--version']);
    expect(res).toMatchObject({ code: 0, stdout: `${VERSION}\n`, stderr: '' });
  });

  const unknownOption: Array<[CliName, string]> = [['rgrid', 'status'], ['rgrid-agent', 'ls'], ['rgrid-control', 'migrate']];
  it.each(unknownOption)('%s %s --frobnicate: one line naming the command\'s help, exit 2, no help dump', async (cli, command) => {
    const res = await runCli(cli, [command, '--frobnicate']);
    expect(res.code).toBe(2);
    expect(res.stdout).toBe('');
    expect(lines(res.stderr)).toEqual([`${cli}: bad_request: unknown option '--frobnicate' (see ${cli} ${command} --help)`]);
  });

  it.each(CLIS)('%s without a command, or with an unknown one: one line, exit 2', async (cli) => {
    const none = await runCli(cli, []);
    expect(none.code).toBe(2);
    expect(lines(none.stderr)).toEqual([`${cli}: bad_request: missing command (see ${cli} --help)`]);
    const unknown = await runCli(cli, ['frobnicate']);
    expect(unknown.code).toBe(2);
    expect(lines(unknown.stderr)).toEqual([expect.stringMatching(new RegExp(`^${escape(cli)}: bad_request: unknown command 'frobnicate'.* \\(see ${escape(cli)} --help\\)$`))]);
  });

  it('a missing required option or a bad choice is a one-line usage error too', async () => {
    const agent = await runCli('rgrid-agent', ['ensure']);
    expect(agent.code).toBe(2);
    expect(lines(agent.stderr)).toEqual(["rgrid-agent: bad_request: required option '--script <file>' not specified (see rgrid-agent ensure --help)"]);
    const control = await runCli('rgrid-control', ['token', 'create', '--account', 'a', '--role', 'admin']);
    expect(control.code).toBe(2);
    expect(lines(control.stderr)).toEqual([expect.stringMatching(/^rgrid-control: bad_request: option '--role <role>' argument 'admin' is invalid\. .* \(see rgrid-control token create --help\)$/)]);
  });

  it('--help still prints the whole help, on stdout, exit 0', async () => {
    const res = await runCli('rgrid', ['run', '--help']);
    expect(res.code).toBe(0);
    expect(res.stdout).toMatch(/^Usage: rgrid run \[options\] <script> \[inputs\.\.\.\]/);
    expect(res.stderr).toBe('');
  });
});

describe('flag names and the environment behind them', () => {
  const help = async (cli: CliName, command: string[]): Promise<string> => {
    const res = await runCli(cli, [...command, '--help']);
    expect(res.code).toBe(0);
    // Commander wraps long descriptions: compare with the line breaks and indentation folded.
    return res.stdout.replace(/\s+/g, ' ');
  };

  it('each flag with an environment fallback names it in its help', async () => {
    const run = await help('rgrid', ['run']);
    for (const text of ['--control-url <url> control plane URL (env RGRID_CONTROL_URL)', '(env RGRID_TOKEN_FILE)', '(env RGRID_TOKEN)', '(env RGRID_RETRY_FOR)', '(env RGRID_RUNTIME)']) {
      expect(run).toContain(text);
    }
    const serve = await help('rgrid-agent', ['serve']);
    for (const text of ['(env RGRID_AGENT_SOCKET)', '(env RGRID_WORKER_TOKEN)', '(env RGRID_WORKER_TOKEN_FILE, $CREDENTIALS_DIRECTORY/worker-token)', '--control-url <url>']) {
      expect(serve).toContain(text);
    }
    expect(await help('rgrid-agent', ['ls'])).toContain('(env RGRID_AGENT_SOCKET)');
    const control = await help('rgrid-control', ['serve']);
    for (const text of ['(env RGRID_CONTROL_DATA_DIR)', '(env DATABASE_URL)', '(env DATABASE_URL, DATABASE_URL_FILE, $CREDENTIALS_DIRECTORY/database-url)', '(env RGRID_CONTROL_ADMIN_TOKEN, RGRID_CONTROL_ADMIN_TOKEN_FILE, $CREDENTIALS_DIRECTORY/admin-token)', '(env RGRID_CONTROL_LOG_LEVEL)']) {
      expect(control).toContain(text);
    }
    // The client's old spelling is accepted but no longer shown.
    expect(run).not.toContain('--control <url>');
  });

  it('rgrid takes --control-url like the agent, and the old --control as a hidden alias', async () => {
    const fake = await startFakeControl();
    const token = secretFile('rgrid_conventions_token_0123');
    try {
      for (const flag of ['--control-url', '--control']) {
        const res = await runCli('rgrid', ['status', fake.executionId, flag, fake.url, '--json'], { env: { RGRID_TOKEN_FILE: token } });
        expect(res.code, `${flag}: ${res.stderr}`).toBe(0);
        expect((JSON.parse(res.stdout) as { id: string }).id).toBe(fake.executionId);
      }
      const both = await runCli('rgrid', ['status', fake.executionId, '--control-url', fake.url, '--control', fake.url], { env: { RGRID_TOKEN_FILE: token } });
      expect(both.code).toBe(2);
      expect(lines(both.stderr)).toHaveLength(1);
      expect(fake.requests.filter((r) => r.path.startsWith('/v1/executions/'))).toHaveLength(2);
    } finally {
      removeSecretFile(token);
      await fake.close();
    }
  });
});

describe('numbers on the daemons\' command lines are parsed and range-checked before anything starts', () => {
  const agentCases: Array<[string[], RegExp]> = [
    [['--run-capacity', '0'], /^--run-capacity must be a whole number at least 1 and at most 256, got "0"$/],
    [['--build-concurrency', '2.5'], /^--build-concurrency must be a whole number at least 1 and at most 64, got "2\.5"$/],
    [['--build-concurrency', '1e1'], /^--build-concurrency must be a whole number/],
    [['--ttl', 'soon'], /^--ttl: "soon" is not a duration/],
    [['--drain-timeout', '-1'], /^--drain-timeout: "-1" is not a duration/],
  ];
  it.each(agentCases)('rgrid-agent serve %j', async (args, reason) => {
    const data = join(dir, `agent-${args.join('_')}`);
    const res = await runCli('rgrid-agent', ['serve', '--socket', join(data, 's'), '--data-dir', data, '--runtime', 'py=img', ...args]);
    expect(res.code).toBe(2);
    expect(lines(res.stderr)).toHaveLength(1);
    expect(res.stderr.trimEnd().replace(/^rgrid-agent: bad_request: /, '')).toMatch(reason);
    expect(existsSync(data)).toBe(false); // nothing was created
  });

  const controlCases: Array<[string[], RegExp]> = [
    [['--pool-max', '0'], /^--pool-max must be a whole number at least 1 and at most 1000, got "0"$/],
    [['--body-limit', '1e6'], /^--body-limit must be a whole number at least 1024, got "1e6"$/],
    // Before, this flag was read under another name and silently ignored.
    [['--auth-failures-per-minute', 'lots'], /^--auth-failures-per-minute must be a whole number at least 0, got "lots"$/],
    [['--fleet-cache', '2m'], /^--fleet-cache must be at least 0ms and at most 1m, got "2m"$/],
    [['--worker-dead-after', '10ms'], /^--worker-dead-after must be at least 1s, got "10ms"$/],
  ];
  it.each(controlCases)('rgrid-control serve %j', async (args, reason) => {
    const data = join(dir, `control-${args.join('_')}`);
    const res = await runCli('rgrid-control', ['serve', '--listen', '127.0.0.1:0', '--data-dir', data, ...args]);
    expect(res.code).toBe(2);
    expect(lines(res.stderr)).toHaveLength(1);
    expect(res.stderr.trimEnd().replace(/^rgrid-control: bad_request: /, '')).toMatch(reason);
    expect(existsSync(data)).toBe(false); // no database was started
  });
});

describe('the same kind of error ends each CLI with the same status', () => {
  it('refused input: 2 on all three', async () => {
    const client = await runCli('rgrid', ['status', '00000000-0000-4000-8000-000000000000', '--control-url', 'http://127.0.0.1:9']);
    expect([client.code, lines(client.stderr)]).toEqual([2, [expect.stringMatching(/^rgrid: bad_request: no token/)]]);
    const agent = await runCli('rgrid-agent', ['ensure', '--script', join(dir, 'missing.py'), '--socket', join(dir, 'none.sock')]);
    expect([agent.code, lines(agent.stderr)]).toEqual([2, [expect.stringMatching(/^rgrid-agent: bad_request: cannot read script/)]]);
    const control = await runCli('rgrid-control', ['token', 'create', '--account', 'a', '--role', 'worker', '--data-dir', join(dir, 'unused')]);
    expect([control.code, lines(control.stderr)]).toEqual([2, ['rgrid-control: bad_request: --worker-id is required for, and only for, --role worker']]);
    const expired = await runCli('rgrid-control', ['token', 'create', '--account', 'a', '--role', 'client', '--expires-in', '0s', '--data-dir', join(dir, 'unused')]);
    expect([expired.code, lines(expired.stderr)]).toEqual([2, ['rgrid-control: bad_request: --expires-in must be more than 0ms and at most 3650d, got "0s"']]);
    expect(existsSync(join(dir, 'unused'))).toBe(false); // no database was started for either
  });

  it('a service that cannot be reached: 1 on all three', async () => {
    const closed = await freeLoopbackPort();
    const token = secretFile('rgrid_conventions_token_0123');
    try {
      const client = await runCli('rgrid', ['status', '00000000-0000-4000-8000-000000000000', '--control-url', `http://127.0.0.1:${closed}`, '--retry-for', '0'], { env: { RGRID_TOKEN_FILE: token } });
      expect([client.code, lines(client.stderr).length]).toEqual([1, 1]);
    } finally {
      removeSecretFile(token);
    }
    const agent = await runCli('rgrid-agent', ['ls', '--socket', join(dir, 'none.sock')]);
    expect([agent.code, lines(agent.stderr).length]).toEqual([1, 1]);
    const control = await runCli('rgrid-control', ['token', 'list', '--data-dir', join(dir, 'unused')], { env: { DATABASE_URL: `postgres://rgrid@127.0.0.1:${closed}/rgrid` } });
    expect([control.code, lines(control.stderr).length]).toEqual([1, 1]);
  });
});

/**
 * Runs argv on a pseudo-terminal (python3's pty module), sends SIGTERM once `marker` has appeared (or
 * after 60 s), and returns everything the process wrote.
 */
function onTerminal(marker: string, argv: string[]): string {
  const script = join(dir, 'pty-run.py');
  writeFileSync(script, [
    'import os, pty, select, signal, sys, time',
    'marker = sys.argv[1].encode(); argv = sys.argv[2:]',
    'pid, fd = pty.fork()',
    'if pid == 0:',
    '    os.execv(argv[0], argv)',
    "out = b''; deadline = time.time() + 60; termed = False",
    'while True:',
    '    if not termed and ((marker and marker in out) or time.time() > deadline):',
    '        os.kill(pid, signal.SIGTERM); termed = True',
    '    ready, _, _ = select.select([fd], [], [], 0.2)',
    '    if ready:',
    '        try: data = os.read(fd, 65536)',
    '        except OSError: break',
    '        if not data: break',
    '        out += data',
    'sys.stdout.buffer.write(out)',
    'os.waitpid(pid, 0)',
  ].join('\n'));
  return execFileSync('python3', [script, marker, ...argv], { encoding: 'utf8', timeout: 120_000, env: childEnv() });
}

describe('daemon logs: pretty on a terminal, JSON lines otherwise (one logger factory)', () => {
  // A password in --database-url draws a warning; the unreachable database then ends the start.
  const controlArgs = (): string[] => ['serve', '--listen', '127.0.0.1:0', '--data-dir', join(dir, 'control-logs'), '--database-url', 'postgres://u:secret@127.0.0.1:9/x'];

  it('rgrid-control serve', async () => {
    const piped = await runCli('rgrid-control', controlArgs());
    expect(piped.code).toBe(1);
    const json = lines(piped.stdout).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(json.find((l) => String(l.msg).includes('--database-url carries a password'))).toMatchObject({ level: 40, service: 'rgrid-control' });

    const shown = onTerminal('', [process.execPath, BIN['rgrid-control'], ...controlArgs()]);
    expect(shown).toMatch(/WARN.*--database-url carries a password/);
    expect(shown).toContain('service');
    expect(shown).not.toContain('"level":');
  });

  it('rgrid-agent serve', async () => {
    const piped = await startAgentProcess({ dataDir: join(dir, 'agent-json'), baseImage: inject('baseImage') });
    expect(await piped.stop()).toBe(0);
    expect(piped.logLines().find((l) => l.msg === 'agent listening')).toMatchObject({ level: 30, service: 'rgrid-agent' });

    const shown = onTerminal('agent listening', [
      process.execPath, BIN['rgrid-agent'], 'serve', '--socket', join(dir, 'agent-logs.sock'), '--data-dir', join(dir, 'agent-logs'), '--runtime', `python3.11=${inject('baseImage')}`,
    ]);
    expect(shown).toMatch(/INFO.*agent listening/);
    expect(shown).toMatch(/INFO.*stopped/);
    expect(shown).not.toContain('"level":');
  });
});
