/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-member-access --
   HTTP response bodies are untyped JSON here; every field used is checked by expect(). */
// Ids in paths and queries are held to the naming contract by the route's schema: a token id or an
// execution id in upper case, as a URN or in braces is a 400 from validation, not something PostgreSQL
// happens to accept (upper case revoked the token) or refuse (mapped to 400 from its error).
import { describe, expect, it } from 'vitest';
import { ADMIN_TOKEN, build, call, createToken, useTestDatabase } from './support.js';
import { submitted, world } from './dispatch-support.js';

const db = useTestDatabase();

const variants = (id: string): string[] => [id.toUpperCase(), `urn:uuid:${id}`, `{${id}}`, id.replaceAll('-', '')];

describe('ids in paths and queries follow the contract', () => {
  it('token revocation takes the canonical id only; other spellings change nothing', async () => {
    const app = await build(db);
    const client = await createToken(app, 'ids', 'client');
    const listed = await call(app, 'GET', '/v1/admin/tokens?account=ids', ADMIN_TOKEN);
    const id: string = listed.json().tokens[0].id;
    for (const spelled of variants(id)) {
      const res = await call(app, 'DELETE', `/v1/admin/tokens/${encodeURIComponent(spelled)}`, ADMIN_TOKEN);
      expect(res.statusCode, spelled).toBe(400);
      expect(res.json()).toMatchObject({ error: 'bad_request' });
      expect(res.json().message).toMatch(/params\/id/);
    }
    // Still valid: none of those revoked it.
    expect((await call(app, 'GET', '/v1/executions', client)).statusCode).toBe(200);
    expect((await call(app, 'DELETE', `/v1/admin/tokens/${id}`, ADMIN_TOKEN)).statusCode).toBe(200);
    expect((await call(app, 'GET', '/v1/executions', client)).statusCode).toBe(401);
  });

  it('execution ids in paths and in the list cursor follow the contract', async () => {
    const app = await build(db, { claimWaitMaxMs: 0 });
    const w = await world(app, 'ids-x', 'w-ids-x');
    const id = await submitted(app, w);
    for (const path of ['', '/wait', '/logs']) {
      expect((await call(app, 'GET', `/v1/executions/${id}${path}`, w.client)).statusCode).toBe(200);
      for (const spelled of variants(id)) {
        const res = await call(app, 'GET', `/v1/executions/${encodeURIComponent(spelled)}${path}`, w.client);
        expect(res.statusCode, `${path} ${spelled}`).toBe(400);
        expect(res.json().message).toMatch(/params\/id/);
      }
    }
    const cursor = (executionId: string): string => Buffer.from(JSON.stringify([new Date().toISOString(), executionId])).toString('base64url');
    expect((await call(app, 'GET', `/v1/executions?cursor=${cursor(id)}`, w.client)).statusCode).toBe(200);
    for (const bad of ['-'.repeat(36), id.toUpperCase()]) {
      const res = await call(app, 'GET', `/v1/executions?cursor=${cursor(bad)}`, w.client);
      expect(res.statusCode, bad).toBe(400);
      expect(res.json()).toEqual({ error: 'bad_request', message: 'malformed cursor' });
    }
  });
});
