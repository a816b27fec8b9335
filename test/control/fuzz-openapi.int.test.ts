/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-member-access --
   HTTP response bodies are untyped JSON here; every field used is checked. */
// Property-based fuzz of every operation in the control plane's own OpenAPI document (/docs/json):
// values generated from each operation's schemas, then hostile mutations (integers past their column,
// NUL, lone surrogates, overlong strings, wrong types, path traversal, odd media types), sent with
// every role's token. Whatever is sent, the answer is never a 5xx.
import SwaggerParser from '@apidevtools/swagger-parser';
import fc from 'fast-check';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { describe, expect, it } from 'vitest';
import { sha256Hex } from '../../common/digest.js';
import { ADMIN_TOKEN, build, call, createToken, registerWorker, useTestDatabase } from './support.js';

const db = useTestDatabase();

/** Runs per operation: with ~25 operations, a few hundred requests in all. */
const RUNS_PER_OPERATION = 12;
const SEED = Number(process.env.RGRID_FUZZ_SEED ?? Date.now() % 2_147_483_647);

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };
/** The parts of JSON Schema (as the OpenAPI document carries it) that the generator reads. */
interface Schema {
  type?: string;
  const?: Json;
  enum?: Json[];
  format?: string;
  pattern?: string;
  minLength?: number;
  maxLength?: number;
  minimum?: number;
  maximum?: number;
  nullable?: boolean;
  anyOf?: Schema[];
  oneOf?: Schema[];
  allOf?: Schema[];
  items?: Schema;
  maxItems?: number;
  properties?: Record<string, Schema>;
  patternProperties?: Record<string, Schema>;
  required?: string[];
  additionalProperties?: boolean | Schema;
}
interface Parameter {
  in: string;
  name: string;
  schema: Schema;
}
interface OpenApiDocument {
  paths: Record<string, Record<string, { parameters?: Parameter[]; requestBody?: { content?: Record<string, { schema?: Schema }> } }>>;
}

// ---- values that look right, from a JSON schema ----------------------------------------------------

function stringFrom(schema: Schema): fc.Arbitrary<string> {
  if (schema.enum) return fc.constantFrom(...schema.enum.map(String));
  if (schema.format === 'uuid') return fc.uuid();
  if (schema.format === 'date-time') return fc.date({ min: new Date('2000-01-01'), max: new Date('2100-01-01'), noInvalidDate: true }).map((d) => d.toISOString());
  const maxLength = Math.min(schema.maxLength ?? 40, 40);
  if (schema.pattern) {
    try {
      return fc.stringMatching(new RegExp(schema.pattern, 'u')).filter((s) => s.length >= (schema.minLength ?? 0) && s.length <= (schema.maxLength ?? Infinity));
    } catch {
      // A pattern fast-check cannot generate from (lookaheads): plain text, which often fails it.
    }
  }
  return fc.string({ minLength: schema.minLength ?? 0, maxLength });
}

function arbitraryFrom(schema: Schema | undefined, depth = 0): fc.Arbitrary<Json> {
  if (!schema || Object.keys(schema).length === 0) return fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>;
  const nullable = schema.nullable === true ? (a: fc.Arbitrary<Json>) => fc.oneof(a, fc.constant(null)) : (a: fc.Arbitrary<Json>) => a;
  const alternatives = schema.anyOf ?? schema.oneOf;
  if (alternatives) return fc.oneof(...alternatives.map((s) => arbitraryFrom(s, depth)));
  if (schema.allOf) return arbitraryFrom({ ...schema.allOf[1], ...schema.allOf[0] }, depth);
  if (schema.const !== undefined) return fc.constant(schema.const);
  if (schema.enum) return nullable(fc.constantFrom(...schema.enum));
  switch (schema.type) {
    case 'string':
      return nullable(stringFrom(schema));
    case 'integer':
      return nullable(fc.integer({ min: Math.max(schema.minimum ?? -1e6, -2_147_483_648), max: Math.min(schema.maximum ?? 1e6, 2_147_483_647) }));
    case 'number':
      return nullable(fc.double({ min: schema.minimum ?? -1e6, max: schema.maximum ?? 1e6, noNaN: true, noDefaultInfinity: true }));
    case 'boolean':
      return nullable(fc.boolean());
    case 'null':
      return fc.constant(null);
    case 'array':
      return nullable(depth > 3 ? fc.constant([]) : fc.array(arbitraryFrom(schema.items, depth + 1), { maxLength: Math.min(schema.maxItems ?? 3, 3) }));
    case 'object': {
      if (depth > 3) return fc.constant({});
      const props = Object.entries(schema.properties ?? {});
      const required = new Set(schema.required ?? []);
      const record: Record<string, fc.Arbitrary<Json>> = {};
      for (const [key, s] of props) record[key] = arbitraryFrom(s, depth + 1);
      const known = fc.record(record, { requiredKeys: props.map(([k]) => k).filter((k) => required.has(k)) });
      const [keyPattern, valueSchema] = Object.entries(schema.patternProperties ?? {})[0] ?? [];
      const extra = schema.additionalProperties && typeof schema.additionalProperties === 'object'
        ? fc.dictionary(fc.string({ maxLength: 12 }), arbitraryFrom(schema.additionalProperties, depth + 1), { maxKeys: 3 })
        : keyPattern !== undefined
          ? fc.dictionary(fc.stringMatching(new RegExp(keyPattern, 'u')).filter((k) => k.length <= 64), arbitraryFrom(valueSchema, depth + 1), { maxKeys: 3 })
          : fc.constant({});
      return nullable(fc.tuple(known, extra).map(([k, e]) => ({ ...e, ...k })));
    }
    default:
      return fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>;
  }
}

