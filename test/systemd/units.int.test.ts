/**
 * The systemd units: `systemd-analyze verify` is clean on both,
 * `systemd-analyze security --offline=true` stays under the documented ceilings, and every check that
 * still counts against a unit is one of the exceptions explained in the unit's comments. Plus the
 * readiness probe the units run, and the sysusers/tmpfiles files applied to a scratch root.
 *
 * No systemd as PID 1 is needed: verify and security work on unit files. A missing systemd-analyze is
 * a failure, not a skip (.ci/run installs the systemd package when it is missing).
 *
 * verify also checks that each Exec*= binary exists. The units run /usr/bin/node (the documented
 * layout) and /bin/sh; the test verifies a copy in a scratch directory in which only the interpreter
 * path is replaced by the node running the test (the same file when node is /usr/bin/node), so the
 * check is about the unit text, not about where this machine keeps node. Everything else is verbatim.
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveConfig } from '../../agent/config.js';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const unitDir = join(root, 'systemd');
const units = ['rgrid-agent.service', 'rgrid-control.service'] as const;

/**
 * Exposure ceilings (docs/operations.md). Control: the documented goal. Agent: measured 1.1 on systemd
 * 252; the real exposure is the Docker socket (root-equivalent), which the score cannot express.
 */
const CEILING: Record<(typeof units)[number], number> = { 'rgrid-agent.service': 1.5, 'rgrid-control.service': 2.5 };

/**
 * The checks that may still count against each unit (json_field names of `security --json`), each
 * explained next to the option in the unit file. Anything else failing means a hardening option was
 * dropped (or a newer systemd-analyze scores something new: then decide, and document it here).
 */
const COMMON_EXCEPTIONS = [
  'RootDirectoryOrRootImage', // needs the host's node, /opt/rgrid (and the Docker socket)
  'MemoryDenyWriteExecute', // V8's JIT
  'RestrictAddressFamilies_AF_UNIX', // Docker socket, agent socket, PostgreSQL socket directories
  'RestrictAddressFamilies_AF_INET_INET6', // sync, the API, PostgreSQL over TCP
  'ProcSubset', // /proc/meminfo for Node and PostgreSQL
  'PrivateNetwork', // it is a network service
  'DeviceAllow', // char-rtc:r, implied by ProtectClock=yes
  'IPAddressDeny', // site-specific; a drop-in in docs/operations.md
];
const EXCEPTIONS: Record<(typeof units)[number], string[]> = {
  'rgrid-agent.service': [...COMMON_EXCEPTIONS, 'SupplementaryGroups'], // docker
  'rgrid-control.service': COMMON_EXCEPTIONS,
};

let scratch: string;

function systemdAnalyze(args: string[]): { status: number | null; out: string } {
  const r = spawnSync('systemd-analyze', args, { encoding: 'utf8', env: { ...process.env, SYSTEMD_PAGER: '', SYSTEMD_COLORS: '0' } });
  if (r.error) throw new Error(`systemd-analyze could not be run (install the systemd package): ${r.error.message}`);
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** A copy of the unit in the scratch directory, with /usr/bin/node replaced by this node. */
function unitCopy(name: string, edit: (text: string) => string = (t) => t): string {
  const text = readFileSync(join(unitDir, name), 'utf8').replaceAll('/usr/bin/node ', `${process.execPath} `);
  const path = join(scratch, name);
  writeFileSync(path, edit(text));
  return path;
}

function verify(paths: string[]): { status: number | null; out: string } {
  return systemdAnalyze(['verify', '--man=no', '--generators=no', '--recursive-errors=no', ...paths]);
}

/** Lines of verify's output that are about the given unit files (by file or unit name). */
const concerning = (out: string): string[] => out.split('\n').filter((l) => units.some((u) => l.includes(u)));

function unitValue(name: string, key: string): string[] {
  const text = readFileSync(join(unitDir, name), 'utf8');
  return text.split('\n').filter((l) => l.startsWith(`${key}=`)).map((l) => l.slice(key.length + 1));
}

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'rgrid-units-'));
});
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

