/**
 * The one place where errors become HTTP responses. RgridError → its status and code;
 * Fastify's own client errors (validation, bad JSON, body too large, wrong media type) → 4xx with a
 * code; everything else is an internal error: logged in full, answered with a generic message.
 */
import type { FastifyError, FastifyInstance } from 'fastify';
import { isRgridError, type ErrorBody, type RgridErrorCode } from '../../common/errors.js';
import { INPUT_FILE_NAME_PATTERN, OUTPUT_FILE_PATH_PATTERN, SHA256_PATTERN } from '../../common/names.js';

/**
 * A schema failure on one of the naming contract's patterns gets the same code and wording as the
 * contract's own assertion would give, so a caller sees `bad_digest` for a digest whether the route's
 * schema or its handler caught it.
 */
const PATTERN_ERRORS = new Map<string, { code: RgridErrorCode; rule: string }>([
  [SHA256_PATTERN, { code: 'bad_digest', rule: 'must be 64 lower-case hex characters (sha256)' }],
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

export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    let status: number;
    let body: ErrorBody;
    if (isRgridError(err)) {
      status = err.httpStatus;
      body = { error: err.code, message: err.message, ...(err.detail ? { detail: err.detail } : {}) };
    } else if (err.validation) {
      status = 400;
      body = validationBody(err);
    } else if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || err.statusCode === 413) {
      status = 413;
      body = { error: 'payload_too_large', message: 'request body is larger than the limit' };
    } else if (typeof err.statusCode === 'number' && err.statusCode >= 400 && err.statusCode < 500) {
      status = err.statusCode;
      body = { error: status === 404 ? 'not_found' : 'bad_request', message: err.message };
    } else {
      status = 500;
      body = { error: 'internal', message: 'internal error' };
    }
    if (status >= 500) request.log.error({ err }, 'request failed');
    else request.log.info({ code: body.error, status }, body.message);
    // An upload refused before its end leaves bytes in flight; closing the connection discards them.
    if (status === 413) void reply.header('connection', 'close');
    return reply.code(status).send(body);
  });

  app.setNotFoundHandler((request, reply) => {
    return reply.code(404).send({ error: 'not_found', message: `no route ${request.method} ${request.url}` } satisfies ErrorBody);
  });
}
