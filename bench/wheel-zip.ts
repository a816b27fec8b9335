import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';

/** A wheel is a zip with a RECORD (PEP 427): the RECORD is made here, the zip by Python's zipfile. */
export interface WheelEntry {
  /** Path inside the wheel, `/`-separated. */
  name: string;
  data: Buffer;
  /** Unix mode bits kept in the entry, so pip installs an executable as one. */
  mode: number;
}

/** `path,sha256=<urlsafe base64, no padding>,size`: one RECORD line. */
export function recordLine(entry: WheelEntry): string {
  const digest = createHash('sha256').update(entry.data).digest('base64url');
  return `${entry.name},sha256=${digest},${entry.data.length}`;
}

/** The entries plus `<distInfo>/RECORD` (which lists itself without a hash), written to `path`. */
export function writeWheel(path: string, distInfo: string, entries: readonly WheelEntry[]): void {
  const recordName = `${distInfo}/RECORD`;
  const record = [...entries.map(recordLine), `${recordName},,`].join('\n');
  writeZip(path, [...entries, { name: recordName, data: Buffer.from(`${record}\n`), mode: 0o644 }]);
}

/**
 * The archive itself is written by Python's zipfile (the host's python3, which setup-host installs):
 * every entry deflated, dated 1980-01-01 so the same files make the same wheel, with its Unix mode as a
 * regular file's. The entries arrive on stdin as JSON, their bytes in base64.
 */
const ZIP_WRITER = [
  'import base64, json, sys, zipfile',
  'with zipfile.ZipFile(sys.argv[1], "w", zipfile.ZIP_DEFLATED) as archive:',
  '    for name, data, mode in json.load(sys.stdin):',
  '        info = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))',
  '        info.compress_type = zipfile.ZIP_DEFLATED',
  '        info.external_attr = (0o100000 | mode) << 16',
  '        archive.writestr(info, base64.b64decode(data))',
].join('\n');

function writeZip(path: string, entries: readonly WheelEntry[]): void {
  execFileSync('python3', ['-c', ZIP_WRITER, path], {
    input: JSON.stringify(entries.map((e) => [e.name, e.data.toString('base64'), e.mode])), stdio: ['pipe', 'ignore', 'inherit'], maxBuffer: 1 << 20,
  });
}
