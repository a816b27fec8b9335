/**
 * `rgrid`'s HTTP client decodes error answers like the agent does (common/http-answer.ts): a proxy's
 * HTML page is an outage (5xx) or a bad answer (4xx) — never a SyntaxError, and never `bad_request`,
 * which the CLI reports as a usage error of its own (exit status 2).
 */
import { randomUUID } from 'node:crypto';
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ControlApi } from '../../client/api.js';
import { isTransient } from '../../client/retry.js';

let server: Server;
let api: ControlApi;
let answer: (res: ServerResponse) => void = (res) => res.writeHead(404).end();

beforeEach(async () => {
  server = createServer((req, res) => {
    req.resume();
    req.on('end', () => answer(res));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  api = new ControlApi(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, 'rgrid_test_token', { retryForMs: 0 });
});

afterEach(async () => {
  await api.close();
  server.closeAllConnections();
  await new Promise((r) => server.close(r));
});

describe('error answers the control plane did not write', () => {
  it("a proxy's HTML 502 is a transient outage with its status", async () => {
    answer = (res) => res.writeHead(502, { 'content-type': 'text/html' }).end('<html><body><h1>502 Bad Gateway</h1></body></html>');
    const err = await api.get(randomUUID()).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'unavailable', status: 502 });
    expect(isTransient(err)).toBe(true);
  });

  it('an HTML 404 (a wrong URL prefix, say) is a bad answer, not a usage error', async () => {
    answer = (res) => res.writeHead(404, { 'content-type': 'text/html' }).end('<html><body>Not Found</body></html>');
    const err = await api.get(randomUUID()).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'bad_response', status: 404 });
    expect((err as Error).message).toContain('answered HTTP 404 with a body that is not an rgrid error');
  });

  it('an rgrid error body keeps its code; a 2xx page is refused as bad_response', async () => {
    answer = (res) => res.writeHead(403, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'forbidden', message: 'not your account' }));
    await expect(api.get(randomUUID())).rejects.toMatchObject({ code: 'forbidden', status: 403, message: 'not your account' });
    answer = (res) => res.writeHead(200, { 'content-type': 'text/html' }).end('<html>captive portal</html>');
    const err = await api.get(randomUUID()).catch((e: unknown) => e);
    expect(err).not.toBeInstanceOf(SyntaxError);
    expect(err).toMatchObject({ code: 'bad_response' });
  });
});

describe('answers without end', () => {
  /** Writes 64 KiB chunks until the client goes away; counts what it sent. */
  function endless(status: number, contentType: string): { sent: () => number } {
    let sent = 0;
    answer = (res) => {
      res.writeHead(status, { 'content-type': contentType });
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      const pump = (): void => {
        while (!res.destroyed && sent < 512 * 1024 * 1024) {
          sent += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
      };
      pump();
    };
    return { sent: () => sent };
  }

  it('an error answer that never ends is read only to its bound and still becomes the error', async () => {
    const body = endless(503, 'text/html');
    const err = await api.get(randomUUID()).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'unavailable', status: 503 });
    // The client stopped reading: far less than the 512 MiB the server was ready to send went out.
    expect(body.sent()).toBeLessThan(64 * 1024 * 1024);
  });

  it('a 2xx answer over the JSON bound is refused as bad_response, not held in memory', async () => {
    const body = endless(200, 'application/json');
    const err = await api.get(randomUUID()).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'bad_response' });
    expect((err as Error).message).toContain('is over 67108864 bytes');
    expect(body.sent()).toBeLessThan(256 * 1024 * 1024);
  });
});