// ---- hostile mutations -------------------------------------------------------------------------------

const HOSTILE: Json[] = [
  2 ** 31, -(2 ** 31) - 1, 2 ** 53, 2 ** 63, -(2 ** 63), 1e308, -1, 0.5, 1e-7,
  '', '\u0000', 'a\u0000b', '\ud800', 'x\udfffy', '\u202e\u2066', 'x'.repeat(5000), '\u00e9'.repeat(3000),
  '2016-12-31T23:59:60Z', '0000-01-01T00:00:00Z', '9999-12-31T23:59:59.999999999+23:59', '../../../etc/passwd', '%00',
  'AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAAA', 'urn:uuid:00000000-0000-0000-0000-000000000000',
  true, null, [], {}, [1, 'a', null], { a: { b: { c: [] } } },
];
const hostile = fc.constantFrom(...HOSTILE);

/** Every place in `value` a mutation can go: [parent, key] pairs, plus the root itself. */
function slots(value: Json): Array<[Record<string, Json> | Json[], string | number]> {
  const out: Array<[Record<string, Json> | Json[], string | number]> = [];
  const walk = (v: Json): void => {
    if (Array.isArray(v)) {
      v.forEach((item, i) => {
        out.push([v, i]);
        walk(item);
      });
    } else if (v && typeof v === 'object') {
      for (const [k, item] of Object.entries(v)) {
        out.push([v, k]);
        walk(item);
      }
    }
  };
  walk(value);
  return out;
}

/** A valid-looking value, sometimes with one or two hostile changes (a leaf replaced, a key added, the whole value). */
function mutated(schema: Schema | undefined): fc.Arbitrary<Json> {
  return fc.tuple(arbitraryFrom(schema), fc.array(fc.tuple(fc.nat(), hostile, fc.constantFrom('replace', 'add-key', 'root')), { maxLength: 2 })).map(([base, changes]) => {
    let value = structuredClone(base);
    for (const [pick, bad, how] of changes) {
      const places = slots(value);
      if (how === 'root' || places.length === 0) value = bad;
      else if (how === 'add-key' && value && typeof value === 'object' && !Array.isArray(value)) value[`k\u0000${pick % 7}`] = bad;
      else {
        const [parent, key] = places[pick % places.length]!;
        (parent as Record<string, Json>)[key as string] = bad;
      }
    }
    return value;
  });
}

/** encodeURIComponent refuses lone surrogates; those go in as U+FFFD here (HOSTILE_PATH sends their raw bytes). */
const enc = (s: string): string => encodeURIComponent(s.replace(/[\ud800-\udfff]/gu, '\ufffd'));
const HOSTILE_PATH = ['%ED%A0%80', '..', '.', '..%2F..%2Fetc%2Fpasswd', '%2e%2e', '%00', 'a%00b', '%E0%A4%A', '%ZZ', 'x'.repeat(129), 'y'.repeat(128), '%F0%9F%98%80', 'urn:uuid:00000000-0000-0000-0000-000000000000'];
const CONTENT_TYPES = ['application/json', 'application/json', 'application/json', 'text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=utf-16', 'multipart/form-data; boundary=x', 'application/octet-stream', undefined];

