/**
 * The one place where errors become HTTP responses. RgridError → its status and code; PostgreSQL's
 * refusal of a value (SQLSTATE class 22, not-null and check violations) → 400, a conflicting write →
 * 409, a database that cannot be reached → 503 with Retry-After; Fastify's own client errors
 * (validation, bad JSON, body too large, wrong media type, router limits, malformed HTTP) → their 4xx
 * in the same `{error, message}` shape; everything else is an internal error: logged in full, answered
 * with a generic message.
 */
import http from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest, FastifyServerOptions } from 'fastify';
import pg from 'pg';
import { isRgridError, type ErrorBody, type RgridErrorCode } from '../../common/errors.js';
import { INPUT_FILE_NAME_PATTERN, LONGEST_PATH_ID, OCI_DIGEST_PATTERN, OUTPUT_FILE_PATH_PATTERN, SHA256_PATTERN, shown } from '../../common/names.js';

/** Seconds a client is told to wait when the database is unreachable or a transaction lost a race. */
const RETRY_AFTER_UNAVAILABLE_S = 2;

/**
 * A schema failure on one of the naming contract's patterns gets the same code and wording as the
 * contract's own assertion would give, so a caller sees `bad_digest` for a digest whether the route's
 * schema or its handler caught it.
 */
const PATTERN_ERRORS = new Map<string, { code: RgridErrorCode; rule: string }>([
  [SHA256_PATTERN, { code: 'bad_digest', rule: 'must be 64 lower-case hex characters (sha256)' }],
  [OCI_DIGEST_PATTERN, { code: 'bad_digest', rule: 'must be sha256:<64 lower-case hex>' }],
  [INPUT_FILE_NAME_PATTERN, { code: 'bad_file_name', rule: 'must be one file name: no path separator, no . or .., no control characters' }],
  [OUTPUT_FILE_PATH_PATTERN, { code: 'bad_file_name', rule: 'must be a relative path: no . or .. segments, no control characters' }],
]);

function validationBody(err: FastifyError): ErrorBody {
  const first = err.validation?.[0];
  const pattern = first?.keyword === 'pattern' ? (first.params as { pattern?: unknown }).pattern : undefined;
  const known = typeof pattern === 'string' ? PATTERN_ERRORS.get(pattern) : undefined;
  if (first && known) {
    const where = `${err.validationContext ?? 'request'}${first.instancePath}`;
    return { error: known.code, message: `${where} ${known.rule}` };
  }
  return { error: 'bad_request', message: err.message };
}

interface Mapped {
  status: number;
  body: ErrorBody;
  retryAfterS?: number;
}

const CODE_OF_STATUS: Partial<Record<number, RgridErrorCode>> = {
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  408: 'request_timeout',
  409: 'conflict',
  413: 'payload_too_large',
  429: 'rate_limited',
};

/** pg's own messages for a connection that failed or broke (they carry no SQLSTATE). */
const PG_CONNECTION_MESSAGES = [
  'Connection terminated unexpectedly',
  'Connection terminated due to connection timeout',
  'Connection terminated',
  'timeout exceeded when trying to connect',
  'Client has encountered a connection error and is not queryable',
];
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN', 'EPIPE']);

