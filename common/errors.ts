/**
 * Typed domain errors shared by every side. Each carries a stable machine-readable `code` and the HTTP
 * status it maps to; the one error handler per server turns them into responses, and the CLIs turn them
 * into a one-line reason on stderr. Anything that is not an RgridError is an internal error: its message
 * is logged, never sent to a client.
 */
export type RgridErrorCode =
  | 'bad_request'
  | 'bad_digest'
  | 'bad_file_name'
  | 'bad_requirements'
  | 'unknown_runtime'
  | 'not_found'
  | 'conflict'
  | 'unauthorized'
  | 'forbidden'
  | 'payload_too_large'
  | 'quota_exceeded'
  | 'request_timeout'
  | 'rate_limited'
  | 'digest_mismatch'
  | 'build_failed'
  | 'run_failed'
  | 'engine_unavailable'
  | 'unavailable'
  | 'shutting_down'
  /** An answer from another process that breaks the wire contract (the receiving side refuses it). */
  | 'bad_response';

const HTTP_STATUS: Record<RgridErrorCode, number> = {
  bad_request: 400,
  bad_digest: 400,
  bad_file_name: 400,
  bad_requirements: 400,
  unknown_runtime: 400,
  not_found: 404,
  conflict: 409,
  unauthorized: 401,
  forbidden: 403,
  payload_too_large: 413,
  // The account's stored blobs would pass its quota: not retryable until something is removed.
  quota_exceeded: 413,
  request_timeout: 408,
  // Retry after the response's Retry-After seconds.
  rate_limited: 429,
  digest_mismatch: 422,
  build_failed: 422,
  run_failed: 500,
  engine_unavailable: 503,
  unavailable: 503,
  shutting_down: 503,
  bad_response: 502,
};

export class RgridError extends Error {
  readonly code: RgridErrorCode;
  readonly httpStatus: number;
  /** Extra structured detail safe to show to the caller (e.g. the tail of pip's output). */
  readonly detail: Record<string, unknown> | undefined;

  constructor(code: RgridErrorCode, message: string, detail?: Record<string, unknown>) {
    super(message);
    this.name = 'RgridError';
    this.code = code;
    this.httpStatus = HTTP_STATUS[code];
    this.detail = detail;
  }
}

export function isRgridError(value: unknown): value is RgridError {
  return value instanceof RgridError;
}

/** The JSON body every rgrid HTTP API returns for an error. */
export interface ErrorBody {
  error: RgridErrorCode | 'internal';
  message: string;
  detail?: Record<string, unknown>;
}

/** Rebuilds a typed error from an API error body (the CLI side of the socket or HTTP API). */
export function errorFromBody(status: number, body: unknown): RgridError {
  if (body && typeof body === 'object' && 'error' in body && 'message' in body) {
    const b = body as ErrorBody;
    const code = (b.error in HTTP_STATUS ? b.error : 'unavailable') as RgridErrorCode;
    return new RgridError(code, String(b.message), b.detail);
  }
  return new RgridError(status >= 500 ? 'unavailable' : 'bad_request', `HTTP ${status}`);
}
