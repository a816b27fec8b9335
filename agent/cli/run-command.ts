import { mkdir, type FileHandle } from 'node:fs/promises';
import { basename, resolve } from 'node:path';
import { numberFlag, parseMemory, parseTimeout } from '../../common/cli-flags.js';
import { exitStatusOf } from '../../common/executions.js';
import { assertInputFileName, shown } from '../../common/names.js';
import { openInside } from '../../common/safe-write.js';
import { AgentClient, type AgentEvent } from '../client/agent-client.js';
import { progressPrinter, readInput, socketPath, type RunFlags } from './client-commands.js';

/**
 * `rgrid-agent run`: read the script, its requirements and inputs, run it through the agent, stream its
 * output, write the outputs it returns (inside --output-dir only), exit with the script's status.
 */
export async function runCommand(flags: RunFlags, env: { socket?: string | undefined }): Promise<number> {
  const script = await readInput(flags.script, 'script');
  const requirements = flags.requirements ? await readInput(flags.requirements, 'requirements') : null;
  const inputs: Array<{ name: string; data: Buffer }> = [];
  for (const path of flags.input ?? []) {
    const name = basename(path);
    assertInputFileName(name);
    inputs.push({ name, data: await readInput(path, 'input') });
  }
  // The same flags, ranges and messages as `rgrid run` (common/cli-flags.ts); the agent lowers a request
  // further to its own ceilings.
  const timeout = parseTimeout(flags.timeout);
  const memory = parseMemory(flags.memory);
  const cpus = numberFlag(flags.cpus, '--cpus', { exclusiveMin: 0, max: 1024 });
  const outputDir = flags.outputDir ? resolve(flags.outputDir) : undefined;
  if (outputDir) await mkdir(outputDir, { recursive: true });
  const captured = { stdout: '', stderr: '' };
  const files = new Map<string, FileHandle>();
  const progress = progressPrinter(flags);
  // Output chunks arrive in order; writes are chained so they land in order too.
  let writes: Promise<unknown> = Promise.resolve();
  const onEvent = (event: AgentEvent): void => {
    if (event.type === 'stdout' || event.type === 'stderr') {
      if (flags.json) captured[event.type] += String(event.data);
      else process.stderr.write(String(event.data));
    } else if (event.type === 'output' && outputDir) {
      writes = writes.then(() => writeOutputChunk(outputDir, files, event));
    } else progress?.(event);
  };
  const client = new AgentClient(socketPath(flags, env));
  try {
    const result = await client.run(
      {
        script,
        requirements,
        inputs,
        collect_outputs: outputDir !== undefined,
        ...(flags.runtime ? { runtime: flags.runtime } : {}),
        ...(flags.account ? { account: flags.account } : {}),
        ...(timeout !== undefined ? { timeout_s: timeout } : {}),
        ...(memory !== undefined ? { memory_mb: memory } : {}),
        ...(cpus !== undefined ? { cpus } : {}),
      },
      onEvent,
    );
    await writes;
    if (flags.json) {
      process.stdout.write(`${JSON.stringify({ ...result, ...captured })}\n`);
    } else {
      const status = result.timed_out
        ? 'timed out'
        : result.output_limit
          ? `outputs over the limit (${shown(result.output_limit, 200)}), exit ${String(result.exit_code)}`
          : result.oom_killed ? 'killed: out of memory' : `exit ${String(result.exit_code)}`;
      process.stdout.write(
        `${status} (build ${String(result.build_ms)} ms, run ${String(result.run_ms)} ms, total ${String(result.total_ms)} ms${result.script_cache_hit ? ', cached image' : ''})\n`,
      );
    }
    // Like `docker run` and timeout(1): the script's status is the command's status (common/executions.ts).
    const code = Number(result.exit_code);
    return exitStatusOf({
      exit_code: Number.isInteger(code) ? code : null,
      failure: result.timed_out ? 'timeout' : result.output_limit ? 'output_limit' : result.oom_killed ? 'memory_limit' : code === 0 ? null : 'nonzero_exit',
    });
  } finally {
    await writes.catch(() => undefined);
    for (const handle of files.values()) await handle.close().catch(() => undefined);
    await client.close();
  }
}

async function writeOutputChunk(outputDir: string, files: Map<string, FileHandle>, event: AgentEvent): Promise<void> {
  const name = String(event.name);
  let handle = files.get(name);
  if (!handle) {
    // The agent sends only safe relative paths; this side writes the files, so it checks again.
    handle = await openInside(outputDir, name);
    files.set(name, handle);
  }
  const data = Buffer.from(String(event.data), 'base64');
  if (data.length) await handle.write(data);
  if (event.eof === true) {
    await handle.close();
    files.delete(name);
  }
}

