/**
 * Real wheels for the heavy row of the cached-path bench, without a package index: numpy, scipy,
 * requests and pydantic (and what they need at run time) as Debian bookworm built them, repacked the
 * way a wheel build and auditwheel would ship them.
 *
 *  1. `apt-get download` the python3-* packages and the shared libraries numpy and scipy link against,
 *     at the versions apt offers now (the only source reachable here is the Debian mirror apt uses);
 *  2. `dpkg-deb -x` each; a distribution's files are what the package puts in
 *     /usr/lib/python3/dist-packages, its metadata the METADATA or PKG-INFO Debian ships;
 *  3. like auditwheel: every shared library an extension needs that is not glibc's, libgcc_s or
 *     libstdc++ (what the manylinux policies leave to the system, and the base image has) is copied
 *     into `<package>.libs/` under a name with a hash of its content, its soname and the extensions'
 *     DT_NEEDED renamed to match, and `$ORIGIN`-relative run paths set with patchelf;
 *  4. each distribution becomes `<name>-<version>-<tag>.whl` with a dist-info (METADATA, WHEEL,
 *     entry_points.txt, RECORD with sha256), tagged cp311-cp311-linux_x86_64 (binary; bookworm's Python
 *     is 3.11, as is the base image's) or py3-none-any;
 *  5. proof, inside the base image with no network: `pip install --no-index --find-links` of the four
 *     into a venv, a script that solves, minimises and validates with them, and ldd finding every
 *     library of every installed extension.
 *
 * The wheelhouse is kept in bench-output/wheelhouse-bookworm-<hash of the package versions>/ (wheels in
 * wheels/, manifest.json written last), so later runs reuse it; a new Debian point release makes a new
 * one. patchelf (a Debian package) is installed with apt-get when it is missing, as scripts/setup-host.sh
 * installs its packages, and only when this runs.
 *
 * `node dist/bench/heavy-wheelhouse.js` builds (or finds) it and prints the manifest.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { writeWheel, type WheelEntry } from './wheel-zip.js';

const run = promisify(execFile);
const BASE_IMAGE = process.env.RGRID_TEST_BASE_IMAGE ?? 'rgrid-test/python:bookworm';
/** Bumped when the way wheels are made changes, so a cached wheelhouse of the old way is not reused. */
const FORMAT = 2;
const SITE = 'usr/lib/python3/dist-packages';

interface Distribution {
  deb: string;
  binary: boolean;
  /**
   * Requires-Dist, replacing the metadata's: Debian strips install_requires from the egg-info it ships
   * (dpkg's Depends carry them), so these are upstream's, adjusted where Debian's build of a package
   * differs from upstream's (said at the entry). Absent: the shipped metadata's own.
   */
  requires?: string[];
}

export const DISTRIBUTIONS: readonly Distribution[] = [
  { deb: 'python3-numpy', binary: true, requires: [] },
  { deb: 'python3-scipy', binary: true }, // its dist-info keeps `numpy<1.27.0,>=1.19.5`
  // requests 2.28 asks for charset_normalizer<3; bookworm has 3.0.1, so Debian's requests depends on
  // chardet instead (requests' `use_chardet_on_py3` path, which it prefers when installed).
  { deb: 'python3-requests', binary: false, requires: ['certifi>=2017.4.17', 'chardet<6,>=3.0.2', 'idna<4,>=2.5', 'urllib3<1.27,>=1.21.1'] },
  { deb: 'python3-pydantic', binary: false, requires: ['typing-extensions>=4.2.0'] },
  // Debian's urllib3 imports six instead of its own bundled copy.
  { deb: 'python3-urllib3', binary: false, requires: ['six>=1.12'] },
  { deb: 'python3-idna', binary: false, requires: [] },
  // Debian's certifi answers where() with the system bundle, /etc/ssl/certs/ca-certificates.crt.
  { deb: 'python3-certifi', binary: false, requires: [] },
  { deb: 'python3-chardet', binary: false, requires: [] },
  { deb: 'python3-typing-extensions', binary: false },
  { deb: 'python3-six', binary: false, requires: [] },
];

/** The shared libraries bundled into numpy.libs and scipy.libs (BLAS and LAPACK: Debian's reference builds). */
const LIBRARY_DEBS = ['libblas3', 'liblapack3', 'libgfortran5', 'libquadmath0', 'liblbfgsb0'];

