import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';

/**
 * A source distribution whose build runs code of the test's choosing — what a hostile or broken package
 * on an index can do during `pip install`. Its PEP 517 backend lives in the sdist itself (no setuptools,
 * no network): `prepare_metadata_for_build_wheel` misbehaves as asked, `build_wheel` writes a wheel whose
 * module records the uid the build ran as.
 */
/** `slow`: the build takes about 15 s and then succeeds (a build long enough to be cut in the middle). */
export type SdistBehaviour = 'ok' | 'sleep' | 'slow' | 'hog' | 'fork';

const BACKEND = (name: string, version: string, behaviour: SdistBehaviour): string => `
import base64, hashlib, os, sys, time, zipfile
NAME, VERSION, BEHAVIOUR = ${JSON.stringify(name)}, ${JSON.stringify(version)}, ${JSON.stringify(behaviour)}
MODULE = NAME.replace('-', '_')
DIST = f'{MODULE}-{VERSION}'
METADATA = f'Metadata-Version: 2.1\\nName: {NAME}\\nVersion: {VERSION}\\n'

def _misbehave():
    if BEHAVIOUR == 'sleep':
        print('rgrid-test: sleeping for an hour', flush=True)
        time.sleep(3600)
    if BEHAVIOUR == 'slow':
        print('rgrid-test: building slowly', flush=True)
        time.sleep(15)
    if BEHAVIOUR == 'hog':
        print('rgrid-test: allocating 1 GiB', flush=True)
        blocks = [b'x' * (64 * 1024 * 1024) for _ in range(16)]
        print('rgrid-test: allocated', sum(len(b) for b in blocks), flush=True)
    if BEHAVIOUR == 'fork':
        n = 0
        try:
            while n < 400:
                if os.fork() == 0:
                    # Let go of pip's output pipe: pip waits for it to close, not for this process.
                    null = os.open(os.devnull, os.O_RDWR)
                    for fd in (0, 1, 2):
                        os.dup2(null, fd)
                    time.sleep(60)
                    os._exit(0)
                n += 1
        except OSError as e:
            print(f'rgrid-test: fork refused after {n} processes: {e}', flush=True)
            raise SystemExit(1)
        print(f'rgrid-test: forked {n} processes', flush=True)

def get_requires_for_build_wheel(config_settings=None):
    return []

def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    _misbehave()
    d = os.path.join(metadata_directory, f'{DIST}.dist-info')
    os.makedirs(d)
    open(os.path.join(d, 'METADATA'), 'w').write(METADATA)
    return f'{DIST}.dist-info'

def _record(path, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()
    return f'{path},sha256={digest},{len(data)}'

def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    files = [
        (f'{MODULE}/__init__.py', f'VERSION = {VERSION!r}\\nBUILD_UID = {os.getuid()}\\n'.encode()),
        (f'{DIST}.dist-info/METADATA', METADATA.encode()),
        (f'{DIST}.dist-info/WHEEL', b'Wheel-Version: 1.0\\nGenerator: rgrid-test\\nRoot-Is-Purelib: true\\nTag: py3-none-any\\n'),
    ]
    record = '\\n'.join([_record(p, d) for p, d in files] + [f'{DIST}.dist-info/RECORD,,']) + '\\n'
    files.append((f'{DIST}.dist-info/RECORD', record.encode()))
    wheel = f'{DIST}-py3-none-any.whl'
    with zipfile.ZipFile(os.path.join(wheel_directory, wheel), 'w') as zf:
        for path, data in files:
            zf.writestr(path, data)
    return wheel
`;

/** Writes `<name>-<version>.tar.gz` into `dir` and returns its path. */
export async function makeSdist(dir: string, name: string, version: string, behaviour: SdistBehaviour): Promise<string> {
  const root = `${name.replace(/-/g, '_')}-${version}`;
  const files: Record<string, string> = {
    'pyproject.toml': '[build-system]\nrequires = []\nbuild-backend = "rgrid_test_backend"\nbackend-path = ["."]\n',
    'PKG-INFO': `Metadata-Version: 2.1\nName: ${name}\nVersion: ${version}\n`,
    'rgrid_test_backend.py': BACKEND(name, version, behaviour),
  };
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (chunk: unknown) => chunks.push(chunk as Buffer));
  const ended = new Promise<void>((resolve, reject) => {
    pack.on('end', () => resolve());
    pack.on('error', reject);
  });
  for (const [file, content] of Object.entries(files)) pack.entry({ name: `${root}/${file}`, mode: 0o644 }, content);
  pack.finalize();
  await ended;
  const path = join(dir, `${root}.tar.gz`);
  writeFileSync(path, gzipSync(Buffer.concat(chunks)));
  return path;
}
