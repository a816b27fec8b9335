import Type from 'typebox';
import { RgridError } from '../../common/errors.js';

/**
 * Request schemas of the socket API (validated by Fastify). File contents travel base64-encoded, so a
 * script or requirements file reaches the agent byte for byte (script_sha256 hashes the exact bytes, and
 * a non-UTF-8 requirements file must be rejected by the agent, not mangled by the transport).
 */
const Base64 = Type.String({ description: 'base64-encoded bytes' });

export const EnsureBody = Type.Object(
  {
    script: Base64,
    requirements: Type.Optional(Type.Union([Base64, Type.Null()])),
    runtime: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    account: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
  },
  { additionalProperties: false },
);
export type EnsureBody = Type.Static<typeof EnsureBody>;

export const RunBody = Type.Object(
  {
    script: Base64,
    requirements: Type.Optional(Type.Union([Base64, Type.Null()])),
    runtime: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
    account: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
    inputs: Type.Optional(Type.Array(Type.Object({ name: Type.String(), data: Base64 }, { additionalProperties: false }), { maxItems: 10_000 })),
    timeout_s: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
    memory_mb: Type.Optional(Type.Integer({ minimum: 16 })),
    cpus: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
    collect_outputs: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);
export type RunBody = Type.Static<typeof RunBody>;

export const EntriesQuery = Type.Object(
  {
    kind: Type.Optional(Type.Union([Type.Literal('image'), Type.Literal('deps')])),
    account: Type.Optional(Type.String({ minLength: 1 })),
  },
  { additionalProperties: false },
);
export type EntriesQuery = Type.Static<typeof EntriesQuery>;

/** Decodes base64 strictly enough to refuse text that is not base64 at all. */
export function decodeBase64(value: string, field: string): Buffer {
  if (!/^[A-Za-z0-9+/]*={0,2}$/.test(value) || value.length % 4 === 1) {
    throw new RgridError('bad_request', `${field} is not base64`);
  }
  return Buffer.from(value, 'base64');
}
