import { RgridError } from './errors.js';
import { isLocalReference, parsePipOptions, type ParsedPipOption } from './pip-options.js';

/**
 * Canonical requirements. pip's own reading of a requirements file (its req_file module) is the
 * reference, step by step, because pip — not this module — decides what a build installs:
 *  1. physical lines are split exactly like Python's `str.splitlines()`: besides \n, \r and \r\n that
 *     breaks at \v \f \x1c \x1d \x1e \x85 \u2028 \u2029 — a line our reader missed would be a line pip
 *     obeys unchecked;
 *  2. a line ending in `\` is joined with the next (all leading and trailing backslashes of it go), except
 *     a comment line, which also ends a pending continuation;
 *  3. comments `(^|\s+)#.*$` are removed and the line stripped — `\s` and strip in Python's sense;
 *  4. a line whose first space-separated word starts with `-` is an option line, anything else a
 *     requirement followed by its per-requirement options (shlex, then optparse: common/pip-options.ts).
 * What pip would read differently from a plain reading is refused rather than guessed: control, format
 * and separator characters, `${VAR}` references (pip expands them from the build's environment) and shell
 * quoting in options. The canonical text is what requirements_sha256 hashes; the file's global pip options
 * are returned apart (normalized) for the pip settings fingerprint, and every construct a worker's build
 * policy decides about (index options, direct URLs, source-build switches) is listed in `restricted`.
 */
export interface CanonicalRequirements {
  /** Sorted, de-duplicated requirement lines joined with "\n" (empty string for an empty file). */
  text: string;
  lines: string[];
  /** Normalized global pip options found in the file, sorted (e.g. `--index-url=https://…`). */
  pipOptions: string[];
  /** Where the file uses something a worker's build policy may refuse, in file order. */
  restricted: RestrictedUse[];
}

/** `index`: reaches a package source other than the operator's; `direct_url`: installs from a URL; `source_build`: re-enables sdists. */
export type RestrictedKind = 'index' | 'direct_url' | 'source_build';

export interface RestrictedUse {
  kind: RestrictedKind;
  /** The option or construct, e.g. `--index-url` or `name @ URL`. */
  what: string;
  line: LogicalLine;
}

/** A line as pip sees it: comments removed, continuations joined, numbered by its first physical line. */
export interface LogicalLine {
  lineNo: number;
  text: string;
  /** The character that ended the previous physical line when it is not \n, \r or \r\n (for messages). */
  unusualBreak?: string;
}

/** Python's `str.isspace()` characters: what pip's `strip()` and its regexes' `\s` match. */
const PY_SPACE = '\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000';
/** Python's `str.splitlines()` boundaries. */
const PY_LINE_BREAK = /\r\n|[\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029]/g;
const COMMENT_LINE = new RegExp(`^[${PY_SPACE}]*#`);
const COMMENT = new RegExp(`(?:^|[${PY_SPACE}]+)#[^]*$`);
const STRIP = new RegExp(`^[${PY_SPACE}]+|[${PY_SPACE}]+$`, 'g');
/** Control, format, surrogate, private-use, unassigned and separator characters other than space and tab. */
const REFUSED_CHARACTER = /(?![ \t])[\p{C}\p{Z}]/u;
/** pip's ENV_VAR_RE: `${NAME}` is replaced by the variable's value in the build's environment. */
const ENV_REFERENCE = /\$\{[A-Z0-9_]+\}/;

/** Python's `str.splitlines()`, also reporting which break ended each line. */
export function splitLinesLikePython(text: string): Array<{ text: string; breakAfter: string | null }> {
  const out: Array<{ text: string; breakAfter: string | null }> = [];
  let start = 0;
  for (const match of text.matchAll(PY_LINE_BREAK)) {
    out.push({ text: text.slice(start, match.index), breakAfter: match[0] });
    start = match.index + match[0].length;
  }
  // Like Python, a final line break does not start an (empty) line.
  if (start < text.length) out.push({ text: text.slice(start), breakAfter: null });
  return out;
}

/** pip's preprocess (without the environment expansion, which is refused instead): lines as pip parses them. */
export function pipLogicalLines(text: string): LogicalLine[] {
  const physical = splitLinesLikePython(text);
  const joined: LogicalLine[] = [];
  let pending: LogicalLine | undefined;
  physical.forEach((raw, index) => {
    const lineNo = index + 1;
    const before = index > 0 ? physical[index - 1]!.breakAfter : null;
    const unusual = before !== null && before !== '\n' && before !== '\r' && before !== '\r\n' ? { unusualBreak: before } : {};
    const isComment = COMMENT_LINE.test(raw.text);
    if (!raw.text.endsWith('\\') || isComment) {
      // A leading space makes sure the comment is removed later, even glued to a continued line.
      const line = isComment ? ` ${raw.text}` : raw.text;
      if (pending) {
        pending.text += line;
        joined.push(pending);
        pending = undefined;
      } else {
        joined.push({ lineNo, text: line, ...unusual });
      }
      return;
    }
    // Python's str.strip("\\"): every leading and trailing backslash goes.
    const part = raw.text.replace(/^\\+|\\+$/g, '');
    if (pending) pending.text += part;
    else pending = { lineNo, text: part, ...unusual };
  });
  if (pending) joined.push(pending);
  const out: LogicalLine[] = [];
  for (const line of joined) {
    const text = line.text.replace(COMMENT, '').replace(STRIP, '');
    if (text) out.push({ ...line, text });
  }
  return out;
}

