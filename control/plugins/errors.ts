/**
 * The one place where errors become HTTP responses (design.md §9). RgridError → its status and code;
 * Fastify's own client errors (validation, bad JSON, body too large, wrong media type) → 4xx with a
 * code; everything else is an internal error: logged in full, answered with a generic message.
 */
import type { FastifyError, FastifyInstance } from 'fastify';
import { isRgridError, type ErrorBody } from '../../common/errors.js';

export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError, request, reply) => {
    let status: number;
    let body: ErrorBody;
    if (isRgridError(err)) {
      status = err.httpStatus;
      body = { error: err.code, message: err.message, ...(err.detail ? { detail: err.detail } : {}) };
    } else if (err.validation) {
      status = 400;
      body = { error: 'bad_request', message: err.message };
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
