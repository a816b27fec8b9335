/**
 * The options pip accepts inside a requirements file, and how it reads them: the option part of a line
 * goes through shlex (POSIX) and optparse, so `--index=URL` is `--index-url` (optparse takes unambiguous
 * prefixes of long options), `-ihttp://…` is `-i http://…`, and an option that takes a value takes the
 * next word whatever it is. Used by common/requirements.ts only; kept apart so each module stays short.
 */
export type PipOptionRole =
  /** Reaches a package source other than the operator's: a worker's build policy decides. */
  | 'index'
  /** Resolution switches that reach nothing (`--pre`, `--only-binary`, …): kept and fingerprinted. */
  | 'global'
  /** Pulls in something only the submitting machine has: always refused. */
  | 'unreproducible'
  /** Changes how pip itself works, or passes arguments to setup.py: always refused. */
  | 'unsupported'
  /** Only meaningful after a requirement on the same line (`--hash`). */
  | 'per_requirement';

export interface PipOptionSpec {
  /** The normalized spelling (`--index-url` for `-i`, `--pypi-url` and prefixes of them). */
  long: string;
  names: readonly string[];
  takesValue: boolean;
  role: PipOptionRole;
  why?: string;
  /** For `index` options whose value may be a path: local paths cannot be reproduced on a worker. */
  local?: 'refused';
}

// pip's SUPPORTED_OPTIONS and SUPPORTED_OPTIONS_REQ of its requirements-file parser.
export const PIP_FILE_OPTIONS: readonly PipOptionSpec[] = [
  { long: '--index-url', names: ['-i', '--index-url', '--pypi-url'], takesValue: true, role: 'index', local: 'refused' },
  { long: '--extra-index-url', names: ['--extra-index-url'], takesValue: true, role: 'index', local: 'refused' },
  { long: '--find-links', names: ['-f', '--find-links'], takesValue: true, role: 'index', local: 'refused' },
  { long: '--trusted-host', names: ['--trusted-host'], takesValue: true, role: 'index' },
  { long: '--no-index', names: ['--no-index'], takesValue: false, role: 'global' },
  { long: '--no-binary', names: ['--no-binary'], takesValue: true, role: 'global' },
  { long: '--only-binary', names: ['--only-binary'], takesValue: true, role: 'global' },
  { long: '--prefer-binary', names: ['--prefer-binary'], takesValue: false, role: 'global' },
  { long: '--require-hashes', names: ['--require-hashes'], takesValue: false, role: 'global' },
  { long: '--pre', names: ['--pre'], takesValue: false, role: 'global' },
  { long: '--requirement', names: ['-r', '--requirement'], takesValue: true, role: 'unreproducible', why: 'includes another requirements file' },
  { long: '--constraint', names: ['-c', '--constraint'], takesValue: true, role: 'unreproducible', why: 'includes a constraints file' },
  {
    long: '--editable',
    names: ['-e', '--editable'],
    takesValue: true,
    role: 'unreproducible',
    why: 'installs an editable project from a local path or VCS checkout',
  },
  { long: '--use-feature', names: ['--use-feature'], takesValue: true, role: 'unsupported', why: "changes how pip works; it is the operator's choice, not a file's" },
  { long: '--install-option', names: ['--install-option'], takesValue: true, role: 'unsupported', why: 'passes arguments to setup.py' },
  { long: '--global-option', names: ['--global-option'], takesValue: true, role: 'unsupported', why: 'passes arguments to setup.py' },
  { long: '--hash', names: ['--hash'], takesValue: true, role: 'per_requirement' },
];

const BY_NAME = new Map<string, PipOptionSpec>(PIP_FILE_OPTIONS.flatMap((spec) => spec.names.map((name) => [name, spec] as const)));
const LONG_NAMES = [...BY_NAME.keys()].filter((name) => name.startsWith('--'));

export interface ParsedPipOption {
  spec: PipOptionSpec;
  /** As written in the file (the word that named the option), for messages. */
  written: string;
  value?: string;
}

/** optparse's _match_abbrev: an exact name, or the one long option the word is a prefix of. */
function matchLong(word: string, fail: (why: string) => never): PipOptionSpec {
  const exact = BY_NAME.get(word);
  if (exact) return exact;
  const candidates = LONG_NAMES.filter((name) => name.startsWith(word));
  if (candidates.length === 1) return BY_NAME.get(candidates[0]!)!;
  if (candidates.length > 1) fail(`ambiguous pip option ${word} (${candidates.join(', ')})`);
  fail(`unsupported pip option ${word}`);
}

/**
 * The options of one line, read as shlex + optparse read them. `words` are the line's words from the
 * first one that starts with `-` (pip splits the line on single spaces first).
 */
export function parsePipOptions(words: readonly string[], fail: (why: string) => never): ParsedPipOption[] {
  const text = words.join(' ');
  // shlex would unquote and unescape; the canonical file must mean the same to pip as to us, so no quoting.
  if (/["'\\]/.test(text)) fail('quotes and backslashes are not supported in pip options');
  const args = text.split(/[ \t]+/).filter((w) => w.length > 0);
  const out: ParsedPipOption[] = [];
  while (args.length > 0) {
    const arg = args.shift()!;
    if (arg === '--') fail('"--" is not supported in a requirements file');
    if (arg.startsWith('--')) {
      const eq = arg.indexOf('=');
      const name = eq >= 0 ? arg.slice(0, eq) : arg;
      const spec = matchLong(name, fail);
      if (!spec.takesValue) {
        if (eq >= 0) fail(`${name} takes no value`);
        out.push({ spec, written: name });
        continue;
      }
      const value = eq >= 0 ? arg.slice(eq + 1) : args.shift();
      if (value === undefined || value === '') fail(`${name} needs a value`);
      out.push({ spec, written: name, value });
      continue;
    }
    if (arg.startsWith('-') && arg.length > 1) {
      // Every short option of the file parser takes a value: the rest of the word, or the next word.
      const name = arg.slice(0, 2);
      const spec = BY_NAME.get(name);
      if (!spec) fail(`unsupported pip option ${name}`);
      const value = arg.length > 2 ? arg.slice(2) : args.shift();
      if (value === undefined || value === '') fail(`${name} needs a value`);
      out.push({ spec, written: name, value });
      continue;
    }
    // optparse keeps it as a positional argument, which pip then ignores: refused as a likely mistake.
    fail(`unexpected word ${arg} among pip options`);
  }
  return out;
}

/** A value that names something on the submitting machine rather than a URL a worker could reach. */
export function isLocalReference(value: string): boolean {
  if (/^file:/i.test(value)) return true;
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) return false;
  return /^[./~\\]/.test(value) || value.includes('/') || value.includes('\\') || /\.(whl|zip|tar\.gz|tgz|tar\.bz2)$/i.test(value);
}
