/**
 * How an HTTP answer of another rgrid process becomes a value or a typed error, shared by every HTTP
 * client of the control plane (the agent's, agent/control/, and the `rgrid` CLI's, client/api.ts).
 *
 * An answer may come from something else than the peer: a proxy in front of it answers an HTML 502 page,
 * a load balancer a plain-text 503, a captive portal a 200 page. None of that may surface as a
 * SyntaxError (which reads as a programming error and was retried as nothing at all) or be mistaken for
 * a permanent refusal. The rules:
 *   - an rgrid error body (`{error, message, detail?}`) keeps its code (an unknown code: `unavailable` for
 *     a 5xx, `bad_request` for a 4xx) and its message, made display-safe and cut;
 *   - any other body: `unavailable` for a 5xx (the peer or its proxy failed: try again), `rate_limited`
 *     for a 429, `bad_response` for another 4xx (not the wire contract: nothing to retry);
 *   - a 2xx whose body is not JSON: `bad_response`.
 * The error keeps the status it came with (`HttpStatusError.status`), which retry decisions read.
 */
import { RgridError, type RgridErrorCode } from './errors.js';
import { displaySafe } from './names.js';

/** The largest JSON answer read (a claim answer of many inputs is the largest); more is `bad_response`. */
export const JSON_ANSWER_MAX_BYTES = 64 * 1024 * 1024;
/** Of an error answer only this much is read: enough for any rgrid error, little of a proxy's page. */
export const ERROR_ANSWER_MAX_BYTES = 64 * 1024;

/**
 * An answer's body as text, read up to `limit` bytes: past it the rest is not read (the body is
 * destroyed) and `cut` says so. Whatever a peer or a proxy sends, a client holds at most this much.
 */
export async function readCapped(body: AsyncIterable<Buffer | string> & { destroy(): unknown }, limit: number): Promise<{ text: string; cut: boolean }> {
  const chunks: Buffer[] = [];
  let bytes = 0;
  for await (const piece of body) {
    const chunk = typeof piece === 'string' ? Buffer.from(piece) : piece;
    if (bytes + chunk.length > limit) {
      chunks.push(chunk.subarray(0, limit - bytes));
      body.destroy();
      return { text: Buffer.concat(chunks).toString('utf8'), cut: true };
    }
    chunks.push(chunk);
    bytes += chunk.length;
  }
  return { text: Buffer.concat(chunks).toString('utf8'), cut: false };
}

/** Longest error message kept from an answer: enough for any message rgrid writes. */
const MESSAGE_MAX_CHARS = 500;

/** An HTTP error answer, decoded: the code and message of its body, and the status it came with. */
export class HttpStatusError extends RgridError {
  constructor(readonly status: number, code: RgridErrorCode, message: string, detail?: Record<string, unknown>) {
    super(code, message, detail);
  }
}

/**
 * The peer could not be reached, or the connection broke before a whole answer arrived: `unavailable`,
 * with the system or client error code (`ECONNREFUSED`, `UND_ERR_SOCKET`, … or `timeout`).
 */
export class UnreachableError extends RgridError {
  readonly errno: string;
  constructor(url: string, cause: Error) {
    const errno = (cause as NodeJS.ErrnoException).code ?? 'timeout';
    super('unavailable', `control plane at ${url} unreachable: ${errno === 'timeout' ? displaySafe(cause.message.slice(0, 200)) : errno}`);
    this.errno = errno;
  }
}

/** Every code RgridError knows: a body naming another one is from a newer or foreign peer. */
const KNOWN_CODES: ReadonlySet<string> = new Set<RgridErrorCode>([
  'bad_request', 'bad_digest', 'bad_file_name', 'bad_requirements', 'unknown_runtime', 'not_found', 'conflict', 'unauthorized',
  'forbidden', 'payload_too_large', 'quota_exceeded', 'request_timeout', 'rate_limited', 'digest_mismatch', 'build_failed',
  'run_failed', 'engine_unavailable', 'unavailable', 'shutting_down', 'bad_response',
]);

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function tryJson(text: string): { ok: true; value: unknown } | { ok: false } {
  try {
    return { ok: true, value: JSON.parse(text) as unknown };
  } catch {
    return { ok: false };
  }
}

/** The first characters of a body, quoted, for a message (one line, safe to log); undefined when empty. */
function preview(text: string): string | undefined {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat ? `"${displaySafe(flat.slice(0, 80))}${flat.length > 80 ? '…' : ''}"` : undefined;
}

/** An error answer (status ≥ 400) as a typed error; never throws (see the module comment). */
export function errorFromAnswer(status: number, text: string, peer = 'the control plane'): HttpStatusError {
  const parsed = tryJson(text);
  if (parsed.ok && isPlainObject(parsed.value) && typeof parsed.value.error === 'string' && typeof parsed.value.message === 'string') {
    const body = parsed.value;
    const known = KNOWN_CODES.has(body.error as string);
    const code: RgridErrorCode = known ? (body.error as RgridErrorCode) : status >= 500 ? 'unavailable' : 'bad_request';
    const message = displaySafe((body.message as string).slice(0, MESSAGE_MAX_CHARS));
    return new HttpStatusError(status, code, message, isPlainObject(body.detail) ? body.detail : undefined);
  }
  const code: RgridErrorCode = status >= 500 ? 'unavailable' : status === 429 ? 'rate_limited' : 'bad_response';
  const body = preview(text);
  return new HttpStatusError(status, code, `${peer} answered HTTP ${status} with ${body ? `a body that is not an rgrid error: ${body}` : 'an empty body'}`);
}

/** A success answer's JSON; a body that is not JSON is `bad_response` (an empty body is `undefined`). */
export function parseJsonAnswer(text: string, what: string, peer = 'the control plane'): unknown {
  if (text === '') return undefined;
  const parsed = tryJson(text);
  if (parsed.ok) return parsed.value;
  throw new RgridError('bad_response', `${peer}'s answer to ${what} is not JSON: ${preview(text) ?? 'blank'}`);
}
