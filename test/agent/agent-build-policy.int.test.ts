import { createHash } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { RgridError } from '../../common/errors.js';
import { createWheelhouse } from '../../tools/wheelhouse/wheelhouse.js';
import { HOT_LABEL } from '../../agent/runner/hot-containers.js';
import { cli, cliJson, docker, nonceScript, removeAccountImages, runsCleanedUp, startAgent, tempDir, uniqueAccount, writeFiles, type AgentProcess } from './helpers.js';
import { makeSdist, type SdistBehaviour } from './sdist.js';

/**
 * The dependency-build policy through the real agent, engine and pip, with a local wheelhouse and
 * sdists whose build misbehaves (sleeps, allocates, forks): refusals change nothing, index options pass
 * only when the operator allows them, and a build over a limit fails cleanly with the limit named and
 * nothing left behind.
 */
interface Agent {
  process: AgentProcess;
  id: string;
}

async function start(dir: string, name: string, wheelhouse: string, config: Record<string, unknown>): Promise<Agent> {
  const configFile = join(dir, `${name}.json`);
  writeFileSync(configFile, JSON.stringify(config));
  const process = await startAgent({
    dataDir: join(dir, `${name}-data`),
    socket: join(dir, `${name}.sock`),
    baseImage: inject('baseImage'),
    wheelhouse,
    args: ['--config', configFile],
  });
  return { process, id: String((await process.client.health()).agent_id) };
}

