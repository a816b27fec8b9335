/**
 * Admission control of the authenticated API: how many requests one token may make per minute and how
 * many it may have in flight, keyed by the token's id (never the client address: many workers share a
 * NAT, and one address may hold tokens of several accounts). Registered inside the /v1 context after
 * auth, so `request.auth` is known; the admin token (the operator) is not limited. Both refusals are 429
 * `{error: 'rate_limited', message}` with Retry-After, before any body is read.
 *
 * Also here: the body idle watchdog, which refuses a request body that stops arriving.
 */
import type { Socket } from 'node:net';
import { PassThrough, type Readable } from 'node:stream';
import fp from 'fastify-plugin';
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { RgridError } from '../../common/errors.js';

const RATE_WINDOW_MS = 60_000;
/** What a client over its concurrency limit is told to wait: one in-flight request is likely done by then. */
const CONCURRENCY_RETRY_AFTER_S = 1;
/**
 * Bodies up to this size that declare their length arrive in a few packets and are bounded by the
 * connection's idle timeout; the watchdog (one extra stream per request) is kept for the rest.
 */
const WATCHDOG_MIN_BYTES = 64 * 1024;
/** After a stalled body's 408 has had this long to leave, its connection is cut. */
const STALLED_SOCKET_GRACE_MS = 2000;

const tokenKey = (request: FastifyRequest): string => request.auth.tokenId ?? 'admin';

export default fp(
  async (app) => {
    const { tokenRateLimitPerMinute: perMinute, tokenConcurrencyLimit: concurrency } = app.config;
    if (perMinute > 0) {
      await app.register(rateLimit, {
        global: true,
        max: perMinute,
        timeWindow: RATE_WINDOW_MS,
        // Route-level onRequest hooks run after the context's own, so auth has run by now.
        hook: 'onRequest',
        keyGenerator: tokenKey,
        allowList: (request) => request.auth.role === 'admin',
        errorResponseBuilder: (_request, context) =>
          new RgridError('rate_limited', `this token made more than ${context.max} requests in a minute; retry in ${context.after}`, {
            retry_after_s: Math.ceil(context.ttl / 1000),
          }),
      });
    }
    if (concurrency > 0) {
      const inFlight = new Map<string, number>();
      app.addHook('onRequest', async (request, reply) => {
        if (request.auth.role === 'admin') return;
        const key = tokenKey(request);
        const current = inFlight.get(key) ?? 0;
        if (current >= concurrency) {
          void reply.header('retry-after', String(CONCURRENCY_RETRY_AFTER_S));
          throw new RgridError('rate_limited', `this token already has ${current} requests in flight (limit ${concurrency}); retry when one has finished`, {
            retry_after_s: CONCURRENCY_RETRY_AFTER_S,
          });
        }
        inFlight.set(key, current + 1);
        let released = false;
        // 'close' comes after the response is written and also when the client goes away first.
        const release = (): void => {
          if (released) return;
          released = true;
          const left = (inFlight.get(key) ?? 1) - 1;
          if (left <= 0) inFlight.delete(key);
          else inFlight.set(key, left);
        };
        reply.raw.once('close', release);
        reply.raw.once('finish', release);
      });
    }
  },
  { name: 'rgrid-admission', dependencies: ['rgrid-auth'] },
);

/**
 * Wraps a request body in a stream that fails with 408 when no byte arrives for `idleMs`. Consumers
 * (Fastify's JSON reader, the blob store) see the error like any other body error: the JSON request is
 * refused, a staged blob is removed. The connection is closed after the answer (errors.ts sets
 * `connection: close` on 408) and cut outright shortly after, for a client that does not read it.
 */
export function installBodyIdleTimeout(app: FastifyInstance, idleMs: number): void {
  app.addHook('preParsing', async (request, _reply, payload) => {
    const headers = request.headers;
    const declared = headers['content-length'] === undefined ? undefined : Number(headers['content-length']);
    const chunked = headers['transfer-encoding'] !== undefined;
    if (!chunked && (declared === undefined || !(declared > WATCHDOG_MIN_BYTES))) return payload;
    return watchIdle(payload, idleMs, () => {
      // inject() has no socket; a real request has one.
      const socket = request.raw.socket as Socket | undefined;
      setTimeout(() => socket?.destroy(), STALLED_SOCKET_GRACE_MS).unref();
    });
  });
}

/** `payload` as a stream that errors when it stalls; keeps Fastify's `receivedEncodedLength` count. */
function watchIdle(payload: Readable, idleMs: number, onStall: () => void): Readable {
  const out = new PassThrough() as PassThrough & { receivedEncodedLength: number };
  out.receivedEncodedLength = 0;
  // Until the route reads the body no one listens; an error then must not become an uncaught exception.
  out.on('error', () => undefined);
  let timer: NodeJS.Timeout | undefined;
  const stop = (): void => {
    if (timer) clearTimeout(timer);
    timer = undefined;
  };
  const arm = (): void => {
    stop();
    timer = setTimeout(() => {
      // The consumer is behind (a slow disk), not the client: the body is not stalled.
      if (out.writableNeedDrain) {
        arm();
        return;
      }
      payload.unpipe(out);
      out.destroy(new RgridError('request_timeout', `the request body stalled: no bytes for ${idleMs} ms`));
      onStall();
    }, idleMs);
    timer.unref();
  };
  payload.on('data', (chunk: Buffer) => {
    out.receivedEncodedLength += chunk.length;
    arm();
  });
  let ended = false;
  payload.once('end', () => {
    ended = true;
    stop();
  });
  payload.once('error', (err) => {
    stop();
    out.destroy(err);
  });
  // A client that disconnects mid-body: the consumer must see an error, not a body that just ended.
  payload.once('close', () => {
    stop();
    if (!ended) out.destroy(new RgridError('bad_request', 'the client closed the connection before the body ended'));
  });
  out.once('close', stop);
  arm();
  payload.pipe(out);
  return out;
}