/** A line made safe for a one-line message: quotes, backslashes and invisible characters escaped, clipped. */
export function renderLine(text: string, max = 120): string {
  const chars = Array.from(text);
  const clipped = chars.length > max ? [...chars.slice(0, max - 3), '...'] : chars;
  return clipped
    .map((c) => {
      if (c === '\\' || c === '"') return `\\${c}`;
      if (c !== ' ' && (REFUSED_CHARACTER.test(c) || c === '\t')) return escapeCodePoint(c);
      return c;
    })
    .join('');
}

function escapeCodePoint(c: string): string {
  const code = c.codePointAt(0)!;
  if (code <= 0xff) return `\\x${code.toString(16).padStart(2, '0')}`;
  if (code <= 0xffff) return `\\u${code.toString(16).padStart(4, '0')}`;
  return `\\u{${code.toString(16)}}`;
}

/** The one message shape for a refused line: number, where pip starts it, the escaped text, the reason. */
export function requirementsLineMessage(line: LogicalLine, verdict: string): string {
  const where = line.unusualBreak ? ` (pip starts a line at the ${escapeCodePoint(line.unusualBreak)} before it)` : '';
  return `requirements line ${line.lineNo}${where} "${renderLine(line.text)}" ${verdict}`;
}

function reject(line: LogicalLine, why: string): never {
  throw new RgridError('bad_requirements', requirementsLineMessage(line, `cannot be reproduced on a worker: ${why}`), { line: line.lineNo });
}

