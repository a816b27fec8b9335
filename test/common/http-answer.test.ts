import { describe, expect, it } from 'vitest';
import { RgridError } from '../../common/errors.js';
import { errorFromAnswer, HttpStatusError, parseJsonAnswer } from '../../common/http-answer.js';
import { isTransient } from '../../common/retry.js';

const PROXY_502 = '<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n';

describe('errorFromAnswer: an error answer, whatever its body, is a typed error', () => {
  it("decodes a proxy's HTML 502 as a transient outage, keeping the status and one safe line", () => {
    const err = errorFromAnswer(502, PROXY_502);
    expect(err).toBeInstanceOf(HttpStatusError);
    expect(err).toMatchObject({ code: 'unavailable', status: 502 });
    expect(err.message).toContain('answered HTTP 502 with a body that is not an rgrid error: "<html> <head><title>502 Bad Gateway');
    expect(err.message).not.toMatch(/[\r\n]/);
    expect(isTransient(err)).toBe(true);
  });

  it('decodes an empty body by its status', () => {
    expect(errorFromAnswer(503, '')).toMatchObject({ code: 'unavailable', status: 503, message: 'the control plane answered HTTP 503 with an empty body' });
    expect(errorFromAnswer(429, '')).toMatchObject({ code: 'rate_limited', status: 429 });
    expect(isTransient(errorFromAnswer(429, ''))).toBe(true);
    const notFound = errorFromAnswer(404, '');
    expect(notFound).toMatchObject({ code: 'bad_response', status: 404 });
    expect(isTransient(notFound)).toBe(false);
  });

  it('refuses a non-JSON 4xx as a bad answer, not as a bad request of ours', () => {
    const err = errorFromAnswer(404, '<html><body>Not Found</body></html>');
    expect(err.code).toBe('bad_response');
    expect(isTransient(err)).toBe(false);
  });

  it('keeps the code, message and detail of an rgrid error body', () => {
    const body = JSON.stringify({ error: 'conflict', message: 'worker unknown', detail: { resync_required: true } });
    expect(errorFromAnswer(409, body)).toMatchObject({ code: 'conflict', status: 409, message: 'worker unknown', detail: { resync_required: true } });
    expect(isTransient(errorFromAnswer(409, body))).toBe(false);
    // 5xx bodies of rgrid: transient whatever their code says.
    expect(isTransient(errorFromAnswer(503, JSON.stringify({ error: 'shutting_down', message: 'draining' })))).toBe(true);
  });

  it('maps an unknown code by status, makes the message one safe line, and drops a detail that is not an object', () => {
    expect(errorFromAnswer(500, JSON.stringify({ error: 'internal', message: 'boom' })).code).toBe('unavailable');
    expect(errorFromAnswer(400, JSON.stringify({ error: 'from_the_future', message: 'x' })).code).toBe('bad_request');
    const hostile = errorFromAnswer(400, JSON.stringify({ error: 'bad_request', message: `a\u001b[2J\nb${'x'.repeat(2000)}`, detail: ['not', 'an', 'object'] }));
    expect(hostile.message).not.toMatch(/[\u0000-\u001f]/);
    expect(hostile.message.length).toBeLessThan(600);
    expect(hostile.detail).toBeUndefined();
  });

  it('treats JSON that is not an rgrid error body like any other body', () => {
    expect(errorFromAnswer(502, JSON.stringify({ status: 'bad gateway' }))).toMatchObject({ code: 'unavailable', status: 502 });
    expect(errorFromAnswer(400, JSON.stringify(['error', 'message']))).toMatchObject({ code: 'bad_response', status: 400 });
    expect(errorFromAnswer(400, 'null')).toMatchObject({ code: 'bad_response' });
  });
});

describe('parseJsonAnswer: a success answer that is not JSON is refused, never a SyntaxError', () => {
  it('parses JSON and refuses anything else as bad_response', () => {
    expect(parseJsonAnswer('{"ok":true}', 'a renewal')).toEqual({ ok: true });
    expect(parseJsonAnswer('', 'a renewal')).toBeUndefined();
    const err = (() => {
      try {
        parseJsonAnswer('<html>captive portal</html>', 'a renewal');
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(RgridError);
    expect(err).not.toBeInstanceOf(SyntaxError);
    expect(err).toMatchObject({ code: 'bad_response', message: `the control plane's answer to a renewal is not JSON: "<html>captive portal</html>"` });
    expect(() => parseJsonAnswer('{"truncated": ', 'a claim')).toThrow(expect.objectContaining({ code: 'bad_response' }) as Error);
  });
});
