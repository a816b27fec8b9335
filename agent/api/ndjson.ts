import { PassThrough } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { errorResponse } from './errors.js';

/**
 * Long operations answer 200 with `application/x-ndjson`: one JSON object per line, progress events
 * first, then exactly one terminal line, `{"type":"result",...}` or `{"type":"error",error,message,detail?}`.
 *
 * The stream starts lazily, with the first progress event. An operation that finishes without any (a
 * cache hit: the hot path) is answered with its single result line as one plain body, which saves the
 * streaming machinery's cost on every hit; one that fails before any event gets an ordinary HTTP error
 * from the error handler. Clients read both the same way (see client/agent-client.ts).
 */
export const NDJSON = 'application/x-ndjson; charset=utf-8';

export type ProgressEvent = { type: string } & Record<string, unknown>;

export interface NdjsonOperation {
  /** Aborted when the client goes away before the terminal line was written. */
  signal: AbortSignal;
  emit(event: ProgressEvent): void;
}

export function respondNdjson<R extends object>(
  request: FastifyRequest,
  reply: FastifyReply,
  work: (op: NdjsonOperation) => Promise<R>,
): FastifyReply {
  const aborter = new AbortController();
  let finished = false;
  let stream: PassThrough | undefined;
  reply.raw.on('close', () => {
    if (!finished) aborter.abort();
  });
  const line = (event: object): string => `${JSON.stringify(event)}\n`;
  const emit = (event: ProgressEvent): void => {
    if (!stream) {
      stream = new PassThrough();
      void reply.type(NDJSON).send(stream);
    }
    if (!stream.writableEnded) stream.write(line(event));
  };
  work({ signal: aborter.signal, emit })
    .then(
      (result) => {
        if (stream) stream.write(line({ type: 'result', ...result }));
        else void reply.type(NDJSON).send(line({ type: 'result', ...result }));
      },
      (err: unknown) => {
        if (stream) stream.write(line({ type: 'error', ...errorResponse(err, request.log).body }));
        else void reply.send(err);
      },
    )
    .finally(() => {
      finished = true;
      stream?.end();
    });
  return reply;
}
