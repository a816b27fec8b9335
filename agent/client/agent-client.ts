import { Agent, request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { errorFromBody, RgridError } from '../../common/errors.js';

/**
 * The client side of the socket API, used by the CLI, the tests and the benchmark alike (one code path).
 * HTTP/1.1 over the Unix socket with keep-alive, so a sequence of requests reuses one connection.
 * Node's own http client, not undici: loading undici costs a CLI command ~0.1–0.2 s of its start-up,
 * several times the whole socket call (the module listing test in test/cli/cli-light.int.test.ts).
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

interface Answer {
  statusCode: number;
  body: IncomingMessage;
}

export class AgentClient {
  private readonly agent = new Agent({ keepAlive: true, keepAliveMsecs: 10_000 });
  /** Requests whose answer has not been read to its end: close() waits for them. */
  private readonly inFlight = new Set<Promise<unknown>>();

  constructor(readonly socketPath: string) {}

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
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
    this.agent.destroy();
  }

  /** Closes now; requests in flight fail. */
  destroy(): Promise<void> {
    this.agent.destroy();
    return Promise.resolve();
  }

  private json(method: 'GET' | 'POST', path: string, body?: unknown): Promise<unknown> {
    return this.tracked(async () => {
      const res = await this.request(method, path, body);
      const parsed = await readJson(res.body);
      if (res.statusCode >= 400) throw errorFromBody(res.statusCode, parsed);
      return parsed;
    });
  }

  private tracked<T>(work: () => Promise<T>): Promise<T> {
    const done = work();
    const settled = done.then(() => undefined, () => undefined);
    this.inFlight.add(settled);
    void settled.then(() => this.inFlight.delete(settled));
    return done;
  }

  /** Sends a request whose answer is NDJSON: events go to onEvent; the terminal line is returned or thrown. */
  private stream(path: string, body: unknown, onEvent?: (event: AgentEvent) => void): Promise<Record<string, unknown>> {
    return this.tracked(() => this.readStream(path, body, onEvent));
  }

  private async readStream(path: string, body: unknown, onEvent?: (event: AgentEvent) => void): Promise<Record<string, unknown>> {
    const res = await this.request('POST', path, body);
    if (res.statusCode >= 400) throw errorFromBody(res.statusCode, await readJson(res.body));
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

  private request(method: 'GET' | 'POST', path: string, body?: unknown): Promise<Answer> {
    const payload = body === undefined ? undefined : Buffer.from(JSON.stringify(body));
    const options: RequestOptions & { servername: string } = {
      socketPath: this.socketPath,
      agent: this.agent,
      // No TLS on a Unix socket: a name given spares Node's agent deriving one from the host, which runs
      // its IPv6 pattern — compiled at first use, 3–6 ms of every CLI command's start-up.
      servername: '',
      method,
      path,
      headers: payload ? { 'content-type': 'application/json', 'content-length': payload.length } : {},
    };
    return new Promise((resolve, reject) => {
      const req = httpRequest(options, (res) => resolve({ statusCode: res.statusCode ?? 0, body: res }));
      req.once('error', (err: NodeJS.ErrnoException) => {
        reject(new RgridError('unavailable', `cannot reach the agent on ${this.socketPath} (${err.code ?? err.message})`));
      });
      req.end(payload);
    });
  }
}

/** The answer's body as JSON; undefined when it is not JSON (or the connection broke). */
async function readJson(body: IncomingMessage): Promise<unknown> {
  try {
    const chunks: Buffer[] = [];
    for await (const chunk of body as AsyncIterable<Buffer>) chunks.push(chunk);
    return JSON.parse(Buffer.concat(chunks).toString('utf8')) as unknown;
  } catch {
    return undefined;
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