describe('dependency-build policy against a real Docker engine', () => {
  const account = uniqueAccount('policy');
  const dir = tempDir('policy');
  let closed: Agent;
  let open: Agent;
  let wheelsOnly: Agent;
  let files: Record<string, string>;

  const imagesOfAccount = async (): Promise<string[]> =>
    (await docker.listImages({ all: true, filters: { label: [`io.rgrid.account=${account}`] } })).map((i) => i.Id).sort();
  const entries = (agent: Agent): Promise<unknown[]> => cliJson<unknown[]>(['ls', '--account', account], agent.process.socket);
  /**
   * What an agent has left in the engine: containers and images carrying its leftover label — except the
   * hot containers a successful run leaves on purpose (the next run's container, made ahead; they go at
   * the agent's stop, which hot-containers.int.test.ts checks).
   */
  const leftovers = async (agent: Agent): Promise<unknown[]> => {
    // A run's container and directories go right after its answer, in the background: that first.
    await runsCleanedUp(agent.process.client);
    return [
      ...(await docker.listContainers({ all: true, filters: { label: [`io.rgrid.agent=${agent.id}`] } })).filter((c) => c.Labels[HOT_LABEL] === undefined),
      ...(await docker.listImages({ all: true, filters: { label: [`io.rgrid.agent=${agent.id}`] } })),
    ];
  };

  /** A failing command must leave the agent's index, the account's images and the engine as they were. */
  async function expectNothingChanged(agent: Agent, action: () => Promise<void>): Promise<void> {
    const entriesBefore = await entries(agent);
    const imagesBefore = await imagesOfAccount();
    await action();
    expect(await entries(agent)).toEqual(entriesBefore);
    expect(await imagesOfAccount()).toEqual(imagesBefore);
    expect(await leftovers(agent)).toEqual([]);
  }

  beforeAll(async () => {
    const wheelhouse = createWheelhouse([{ name: 'rgtest-alpha', version: '1.0' }], tempDir('wheels-policy'));
    await makeSdist(wheelhouse, 'rgtest-whoami', '1.0', 'ok');
    // The hostile packages are asked for by locked files (pinned and hashed): no resolution runs, so the
    // step that meets their build code is the install (the resolution's own sandbox has its test in
    // resolver.int.test.ts).
    const locked = async (name: string, behaviour: SdistBehaviour): Promise<string> =>
      `${name}==1.0 --hash=sha256:${createHash('sha256').update(readFileSync(await makeSdist(wheelhouse, name, '1.0', behaviour))).digest('hex')}\n`;
    const sleepy = await locked('rgtest-sleepy', 'sleep');
    const hog = await locked('rgtest-hog', 'hog');
    const forker = await locked('rgtest-forker', 'fork');
    files = writeFiles(dir, {
      'a.py': nonceScript('import rgtest_alpha\nprint(rgtest_alpha.VERSION)'),
      'whoami.py': nonceScript(
        [
          'import json, os, stat, rgtest_whoami',
          'venv = os.stat("/opt/rgrid/venv/lib")',
          'print(json.dumps({"build_uid": rgtest_whoami.BUILD_UID, "venv_owner": venv.st_uid, "group_or_other_writable": bool(venv.st_mode & 0o022)}))',
        ].join('\n'),
      ),
      'smuggle-r.txt': 'rgtest-alpha==1.0\x1c-r/etc/passwd\n',
      'smuggle-e.txt': 'rgtest-alpha==1.0\u2028-e git+https://127.0.0.1:9/x.git#egg=x\n',
      'smuggle-url.txt': 'rgtest-alpha==1.0\x85evil @ https://127.0.0.1:9/evil-1.0-py3-none-any.whl\n',
      'smuggle-index.txt': 'rgtest-alpha==1.0\v--index-url http://127.0.0.1:9/simple\n',
      'index.txt': '--extra-index-url http://127.0.0.1:9/simple\n--trusted-host 127.0.0.1\nrgtest-alpha==1.0\n',
      'whoami.txt': 'rgtest-whoami==1.0\n',
      'sleepy.txt': sleepy,
      'hog.txt': hog,
      'forker.txt': forker,
    });
    closed = await start(dir, 'closed', wheelhouse, {});
    open = await start(dir, 'open', wheelhouse, {
      build_allow_index_options: true,
      build_timeout_s: 60,
      build_memory_mb: 192,
      build_pids_limit: 48,
    });
    wheelsOnly = await start(dir, 'wheels-only', wheelhouse, { build_wheels_only: true });
  });

  afterAll(async () => {
    await Promise.all([closed, open, wheelsOnly].map((a) => a?.process.stop()));
    await removeAccountImages(account);
    rmSync(dir, { recursive: true, force: true });
  });

  describe('the default policy refuses, and the refusal changes nothing', () => {
    it.each([
      ['smuggle-r.txt', /^rgrid-agent: bad_requirements: requirements line 2 \(pip starts a line at the \\x1c before it\) "-r\/etc\/passwd" cannot be reproduced on a worker: -r includes another requirements file$/],
      ['smuggle-e.txt', /^rgrid-agent: bad_requirements: requirements line 2 \(pip starts a line at the \\u2028 before it\) "-e git\+https:.*" cannot be reproduced on a worker: -e installs/],
      ['smuggle-url.txt', /^rgrid-agent: bad_requirements: requirements line 2 \(pip starts a line at the \\x85 before it\) "evil @ https:.*" is refused by this worker's build policy: it installs from a direct URL/],
      ['smuggle-index.txt', /^rgrid-agent: bad_requirements: requirements line 2 \(pip starts a line at the \\x0b before it\) "--index-url http:\/\/127\.0\.0\.1:9\/simple" is refused by this worker's build policy/],
      ['index.txt', /^rgrid-agent: bad_requirements: requirements line 1 "--extra-index-url http:\/\/127\.0\.0\.1:9\/simple" is refused by this worker's build policy: --extra-index-url .*build_allow_index_options/],
    ])('ensure with %s: one line naming the line, no image, no index entry', async (requirements, message) => {
      await expectNothingChanged(closed, async () => {
        const res = await cli(['ensure', '--script', files['a.py']!, '--requirements', files[requirements]!, '--account', account], closed.process.socket);
        expect(res.code).not.toBe(0);
        expect(res.stdout).toBe('');
        expect(res.stderr.trimEnd().split('\n')).toHaveLength(1);
        expect(res.stderr.trimEnd()).toMatch(message);
      });
    });

    it('the socket API answers the index option with bad_requirements (400), before any build', async () => {
      await expectNothingChanged(closed, async () => {
        const err = await closed.process.client
          .ensure({ script: Buffer.from(nonceScript('print(1)')), requirements: Buffer.from('rgtest-alpha==1.0\n-i http://127.0.0.1:9/simple\n'), account })
          .then(() => undefined, (e: unknown) => e);
        expect(err).toBeInstanceOf(RgridError);
        expect((err as RgridError).code).toBe('bad_requirements');
        expect((err as RgridError).message).toMatch(/^requirements line 2 "-i http:\/\/127\.0\.0\.1:9\/simple" is refused by this worker's build policy/);
      });
    });
  });

  describe('an operator who allows index options', () => {
    it('gets the same file built', async () => {
      const out = await cliJson<{ built: boolean; deps_key: string }>(['ensure', '--script', files['a.py']!, '--requirements', files['index.txt']!, '--account', account], open.process.socket);
      expect(out.built).toBe(true);
      expect(out.deps_key).toMatch(/^[0-9a-f]{64}$/);
      expect(await leftovers(open)).toEqual([]);
    });
  });

  describe('the install runs locked down', () => {
    it('pip and a package build run as 65534; the kept venv is root-owned and not writable by runs', async () => {
      const res = await cli(['run', '--script', files['whoami.py']!, '--requirements', files['whoami.txt']!, '--account', account, '--json'], open.process.socket);
      expect(res.code, res.stderr).toBe(0);
      const out = JSON.parse(res.stdout) as { exit_code: number; stdout: string };
      expect(out.exit_code).toBe(0);
      expect(JSON.parse(out.stdout)).toEqual({ build_uid: 65534, venv_owner: 0, group_or_other_writable: false });
      expect(await leftovers(open)).toEqual([]);
    });

    it('a wheels-only worker does not build the sdist at all', async () => {
      await expectNothingChanged(wheelsOnly, async () => {
        const res = await cli(['ensure', '--script', files['whoami.py']!, '--requirements', files['whoami.txt']!, '--account', account], wheelsOnly.process.socket);
        expect(res.code).not.toBe(0);
        // The resolution already runs pip with the policy's --only-binary :all:: the sdist is never considered.
        expect(res.stderr.trimEnd()).toMatch(/^rgrid-agent: build_failed: resolution failed: ERROR: No matching distribution found for rgtest-whoami==1\.0 \(exit 1\)$/);
      });
    });
  });

  describe('a build over its limits fails cleanly and leaves nothing behind', () => {
    it('time: a run whose dependency build sleeps fails with build_failed naming build_timeout_s', async () => {
      await expectNothingChanged(open, async () => {
        const res = await cli(['run', '--script', files['a.py']!, '--requirements', files['sleepy.txt']!, '--account', account, '--json'], open.process.socket);
        expect(res.code).not.toBe(0);
        const body = JSON.parse(res.stdout) as { error: string; message: string; detail: { limit: string } };
        expect(body.error).toBe('build_failed');
        expect(body.message).toBe('dependency install stopped: it exceeded the build time limit of 60 s (build_timeout_s)');
        expect(body.detail.limit).toBe('build_timeout_s');
      });
    });

    it('memory: a dependency build that allocates 1 GiB fails with build_failed naming build_memory_mb', async () => {
      await expectNothingChanged(open, async () => {
        const res = await cli(['ensure', '--script', files['a.py']!, '--requirements', files['hog.txt']!, '--account', account, '--json'], open.process.socket);
        expect(res.code).not.toBe(0);
        const body = JSON.parse(res.stdout) as { error: string; message: string; detail: { output_tail: string[] } };
        expect(body.error).toBe('build_failed');
        expect(body.message).toBe('dependency install failed: it exceeded the build memory limit of 192 MB (build_memory_mb)');
        expect(body.detail.output_tail.join('\n')).not.toContain('rgrid-test: allocated');
      });
    });

    it('processes: a dependency build that forks 400 processes is stopped by build_pids_limit', async () => {
      await expectNothingChanged(open, async () => {
        const res = await cli(['ensure', '--script', files['a.py']!, '--requirements', files['forker.txt']!, '--account', account, '--json'], open.process.socket);
        expect(res.code).not.toBe(0);
        const body = JSON.parse(res.stdout) as { error: string; message: string; detail: { output_tail: string[] } };
        expect(body.error).toBe('build_failed');
        const refused = /rgrid-test: fork refused after (\d+) processes/.exec(body.detail.output_tail.join('\n'));
        expect(refused, body.detail.output_tail.join('\n')).not.toBeNull();
        expect(Number(refused![1])).toBeLessThan(48);
      });
    });
  });
});
