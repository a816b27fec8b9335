import { PassThrough } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { errorResponse } from './errors.js';

/**
 * Long operations answer 200 with `application/x-ndjson`: one JSON object per line, progress events
 * first, then exactly one terminal line, `{"type":"result",...}` or `{"type":"error",error,message,detail?}`.
 * Errors found before the stream starts (bad input) are ordinary HTTP errors from the error handler.
 */
export const NDJSON = 'application/x-ndjson; charset=utf-8';

export interface NdjsonOperation<R> {
  /** Aborted when the client goes away before the terminal line was written. */
  signal: AbortSignal;
  emit(event: { type: string } & Record<string, unknown>): void;
  run(work: () => Promise<R>): void;
}

export function startNdjson<R extends object>(request: FastifyRequest, reply: FastifyReply): NdjsonOperation<R> {
  const out = new PassThrough();
  const aborter = new AbortController();
  let finished = false;
  reply.raw.on('close', () => {
    if (!finished) aborter.abort();
  });
  const write = (event: object): void => {
    if (!out.writableEnded) out.write(`${JSON.stringify(event)}\n`);
  };
  void reply.type(NDJSON).send(out);
  return {
    signal: aborter.signal,
    emit: write,
    run(work) {
      work()
        .then((result) => write({ type: 'result', ...result }))
        .catch((err: unknown) => write({ type: 'error', ...errorResponse(err, request.log).body }))
        .finally(() => {
          finished = true;
          out.end();
        });
    },
  };
}
