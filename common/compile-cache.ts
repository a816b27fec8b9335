/**
 * Node's on-disk cache of compiled module code (`module.enableCompileCache`, Node >= 22.1): a CLI that
 * starts for one socket call spends much of its time compiling the same JavaScript every time. On an
 * older runtime (Node 20.19 has no such function) this does nothing. It must run before the modules it
 * should cover are loaded, so each CLI's entry file calls it and then imports its program dynamically.
 * NODE_DISABLE_COMPILE_CACHE=1 turns it off (Node's own switch); a failure to open the cache directory
 * only costs the speed-up, never the command.
 */
import * as nodeModule from 'node:module';

type WithCompileCache = { enableCompileCache?: (dir?: string) => unknown };

export function enableCompileCache(): void {
  try {
    (nodeModule as WithCompileCache).enableCompileCache?.();
  } catch {
    // A read-only or missing cache directory: run uncached.
  }
}
