/**
 * A pass-through proxy in front of the real Docker engine, on a unix socket of its own, for tests that need
 * the engine to misbehave at one precise request: every request goes through as it is, unless `intercept`
 * says to hold it (never forwarded, never answered: the engine's side of a hung call) or does something
 * first (deletes an image, say) before letting it through.
 *
 * Each connection carries one request: the runner under test gets a client that keeps none alive
 * (`proxy.docker()`). `intercept` sees the request line and, for a request with a Content-Length, its whole
 * body. What goes wrong inside `intercept` is kept in `errors` (the request then goes through).
 */
import { Agent } from 'node:http';
import { connect, createServer, type Socket } from 'node:net';
import Docker from 'dockerode';
import { docker } from './helpers.js';

// dockerode's default names the socket through a function (docker-modem's findDefaultUnixSocket), not a path.
const modemSocket = (docker.modem as { socketPath?: unknown }).socketPath;
const ENGINE_SOCKET = typeof modemSocket === 'string' ? modemSocket : '/var/run/docker.sock';

export interface EngineRequest {
  /** `POST /v1.47/containers/create?name=… HTTP/1.1` */
  line: string;
  /** The whole body of a request that declares its length; undefined otherwise. */
  body: Buffer | undefined;
}

export interface EngineProxy {
  readonly socket: string;
  /** What went wrong inside `intercept`. */
  readonly errors: unknown[];
  /** A client of the proxy that opens a connection per request. */
  docker(): Docker;
  /** Closes every connection, held ones included, and the server. */
  close(): Promise<void>;
}

export async function startEngineProxy(socket: string, intercept: (request: EngineRequest) => Promise<'forward' | 'hold'>): Promise<EngineProxy> {
  const connections = new Set<Socket>();
  const errors: unknown[] = [];
  const server = createServer((client) => {
    connections.add(client);
    client.on('close', () => connections.delete(client));
    let buffered = Buffer.alloc(0);
    const onData = (chunk: Buffer): void => {
      buffered = Buffer.concat([buffered, chunk]);
      const headerEnd = buffered.indexOf('\r\n\r\n');
      if (headerEnd < 0) return;
      const head = buffered.subarray(0, headerEnd).toString('latin1');
      const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1]);
      const bodyStart = headerEnd + 4;
      if (Number.isInteger(length) && buffered.length < bodyStart + length) return;
      client.off('data', onData);
      client.pause();
      const request = { line: head.slice(0, head.indexOf('\r\n')), body: Number.isInteger(length) ? buffered.subarray(bodyStart, bodyStart + length) : undefined };
      void intercept(request).catch((err: unknown) => {
        errors.push(err);
        return 'forward' as const;
      }).then((verdict) => {
        if (verdict === 'hold') return;
        const upstream = connect(ENGINE_SOCKET, () => {
          upstream.write(buffered);
          client.pipe(upstream).pipe(client);
          client.resume();
        });
        upstream.on('error', () => client.destroy());
        client.on('error', () => upstream.destroy());
        client.on('close', () => upstream.destroy());
      });
    };
    client.on('data', onData);
  });
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  return {
    socket,
    errors,
    docker: () => new Docker({ socketPath: socket, agent: new Agent({ keepAlive: false }) } as Docker.DockerOptions),
    async close() {
      for (const c of connections) c.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