/** What auditwheel's manylinux policies leave to the system: glibc, libgcc_s and libstdc++. */
const SYSTEM_LIBRARIES = new Set([
  'libc.so.6', 'libm.so.6', 'libmvec.so.1', 'libpthread.so.0', 'libdl.so.2', 'librt.so.1', 'libutil.so.1', 'ld-linux-x86-64.so.2',
  'libgcc_s.so.1', 'libstdc++.so.6',
]);

/** The four the heavy row's requirements name, in that order. */
export const HEAVY_PACKAGES = ['numpy', 'scipy', 'requests', 'pydantic'] as const;

export interface Wheelhouse {
  /** The directory of wheels only (an agent's pip_find_links). */
  wheels: string;
  /** Distribution name → version, for every wheel. */
  versions: Record<string, string>;
  /** Debian package → version the wheels were made from. */
  debs: Record<string, string>;
  /** Seconds it took to make and prove it; 0 when found. */
  built_seconds: number;
  reused: boolean;
}

const log = (message: string): void => void process.stderr.write(`heavy-wheelhouse: ${message}\n`);

async function sh(file: string, args: readonly string[], cwd?: string): Promise<string> {
  try {
    return (await run(file, args, { cwd, maxBuffer: 64 * 1024 * 1024 })).stdout;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`${file} ${args.slice(0, 3).join(' ')} failed: ${(e.stderr ?? '').trim().split('\n').slice(-5).join(' | ') || e.message}`);
  }
}

/** As scripts/setup-host.sh does: only as root on Debian, logged to /tmp/rgrid-apt.log. */
async function aptInstall(pkg: string): Promise<void> {
  if (process.getuid?.() !== 0 || !existsSync('/etc/debian_version')) {
    throw new Error(`${pkg} is missing: install it (Debian/Ubuntu: sudo apt-get install ${pkg}), or run as root on Debian`);
  }
  log(`installing ${pkg} with apt-get for the heavy row (once per machine; log /tmp/rgrid-apt.log)`);
  await sh('bash', ['-c', `{ apt-get install -y -qq ${pkg} || { apt-get update -qq && apt-get install -y -qq ${pkg}; }; } >>/tmp/rgrid-apt.log 2>&1`]);
}

/** The version apt would download of each package, refreshing apt's lists once if one is unknown. */
async function candidateVersions(packages: readonly string[]): Promise<Record<string, string>> {
  const ask = async (): Promise<Record<string, string>> => {
    const out: Record<string, string> = {};
    const text = await sh('apt-cache', ['show', '--no-all-versions', ...packages]).catch(() => '');
    let current = '';
    for (const line of text.split('\n')) {
      if (line.startsWith('Package: ')) current = line.slice(9).trim();
      if (line.startsWith('Version: ') && current) out[current] = line.slice(9).trim();
    }
    return out;
  };
  let versions = await ask();
  if (packages.some((p) => !versions[p]) && process.getuid?.() === 0) {
    log('apt knows none or not all of the packages: apt-get update');
    await sh('bash', ['-c', 'apt-get update -qq >>/tmp/rgrid-apt.log 2>&1']);
    versions = await ask();
  }
  const missing = packages.filter((p) => !versions[p]);
  if (missing.length > 0) throw new Error(`apt offers no ${missing.join(', ')} (a Debian bookworm apt source is needed)`);
  return versions;
}

const isElf = (path: string): boolean => {
  const head = readFileSync(path).subarray(0, 4);
  return head.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
};

function filesUnder(root: string, dir = root): string[] {
  const out: string[] = [];
  for (const name of readdirSync(dir).sort()) {
    const path = join(dir, name);
    const info = lstatSync(path);
    if (info.isSymbolicLink()) throw new Error(`${relative(root, path)} is a symbolic link: a wheel holds files only`);
    if (info.isDirectory()) out.push(...filesUnder(root, path));
    else if (info.isFile()) out.push(path);
  }
  return out;
}

