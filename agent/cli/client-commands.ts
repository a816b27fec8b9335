import { constants } from 'node:fs';
import { open, readFile } from 'node:fs/promises';
import { RgridError } from '../../common/errors.js';
import { AgentClient, type AgentEvent } from '../client/agent-client.js';

/**
 * `ensure`, `ls` and `inspect` (`run` is in run-command.ts): read local files, call the agent over its
 * socket, print. Build progress goes to stderr when stderr is a terminal (or with --progress), so that
 * on a failure a script reading stderr sees exactly one line: the reason. What only `run` or
 * `inspect --pylock` need (flag parsing, name checks, safe writes) is loaded by them alone: every module
 * is start-up time of every command (docs/benchmarks.md, "Hits and resolve").
 */
export interface CommonFlags {
  socket?: string;
  json?: boolean;
  progress?: boolean;
  quiet?: boolean;
}

export interface EnsureFlags extends CommonFlags {
  script: string;
  requirements?: string;
  runtime?: string;
  account?: string;
}

export interface RunFlags extends EnsureFlags {
  input?: string[];
  outputDir?: string;
  timeout?: string;
  memory?: string;
  cpus?: string;
}

export function socketPath(flags: CommonFlags, env: { socket?: string | undefined }): string {
  const path = flags.socket ?? env.socket;
  if (!path) throw new RgridError('bad_request', 'no agent socket: pass --socket PATH or set RGRID_AGENT_SOCKET');
  return path;
}

export async function readInput(path: string, what: string): Promise<Buffer> {
  try {
    return await readFile(path);
  } catch (err) {
    throw new RgridError('bad_request', `cannot read ${what} ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
}

export function progressPrinter(flags: CommonFlags): ((event: AgentEvent) => void) | undefined {
  const show = !flags.quiet && (flags.progress === true || process.stderr.isTTY === true);
  if (!show) return undefined;
  return (event) => {
    if (event.type === 'log') process.stderr.write(`[${String(event.stage)}] ${String(event.line)}\n`);
  };
}

export async function ensureCommand(flags: EnsureFlags, env: { socket?: string | undefined }): Promise<number> {
  const script = await readInput(flags.script, 'script');
  const requirements = flags.requirements ? await readInput(flags.requirements, 'requirements') : null;
  const client = new AgentClient(socketPath(flags, env));
  try {
    const result = await client.ensure(
      { script, requirements, ...(flags.runtime ? { runtime: flags.runtime } : {}), ...(flags.account ? { account: flags.account } : {}) },
      progressPrinter(flags),
    );
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(result)}\n`);
    } else {
      const how = result.script_cache_hit ? 'hit' : result.built ? 'built' : 'shared build';
      const lock = typeof result.lock_sha256 === 'string' ? ` lock=${result.lock_sha256.slice(0, 16)} (${String(result.resolution)})` : '';
      process.stdout.write(`${how} ${String(result.image_id)} image_key=${String(result.image_key).slice(0, 16)}${lock} (${String(result.duration_ms)} ms)\n`);
    }
    return 0;
  } finally {
    await client.close();
  }
}

export async function lsCommand(flags: CommonFlags & { kind?: string; account?: string }, env: { socket?: string | undefined }): Promise<number> {
  const client = new AgentClient(socketPath(flags, env));
  try {
    const entries = await client.entries({
      ...(flags.kind ? { kind: flags.kind } : {}),
      ...(flags.account ? { account: flags.account } : {}),
    });
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(entries)}\n`);
      return 0;
    }
    const rows = entries.map((e) => [
      String(e.kind),
      String(e.key).slice(0, 16),
      String(e.image_id).replace(/^sha256:/, '').slice(0, 12),
      String(e.runtime),
      String(e.account),
      String(e.last_used_at),
      String(e.use_count),
      `${(Number(e.size_bytes) / 1e6).toFixed(1)}MB`,
    ]);
    const header = ['KIND', 'KEY', 'IMAGE', 'RUNTIME', 'ACCOUNT', 'LAST USED', 'USES', 'SIZE'];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    for (const row of [header, ...rows]) process.stdout.write(`${row.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()}\n`);
    return 0;
  } finally {
    await client.close();
  }
}

export async function inspectCommand(
  key: string,
  flags: CommonFlags & { kind?: string; account?: string; pylock?: string },
  env: { socket?: string | undefined },
): Promise<number> {
  const client = new AgentClient(socketPath(flags, env));
  try {
    const entry = await client.inspect(key, {
      ...(flags.kind ? { kind: flags.kind } : {}),
      ...(flags.account ? { account: flags.account } : {}),
    });
    if (flags.pylock !== undefined) await writePylock(flags.pylock, entry);
    // The TOML is for the file; the lock's other fields already say the same on screen.
    delete entry.pylock;
    if (flags.json) {
      process.stdout.write(`${JSON.stringify(entry)}\n`);
      return 0;
    }
    const lock = entry.lock as { resolved?: string[]; from_file?: boolean } | null | undefined;
    if (lock) entry.lock = `${lock.from_file ? 'the requirements file itself' : 'resolved'}: ${(lock.resolved ?? []).join(' ')}`;
    for (const [name, value] of Object.entries(entry)) {
      if (value === null || name === 'image_labels') continue;
      const shown = Array.isArray(value) ? value.join(', ') || '-' : typeof value === 'string' ? value : JSON.stringify(value);
      process.stdout.write(`${name.padEnd(20)} ${shown}\n`);
    }
    return 0;
  } finally {
    await client.close();
  }
}

/** Writes the entry's lock as pylock.toml; an entry keyed on its requirements text has none. */
async function writePylock(path: string, entry: Record<string, unknown>): Promise<void> {
  const { shown } = await import('../../common/names.js');
  if (typeof entry.pylock !== 'string') {
    const why = entry.lock_sha256 ? 'its lock is not known to this agent' : 'it has no lock (no requirements, or keyed on the requirements text)';
    throw new RgridError('bad_request', `cannot write ${shown(path)}: ${why}`);
  }
  // The user names the file; a link there is not followed (O_NOFOLLOW), as for every file the CLIs write.
  const file = await open(path, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_NOFOLLOW, 0o644);
  try {
    await file.writeFile(entry.pylock);
  } finally {
    await file.close();
  }
  process.stderr.write(`rgrid-agent: wrote ${shown(path)} (PEP 751)\n`);
}
