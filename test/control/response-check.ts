/**
 * The response side of the API contract, checked on every answer the control-tier tests produce: the
 * status must be declared for the operation in the OpenAPI document (/docs/json), the media type must be
 * one it declares, and a JSON body must match the declared schema (ajv, JSON Schema 2020-12, the
 * document's own components). An answer outside any route (the router's 404, 414) must be an `Error`.
 * Checking against the published document rather than the route's schema also checks the document.
 */
import { Ajv2020, type ValidateFunction } from 'ajv/dist/2020.js';
import { fullFormats } from 'ajv-formats/dist/formats.js';
import type { FastifyInstance } from 'fastify';

interface MediaType {
  schema?: object;
}
interface ResponseObject {
  content?: Record<string, MediaType>;
}
interface Operation {
  responses: Record<string, ResponseObject>;
}
export interface OpenApiDocument {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, object> };
}

const DOCUMENT_ID = 'urn:rgrid:control-openapi';

/** An ajv for the document's schemas: JSON Schema 2020-12 (OpenAPI 3.1), strict, with the formats they use. */
export function documentAjv(doc: OpenApiDocument): Ajv2020 {
  const ajv = new Ajv2020({ strict: true, strictTypes: false, allErrors: true, validateSchema: false });
  for (const format of ['date-time', 'uuid'] as const) ajv.addFormat(format, fullFormats[format]);
  // The blob routes' bytes: not JSON, never validated here.
  ajv.addFormat('binary', true);
  // The document is not a schema, but its schemas are reachable inside it by JSON pointer: its own
  // top-level fields are made known (as annotations), so strict mode checks the schemas, not the document.
  ajv.addVocabulary(Object.keys(doc));
  ajv.addSchema(doc, DOCUMENT_ID);
  return ajv;
}

/** A JSON pointer into the document as a URI fragment. */
export function pointer(...tokens: string[]): string {
  return `${DOCUMENT_ID}#/${tokens.map((t) => encodeURIComponent(t.replaceAll('~', '~0').replaceAll('/', '~1'))).join('/')}`;
}

/** `/v1/executions/:id` → `/v1/executions/{id}` */
export const openApiPath = (url: string): string => url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

export interface Answer {
  method: string;
  /** The route's URL pattern; undefined when no route took the request (router 404, 414). */
  route: string | undefined;
  status: number;
  contentType: string | undefined;
  payload: unknown;
}

export class ResponseContract {
  private readonly ajv: Ajv2020;
  private readonly validators = new Map<string, ValidateFunction>();

  constructor(private readonly doc: OpenApiDocument) {
    this.ajv = documentAjv(doc);
  }

  private validator(ref: string): ValidateFunction {
    let validate = this.validators.get(ref);
    if (!validate) {
      validate = this.ajv.compile({ $ref: ref });
      this.validators.set(ref, validate);
    }
    return validate;
  }

  private json(ref: string, payload: unknown): string | undefined {
    let body: unknown;
    try {
      body = JSON.parse(Buffer.isBuffer(payload) ? payload.toString('utf8') : String(payload));
    } catch {
      return 'the body is not JSON';
    }
    const validate = this.validator(ref);
    return validate(body) ? undefined : `the body does not match ${ref.split('#')[1]}: ${this.ajv.errorsText(validate.errors)}`;
  }

  /** What is wrong with an answer, or undefined when it keeps the contract. */
  check(answer: Answer): string | undefined {
    const { method, route, status } = answer;
    if (route === undefined) {
      if (status < 400) return 'a success outside any route';
      return this.json(pointer('components', 'schemas', 'Error'), answer.payload);
    }
    const path = openApiPath(route);
    const methods = this.doc.paths[path];
    // Fastify answers HEAD for every GET route; the document lists the HEAD operations it means.
    const op = methods?.[method.toLowerCase()] ?? (method === 'HEAD' ? methods?.get : undefined);
    if (!op) return `${method} ${path} is not in the OpenAPI document`;
    const key = [String(status), `${String(status)[0]}XX`, 'default'].find((k) => op.responses[k] !== undefined);
    if (key === undefined) return `status ${status} is not declared (declared: ${Object.keys(op.responses).join(', ')})`;
    // HEAD answers have no body on the wire, whatever the handler or error handler passed on.
    if (method === 'HEAD') return undefined;
    const content = op.responses[key]!.content;
    const empty = answer.payload === undefined || answer.payload === null || answer.payload === '';
    if (!content) return empty ? undefined : 'a body where the document declares none';
    const media = (answer.contentType ?? '').split(';')[0]!.trim().toLowerCase();
    if (!(media in content)) return `media type ${JSON.stringify(media)} is not declared (declared: ${Object.keys(content).join(', ')})`;
    if (media !== 'application/json') return undefined;
    return this.json(pointer('paths', path, method.toLowerCase(), 'responses', key, 'content', media, 'schema'), answer.payload);
  }
}

/**
 * Checks every answer `app` sends against its own OpenAPI document; returns the list the violations go
 * to (the caller fails the test on any). Install before the app is ready.
 */
export function checkResponses(app: FastifyInstance): string[] {
  const violations: string[] = [];
  let contract: ResponseContract | undefined;
  app.addHook('onSend', async (request, reply, payload) => {
    const contentType = reply.getHeader('content-type');
    let problem: string | undefined;
    try {
      contract ??= new ResponseContract(app.swagger() as unknown as OpenApiDocument);
      problem = contract.check({
        method: request.method,
        route: request.routeOptions.url,
        status: reply.statusCode,
        contentType: typeof contentType === 'string' ? contentType : undefined,
        payload,
      });
    } catch (err) {
      // A schema of the document that does not compile is a broken contract too, not a broken answer.
      problem = `the check failed: ${(err as Error).message}`;
    }
    if (problem) violations.push(`${request.method} ${request.url.slice(0, 200)} → ${reply.statusCode}: ${problem}`);
    return payload;
  });
  return violations;
}
