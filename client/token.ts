/**
 * Where `rgrid` takes its client token from, first match wins: `--token-file FILE`, `--token TOKEN`
 * (kept for compatibility, with a warning: a command line is readable by every local user), then the
 * environment, `RGRID_TOKEN` before `RGRID_TOKEN_FILE` (the order the control plane uses for its admin
 * token). Token files must be private to their owner (common/token-file.ts).
 */
import { RgridError } from '../common/errors.js';
import { assertTokenText, readTokenFile } from '../common/token-file.js';

export interface TokenSources {
  flagToken?: string | undefined;
  flagFile?: string | undefined;
  envToken?: string | undefined;
  envFile?: string | undefined;
}

export const TOKEN_ON_COMMAND_LINE_WARNING =
  'rgrid: warning: --token is visible to every local user (ps, /proc/PID/cmdline); prefer --token-file FILE or RGRID_TOKEN_FILE';

export function resolveToken(sources: TokenSources, warn: (line: string) => void): string {
  if (sources.flagToken !== undefined && sources.flagFile !== undefined) {
    throw new RgridError('bad_request', '--token and --token-file are both given: pass one');
  }
  if (sources.flagFile !== undefined) return readTokenFile(sources.flagFile, '--token-file');
  if (sources.flagToken !== undefined) {
    warn(TOKEN_ON_COMMAND_LINE_WARNING);
    return assertTokenText(sources.flagToken, '--token');
  }
  if (sources.envToken) return assertTokenText(sources.envToken.trim(), 'RGRID_TOKEN');
  if (sources.envFile) return readTokenFile(sources.envFile, 'RGRID_TOKEN_FILE');
  throw new RgridError('bad_request', 'no token: pass --token-file FILE, or set RGRID_TOKEN_FILE or RGRID_TOKEN');
}