/** soname → file, over the extracted library packages (real files only; the .so.N links are Debian's). */
async function libraryIndex(roots: readonly string[]): Promise<Map<string, string>> {
  const index = new Map<string, string>();
  for (const root of roots) {
    const walk = (dir: string): string[] => readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? walk(join(dir, e.name)) : e.isFile() && /\.so(\.|$)/.test(e.name) ? [join(dir, e.name)] : []);
    for (const file of walk(join(root, 'usr/lib'))) {
      const soname = (await sh('patchelf', ['--print-soname', file])).trim();
      if (soname) index.set(soname, file);
    }
  }
  return index;
}

const needed = async (file: string): Promise<string[]> => (await sh('patchelf', ['--print-needed', file])).split('\n').map((s) => s.trim()).filter(Boolean);

/**
 * auditwheel's repair, on a staged distribution: copies the closure of non-system libraries its ELF files
 * need into `<pkg>.libs/` as `<stem>-<8 hex of sha256>.so.N`, renames sonames and DT_NEEDED to those
 * names, and gives every patched file a run path relative to itself.
 */
async function bundleLibraries(stage: string, topLevel: string, index: Map<string, string>): Promise<string[]> {
  const libsDir = join(stage, `${topLevel}.libs`);
  const elves = [];
  for (const f of filesUnder(stage)) if (isElf(f)) elves.push(f);
  const renamed = new Map<string, string>(); // original soname → bundled name
  const queue: string[] = [];
  const want = (soname: string): void => {
    if (SYSTEM_LIBRARIES.has(soname) || renamed.has(soname)) return;
    const source = index.get(soname);
    if (!source) throw new Error(`${topLevel} needs ${soname}, which neither the system set nor the downloaded libraries provide`);
    const hash = createHash('sha256').update(readFileSync(source)).digest('hex').slice(0, 8);
    const [stem, version] = soname.split('.so');
    renamed.set(soname, `${stem}-${hash}.so${version ?? ''}`);
    queue.push(soname);
  };
  const neededOf = new Map<string, string[]>();
  for (const f of elves) {
    neededOf.set(f, await needed(f));
    for (const n of neededOf.get(f)!) want(n);
  }
  mkdirSync(libsDir, { recursive: true });
  while (queue.length > 0) {
    const soname = queue.shift()!;
    const target = join(libsDir, renamed.get(soname)!);
    writeFileSync(target, readFileSync(index.get(soname)!), { mode: 0o755 });
    neededOf.set(target, await needed(target));
    for (const n of neededOf.get(target)!) want(n);
  }
  for (const [file, deps] of neededOf) {
    const bundled = deps.filter((d) => renamed.has(d));
    const isBundled = dirname(file) === libsDir;
    if (bundled.length === 0 && !isBundled) continue;
    // One change per patchelf call: 0.14 (bookworm's) mixes up a --replace-needed and a --set-rpath given together.
    if (bundled.length > 0) await sh('patchelf', [...bundled.flatMap((d) => ['--replace-needed', d, renamed.get(d)!]), file]);
    if (isBundled) await sh('patchelf', ['--set-soname', [...renamed.values()].find((name) => join(libsDir, name) === file)!, file]);
    await sh('patchelf', ['--set-rpath', isBundled ? '$ORIGIN' : `$ORIGIN/${relative(dirname(file), libsDir)}`, file]);
  }
  if (renamed.size === 0) rmSync(libsDir, { recursive: true });
  return [...renamed.values()];
}

/** Header fields up to the first blank line, continuation lines kept with their field. */
export function rewriteMetadata(text: string, requires: readonly string[] | undefined): { text: string; name: string; version: string } {
  const cut = text.indexOf('\n\n');
  const head = cut < 0 ? text : text.slice(0, cut);
  const body = cut < 0 ? '' : text.slice(cut);
  const fields: string[] = [];
  for (const line of head.split('\n')) {
    if (/^[ \t]/.test(line) && fields.length > 0) fields[fields.length - 1] += `\n${line}`;
    else if (line) fields.push(line);
  }
  const field = (key: string): string | undefined => fields.find((f) => f.startsWith(`${key}: `))?.slice(key.length + 2).trim();
  const name = field('Name');
  const version = field('Version');
  if (!name || !version) throw new Error('metadata without Name or Version');
  const kept = requires ? fields.filter((f) => !f.startsWith('Requires-Dist:') && !f.startsWith('Provides-Extra:')) : fields;
  const added = (requires ?? []).map((r) => `Requires-Dist: ${r}`);
  return { text: `${[...kept, ...added].join('\n')}${body || '\n'}`, name, version };
}

