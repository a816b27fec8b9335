import { PassThrough } from 'node:stream';
import tar from 'tar-stream';
import { describe, expect, it } from 'vitest';
import { compileBuildPolicy } from '../../agent/builder/build-policy.js';
import { MAX_REPORT_BYTES, readReportArchive, REPORT_PATH, resolveCommand, resolveLabels } from '../../agent/builder/resolver.js';
import { resolveConfig } from '../../agent/config.js';
import type { RgridError } from '../../common/errors.js';

/** The resolver's pure parts: its command, its labels, and how it reads the report the container left. */
const base = { socket: '/run/rgrid.sock', data_dir: '/var/lib/rgrid' };

type Entry = { name: string; type?: 'file' | 'symlink' | 'directory' | 'fifo'; content?: string | Buffer; linkname?: string };

/** A tar stream like the engine's archive of a container path. */
function archiveOf(entries: Entry[]): NodeJS.ReadableStream {
  const pack = tar.pack();
  for (const e of entries) {
    if (e.type === 'symlink') pack.entry({ name: e.name, type: 'symlink', linkname: e.linkname ?? '/etc/passwd' });
    else if (e.type === 'directory' || e.type === 'fifo') pack.entry({ name: e.name, type: e.type });
    else pack.entry({ name: e.name }, e.content ?? '');
  }
  pack.finalize();
  // The reader stops early on a refused entry: the pack then has nowhere to write, which is no failure here.
  pack.on('error', () => undefined);
  const out = new PassThrough();
  (pack as unknown as NodeJS.ReadableStream).pipe(out);
  return out;
}

describe('resolver command', () => {
  it('is pip\'s dry run with a report, the policy\'s pip options, no cache, with a venv fallback', () => {
    const policy = compileBuildPolicy(resolveConfig({ ...base, pip_find_links: '/srv/wheels', build_wheels_only: true }, {}));
    const command = resolveCommand(policy);
    const options =
      'install --dry-run --ignore-installed --no-cache-dir --disable-pip-version-check --no-input -q --no-index --find-links /tmp/rgrid-wheelhouse --only-binary :all: ' +
      `--report ${REPORT_PATH} -r /tmp/rgrid-resolve/requirements.txt`;
    expect(command.split('\n')).toEqual([
      'set -e',
      'if python3 -m pip --version >/dev/null 2>&1; then',
      `  exec env PIP_BREAK_SYSTEM_PACKAGES=1 python3 -m pip ${options}`,
      'fi',
      'python3 -m venv /tmp/rgrid-resolve-venv',
      `exec /tmp/rgrid-resolve-venv/bin/pip ${options}`,
    ]);
  });

  it('quotes an index URL for the shell', () => {
    const policy = compileBuildPolicy(resolveConfig({ ...base, build_network: 'host', pip_index_url: 'http://127.0.0.1:3141/simple?a=1&b=2' }, {}));
    expect(resolveCommand(policy)).toContain("--index-url 'http://127.0.0.1:3141/simple?a=1&b=2' --report");
  });

  it('labels its container so start-up repair finds it', () => {
    expect(resolveLabels('agent-1', 'r-1')).toEqual({ 'io.rgrid.stage': 'resolve', 'io.rgrid.agent': 'agent-1', 'io.rgrid.build': 'r-1' });
  });
});

describe('reading the report back', () => {
  it('parses one regular file', async () => {
    expect(await readReportArchive(archiveOf([{ name: 'rgrid-report.json', content: '{"version":"1","install":[]}' }]))).toEqual({ version: '1', install: [] });
  });

  it.each<[string, Entry[], RegExp]>([
    ['a link planted by build code', [{ name: 'rgrid-report.json', type: 'symlink', linkname: '/etc/shadow' }], /^resolution failed: pip's report is not a regular file \(symlink\)$/],
    ['a directory', [{ name: 'rgrid-report.json/', type: 'directory' }, { name: 'rgrid-report.json/x', content: '{}' }], /is not a regular file \(directory\)/],
    ['a FIFO', [{ name: 'rgrid-report.json', type: 'fifo' }], /is not a regular file \(fifo\)/],
    ['two files', [{ name: 'rgrid-report.json', content: '{}' }, { name: 'other', content: '{}' }], /is more than one file/],
    ['not JSON', [{ name: 'rgrid-report.json', content: '{"version": "1", ' }], /^resolution failed: pip's report is not JSON$/],
    ['empty', [], /was not written/],
  ])('refuses %s', async (_what, entries, message) => {
    const err = await readReportArchive(archiveOf(entries)).then(() => undefined, (e: unknown) => e as RgridError);
    expect(err?.code).toBe('build_failed');
    expect(err?.message).toMatch(message);
  });

  it('refuses a report over the size cap without reading it whole', async () => {
    const big = Buffer.alloc(MAX_REPORT_BYTES + 1, 0x20);
    await expect(readReportArchive(archiveOf([{ name: 'rgrid-report.json', content: big }]))).rejects.toMatchObject({
      code: 'build_failed',
      message: 'resolution failed: pip\'s report is larger than 16 MiB',
    });
  });

  it('refuses a broken archive', async () => {
    const broken = new PassThrough();
    broken.end(Buffer.from('this is not a tar archive at all, just bytes'.repeat(20)));
    await expect(readReportArchive(broken)).rejects.toMatchObject({ code: 'build_failed' });
  });
});
