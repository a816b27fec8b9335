import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { RgridError } from '../../common/errors.js';
import { AccountId, CreateTokenRequest, CreateTokenResponse, TokenInfo } from '../../common/wire/control-api.js';
import type { TokenRow } from '../repositories/tokens.js';

export function tokenInfo(row: TokenRow): TokenInfo {
  return {
    id: row.id,
    role: row.role,
    account: row.account,
    worker_id: row.worker_id,
    created_at: row.created_at.toISOString(),
    expires_at: row.expires_at?.toISOString() ?? null,
    revoked: row.revoked,
  };
}

const adminRoutes: FastifyPluginCallbackTypebox = (app, _opts, done) => {
  const roles = ['admin'] as const;

  app.post(
    '/admin/tokens',
    { config: { roles }, schema: { tags: ['admin'], body: CreateTokenRequest, response: { 201: CreateTokenResponse } } },
    async (request, reply) => {
      const body = request.body;
      if (body.role === 'worker' && !body.worker_id) throw new RgridError('bad_request', 'a worker token needs worker_id');
      if (body.role !== 'worker' && body.worker_id) throw new RgridError('bad_request', 'only worker tokens carry a worker_id');
      const expiresAt = body.expires_at ? new Date(body.expires_at) : null;
      const { token, row } = await app.repos.tokens.create({
        account: body.account, role: body.role, workerId: body.worker_id ?? null, expiresAt, description: body.description ?? null,
      });
      // A new worker token changes the accounts its worker's other (cached) tokens serve.
      app.tokenCache.clear();
      return reply.code(201).send({ token, ...tokenInfo(row) });
    },
  );

  app.get(
    '/admin/tokens',
    { config: { roles }, schema: { tags: ['admin'], querystring: Type.Object({ account: Type.Optional(AccountId) }), response: { 200: Type.Object({ tokens: Type.Array(TokenInfo) }) } } },
    async (request) => ({ tokens: (await app.repos.tokens.list({ account: request.query.account })).map(tokenInfo) }),
  );

  app.delete(
    '/admin/tokens/:id',
    { config: { roles }, schema: { tags: ['admin'], params: Type.Object({ id: Type.String({ format: 'uuid' }) }), response: { 200: TokenInfo } } },
    async (request) => {
      const row = await app.repos.tokens.revoke(request.params.id);
      // This process stops accepting it at once; other replicas within tokenCacheMs.
      app.tokenCache.clear();
      if (!row) throw new RgridError('not_found', `no token ${request.params.id}`);
      return tokenInfo(row);
    },
  );

  app.get(
    '/admin/workers',
    { config: { roles }, schema: { tags: ['admin'] } },
    async () => {
      const rows = await app.repos.workers.list();
      return { workers: rows };
    },
  );
  done();
};
export default adminRoutes;