interface Built { file: string; name: string; version: string; bundled: string[] }

async function buildWheel(dist: Distribution, extracted: string, stage: string, out: string, index: Map<string, string>): Promise<Built> {
  const site = join(extracted, SITE);
  const infoDir = readdirSync(site).find((n) => n.endsWith('.dist-info') || n.endsWith('.egg-info'));
  if (!infoDir) throw new Error(`${dist.deb}: no dist-info or egg-info in ${SITE}`);
  const info = join(site, infoDir);
  const metadataFile = existsSync(join(info, 'METADATA')) ? join(info, 'METADATA') : join(info, 'PKG-INFO');
  const metadata = rewriteMetadata(readFileSync(metadataFile, 'utf8'), dist.requires);
  const distName = metadata.name.replace(/[-_.]+/g, '_');
  // Stage the importable files, without the Debian metadata directory.
  rmSync(stage, { recursive: true, force: true });
  mkdirSync(stage, { recursive: true });
  for (const name of readdirSync(site)) if (name !== infoDir) await sh('cp', ['-a', join(site, name), stage]);
  const topLevel = readdirSync(stage).find((n) => statSync(join(stage, n)).isDirectory()) ?? distName;
  const bundled = dist.binary ? await bundleLibraries(stage, topLevel, index) : [];
  const distInfo = `${distName}-${metadata.version}.dist-info`;
  const tag = dist.binary ? 'cp311-cp311-linux_x86_64' : 'py3-none-any';
  const entries: WheelEntry[] = filesUnder(stage).map((path) => ({
    name: relative(stage, path).split('\\').join('/'), data: readFileSync(path), mode: statSync(path).mode & 0o777,
  }));
  const text = (name: string, content: string): WheelEntry => ({ name: `${distInfo}/${name}`, data: Buffer.from(content), mode: 0o644 });
  entries.push(text('METADATA', metadata.text));
  entries.push(text('WHEEL', `Wheel-Version: 1.0\nGenerator: rgrid heavy-wheelhouse (from Debian ${dist.deb})\nRoot-Is-Purelib: ${String(!dist.binary)}\nTag: ${tag}\n`));
  if (existsSync(join(info, 'entry_points.txt'))) entries.push(text('entry_points.txt', readFileSync(join(info, 'entry_points.txt'), 'utf8')));
  const file = join(out, `${distName}-${metadata.version}-${tag}.whl`);
  writeWheel(file, distInfo, entries);
  return { file, name: metadata.name, version: metadata.version, bundled };
}

/** The proof, in the base image with no network; throws with pip's or Python's last lines when it fails. */
async function prove(wheels: string, versions: Record<string, string>): Promise<string> {
  const pins = HEAVY_PACKAGES.map((p) => `${p}==${versions[p]}`).join(' ');
  const python = [
    'import json, numpy as np, scipy.linalg, scipy.optimize, requests, pydantic',
    'a = np.array([[4.0, 1.0, 0.0], [1.0, 3.0, 1.0], [0.0, 1.0, 2.0]])',
    'x = scipy.linalg.solve(a, np.array([1.0, 2.0, 3.0]))',
    'assert np.allclose(a @ x, [1.0, 2.0, 3.0])',
    'best = scipy.optimize.minimize(scipy.optimize.rosen, np.zeros(3), method="L-BFGS-B")',
    'assert best.success and np.allclose(best.x, 1.0, atol=1e-3)',
    'class Point(pydantic.BaseModel):\n    x: float\n    y: int',
    'p = Point(x="1.5", y=2)',
    'assert p.y == 2 and p.x == 1.5',
    'url = requests.Request("GET", "http://127.0.0.1/q", params={"x": p.x}).prepare().url',
    'assert url == "http://127.0.0.1/q?x=1.5", url',
    'print(json.dumps({"solve": x.round(4).tolist(), "lbfgsb": best.x.round(3).tolist(), "url": url, "versions": [m.__version__ for m in (np, scipy, requests)] + [pydantic.VERSION]}))',
  ].join('\n');
  const script = [
    'set -e',
    'python3 -m venv /tmp/venv',
    `/tmp/venv/bin/pip install --quiet --no-index --find-links /wheels --disable-pip-version-check ${pins}`,
    `/tmp/venv/bin/python -c '${python}'`,
    // Every extension and bundled library of the venv resolves all of its libraries in the base image.
    "missing=$(find /tmp/venv/lib -name '*.so*' -type f -exec ldd {} + | grep 'not found' || true)",
    '[ -z "$missing" ] || { echo "ldd: $missing" >&2; exit 1; }',
    "echo \"ldd: $(find /tmp/venv/lib -name '*.so*' -type f | wc -l) shared objects, every library found\"",
  ].join('\n');
  return sh('docker', ['run', '--rm', '--network', 'none', '-v', `${wheels}:/wheels:ro`, BASE_IMAGE, 'bash', '-c', script]);
}

