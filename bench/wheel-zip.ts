import { createHash } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { crc32, deflateRawSync } from 'node:zlib';

/**
 * A wheel is a zip with a RECORD (PEP 427). This writes one without a zip library: local headers, the
 * central directory and its end record, every entry deflated (no zip64: a wheel here stays far below
 * 4 GiB and 65,535 entries, and the writer refuses one that does not).
 */
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

/** 1980-01-01 00:00 in DOS time: fixed, so the same files make the same wheel. */
const DOS_DATE = (0 << 9) | (1 << 5) | 1;
const DOS_TIME = 0;

function writeZip(path: string, entries: readonly WheelEntry[]): void {
  if (entries.length > 0xffff) throw new Error(`${path}: ${entries.length} entries need zip64`);
  const chunks: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const entry of entries) {
    const name = Buffer.from(entry.name, 'utf8');
    const packed = deflateRawSync(entry.data, { level: 6 });
    const crc = crc32(entry.data);
    const local = Buffer.alloc(30);
    local.writeUInt32LE(0x04034b50, 0);
    local.writeUInt16LE(20, 4); // version needed: 2.0 (deflate)
    local.writeUInt16LE(0x0800, 6); // names are UTF-8
    local.writeUInt16LE(8, 8); // deflate
    local.writeUInt16LE(DOS_TIME, 10);
    local.writeUInt16LE(DOS_DATE, 12);
    local.writeUInt32LE(crc, 14);
    local.writeUInt32LE(packed.length, 18);
    local.writeUInt32LE(entry.data.length, 22);
    local.writeUInt16LE(name.length, 26);
    local.writeUInt16LE(0, 28);
    const header = Buffer.alloc(46);
    header.writeUInt32LE(0x02014b50, 0);
    header.writeUInt16LE((3 << 8) | 20, 4); // made by: Unix, 2.0 — so the mode bits below are read
    header.writeUInt16LE(20, 6);
    header.writeUInt16LE(0x0800, 8);
    header.writeUInt16LE(8, 10);
    header.writeUInt16LE(DOS_TIME, 12);
    header.writeUInt16LE(DOS_DATE, 14);
    header.writeUInt32LE(crc, 16);
    header.writeUInt32LE(packed.length, 20);
    header.writeUInt32LE(entry.data.length, 24);
    header.writeUInt16LE(name.length, 28);
    header.writeUInt32LE(((0o100000 | entry.mode) << 16) >>> 0, 38); // a regular file with its mode
    header.writeUInt32LE(offset, 42);
    chunks.push(local, name, packed);
    central.push(header, name);
    offset += local.length + name.length + packed.length;
    if (offset > 0xffffffff) throw new Error(`${path}: larger than 4 GiB needs zip64`);
  }
  const directory = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(entries.length, 8);
  end.writeUInt16LE(entries.length, 10);
  end.writeUInt32LE(directory.length, 12);
  end.writeUInt32LE(offset, 16);
  writeFileSync(path, Buffer.concat([...chunks, directory, end]));
}
