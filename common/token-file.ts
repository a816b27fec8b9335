/**
 * Bearer tokens read from files (`rgrid --token-file`, `rgrid-agent --worker-token-file`, …): a token on
 * a command line is readable by every local user through `ps` and /proc, a file is not. Like ssh with a
 * private key, a token file that the group or others may read or write is refused rather than used: the
 * options are new, so no working setup breaks, and a leak that is refused gets fixed.
 */
import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { RgridError } from './errors.js';
import { shown } from './names.js';

/** A token is a header value: visible ASCII only, so it cannot split or smuggle a header. */
const TOKEN_TEXT = /^[\x21-\x7e]{1,1024}$/;
/** Far above any token; a bound so that naming /dev/zero or a log file fails at once. */
const MAX_TOKEN_FILE_BYTES = 4096;

/** `token` as given (env or flag), refused when it could not travel as an Authorization header. */
export function assertTokenText(token: string, source: string): string {
  if (!TOKEN_TEXT.test(token)) throw new RgridError('bad_request', `the token from ${source} must be 1-1024 visible ASCII characters (no spaces or line breaks)`);
  return token;
}

export interface TokenFileOptions {
  /**
   * The file lies in a directory only this service can open (systemd's $CREDENTIALS_DIRECTORY): its mode
   * bits are not checked, as systemd grants access with an ACL that makes the mode read 0440.
   */
  inPrivateDirectory?: boolean;
}

/** Reads and checks the token in `path`; `source` names the option for the one-line error. */
export function readTokenFile(path: string, source: string, options: TokenFileOptions = {}): string {
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO named by mistake fails the read instead of hanging the start.
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    throw new RgridError('bad_request', `cannot read the token file ${shown(path)} (${source}): ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  try {
    const stat = fstatSync(fd);
    if (!stat.isFile()) throw new RgridError('bad_request', `the token file ${shown(path)} (${source}) is not a regular file`);
    if (!options.inPrivateDirectory && (stat.mode & 0o077) !== 0) {
      const mode = (stat.mode & 0o777).toString(8).padStart(4, '0');
      throw new RgridError('bad_request', `the token file ${shown(path)} (${source}) has mode ${mode}: group or others may access it; run chmod 600 on it`);
    }
    const buffer = Buffer.alloc(MAX_TOKEN_FILE_BYTES + 1);
    let length = 0;
    for (;;) {
      const n = readSync(fd, buffer, length, buffer.length - length, null);
      length += n;
      if (n === 0 || length === buffer.length) break;
    }
    if (length > MAX_TOKEN_FILE_BYTES) throw new RgridError('bad_request', `the token file ${shown(path)} (${source}) is over ${MAX_TOKEN_FILE_BYTES} bytes`);
    const token = buffer.subarray(0, length).toString('utf8').trim();
    if (!token) throw new RgridError('bad_request', `the token file ${shown(path)} (${source}) is empty`);
    return assertTokenText(token, `the token file ${shown(path)}`);
  } finally {
    closeSync(fd);
  }
}
