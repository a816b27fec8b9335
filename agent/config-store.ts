import { basename, dirname, resolve } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from 'pino';
import { LIVE_KEYS } from './config-fleet.js';
import { readTokenFile } from '../common/token-file.js';
import { readConfigFile, resolveConfig, type AgentConfig, type AgentConfigInput } from './config.js';

/**
 * The running configuration as a store: components call `get()` whenever they need a setting (never a
 * copy taken at start), and `onChange` listeners apply what needs an action (the build queue's
 * concurrency, timers, the log level). `watchConfigFile` reloads the `--config` file when it changes:
 * the new file is merged with the same command-line flags and validated exactly like at start; an
 * invalid file is rejected with its reason logged and the running config kept. Keys outside LIVE_KEYS
 * (socket, data_dir, pip settings, run limits…) need a restart: a change to them is logged and ignored.
 */
export interface ConfigStore {
  /** A property (not a method) so it can be passed around as a getter: `settings: store.get`. */
  readonly get: () => AgentConfig;
  onChange(listener: (next: AgentConfig, previous: AgentConfig) => void): () => void;
  /** The config file, when there is one. */
  readonly file: string | undefined;
}

export interface MutableConfigStore extends ConfigStore {
  set(next: AgentConfig): void;
}

export function createConfigStore(initial: AgentConfig, file?: string): MutableConfigStore {
  let current = initial;
  const listeners = new Set<(next: AgentConfig, previous: AgentConfig) => void>();
  return {
    file,
    get: () => current,
    onChange(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
    set(next) {
      const previous = current;
      current = next;
      for (const l of listeners) l(next, previous);
    },
  };
}

export interface ReloadResult {
  ok: boolean;
  changed: string[];
  /** Changed keys that need a restart (kept at their running value). */
  needs_restart: string[];
  error?: string;
}

const live = new Set<string>(LIVE_KEYS);

/** The candidate's live keys on top of the running config; the rest stays as it runs. */
export function mergeLive(running: AgentConfig, candidate: AgentConfig): { merged: AgentConfig; changed: string[]; needsRestart: string[] } {
  const merged: Record<string, unknown> = { ...running };
  const changed: string[] = [];
  const needsRestart: string[] = [];
  const keys = new Set([...Object.keys(running), ...Object.keys(candidate)]);
  for (const key of keys) {
    const before = (running as Record<string, unknown>)[key];
    const after = (candidate as Record<string, unknown>)[key];
    if (JSON.stringify(before) === JSON.stringify(after)) continue;
    if (!live.has(key)) {
      needsRestart.push(key);
      continue;
    }
    changed.push(key);
    if (after === undefined) delete merged[key];
    else merged[key] = after;
  }
  return { merged: merged as AgentConfig, changed: changed.sort(), needsRestart: needsRestart.sort() };
}

export interface ConfigWatcher {
  reload(): Promise<ReloadResult>;
  close(): Promise<void>;
}

export function watchConfigFile(store: MutableConfigStore, flags: AgentConfigInput, logger: Logger): ConfigWatcher {
  const file = store.file;
  const log = logger.child({ component: 'config' });
  if (!file) return { reload: () => Promise.resolve({ ok: false, changed: [], needs_restart: [], error: 'no config file' }), close: () => Promise.resolve() };
  const path = resolve(file);

  async function reload(): Promise<ReloadResult> {
    let candidate: AgentConfig;
    try {
      candidate = resolveConfig(await readConfigFile(path), flags);
      // A token file the edited config names anew is checked like one named at start (agent/cli/worker-token.ts).
      if (candidate.worker_token_file !== undefined && candidate.worker_token_file !== store.get().worker_token_file) {
        readTokenFile(candidate.worker_token_file, 'worker_token_file');
      }
    } catch (err) {
      const error = (err as Error).message;
      log.error({ file: path, reason: error }, 'config file rejected; keeping the running config');
      return { ok: false, changed: [], needs_restart: [], error };
    }
    const { merged, changed, needsRestart } = mergeLive(store.get(), candidate);
    if (needsRestart.length) log.warn({ file: path, keys: needsRestart }, 'config keys changed that apply only after a restart; running values kept');
    if (changed.length) {
      store.set(merged);
      log.info({ file: path, changed }, 'config reloaded');
    }
    return { ok: true, changed, needs_restart: needsRestart };
  }

  // The directory is watched, not the file: editors and config managers replace files by rename, which
  // a watch on the old inode would miss.
  const watcher: FSWatcher = watch(dirname(path), {
    ignoreInitial: true,
    depth: 0,
    awaitWriteFinish: { stabilityThreshold: 150, pollInterval: 50 },
    ignored: (p: string) => p !== dirname(path) && basename(p) !== basename(path),
  });
  let pending: Promise<unknown> = Promise.resolve();
  const onEvent = (event: string, p: string): void => {
    if (resolve(p) !== path) return;
    if (event === 'unlink') {
      log.warn({ file: path }, 'config file removed; keeping the running config');
      return;
    }
    pending = pending.then(reload, reload);
  };
  watcher.on('all', onEvent);
  watcher.on('error', (err: unknown) => log.warn({ reason: String(err) }, 'config watcher error'));
  return {
    reload: () => {
      const next = pending.then(reload, reload);
      pending = next;
      return next;
    },
    async close() {
      await watcher.close();
      await pending.catch(() => undefined);
    },
  };
}
