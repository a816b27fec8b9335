import { RgridError } from './errors.js';

/**
 * Canonical requirements (design.md §3). pip's own reading of a requirements file is the reference:
 * continuation lines are joined first, then comments are removed, then each line is either an option
 * or a requirement. The canonical text is what requirements_sha256 hashes; options that change how pip
 * resolves (index, find-links, binary policy) are returned apart, for the pip settings fingerprint.
 */
export interface CanonicalRequirements {
  /** Sorted, de-duplicated requirement lines joined with "\n" (empty string for an empty file). */
  text: string;
  lines: string[];
  /** Normalized global pip options found in the file, sorted (e.g. `--index-url=https://…`). */
  pipOptions: string[];
}

// Options that change resolution for the whole file: kept, in normalized long form.
const GLOBAL_OPTIONS: Record<string, { long: string; takesValue: boolean; url?: boolean }> = {
  '-i': { long: '--index-url', takesValue: true, url: true },
  '--index-url': { long: '--index-url', takesValue: true, url: true },
  '--extra-index-url': { long: '--extra-index-url', takesValue: true, url: true },
  '-f': { long: '--find-links', takesValue: true, url: true },
  '--find-links': { long: '--find-links', takesValue: true, url: true },
  '--no-index': { long: '--no-index', takesValue: false },
  '--pre': { long: '--pre', takesValue: false },
  '--prefer-binary': { long: '--prefer-binary', takesValue: false },
  '--only-binary': { long: '--only-binary', takesValue: true },
  '--no-binary': { long: '--no-binary', takesValue: true },
  '--trusted-host': { long: '--trusted-host', takesValue: true },
  '--require-hashes': { long: '--require-hashes', takesValue: false },
};

// Options that pull in something only the submitting machine has.
const UNREPRODUCIBLE_OPTIONS: Record<string, string> = {
  '-r': 'includes another requirements file',
  '--requirement': 'includes another requirements file',
  '-c': 'includes a constraints file',
  '--constraint': 'includes a constraints file',
  '-e': 'installs an editable project from a local path or VCS checkout',
  '--editable': 'installs an editable project from a local path or VCS checkout',
};

// PEP 508 project name; extras; the rest (specifiers, URL, markers) is handled below.
const REQUIREMENT = /^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)\s*(\[[^\]]*\])?\s*(.*)$/s;

/** PEP 503 normalization: lower-case, runs of `-`, `_`, `.` become one `-`. */
export function normalizeProjectName(name: string): string {
  return name.toLowerCase().replace(/[-_.]+/g, '-');
}

function reject(lineNo: number, line: string, why: string): never {
  throw new RgridError(
    'bad_requirements',
    `requirements line ${lineNo} "${line.length > 120 ? `${line.slice(0, 117)}...` : line}" cannot be reproduced on a worker: ${why}`,
    { line: lineNo },
  );
}

/** Decodes strictly as UTF-8 (a stray Latin-1 byte is an error, not a silent U+FFFD) and drops a BOM. */
export function decodeRequirements(bytes: Uint8Array): string {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new RgridError('bad_requirements', 'requirements file is not valid UTF-8');
  }
  return text.startsWith('\uFEFF') ? text.slice(1) : text;
}

/** Joins backslash continuations, remembering the first physical line number of each logical line. */
function logicalLines(text: string): Array<{ lineNo: number; text: string }> {
  const physical = text.split(/\r\n|\n|\r/);
  const out: Array<{ lineNo: number; text: string }> = [];
  let pending: { lineNo: number; text: string } | undefined;
  physical.forEach((raw, index) => {
    const current = pending ?? { lineNo: index + 1, text: '' };
    if (raw.endsWith('\\')) {
      current.text += raw.slice(0, -1);
      pending = current;
      return;
    }
    current.text += raw;
    out.push(current);
    pending = undefined;
  });
  if (pending) out.push(pending);
  return out;
}

function stripComment(line: string): string {
  // pip: `(^|\s+)#.*$` — a `#` starts a comment at the line start or after whitespace (not inside a URL fragment).
  return line.replace(/(^|\s+)#.*$/, '').trim();
}

function isLocalReference(value: string): boolean {
  if (/^file:/i.test(value)) return true;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) return false;
  return /^[./~\\]/.test(value) || value.includes('/') || value.includes('\\') || /\.(whl|zip|tar\.gz|tgz|tar\.bz2)$/i.test(value);
}

function parseOption(lineNo: number, line: string): string[] {
  const tokens = line.split(/\s+/);
  const result: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const token = tokens[i]!;
    const eq = token.indexOf('=');
    const flag = token.startsWith('--') && eq > 0 ? token.slice(0, eq) : token;
    const unreproducible = UNREPRODUCIBLE_OPTIONS[flag];
    if (unreproducible) reject(lineNo, line, `${flag} ${unreproducible}`);
    const known = GLOBAL_OPTIONS[flag];
    if (!known) reject(lineNo, line, `unsupported pip option ${flag}`);
    if (!known.takesValue) {
      result.push(known.long);
      continue;
    }
    const value = token.startsWith('--') && eq > 0 ? token.slice(eq + 1) : tokens[++i];
    if (!value) reject(lineNo, line, `${flag} needs a value`);
    if (known.url && isLocalReference(value)) reject(lineNo, line, `${flag} points at a local path (${value})`);
    result.push(`${known.long}=${value}`);
  }
  return result;
}