// ---- the fuzz ----------------------------------------------------------------------------------------

interface Operation {
  method: string;
  path: string;
  params: Parameter[];
  body: Schema | undefined;
}

function operationsOf(doc: OpenApiDocument): Operation[] {
  const ops: Operation[] = [];
  for (const [path, methods] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(methods)) {
      ops.push({ method: method.toUpperCase(), path, params: op.parameters ?? [], body: op.requestBody?.content?.['application/json']?.schema });
    }
  }
  return ops;
}

interface Known {
  tokens: Record<'admin' | 'scheduler' | 'client' | 'worker', string>;
  workerId: string;
  executionId: string;
  claimId: string;
  blob: string;
}

type Role = keyof Known['tokens'];
const ROLES: Role[] = ['admin', 'scheduler', 'client', 'worker'];

/** The roles an operation admits: auth answers 403 for the others before looking at anything else. */
async function rolesOf(app: FastifyInstance, op: Operation, known: Known): Promise<Role[]> {
  const url = op.path.replace(/\{[^}]+\}/g, 'x');
  const allowed: Role[] = [];
  for (const role of ROLES) {
    const res = await app.inject({ method: op.method as 'GET', url, headers: { authorization: `Bearer ${known.tokens[role]}` } });
    // A HEAD answer has no body to read the reason from: any 403 counts as the role's.
    const refused = res.statusCode === 403 && (op.method === 'HEAD' || res.json<{ message: string }>().message.startsWith('role'));
    if (!refused) allowed.push(role);
  }
  return allowed;
}

function requestOf(op: Operation, known: Known, allowed: Role[]) {
  const pathParams = op.params.filter((p) => p.in === 'path');
  const queryParams = op.params.filter((p) => p.in === 'query');
  const knownFor = (name: string): string[] =>
    name === 'worker_id' ? [known.workerId] : name === 'sha256' || name === 'input_sha256' ? [known.blob] : name === 'id' || name === 'execution_id' ? [known.executionId] : [];
  const pathValue = (p: Parameter) =>
    fc.oneof(
      { arbitrary: fc.constantFrom(...knownFor(p.name), 'fallback').map(enc), weight: knownFor(p.name).length > 0 ? 3 : 0 },
      { arbitrary: arbitraryFrom(p.schema).map((v) => enc(typeof v === 'string' ? v : JSON.stringify(v))), weight: 2 },
      { arbitrary: fc.constantFrom(...HOSTILE_PATH), weight: 2 },
      { arbitrary: hostile.map((v) => enc(typeof v === 'string' ? v : JSON.stringify(v))), weight: 1 },
    );
  const queryValue = (p: Parameter) =>
    fc.option(fc.oneof({ arbitrary: arbitraryFrom(p.schema), weight: 3 }, { arbitrary: hostile, weight: 1 }), { nil: undefined });
  const body = op.body === undefined ? fc.constant(undefined) : fc.oneof(
    { arbitrary: arbitraryFrom(op.body), weight: 2 },
    { arbitrary: mutated(op.body), weight: 5 },
    { arbitrary: fc.constant({ claim_id: known.claimId, outcome: 'done', exit_code: 2 ** 31, stdout: 'a\u0000b', timings: { 'run\u0000': 1 } }), weight: 1 },
  );
  return fc.record({
    path: fc.tuple(...pathParams.map(pathValue)),
    query: fc.tuple(...queryParams.map(queryValue)),
    body,
    contentType: fc.constantFrom(...CONTENT_TYPES),
    // Mostly a role the route admits, so the request reaches the handler; sometimes any other, or none.
    role: fc.oneof(
      { arbitrary: fc.constantFrom(...(allowed.length > 0 ? allowed : ROLES)), weight: 8 },
      { arbitrary: fc.constantFrom<Role | 'none' | 'garbage'>(...ROLES, 'none', 'garbage'), weight: 2 },
    ),
    rawBody: fc.option(fc.constantFrom('{', '{"a":', '\u0000', '[]', 'null', '{"__proto__":{"x":1}}', '{"constructor":{"prototype":{}}}', '\ud800'), { freq: 10 }),
  }).map((r) => {
    let url = op.path;
    pathParams.forEach((p, i) => (url = url.replace(`{${p.name}}`, r.path[i]!)));
    const search = new URLSearchParams();
    queryParams.forEach((p, i) => {
      const v = r.query[i];
      if (v !== undefined) search.set(p.name, typeof v === 'string' ? v : JSON.stringify(v));
    });
    const qs = search.toString();
    const token = r.role === 'none' ? undefined : r.role === 'garbage' ? 'rgrid_not_a_token' : known.tokens[r.role];
    const payload = op.body === undefined ? undefined : (r.rawBody ?? JSON.stringify(r.body));
    return {
      method: op.method as 'GET',
      url: qs ? `${url}?${qs}` : url,
      headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(payload !== undefined && r.contentType ? { 'content-type': r.contentType } : {}) },
      ...(payload !== undefined ? { payload } : {}),
    };
  });
}