/** The database refused, lost or could not take the request: which answer the caller gets. */
export function mapDatabaseError(err: unknown): Mapped | undefined {
  if (err instanceof pg.DatabaseError) {
    const state = err.code ?? '';
    // Class 22 (data exception: out of range, NUL in text, bad date...), not-null and check violations:
    // the value is wrong, whatever let it through the schema.
    if (state.startsWith('22') || state === '23502' || state === '23514') {
      return { status: 400, body: { error: 'bad_request', message: `a value was refused by the database (SQLSTATE ${state}): ${shown(err.message, 160)}` } };
    }
    if (state === '23505' || state === '23503') {
      return { status: 409, body: { error: 'conflict', message: `the request conflicts with the current state (SQLSTATE ${state}); read it again and retry` } };
    }
    // Connection exceptions, shutdown or crash of the server, too many connections, lost serialization
    // races and deadlocks: all pass, so the caller retries.
    if (state.startsWith('08') || state.startsWith('57P') || state === '53300' || state === '40001' || state === '40P01') {
      return { status: 503, body: { error: 'unavailable', message: `database temporarily unavailable (SQLSTATE ${state}); retry` }, retryAfterS: RETRY_AFTER_UNAVAILABLE_S };
    }
    return undefined;
  }
  if (err instanceof Error) {
    const code = (err as NodeJS.ErrnoException).code;
    const syscall = (err as NodeJS.ErrnoException).syscall;
    if ((code && NETWORK_CODES.has(code) && (syscall === 'connect' || syscall === 'getaddrinfo')) || PG_CONNECTION_MESSAGES.includes(err.message)) {
      return { status: 503, body: { error: 'unavailable', message: 'database unreachable; retry' }, retryAfterS: RETRY_AFTER_UNAVAILABLE_S };
    }
  }
  return undefined;
}

function mapError(err: FastifyError): Mapped {
  if (isRgridError(err)) {
    return { status: err.httpStatus, body: { error: err.code, message: err.message, ...(err.detail ? { detail: err.detail } : {}) } };
  }
  if (err.validation) return { status: 400, body: validationBody(err) };
  if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || err.statusCode === 413) {
    return { status: 413, body: { error: 'payload_too_large', message: 'request body is larger than the limit' } };
  }
  const database = mapDatabaseError(err);
  if (database) return database;
  if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
    return { status: err.statusCode, body: { error: CODE_OF_STATUS[err.statusCode] ?? 'bad_request', message: err.message } };
  }
  return { status: 500, body: { error: 'internal', message: 'internal error' } };
}

export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    const { status, body, retryAfterS } = mapError(err);
    if (status >= 500) request.log.error({ err }, 'request failed');
    else request.log.info({ code: body.error, status }, body.message);
    if (retryAfterS !== undefined) void reply.header('retry-after', String(retryAfterS));
    // A request refused before its body was read leaves bytes in flight; closing the connection
    // discards them instead of reading them to find the next request.
    if (status === 413 || status === 408) void reply.header('connection', 'close');
    return reply.code(status).send(body);
  });

  app.setNotFoundHandler((request, reply) => {
    return reply.code(404).send({ error: 'not_found', message: `no route ${request.method} ${shown(request.url, 120)}` } satisfies ErrorBody);
  });
}

/**
 * Router refusals that happen before any route (and so before the error handler): a path segment
 * that is not valid percent-encoding, a path parameter longer than any id we use.
 */
export const frameworkErrors: NonNullable<FastifyServerOptions['frameworkErrors']> = (err, _request: FastifyRequest, reply: FastifyReply) => {
  if (err.code === 'FST_ERR_MAX_PARAM_LENGTH') {
    void reply.code(414).send({ error: 'bad_request', message: `a path parameter is longer than ${LONGEST_PATH_ID} characters (no id is)` } satisfies ErrorBody);
    return;
  }
  if (err.code === 'FST_ERR_BAD_URL') {
    void reply.code(400).send({ error: 'bad_request', message: 'the URL path is not valid percent-encoding' } satisfies ErrorBody);
    return;
  }
  void reply.code(400).send({ error: 'bad_request', message: 'the request could not be routed' } satisfies ErrorBody);
};

/**
 * Malformed HTTP (bad request line, oversized headers, a request that took longer than its timeout):
 * Node hands the raw socket over before any request object exists, so the answer is written by hand.
 */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  const [status, code, message]: [number, RgridErrorCode, string] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'request_timeout', 'the request was not received within the time limit']
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'bad_request', 'the request headers are too large']
        : [400, 'bad_request', 'malformed HTTP request'];
  const body = JSON.stringify({ error: code, message } satisfies ErrorBody);
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${http.STATUS_CODES[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  }
  socket.destroy();
}
