import { Client } from 'undici';
import { errorFromBody, RgridError } from '../../common/errors.js';

/**
 * The client side of the socket API, used by the CLI, the tests and the benchmark alike (one code path).
 * HTTP/1.1 over the Unix socket with keep-alive, so a sequence of requests reuses one connection.
 */
export interface EnsureParams {
  script: Buffer;
  requirements?: Buffer | null;
  runtime?: string;
  account?: string;
}

export interface RunParams extends EnsureParams {
  inputs?: Array<{ name: string; data: Buffer }>;
  timeout_s?: number;
  memory_mb?: number;
  cpus?: number;
  collect_outputs?: boolean;
}

export type AgentEvent = { type: string } & Record<string, unknown>;

export class AgentClient {
  private readonly client: Client;

  constructor(readonly socketPath: string) {
    this.client = new Client('http://localhost', { socketPath, keepAliveTimeout: 10_000, bodyTimeout: 0, headersTimeout: 0 });
  }

  async ensure(params: EnsureParams, onEvent?: (event: AgentEvent) => void): Promise<Record<string, unknown>> {
    return this.stream('/v1/ensure', encodeEnsure(params), onEvent);
  }

  async run(params: RunParams, onEvent?: (event: AgentEvent) => void): Promise<Record<string, unknown>> {
    const body: Record<string, unknown> = { ...encodeEnsure(params), inputs: (params.inputs ?? []).map((i) => ({ name: i.name, data: i.data.toString('base64') })) };
    for (const key of ['timeout_s', 'memory_mb', 'cpus', 'collect_outputs'] as const) {
      if (params[key] !== undefined) body[key] = params[key];
    }
    return this.stream('/v1/run', body, onEvent);
  }

  async entries(filter: { kind?: string; account?: string } = {}): Promise<Array<Record<string, unknown>>> {
    const query = new URLSearchParams();
    for (const [key, value] of Object.entries(filter)) if (value !== undefined) query.set(key, value);
    return (await this.json('GET', `/v1/entries${query.size ? `?${query}` : ''}`)) as Array<Record<string, unknown>>;
  }

  async inspect(key: string, filter: { kind?: string; account?: string } = {}): Promise<Record<string, unknown>> {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(filter)) if (value !== undefined) query.set(name, value);
    return (await this.json('GET', `/v1/entries/${encodeURIComponent(key)}${query.size ? `?${query}` : ''}`)) as Record<string, unknown>;
  }

  async health(): Promise<Record<string, unknown>> {
    return (await this.json('GET', '/v1/health')) as Record<string, unknown>;
  }

  /** A JSON route of the socket API (sync, prune, verify, reindex, status). */
  async call(method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
    return this.json(method, path, body);
  }

  /** Waits for requests in flight, then closes the connection. */
  async close(): Promise<void> {
    await this.client.close();
  }

  /** Closes now; requests in flight fail. */
  async destroy(): Promise<void> {
    await this.client.destroy();
  }

  private async json(method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
    const res = await this.request(method, path, body);
    const parsed = await res.body.json().catch(() => undefined);
    if (res.statusCode >= 400) throw errorFromBody(res.statusCode, parsed);
    return parsed;
  }

  /** Sends a request whose answer is NDJSON: events go to onEvent; the terminal line is returned or thrown. */
  private async stream(path: string, body: unknown, onEvent?: (event: AgentEvent) => void): Promise<Record<string, unknown>> {
    const res = await this.request('POST', path, body);
    if (res.statusCode >= 400) throw errorFromBody(res.statusCode, await res.body.json().catch(() => undefined));
    let pending = '';
    let terminal: AgentEvent | undefined;
    const handle = (line: string): void => {
      if (!line.trim()) return;
      const event = JSON.parse(line) as AgentEvent;
      if (event.type === 'result' || event.type === 'error') terminal = event;
      else onEvent?.(event);
    };
    res.body.setEncoding('utf8');
    for await (const chunk of res.body as AsyncIterable<string>) {
      pending += chunk;
      let newline: number;
      while ((newline = pending.indexOf('\n')) >= 0) {
        handle(pending.slice(0, newline));
        pending = pending.slice(newline + 1);
      }
    }
    handle(pending);
    if (!terminal) throw new RgridError('unavailable', 'the agent closed the stream without a result (did it stop?)');
    const { type, ...rest } = terminal;
    if (type === 'error') throw errorFromBody(500, rest);
    return rest;
  }

  private async request(method: 'GET' | 'POST', path: string, body?: unknown): Promise<import('undici').Dispatcher.ResponseData> {
    try {
      return await this.client.request({
        method,
        path,
        headers: body === undefined ? {} : { 'content-type': 'application/json' },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      throw new RgridError('unavailable', `cannot reach the agent on ${this.socketPath} (${code ?? (err as Error).message})`);
    }
  }
}

function encodeEnsure(params: EnsureParams): Record<string, unknown> {
  return {
    script: params.script.toString('base64'),
    ...(params.requirements ? { requirements: params.requirements.toString('base64') } : {}),
    ...(params.runtime !== undefined ? { runtime: params.runtime } : {}),
    ...(params.account !== undefined ? { account: params.account } : {}),
  };
}
