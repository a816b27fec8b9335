/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-member-access, @typescript-eslint/no-unsafe-argument,
   @typescript-eslint/no-unsafe-return, @typescript-eslint/no-unsafe-call, @typescript-eslint/no-explicit-any --
   the OpenAPI document is read as untyped JSON here; every field used is checked. */
// The control plane's OpenAPI document (/docs/json) as a contract: a real validator accepts it, every
// schema in it compiles as JSON Schema 2020-12, every route is in it with an operationId and its error
// responses, shared schemas are named components, the blob routes carry their bytes, public routes need
// no token. The other half, every answer of the control-tier tests checked against the document, runs
// in support.ts build() (response-check.ts); the last tests here show that check catching breaches.
import SwaggerParser from '@apidevtools/swagger-parser';
import type { FastifyInstance } from 'fastify';
import { describe, expect, it } from 'vitest';
import { COMPONENT_SCHEMAS } from '../../common/wire/components.js';
import { build, useTestDatabase } from './support.js';
import { ResponseContract, documentAjv, openApiPath, pointer, type OpenApiDocument } from './response-check.js';

const db = useTestDatabase();

type Doc = OpenApiDocument & { [key: string]: any; components: { schemas: Record<string, object>; [key: string]: any } };
const METHODS = ['get', 'put', 'post', 'delete', 'patch', 'head', 'options'];
const PUBLIC = ['GET /healthz', 'GET /readyz', 'GET /metrics', 'GET /docs/json'];

async function documentOf(app: FastifyInstance): Promise<Doc> {
  const res = await app.inject({ method: 'GET', url: '/docs/json' });
  expect(res.statusCode).toBe(200);
  return res.json<Doc>();
}

function operations(doc: Doc): Array<{ method: string; path: string; op: any }> {
  return Object.entries(doc.paths).flatMap(([path, item]) =>
    Object.entries(item as Record<string, any>).filter(([m]) => METHODS.includes(m)).map(([method, op]) => ({ method: method.toUpperCase(), path, op })));
}

/** Every `METHOD path` Fastify serves, from its route tree (`printRoutes`, one node per line). */
function servedRoutes(app: FastifyInstance): Set<string> {
  const served = new Set<string>();
  const prefixes: string[] = [];
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^((?:│ {3}| {4})*)[├└]── (\S+)(?: \(([A-Z, ]+)\))?$/u.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4;
    const path = (prefixes[depth - 1] ?? '') + m[2]!;
    prefixes[depth] = path;
    for (const method of m[3]?.split(', ') ?? []) served.add(`${method} ${openApiPath(path)}`);
  }
  return served;
}

/** Every `$ref` in `value`. */
function refsIn(value: unknown, out = new Set<string>()): Set<string> {
  if (Array.isArray(value)) value.forEach((v) => refsIn(v, out));
  else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      if (k === '$ref' && typeof v === 'string') out.add(v);
      else refsIn(v, out);
    }
  }
  return out;
}

