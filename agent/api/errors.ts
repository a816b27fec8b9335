import type { FastifyBaseLogger, FastifyError, FastifyInstance } from 'fastify';
import { isRgridError, type ErrorBody } from '../../common/errors.js';

/**
 * The one place errors become responses: typed RgridErrors keep their code, status and safe detail;
 * Fastify's own 4xx (validation, body too large, bad JSON) keep their status under a stable code;
 * everything else is logged and answered with a generic 500 — never the raw message.
 */
export function errorResponse(err: unknown, log: FastifyBaseLogger): { status: number; body: ErrorBody } {
  if (isRgridError(err)) {
    if (err.httpStatus >= 500) log.warn({ code: err.code, reason: err.message }, 'request failed');
    return { status: err.httpStatus, body: { error: err.code, message: err.message, ...(err.detail ? { detail: err.detail } : {}) } };
  }
  const fe = err as Partial<FastifyError>;
  if (fe.validation) return { status: 400, body: { error: 'bad_request', message: `invalid request: ${fe.message ?? 'validation failed'}` } };
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    const code = fe.statusCode === 413 ? 'payload_too_large' : fe.statusCode === 404 ? 'not_found' : 'bad_request';
    return { status: fe.statusCode, body: { error: code, message: fe.message ?? 'bad request' } };
  }
  log.error({ err }, 'internal error');
  return { status: 500, body: { error: 'internal', message: 'internal error (see the agent log)' } };
}

export function installErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((err, request, reply) => {
    const { status, body } = errorResponse(err, request.log);
    return reply.status(status).send(body);
  });
  app.setNotFoundHandler((request, reply) =>
    reply.status(404).send({ error: 'not_found', message: `no route ${request.method} ${request.url}` } satisfies ErrorBody),
  );
}
