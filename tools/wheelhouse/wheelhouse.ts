import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * A local wheelhouse for tests, the demo and the benchmark: no package index is reachable, so dependency
 * builds install wheels written by make-wheel.py (pure Python, optionally with megabytes of random payload).
 */
export interface WheelSpec {
  name: string;
  version: string;
  payloadMb?: number;
  payloadFiles?: number;
  requires?: string[];
}

function repoRoot(): string {
  // Works from tools/wheelhouse (vitest, source) and from dist/tools/wheelhouse (compiled demo and bench).
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    dir = resolve(dir, '..');
  }
  throw new Error('repository root not found');
}

export const MAKE_WHEEL = join(repoRoot(), 'tools', 'wheelhouse', 'make-wheel.py');

export function makeWheel(outDir: string, spec: WheelSpec): string {
  const args = [MAKE_WHEEL, outDir, spec.name, spec.version];
  if (spec.payloadMb) args.push('--payload-mb', String(spec.payloadMb));
  if (spec.payloadFiles) args.push('--payload-files', String(spec.payloadFiles));
  for (const r of spec.requires ?? []) args.push('--requires', r);
  return execFileSync('python3', args, { encoding: 'utf8' }).trim();
}

/** Creates a temp directory holding one wheel per spec; returns its absolute path. */
export function createWheelhouse(specs: readonly WheelSpec[], dir: string = mkdtempSync(join(tmpdir(), 'rgrid-wheelhouse-'))): string {
  for (const spec of specs) makeWheel(dir, spec);
  return dir;
}
