import { createHash } from 'node:crypto';
import { createReadStream, readdirSync, readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';

/**
 * A PEP 503 "simple" package index on 127.0.0.1, serving the wheels of a directory (read on every
 * request, so a wheel added later is offered at once). Links carry `#sha256=` as real indexes do. For
 * the builds' network `host`: the only index a test's pip can reach, and one the test can take away.
 */
export interface LocalIndex {
  /** `http://127.0.0.1:<port>/simple/` */
  readonly url: string;
  /** Requests answered so far (a resolution that ran shows up here). */
  readonly requests: number;
  stop(): Promise<void>;
}

const normalize = (name: string): string => name.toLowerCase().replace(/[-_.]+/g, '-');

export async function startLocalIndex(wheelhouse: string): Promise<LocalIndex> {
  let requests = 0;
  const server: Server = createServer((req, res) => {
    requests++;
    const path = decodeURIComponent((req.url ?? '/').split('?')[0]!);
    const project = /^\/simple\/([^/]+)\/?$/.exec(path);
    if (project) {
      const wanted = normalize(project[1]!);
      const files = readdirSync(wheelhouse).filter((f) => f.endsWith('.whl') && normalize(f.split('-')[0]!) === wanted);
      if (files.length === 0) {
        res.writeHead(404).end('not found');
        return;
      }
      const links = files.map((f) => {
        const sha = createHash('sha256').update(readFileSync(join(wheelhouse, f))).digest('hex');
        return `<a href="/files/${encodeURIComponent(f)}#sha256=${sha}">${f}</a>`;
      });
      res.writeHead(200, { 'content-type': 'text/html' }).end(`<!DOCTYPE html><html><body>\n${links.join('<br/>\n')}\n</body></html>`);
      return;
    }
    const file = /^\/files\/([^/]+\.whl)$/.exec(path);
    if (file && readdirSync(wheelhouse).includes(file[1]!)) {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      createReadStream(join(wheelhouse, file[1]!)).pipe(res);
      return;
    }
    res.writeHead(404).end('not found');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/simple/`,
    get requests() {
      return requests;
    },
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
