import { mkdir, readFile } from 'node:fs/promises';
import { isAccount } from '../../common/names.js';
import { basename, relative, resolve, sep } from 'node:path';
import { watch, type FSWatcher } from 'chokidar';
import type { Logger } from 'pino';
import type { ManagedImageCache } from '../builder/image-cache.js';

/**
 * Cache warming: every requirements file in the warm directory gets its dependency layer built for every
 * configured runtime before anyone asks (a new base image or a new runtime re-warms everything). Files
 * directly in the directory are warmed for `warm_account`; `warm.d/<account>/<file>` for that account
 * (layers are per account, like all entries). Dotfiles and editor leftovers (`~`, `.swp`, `.tmp`,
 * `.part`) are ignored. Builds go through ManagedImageCache.warmDeps — the same single-flight and queue
 * as ensure — one at a time, so warming never takes more than one slot of the build queue.
 * Removing a file forgets its progress; its layers stay (the pruner decides about them like any other).
 */
export type WarmState = 'pending' | 'building' | 'done' | 'failed';

export interface WarmItem {
  file: string;
  account: string;
  runtime: string;
  state: WarmState;
  deps_key: string | null;
  image_id: string | null;
  /** The layer existed already (true) or was built for warming (false). */
  hit: boolean | null;
  error: string | null;
  updated_at: string;
}

export interface WarmStatus {
  dir: string;
  total: number;
  pending: number;
  building: number;
  done: number;
  failed: number;
  items: WarmItem[];
}

export interface Warmer {
  status(): WarmStatus;
  /** Warms every known file again (e.g. the runtimes changed). */
  rewarmAll(): void;
  close(): Promise<void>;
}

export interface WarmerDeps {
  dir: string;
  cache: ManagedImageCache;
  runtimes: () => string[];
  defaultAccount: () => string;
  logger: Logger;
}

const IGNORED = /(^\.|~$|\.swp$|\.tmp$|\.part$)/;

export async function startWarmer(deps: WarmerDeps): Promise<Warmer> {
  const dir = resolve(deps.dir);
  const log = deps.logger.child({ component: 'warm' });
  await mkdir(dir, { recursive: true });
  const items = new Map<string, WarmItem>();
  const files = new Set<string>();
  let chain: Promise<unknown> = Promise.resolve();
  let closed = false;

  function accountOf(path: string): string | undefined {
    const rel = relative(dir, path);
    const parts = rel.split(sep);
    if (parts.length === 1) return deps.defaultAccount();
    if (parts.length === 2 && isAccount(parts[0])) return parts[0];
    return undefined;
  }

  function set(item: WarmItem, patch: Partial<WarmItem>): void {
    Object.assign(item, patch, { updated_at: new Date().toISOString() });
  }

  function enqueue(path: string): void {
    const account = accountOf(path);
    if (account === undefined) return;
    for (const runtime of deps.runtimes()) {
      const id = `${path}\u0000${runtime}`;
      const item: WarmItem = { file: relative(dir, path), account, runtime, state: 'pending', deps_key: null, image_id: null, hit: null, error: null, updated_at: new Date().toISOString() };
      items.set(id, item);
      chain = chain.then(async () => {
        if (closed || items.get(id) !== item) return;
        set(item, { state: 'building' });
        try {
          const requirements = await readFile(path);
          const r = await deps.cache.warmDeps({ account, runtime, requirements });
          set(item, { state: 'done', deps_key: r.deps_key, image_id: r.image_id, hit: r.hit });
          log.info({ file: item.file, account, runtime, deps_key: r.deps_key, hit: r.hit }, r.hit ? 'warm: dependency layer already cached' : 'warm: dependency layer built');
        } catch (err) {
          set(item, { state: 'failed', error: (err as Error).message });
          log.warn({ file: item.file, account, runtime, reason: (err as Error).message }, 'warm: dependency layer failed');
        }
      });
    }
  }

  function forget(path: string): void {
    files.delete(path);
    for (const [id, item] of items) if (resolve(dir, item.file) === path) items.delete(id);
  }

  const watcher: FSWatcher = watch(dir, {
    depth: 1,
    awaitWriteFinish: { stabilityThreshold: 150, pollInterval: 50 },
    ignored: (p: string, stats?: { isFile(): boolean }) => p !== dir && (IGNORED.test(basename(p)) || (stats?.isFile() === true && accountOf(p) === undefined)),
  });
  watcher.on('add', (p: string) => {
    files.add(resolve(p));
    enqueue(resolve(p));
  });
  watcher.on('change', (p: string) => enqueue(resolve(p)));
  watcher.on('unlink', (p: string) => forget(resolve(p)));
  watcher.on('error', (err: unknown) => log.warn({ reason: String(err) }, 'warm.d watcher error'));
  await new Promise<void>((r) => watcher.once('ready', () => r()));
  log.info({ dir, files: files.size }, 'watching warm directory');

  return {
    status() {
      const list = [...items.values()];
      const count = (s: WarmState): number => list.filter((i) => i.state === s).length;
      return { dir, total: list.length, pending: count('pending'), building: count('building'), done: count('done'), failed: count('failed'), items: list };
    },
    rewarmAll() {
      items.clear();
      for (const path of files) enqueue(path);
    },
    async close() {
      // A warm build in progress is the daemon's drain's business (it is an ordinary queued build).
      closed = true;
      await watcher.close();
    },
  };
}