/** The wheelhouse for these package versions: found under `cacheRoot`, or made, proved and kept there. */
export async function ensureHeavyWheelhouse(cacheRoot = join(process.cwd(), 'bench-output')): Promise<Wheelhouse> {
  const debNames = [...DISTRIBUTIONS.map((d) => d.deb), ...LIBRARY_DEBS];
  const debs = await candidateVersions(debNames);
  const key = createHash('sha256').update(JSON.stringify({ FORMAT, debs, DISTRIBUTIONS })).digest('hex').slice(0, 12);
  const dir = resolve(cacheRoot, `wheelhouse-bookworm-${key}`);
  const manifestPath = join(dir, 'manifest.json');
  if (existsSync(manifestPath)) {
    const manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as Omit<Wheelhouse, 'wheels' | 'reused'>;
    return { ...manifest, wheels: join(dir, 'wheels'), reused: true };
  }
  const started = performance.now();
  if (!(await sh('bash', ['-c', 'command -v patchelf || true'])).trim()) await aptInstall('patchelf');
  const work = `${dir}.tmp-${process.pid}`;
  rmSync(work, { recursive: true, force: true });
  const [debsDir, rootsDir, stageDir, wheelsDir] = ['debs', 'roots', 'stage', 'wheels'].map((d) => join(work, d)) as [string, string, string, string];
  for (const d of [debsDir, rootsDir, stageDir, wheelsDir]) mkdirSync(d, { recursive: true });
  try {
    log(`downloading ${debNames.length} Debian packages`);
    await sh('apt-get', ['download', '-qq', ...debNames.map((p) => `${p}=${debs[p]}`)], debsDir);
    for (const file of readdirSync(debsDir)) await sh('dpkg-deb', ['-x', join(debsDir, file), join(rootsDir, file.split('_')[0]!)]);
    const index = await libraryIndex(LIBRARY_DEBS.map((p) => join(rootsDir, p)));
    const versions: Record<string, string> = {};
    const bundled: Record<string, string[]> = {};
    for (const dist of DISTRIBUTIONS) {
      const built = await buildWheel(dist, join(rootsDir, dist.deb), join(stageDir, dist.deb), wheelsDir, index);
      versions[built.name.toLowerCase()] = built.version;
      if (built.bundled.length > 0) bundled[built.name] = built.bundled;
      log(`${relative(wheelsDir, built.file)}${built.bundled.length ? ` (bundles ${built.bundled.join(', ')})` : ''}`);
    }
    log('proving the wheels in the base image (venv, pip --no-index, imports, ldd)');
    const proof = (await prove(wheelsDir, versions)).trim();
    log(proof);
    const manifest = { versions, debs, bundled, proof, built_seconds: Math.round((performance.now() - started) / 100) / 10 };
    rmSync(join(work, 'debs'), { recursive: true });
    rmSync(join(work, 'roots'), { recursive: true });
    rmSync(join(work, 'stage'), { recursive: true });
    writeFileSync(join(work, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`);
    try {
      renameSync(work, dir);
    } catch (err) {
      // Another run made the same wheelhouse meanwhile: use that one.
      if (!existsSync(manifestPath)) throw err;
    }
    return { ...manifest, wheels: join(dir, 'wheels'), reused: false };
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  ensureHeavyWheelhouse().then(
    (w) => process.stdout.write(`${JSON.stringify(w, null, 2)}\n`),
    (err: unknown) => {
      process.stderr.write(`heavy-wheelhouse failed: ${(err as Error).message}\n`);
      process.exit(1);
    },
  );
}