describe('systemd units', () => {
  it('systemd-analyze is installed', () => {
    const r = systemdAnalyze(['--version']);
    expect(r.status, r.out).toBe(0);
  });

  it('verify reports nothing about either unit', () => {
    const r = verify(units.map((u) => unitCopy(u)));
    expect(concerning(r.out), r.out).toEqual([]);
    expect(r.status, r.out).toBe(0);
  });

  it('verify does catch a broken unit (the check above is not vacuous)', () => {
    const broken = unitCopy('rgrid-agent.service', (t) => t.replace('Type=exec', 'Type=exce').replace('KillMode=mixed', 'KillMode=mixed\nNoSuchOption=1'));
    const r = verify([broken]);
    expect(concerning(r.out).join('\n')).toMatch(/service type|NoSuchOption/i);
  });

  for (const unit of units) {
    it(`${unit}: exposure at most ${CEILING[unit]}, failing checks only the documented exceptions`, () => {
      const path = unitCopy(unit);
      const text = systemdAnalyze(['security', '--offline=true', '--no-pager', path]);
      const match = /Overall exposure level for \S+: (\d+(?:\.\d+)?)/.exec(text.out);
      expect(match, text.out).not.toBeNull();
      const exposure = Number(match?.[1]);
      expect(exposure, text.out).toBeLessThanOrEqual(CEILING[unit]);

      const json = systemdAnalyze(['security', '--offline=true', '--no-pager', '--json=short', path]);
      const checks = JSON.parse(json.out.slice(json.out.indexOf('['), json.out.lastIndexOf(']') + 1)) as Array<{ json_field: string; name: string; exposure: string | null }>;
      const failing = checks.filter((c) => c.exposure !== null && Number(c.exposure) > 0).map((c) => c.json_field);
      expect(failing.filter((f) => !EXCEPTIONS[unit].includes(f)), text.out).toEqual([]);
    });
  }

  it("the agent's stop timeout covers the default drain deadline", () => {
    const drain = resolveConfig({}, { socket: '/x', data_dir: '/y' }).drain_timeout_s;
    const stop = unitValue('rgrid-agent.service', 'TimeoutStopSec')[0];
    expect(stop).toMatch(/^\d+s$/);
    // The drain, then up to 2 s to abandon builds, then closing the index: keep 10 s or more spare.
    expect(Number.parseInt(stop ?? '0', 10)).toBeGreaterThanOrEqual(drain + 10);
  });

  it('the readiness probes wait on what ExecStart serves', () => {
    const agentStart = unitValue('rgrid-agent.service', 'ExecStart')[0] ?? '';
    const socket = /--socket (\S+)/.exec(agentStart)?.[1];
    expect(socket).toBe('/run/rgrid/agent.sock');
    expect(unitValue('rgrid-agent.service', 'ExecStartPost')[0]).toContain(`unix:${socket} /v1/health`);
    expect(unitValue('rgrid-agent.service', 'RuntimeDirectory')).toEqual(['rgrid']);
    expect(unitValue('rgrid-control.service', 'ExecStart')[0]).toContain('--listen ${RGRID_CONTROL_LISTEN}');
    expect(unitValue('rgrid-control.service', 'ExecStartPost')[0]).toContain('http://${RGRID_CONTROL_LISTEN} /readyz');
    expect(unitValue('rgrid-control.service', 'LoadCredential')).toEqual(['admin-token:/etc/rgrid/control-admin-token']);
  });
});

describe('rgrid-wait-ready.sh', () => {
  let server: Server;
  let answers = 0;
  const socket = (): string => join(scratch, 'probe.sock');

  beforeAll(async () => {
    // 503 twice (starting), then 200: the probe must keep polling, then exit 0.
    server = createServer((req, res) => {
      answers++;
      res.statusCode = req.url === '/v1/health' && answers > 2 ? 200 : 503;
      res.end('{}');
    });
    await new Promise<void>((r) => server.listen(socket(), r));
  });
  afterAll(async () => {
    await new Promise<void>((r) => server.close(() => r()));
  });

  function probe(target: string, path: string, ms: number): Promise<number | null | 'timeout'> {
    return new Promise((resolveProbe) => {
      const child = spawn('/bin/sh', [join(unitDir, 'rgrid-wait-ready.sh'), target, path], { env: { ...process.env, RGRID_NODE: process.execPath }, stdio: 'ignore' });
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolveProbe('timeout');
      }, ms);
      child.on('exit', (code) => {
        clearTimeout(timer);
        resolveProbe(code);
      });
    });
  }

  it('polls a Unix socket until it answers 200', async () => {
    expect(await probe(`unix:${socket()}`, '/v1/health', 15_000)).toBe(0);
    expect(answers).toBeGreaterThanOrEqual(3);
  });

  it('keeps waiting while nothing listens (systemd bounds it with TimeoutStartSec)', async () => {
    expect(await probe('http://127.0.0.1:9', '/readyz', 1500)).toBe('timeout');
  });
});

describe('sysusers and tmpfiles', () => {
  it('create the users, the operators group and /etc/rgrid in a scratch root', () => {
    const sysroot = join(scratch, 'root');
    mkdirSync(join(sysroot, 'etc'), { recursive: true });
    const users = spawnSync('systemd-sysusers', [`--root=${sysroot}`, '-'], { input: readFileSync(join(unitDir, 'rgrid.sysusers.conf')), encoding: 'utf8' });
    expect(users.status, `${users.stdout}${users.stderr}`).toBe(0);
    const passwd = readFileSync(join(sysroot, 'etc/passwd'), 'utf8');
    const group = readFileSync(join(sysroot, 'etc/group'), 'utf8');
    const gidOf = (name: string): string | undefined => group.split('\n').find((l) => l.startsWith(`${name}:`))?.split(':')[2];
    const agent = passwd.split('\n').find((l) => l.startsWith('rgrid-agent:'))?.split(':');
    expect(agent?.[3]).toBe(gidOf('rgrid')); // primary group rgrid: the socket gets it without a chown
    expect(agent?.[6]).toMatch(/nologin$/);
    expect(passwd).toMatch(/^rgrid-control:/m);

    const dirs = spawnSync('systemd-tmpfiles', [`--root=${sysroot}`, '--create', '-'], { input: readFileSync(join(unitDir, 'rgrid.tmpfiles.conf')), encoding: 'utf8' });
    expect(dirs.status, `${dirs.stdout}${dirs.stderr}`).toBe(0);
    expect(statSync(join(sysroot, 'etc/rgrid')).mode & 0o7777).toBe(0o755);
  });
});