/** PEP 503 normalization: lower-case, runs of `-`, `_`, `.` become one `-`. */
export function normalizeProjectName(name: string): string {
  return name.toLowerCase().replace(/[-_.]+/g, '-');
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

// PEP 508 project name; extras; the rest (specifiers, URL, markers) is handled below.
const REQUIREMENT = /^([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)[ \t]*(\[[^\]]*\])?[ \t]*(.*)$/s;
const URL_SCHEME = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//;
const VCS_URL = /^(git|hg|svn|bzr)\+/i;
const SPECIFIER = '(?:===|==|!=|<=|>=|~=|<|>)[A-Za-z0-9.*+!_-]+';
const SPECIFIERS = new RegExp(`^${SPECIFIER}(?:,${SPECIFIER})*$`);

/** Removes whitespace outside quoted strings, but keeps one space where a word operator needs it. */
function compactMarker(marker: string): string {
  const parts = marker.split(/("[^"]*"|'[^']*')/);
  return parts
    .map((part, i) => {
      if (i % 2 === 1) return part; // quoted literal: whitespace is significant
      return part
        .replace(/[ \t]+/g, ' ')
        .replace(/ ?(===|==|!=|<=|>=|~=|<|>) ?/g, '$1')
        .replace(/ ?([()]) ?/g, '$1');
    })
    .join('')
    .trim();
}

function canonicalHashes(line: LogicalLine, options: ParsedPipOption[]): string[] {
  return options
    .map((option) => {
      if (option.spec.long !== '--hash') {
        reject(line, `unsupported per-requirement option ${option.written}${option.spec.role === 'unreproducible' ? ` (${option.spec.why})` : ''}`);
      }
      return `--hash=${option.value}`;
    })
    .sort();
}

/** A requirement line: canonical text, plus whether it installs from a URL (the build policy decides). */
function canonicalRequirement(line: LogicalLine, requirementPart: string, options: ParsedPipOption[]): { text: string; directUrl: boolean } {
  const hashes = canonicalHashes(line, options);
  if (URL_SCHEME.test(requirementPart) || VCS_URL.test(requirementPart)) {
    if (/^file:/i.test(requirementPart)) reject(line, 'it refers to a local file:// URL');
    if (/[ \t]/.test(requirementPart)) reject(line, 'a bare URL followed by more words; write it as `name @ URL ; marker`');
    return { text: [requirementPart, ...hashes].join(' '), directUrl: true };
  }
  const match = REQUIREMENT.exec(requirementPart);
  if (!match) {
    if (isLocalReference(requirementPart)) reject(line, 'it refers to a local path or file:// URL');
    reject(line, 'it is neither a requirement (PEP 508) nor a supported option');
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
    // "./pkg" or "pkg.whl" never match the name pattern this way; "foo bar" does.
    if (isLocalReference(requirementPart)) reject(line, 'it refers to a local path or file:// URL');
    reject(line, 'it is neither a requirement (PEP 508) nor a supported option');
  }
  let marker = '';
  let url = '';
  if (rest.startsWith('@')) {
    // Direct reference: `name @ URL [; marker]` — PEP 508 ends the URL at whitespace, before the `;`.
    const urlMatch = /^@[ \t]*(\S+)(?:[ \t]+;[ \t]*(.*))?$/s.exec(rest);
    if (!urlMatch) reject(line, 'malformed direct reference');
    url = urlMatch[1]!;
    if (/^file:/i.test(url) || isLocalReference(url)) reject(line, `it refers to a local file (${url})`);
    marker = urlMatch[2] ?? '';
    rest = '';
  } else {
    const semicolon = rest.indexOf(';');
    if (semicolon >= 0) {
      marker = rest.slice(semicolon + 1);
      rest = rest.slice(0, semicolon);
    }
  }
  const specifiers = rest.replace(/[() \t]/g, '');
  if (specifiers !== '' && !SPECIFIERS.test(specifiers)) reject(line, `${specifiers} is not a version specifier (PEP 440)`);
  const compact = marker.trim() ? compactMarker(marker) : '';
  // Without a marker the historical spelling `name@url` stays (its keys stay valid); with one, the
  // space before `;` keeps the marker out of the URL.
  const head = url ? `${name}${extras}@${url}${compact ? ` ;${compact}` : ''}` : `${name}${extras}${specifiers}${compact ? `;${compact}` : ''}`;
  return { text: [head, ...hashes].join(' '), directUrl: url !== '' };
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

/** The checks every logical line passes before it is interpreted. */
function assertPlainLine(line: LogicalLine): void {
  const bad = REFUSED_CHARACTER.exec(line.text);
  if (bad) reject(line, `it contains the character ${escapeCodePoint(bad[0])} (only printable characters, spaces and tabs are accepted outside comments)`);
  const reference = ENV_REFERENCE.exec(line.text);
  if (reference) reject(line, `${reference[0]} would be expanded by pip from the build's environment`);
}

function globalOption(line: LogicalLine, option: ParsedPipOption, restricted: RestrictedUse[]): string {
  const { spec, value } = option;
  if (spec.role === 'unreproducible' || spec.role === 'unsupported') reject(line, `${option.written} ${spec.why}`);
  if (spec.role === 'per_requirement') reject(line, `${option.written} belongs on a requirement line`);
  if (spec.role === 'index') {
    if (spec.local === 'refused' && value !== undefined && isLocalReference(value)) reject(line, `${option.written} points at a local path (${value})`);
    restricted.push({ kind: 'index', what: spec.long, line });
  }
  if (spec.long === '--no-binary' || (spec.long === '--only-binary' && value !== undefined && value.split(',').includes(':none:'))) {
    restricted.push({ kind: 'source_build', what: `${spec.long}=${value ?? ''}`, line });
  }
  return value === undefined ? spec.long : `${spec.long}=${value}`;
}

export function canonicalizeRequirements(input: string | Uint8Array): CanonicalRequirements {
  const text = typeof input === 'string' ? (input.startsWith('\uFEFF') ? input.slice(1) : input) : decodeRequirements(input);
  if (text.includes('\u0000')) throw new RgridError('bad_requirements', 'requirements file contains a NUL byte');
  const lines = new Set<string>();
  const pipOptions = new Set<string>();
  const restricted: RestrictedUse[] = [];
  for (const line of pipLogicalLines(text)) {
    assertPlainLine(line);
    // pip's break_args_options: words split on single spaces; options start at the first word with `-`.
    const words = line.text.split(' ');
    const firstOption = words.findIndex((w) => w.startsWith('-'));
    const requirementPart = (firstOption < 0 ? words : words.slice(0, firstOption)).join(' ').trim();
    const parsed = parsePipOptions(firstOption < 0 ? [] : words.slice(firstOption), (why) => reject(line, why));
    if (requirementPart === '') {
      for (const option of parsed) {
        pipOptions.add(globalOption(line, option, restricted));
      }
      continue;
    }
    const requirement = canonicalRequirement(line, requirementPart, parsed);
    if (requirement.directUrl) restricted.push({ kind: 'direct_url', what: 'a direct URL (name @ URL, a bare URL or VCS link)', line });
    lines.add(requirement.text);
  }
  const sorted = [...lines].sort(byCodePoint);
  return { text: sorted.join('\n'), lines: sorted, pipOptions: [...pipOptions].sort(byCodePoint), restricted };
}