async function setUp(app: FastifyInstance): Promise<Known> {
  const account = 'fuzz';
  const workerId = 'fuzz-worker-1';
  const tokens = {
    admin: ADMIN_TOKEN,
    scheduler: await createToken(app, account, 'scheduler'),
    client: await createToken(app, account, 'client'),
    worker: await createToken(app, account, 'worker', workerId),
  };
  await registerWorker(app, tokens.worker, workerId);
  expect((await call(app, 'PUT', `/v1/workers/${workerId}/snapshot`, tokens.worker, { entries: [] })).statusCode).toBe(200);
  const script = Buffer.from('print("fuzz")\n');
  const blob = sha256Hex(script);
  expect((await app.inject({ method: 'PUT', url: `/v1/blobs/${blob}`, headers: { authorization: `Bearer ${tokens.client}` }, payload: script })).statusCode).toBe(201);
  const submitted = await call(app, 'POST', '/v1/executions/submit', tokens.client, { runtime: 'python3.11', script_sha256: blob });
  expect(submitted.statusCode, submitted.body).toBe(201);
  const claimed = await call(app, 'POST', `/v1/workers/${workerId}/claim`, tokens.worker, { max: 1, wait_ms: 0 });
  const claim = claimed.json().claims[0];
  return { tokens, workerId, executionId: claim?.execution_id ?? submitted.json().id, claimId: claim?.claim_id ?? '00000000-0000-0000-0000-000000000000', blob };
}

describe('fuzz of every route in the OpenAPI document', () => {
  it(`never answers 5xx (seed ${SEED})`, async () => {
    // Long polls answer at once, and no address is throttled for the fuzz's garbage tokens.
    const app = await build(db, { claimWaitMaxMs: 0, authFailuresPerMinute: 0, tokenRateLimitPerMinute: 0 });
    const known = await setUp(app);
    // The generator reads schemas inline: the named components are dereferenced first.
    const published = (await app.inject({ method: 'GET', url: '/docs/json' })).json<OpenApiDocument>();
    const doc = (await SwaggerParser.dereference(structuredClone(published) as never)) as unknown as OpenApiDocument;
    const operations = operationsOf(doc);
    expect(operations.length).toBeGreaterThan(20);
    let sent = 0;
    const statuses = new Map<number, number>();
    for (const op of operations) {
      await fc.assert(
        fc.asyncProperty(requestOf(op, known, await rolesOf(app, op, known)), async (request) => {
          sent++;
          const res: LightMyRequestResponse = await app.inject(request);
          statuses.set(res.statusCode, (statuses.get(res.statusCode) ?? 0) + 1);
          if (res.statusCode >= 500) {
            throw new Error(`${op.method} ${op.path}: ${res.statusCode} ${res.body.slice(0, 300)} for ${JSON.stringify(request).slice(0, 600)}`);
          }
          // Every error answer is in the project's shape.
          if (res.statusCode >= 400 && res.body !== "") {
            const body = res.json();
            expect(typeof body.error, res.body).toBe('string');
            expect(typeof body.message, res.body).toBe('string');
          }
        }),
        { numRuns: RUNS_PER_OPERATION, seed: SEED, endOnFailure: true },
      );
    }
    expect(sent).toBeGreaterThanOrEqual(operations.length * RUNS_PER_OPERATION);
    // The fuzz reached handlers, not only the validators.
    expect([...statuses.keys()].some((s) => s < 300)).toBe(true);
  });
});