describe('the OpenAPI document', () => {
  it('passes a real validator as OpenAPI 3.1, and every schema in it compiles as strict JSON Schema 2020-12', async () => {
    const app = await build(db);
    const doc = await documentOf(app);
    expect(doc.openapi).toBe('3.1.0');
    // swagger-parser validates against the official 3.1 schema and resolves every $ref (it changes its input).
    await expect(SwaggerParser.validate(structuredClone(doc) as never)).resolves.toBeTruthy();

    const ajv = documentAjv(doc);
    let compiled = 0;
    for (const name of Object.keys(doc.components.schemas)) {
      ajv.compile({ $ref: pointer('components', 'schemas', name) });
      compiled++;
    }
    for (const { method, path, op } of operations(doc)) {
      const m = method.toLowerCase();
      (op.parameters ?? []).forEach((_: unknown, i: number) => ajv.compile({ $ref: pointer('paths', path, m, 'parameters', String(i), 'schema') }));
      for (const media of Object.keys(op.requestBody?.content ?? {})) ajv.compile({ $ref: pointer('paths', path, m, 'requestBody', 'content', media, 'schema') });
      for (const [status, response] of Object.entries(op.responses as Record<string, any>)) {
        for (const media of Object.keys(response.content ?? {})) {
          ajv.compile({ $ref: pointer('paths', path, m, 'responses', status, 'content', media, 'schema') });
          compiled++;
        }
      }
    }
    expect(compiled).toBeGreaterThan(100);
  });

  it('has every route Fastify serves, each with a unique operationId, tags and its error responses', async () => {
    const app = await build(db);
    const doc = await documentOf(app);
    const ops = operations(doc);
    const documented = new Set(ops.map((o) => `${o.method} ${o.path}`));
    const served = servedRoutes(app);
    // Fastify answers HEAD for every GET by itself; the document lists the HEAD operations that exist on purpose.
    const servedOperations = [...served].filter((r) => !r.startsWith('HEAD '));
    expect(servedOperations.length).toBeGreaterThan(30);
    expect([...servedOperations].filter((r) => !documented.has(r))).toEqual([]);
    expect([...documented].filter((r) => !served.has(r))).toEqual([]);
    expect(documented.has('HEAD /v1/blobs/{sha256}')).toBe(true);

    const ids = ops.map((o) => o.op.operationId as unknown);
    expect(ids.every((id) => typeof id === 'string' && /^[a-z][A-Za-z]+$/.test(id))).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);

    for (const { method, path, op } of ops) {
      const where = `${method} ${path}`;
      expect(op.tags?.length, where).toBeGreaterThan(0);
      const statuses = Object.keys(op.responses);
      expect(statuses.some((s) => s.startsWith('2')), where).toBe(true);
      if (!path.startsWith('/v1/')) continue;
      expect(statuses, where).toEqual(expect.arrayContaining(['400', '401', '403', '429', '500', '503']));
      if (op.requestBody) expect(statuses, where).toEqual(expect.arrayContaining(['408', '413']));
      for (const [status, response] of Object.entries(op.responses as Record<string, any>)) {
        expect(response.description, `${where} ${status}`).toEqual(expect.any(String));
        if (Number(status) < 400) continue;
        // Every error body is the one Error component (a HEAD answer has none).
        if (method === 'HEAD') expect(response.content, `${where} ${status}`).toBeUndefined();
        else expect(response.content, `${where} ${status}`).toEqual({ 'application/json': { schema: { $ref: '#/components/schemas/Error' } } });
      }
    }
  });

  it('names the shared schemas as components, references them, and inlines no request or response body of /v1', async () => {
    const app = await build(db);
    const doc = await documentOf(app);
    expect(Object.keys(doc.components.schemas).sort()).toEqual(Object.keys(COMPONENT_SCHEMAS).sort());
    expect(doc.components.schemas.Error).toMatchObject({ type: 'object', required: ['error', 'message'] });
    const used = refsIn({ ...doc, components: undefined });
    for (const schema of Object.values(doc.components.schemas)) refsIn(schema, used);
    // A name nothing refers to is a schema the API lost track of.
    expect(Object.keys(COMPONENT_SCHEMAS).filter((name) => !used.has(`#/components/schemas/${name}`))).toEqual([]);
    for (const { method, path, op } of operations(doc).filter((o) => o.path.startsWith('/v1/'))) {
      const json = [
        op.requestBody?.content?.['application/json']?.schema,
        ...Object.values(op.responses as Record<string, any>).map((r) => r.content?.['application/json']?.schema),
      ].filter((s) => s !== undefined);
      for (const schema of json) expect(schema, `${method} ${path}`).toEqual({ $ref: expect.stringMatching(/^#\/components\/schemas\/[A-Za-z0-9]+$/) });
    }
  });

  it('declares servers, bearer security for /v1 and none for the public routes', async () => {
    const app = await build(db);
    const doc = await documentOf(app);
    expect(doc.servers.length).toBeGreaterThan(0);
    expect(doc.components.securitySchemes.bearer).toEqual({ type: 'http', scheme: 'bearer' });
    expect(doc.security).toEqual([{ bearer: [] }]);
    for (const { method, path, op } of operations(doc)) {
      if (PUBLIC.includes(`${method} ${path}`)) expect(op.security, path).toEqual([]);
      else expect(op.security, `${method} ${path}`).toBeUndefined();
    }
    // And they really take no token.
    for (const route of PUBLIC) expect((await app.inject({ method: 'GET', url: route.split(' ')[1]! })).statusCode, route).not.toBe(401);
  });

  it('describes the blob routes so that a generated client can check, upload and download bytes', async () => {
    const app = await build(db);
    const blob = (await documentOf(app)).paths['/v1/blobs/{sha256}'] as Record<string, any>;
    expect(blob.head.operationId).toBe('headBlob');
    expect(Object.keys(blob.head.responses)).toEqual(expect.arrayContaining(['200', '404']));
    expect(blob.head.responses['200'].headers['content-length']).toBeDefined();
    expect(blob.put.requestBody).toMatchObject({ required: true, content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } });
    expect(blob.put.responses['201'].content['application/json'].schema).toEqual({ $ref: '#/components/schemas/PutBlobResponse' });
    expect(blob.put.responses['422']).toBeDefined();
    expect(blob.get.responses['200'].content).toEqual({ 'application/octet-stream': { schema: expect.objectContaining({ type: 'string', format: 'binary' }) } });
    for (const m of ['head', 'get', 'put']) expect(blob[m].parameters).toContainEqual(expect.objectContaining({ in: 'path', name: 'sha256', required: true }));
  });
});

describe('the response check of the control-tier tests', () => {
  it('refuses an undeclared status, a body off its schema, an undeclared media type and a non-Error answer outside routes', async () => {
    const app = await build(db);
    const contract = new ResponseContract(await documentOf(app));
    const json = 'application/json; charset=utf-8';
    const error = JSON.stringify({ error: 'not_found', message: 'no execution' });
    const route = '/v1/executions/:id';
    // What the routes really answer passes...
    expect(contract.check({ method: 'GET', route, status: 404, contentType: json, payload: error })).toBeUndefined();
    expect(contract.check({ method: 'HEAD', route: '/v1/blobs/:sha256', status: 404, contentType: undefined, payload: undefined })).toBeUndefined();
    expect(contract.check({ method: 'GET', route: undefined, status: 404, contentType: json, payload: error })).toBeUndefined();
    // ...and each kind of breach is named.
    expect(contract.check({ method: 'GET', route, status: 409, contentType: json, payload: error })).toMatch(/status 409 is not declared/);
    expect(contract.check({ method: 'GET', route, status: 404, contentType: json, payload: JSON.stringify({ error: 'not_found' }) })).toMatch(/does not match .*message/);
    expect(contract.check({ method: 'GET', route, status: 200, contentType: json, payload: JSON.stringify({ id: 'x' }) })).toMatch(/does not match/);
    expect(contract.check({ method: 'GET', route, status: 404, contentType: 'text/html', payload: '<p>' })).toMatch(/media type "text\/html" is not declared/);
    expect(contract.check({ method: 'GET', route: undefined, status: 404, contentType: 'text/plain', payload: 'Not Found' })).toMatch(/not JSON/);
    expect(contract.check({ method: 'GET', route: '/v1/nowhere', status: 200, contentType: json, payload: '{}' })).toMatch(/not in the OpenAPI document/);
  });

  // Expected to fail: the route answers a status it does not declare, and build() fails the test for it
  // when the test ends (the test itself asserts nothing else that could fail).
  it.fails('fails the test that produced an answer its operation does not declare', async () => {
    const app = await build(db, {}, (a) => {
      a.get('/teapot', { schema: { operationId: 'teapot', tags: ['health'] } }, (_request, reply) => reply.code(418).send('short and stout'));
    });
    await app.inject({ method: 'GET', url: '/teapot' });
  });
});