/** Removes whitespace outside quoted strings, but keeps one space where a word operator needs it. */
function compactMarker(marker: string): string {
  const parts = marker.split(/("[^"]*"|'[^']*')/);
  return parts
    .map((part, i) => {
      if (i % 2 === 1) return part; // quoted literal: whitespace is significant
      return part
        .replace(/\s+/g, ' ')
        .replace(/\s*(===|==|!=|<=|>=|~=|<|>)\s*/g, '$1')
        .replace(/\s*([()])\s*/g, '$1');
    })
    .join('')
    .trim();
}

function canonicalRequirement(lineNo: number, line: string): string {
  // Per-requirement options (`--hash=…`) follow the requirement itself.
  const [requirementPart, ...optionParts] = line.split(/\s+(?=--)/);
  const match = REQUIREMENT.exec(requirementPart ?? '');
  if (!match) {
    if (isLocalReference(line)) reject(lineNo, line, 'it refers to a local path or file:// URL');
    reject(lineNo, line, 'it is neither a requirement (PEP 508) nor a supported option');
  }
  const name = normalizeProjectName(match[1]!);
  const extras = match[2]
    ? `[${match[2]
        .slice(1, -1)
        .split(',')
        .map((e) => normalizeProjectName(e.trim()))
        .filter(Boolean)
        .sort()
        .join(',')}]`
    : '';
  let rest = (match[3] ?? '').trim();
  if (rest.length > 0 && !/^(@|;|\(|===|==|!=|<=|>=|~=|<|>)/.test(rest)) {
    // e.g. "./pkg" parsed as the name "." would not reach here; "foo bar" would.
    reject(lineNo, line, 'it is neither a requirement (PEP 508) nor a supported option');
  }
  let marker = '';
  let url = '';
  if (rest.startsWith('@')) {
    // Direct reference: `name @ URL [; marker]` — the marker must be separated from the URL by whitespace.
    const urlMatch = /^@\s*(\S+)(?:\s+;\s*(.*))?$/s.exec(rest);
    if (!urlMatch) reject(lineNo, line, 'malformed direct reference');
    url = urlMatch[1]!;
    if (/^file:/i.test(url) || isLocalReference(url)) reject(lineNo, line, `it refers to a local file (${url})`);
    marker = urlMatch[2] ?? '';
    rest = '';
  } else {
    const semicolon = rest.indexOf(';');
    if (semicolon >= 0) {
      marker = rest.slice(semicolon + 1);
      rest = rest.slice(0, semicolon);
    }
  }
  const specifiers = rest.replace(/[()\s]/g, '');
  const options = optionParts
    .map((opt) => opt.trim())
    .filter(Boolean)
    .map((opt) => {
      const hash = /^--hash[=\s]\s*(\S+)$/.exec(opt);
      if (!hash) reject(lineNo, line, `unsupported per-requirement option ${opt.split(/[=\s]/)[0]}`);
      return `--hash=${hash[1]}`;
    })
    .sort();
  const markerText = marker.trim() ? `;${compactMarker(marker)}` : '';
  const head = url ? `${name}${extras}@${url}` : `${name}${extras}${specifiers}`;
  return [head + markerText, ...options].join(' ');
}

/** Python's default string order (by code point), which the seed spec's sorted() used. */
function byCodePoint(a: string, b: string): number {
  const ac = Array.from(a);
  const bc = Array.from(b);
  for (let i = 0; i < Math.min(ac.length, bc.length); i++) {
    const d = ac[i]!.codePointAt(0)! - bc[i]!.codePointAt(0)!;
    if (d !== 0) return d;
  }
  return ac.length - bc.length;
}

export function canonicalizeRequirements(input: string | Uint8Array): CanonicalRequirements {
  const text = typeof input === 'string' ? (input.startsWith('\uFEFF') ? input.slice(1) : input) : decodeRequirements(input);
  if (text.includes('\u0000')) throw new RgridError('bad_requirements', 'requirements file contains a NUL byte');
  const lines = new Set<string>();
  const pipOptions = new Set<string>();
  for (const logical of logicalLines(text)) {
    const line = stripComment(logical.text);
    if (!line) continue;
    if (line.startsWith('-')) {
      for (const option of parseOption(logical.lineNo, line)) pipOptions.add(option);
      continue;
    }
    lines.add(canonicalRequirement(logical.lineNo, line));
  }
  const sorted = [...lines].sort(byCodePoint);
  return { text: sorted.join('\n'), lines: sorted, pipOptions: [...pipOptions].sort(byCodePoint) };
}
