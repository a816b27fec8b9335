/**
 * The one HTTP stack between the agent and the control plane: undici (already a dependency; it holds
 * long polls and streams bodies both ways), one connection pool, credentials read for every request
 * (credentials.ts), error answers decoded like the `rgrid` client decodes them (common/http-answer.ts),
 * and every JSON answer checked against its wire schema before anyone uses it.
 *
 * Errors, all RgridError: an error answer is an `HttpStatusError` (its code and status); no answer at all
 * (refused, reset, timed out, broken mid-body) is an `UnreachableError` (`unavailable`); a 2xx that is not
 * JSON or does not match the schema is `bad_response`. An abort by the caller's own signal is passed on
 * as it is, so the caller can tell "I stopped it" from "it failed". Which of these are worth another
 * attempt is common/retry.ts's `isTransient`.
 */
import type { Readable } from 'node:stream';
import type { TSchema } from 'typebox';
import Value from 'typebox/value';
import { Agent, request, type Dispatcher } from 'undici';
import { RgridError } from '../../common/errors.js';
import { ERROR_ANSWER_MAX_BYTES, errorFromAnswer, JSON_ANSWER_MAX_BYTES, parseJsonAnswer, readCapped, UnreachableError } from '../../common/http-answer.js';
import type { ControlCredentials } from './credentials.js';

/** Per call: the caller's signal (passed on as is when it aborts) and a time bound (an outage when it passes). */
export interface CallOptions {
  signal?: AbortSignal | undefined;
  timeoutMs?: number | undefined;
}

export interface ControlRequest {
  /** A JSON body. */
  json?: unknown;
  /** Raw bytes, with their length. */
  raw?: { body: Readable; size: number };
  call?: CallOptions | undefined;
}

export interface OpenAnswer {
  status: number;
  body: Dispatcher.ResponseData['body'];
  credentials: ControlCredentials;
  /** Whether the call's own time bound has passed (it also cuts the body). */
  timedOut: () => boolean;
}

/** A JSON answer that does not match the wire schema: refused, naming where (never the value itself). */
export function checkAnswer<T>(schema: TSchema, value: unknown, what: string): T {
  if (Value.Check(schema, value)) return value as T;
  const first = Value.Errors(schema, value)[0];
  throw new RgridError('bad_response', `the control plane's answer to ${what} does not match the wire schema (${first?.instancePath || '/'} ${first?.keyword ?? ''})`.trimEnd());
}

export class ControlHttp {
  // Long polls hold a connection for up to ~25 s: timeouts well above that, keep-alive for the rest.
  private readonly dispatcher = new Agent({ headersTimeout: 120_000, bodyTimeout: 300_000, keepAliveTimeout: 30_000 });
  /** Requests sent whose answer has not been read to its end (or given up): what close() waits for. */
  private inFlight = 0;
  private idle: (() => void) | undefined;

  constructor(private readonly credentials: () => ControlCredentials) {}

  /** Sends a request; resolves once the answer's head is in, whatever its status. */
  async open(method: Dispatcher.HttpMethod, path: (c: ControlCredentials) => string, init: ControlRequest = {}): Promise<OpenAnswer> {
    const credentials = this.credentials();
    const headers: Record<string, string> = { authorization: `Bearer ${credentials.token}` };
    let body: string | Readable | undefined;
    if (init.raw) {
      headers['content-type'] = 'application/octet-stream';
      headers['content-length'] = String(init.raw.size);
      body = init.raw.body;
    } else if (init.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(init.json);
    }
    const { signal, timedOut } = this.signal(init.call);
    this.inFlight++;
    try {
      const res = await request(`${credentials.url}${path(credentials)}`, {
        method, dispatcher: this.dispatcher, headers, ...(body === undefined ? {} : { body }), ...(signal ? { signal } : {}),
      });
      res.body.once('close', () => this.done());
      return { status: res.statusCode, body: res.body, credentials, timedOut };
    } catch (err) {
      this.done();
      throw this.failure(err, credentials.url, init.call, timedOut);
    }
  }

  /** A JSON request whose answer (2xx) is checked by `check`; an error answer throws (see the module comment). */
  async json<T>(method: Dispatcher.HttpMethod, path: (c: ControlCredentials) => string, what: string, check: (value: unknown, c: ControlCredentials) => T, init: ControlRequest = {}): Promise<T> {
    const answer = await this.open(method, path, init);
    if (answer.status >= 400) throw await this.errorOf(answer, init.call);
    let read: { text: string; cut: boolean };
    try {
      read = await readCapped(answer.body, JSON_ANSWER_MAX_BYTES);
    } catch (err) {
      throw this.failure(err, answer.credentials.url, init.call, answer.timedOut);
    }
    if (read.cut) throw new RgridError('bad_response', `the control plane's answer to ${what} is over ${JSON_ANSWER_MAX_BYTES} bytes`);
    return check(parseJsonAnswer(read.text, what), answer.credentials);
  }

  /** An error answer as a typed error; its body read only up to a bound. */
  async errorOf(answer: OpenAnswer, call?: CallOptions): Promise<RgridError> {
    try {
      return errorFromAnswer(answer.status, (await readCapped(answer.body, ERROR_ANSWER_MAX_BYTES)).text);
    } catch (err) {
      if (call?.signal?.aborted) throw err;
      // The answer broke off: the status is all there is.
      return errorFromAnswer(answer.status, '');
    }
  }

  /**
   * Lets requests in flight finish for a few seconds, then cuts them (a shutdown must not hang on a long
   * poll or a stalled download): they fail with UND_ERR_DESTROYED. (Destroying the pool after closing
   * it would leave them pending for ever, hence the count instead of close() first.)
   */
  async close(graceMs = 5000): Promise<void> {
    if (this.inFlight > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([new Promise<void>((resolve) => (this.idle = resolve)), new Promise<void>((resolve) => (timer = setTimeout(resolve, graceMs)))]);
      clearTimeout(timer);
    }
    if (this.inFlight > 0) await this.dispatcher.destroy().catch(() => undefined);
    else await this.dispatcher.close().catch(() => undefined);
  }

  private signal(call: CallOptions | undefined): { signal: AbortSignal | undefined; timedOut: () => boolean } {
    const timeout = call?.timeoutMs !== undefined ? AbortSignal.timeout(call.timeoutMs) : undefined;
    const signals = [call?.signal, timeout].filter((s): s is AbortSignal => s !== undefined);
    return { signal: signals.length > 1 ? AbortSignal.any(signals) : signals[0], timedOut: () => timeout?.aborted === true };
  }

  private done(): void {
    if (--this.inFlight === 0) this.idle?.();
  }

  private failure(err: unknown, url: string, call: CallOptions | undefined, timedOut: () => boolean): unknown {
    if (call?.signal?.aborted) return err;
    if (err instanceof RgridError) return err;
    if (timedOut()) return new UnreachableError(url, Object.assign(new Error(`no answer within ${(call?.timeoutMs ?? 0) / 1000} s`), { code: 'timeout' }));
    return new UnreachableError(url, err as Error);
  }
}
