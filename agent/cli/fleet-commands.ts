import { RgridError } from '../../common/errors.js';
import { AgentClient } from '../client/agent-client.js';
import { socketPath, type CommonFlags } from './client-commands.js';

/**
 * `sync`, `prune`, `verify`, `reindex`, `status`: one socket call each, printed as JSON (`--json`) or as
 * a few readable lines.
 */
type Env = { socket?: string | undefined };
const str = (v: unknown): string => (typeof v === 'string' ? v : JSON.stringify(v));

async function withClient<T>(flags: CommonFlags, env: Env, work: (client: AgentClient) => Promise<T>): Promise<T> {
  const client = new AgentClient(socketPath(flags, env));
  try {
    return await work(client);
  } finally {
    await client.close();
  }
}

function print(flags: CommonFlags, value: unknown, human: () => string): void {
  process.stdout.write(flags.json ? `${JSON.stringify(value)}\n` : `${human()}\n`);
}

export async function syncCommand(flags: CommonFlags & { now?: boolean }, env: Env): Promise<number> {
  const status = (await withClient(flags, env, (c) => (flags.now ? c.call('POST', '/v1/sync/flush', {}) : c.call('GET', '/v1/sync')))) as Record<string, unknown>;
  print(flags, status, () =>
    [
      `state: ${String(status.state)}${status.worker_id ? ` (worker ${str(status.worker_id)})` : ''}`,
      `outbox: ${String(status.outbox_depth)} ops`,
      `last success: ${str(status.last_success_at ?? 'never')}`,
      ...(status.last_error ? [`last error: ${str(status.last_error)}`] : []),
    ].join('\n'),
  );
  // --now promises a flush: an outbox left non-empty (control plane down) is a failure of the command.
  if (flags.now && status.enabled === true && Number(status.outbox_depth) > 0) {
    process.stderr.write(`rgrid-agent: unavailable: sync did not complete: ${str(status.last_error ?? 'ops remain in the outbox')}\n`);
    return 1;
  }
  return 0;
}

export async function pruneCommand(flags: CommonFlags & { dryRun?: boolean }, env: Env): Promise<number> {
  const items = (await withClient(flags, env, (c) => c.call('POST', '/v1/prune', { dry_run: flags.dryRun === true }))) as Array<Record<string, unknown>>;
  print(flags, items, () =>
    items.length === 0
      ? 'nothing to prune'
      : items.map((i) => `${flags.dryRun ? 'would remove' : 'removed'} ${String(i.kind)} ${String(i.key).slice(0, 16)} ${String(i.image_id).slice(7, 19)} (${String(i.reason)})`).join('\n'),
  );
  return 0;
}

export async function verifyCommand(flags: CommonFlags & { repair?: boolean }, env: Env): Promise<number> {
  const report = (await withClient(flags, env, (c) => c.call('POST', '/v1/verify', { repair: flags.repair === true }))) as { drift: Array<Record<string, unknown>> };
  print(flags, report, () =>
    report.drift.length === 0
      ? 'no drift'
      : report.drift.map((d) => `${String(d.type)} ${String(d.kind)} ${String(d.key).slice(0, 16)}${d.repaired ? ' (repaired)' : ''}`).join('\n'),
  );
  // Drift left unrepaired is worth a non-zero status for scripts (like `git diff --exit-code`).
  return report.drift.some((d) => d.repaired !== true) && flags.repair === true ? 1 : 0;
}

export async function reindexCommand(flags: CommonFlags, env: Env): Promise<number> {
  const report = (await withClient(flags, env, (c) => c.call('POST', '/v1/reindex', {}))) as Record<string, unknown[] | number>;
  print(flags, report, () => {
    const n = (k: string): number => (Array.isArray(report[k]) ? report[k].length : 0);
    return `entries: ${String(report.entries)} (added ${n('added')}, updated ${n('updated')}, removed ${n('removed')})`;
  });
  return 0;
}

export async function statusCommand(flags: CommonFlags, env: Env): Promise<number> {
  const s = (await withClient(flags, env, (c) => c.call('GET', '/v1/status'))) as Record<string, unknown>;
  if (typeof s !== 'object' || s === null) throw new RgridError('unavailable', 'unexpected status answer');
  print(flags, s, () => {
    const warm = s.warm as { done: number; total: number; failed: number } | undefined;
    return [
      `rgrid-agent ${String(s.version)}, up ${String(s.uptime_s)} s, config ${str(s.config_file ?? '(none)')}`,
      `runtimes: ${Object.keys((s.runtimes as object) ?? {}).join(', ') || '(none)'}`,
      `entries: ${String(s.entries)} (${(Number(s.bytes) / 1e6).toFixed(1)} MB), build queue: ${String(s.queue_depth)}`,
      `sync: ${String(s.sync_state)}`,
      ...(warm && warm.total ? [`warm: ${warm.done}/${warm.total} done, ${warm.failed} failed`] : []),
    ].join('\n');
  });
  return 0;
}
