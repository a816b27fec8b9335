import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { RgridError } from '../../common/errors.js';
import { AccountId, CreateTokenRequest, CreateTokenResponse, TokenInfo, TokenListResponse, Uuid } from '../../common/wire/control-api.js';
import {
  AccountParams, RevokeShareQuery, RunLimitsResponse, SetRunLimitsRequest, ShareWorkerRequest, WorkerListResponse, WorkerParams, WorkerShareInfo,
  WorkerShareParams, WorkerTenancyResponse, type WorkerInfo,
} from '../../common/wire/tenancy-api.js';
import { withTransaction } from '../db/pool.js';
import { clearOverrides, describeLimits, writeOverrides } from '../dispatch/run-limits.js';
import { errors } from '../openapi.js';
import type { TokenRow } from '../repositories/tokens.js';
import type { WorkerRow, WorkerShare } from '../repositories/workers.js';

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

export function shareInfo(row: WorkerShare): WorkerShareInfo {
  return {
    ...row,
    granted_at: row.granted_at.toISOString(),
    revoked_at: row.revoked_at?.toISOString() ?? null,
  };
}

export function workerInfo(row: WorkerRow): WorkerInfo {
  return {
    worker_id: row.worker_id,
    host: row.host,
    capacity: row.capacity,
    labels: row.labels,
    engine: row.engine,
    disk_total_bytes: row.disk_total_bytes,
    disk_used_bytes: row.disk_used_bytes,
    running: row.running,
    load1: row.load1,
    agent_version: row.agent_version,
    registered_at: row.registered_at.toISOString(),
    last_seen_at: row.last_seen_at.toISOString(),
    snapshot_at: row.snapshot_at?.toISOString() ?? null,
    token_id: row.token_id ?? null,
    leaving_at: row.leaving_at?.toISOString() ?? null,
  };
}

/**
 * The admin token is one shared secret, so "who" is the admin principal plus the name the operator gives
 * (`by`), recorded with every tenancy and limit change.
 */
const actor = (by: string | undefined): string => (by ? `admin:${by}` : 'admin');

const adminRoutes: FastifyPluginCallbackTypebox = (app, _opts, done) => {
  const roles = ['admin'] as const;
  const tags = ['admin'];

  app.post(
    '/admin/tokens',
    { config: { roles }, schema: { operationId: 'createToken', summary: 'Creates a token; the secret is in this answer only', tags, body: CreateTokenRequest, response: { 201: CreateTokenResponse } } },
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
    { config: { roles }, schema: { operationId: 'listTokens', tags, querystring: Type.Object({ account: Type.Optional(AccountId) }), response: { 200: TokenListResponse } } },
    async (request) => ({ tokens: (await app.repos.tokens.list({ account: request.query.account })).map(tokenInfo) }),
  );

  app.delete(
    '/admin/tokens/:id',
    { config: { roles }, schema: { operationId: 'revokeToken', tags, params: Type.Object({ id: Uuid }), response: { 200: TokenInfo, ...errors([404]) } } },
    async (request) => {
      const row = await app.repos.tokens.revoke(request.params.id);
      // This process stops accepting it at once; other replicas within tokenCacheMs.
      app.tokenCache.clear();
      if (!row) throw new RgridError('not_found', `no token ${request.params.id}`);
      return tokenInfo(row);
    },
  );

  // ---- tenancy: a worker id belongs to the account of its first worker token; shares are explicit ------

  app.get(
    '/admin/workers/:worker_id/shares',
    { config: { roles }, schema: { operationId: 'getWorkerTenancy', summary: "A worker id's owner and its shares", tags, params: WorkerParams, response: { 200: WorkerTenancyResponse } } },
    async (request) => {
      const workerId = request.params.worker_id;
      const [binding, shares] = await Promise.all([app.repos.workers.binding(workerId), app.repos.workers.shares(workerId)]);
      return {
        worker_id: workerId,
        owner: binding ? { account: binding.account, bound_at: binding.bound_at.toISOString() } : null,
        shares: shares.map(shareInfo),
      };
    },
  );

  app.post(
    '/admin/workers/:worker_id/shares',
    {
      config: { roles },
      schema: {
        operationId: 'shareWorker',
        summary: 'Lets another account use a worker',
        tags, params: WorkerParams, body: ShareWorkerRequest,
        response: { 200: WorkerShareInfo, 201: WorkerShareInfo, ...errors([404]) },
      },
    },
    async (request, reply) => {
      const workerId = request.params.worker_id;
      const { account, reason, by } = request.body;
      const granted = await withTransaction(app.db, (tx) => app.repos.workers.grantShare(workerId, account, actor(by), reason, tx));
      if (!granted) throw new RgridError('not_found', `worker id ${workerId} has no owner yet: create its first worker token, which binds it to that token's account`);
      // The owner's tokens now serve the account too: every token of this worker is looked up again.
      app.tokenCache.clear();
      if (granted.created) request.log.info({ worker_id: workerId, account, by: granted.share.granted_by, reason }, 'worker shared with another account');
      return reply.code(granted.created ? 201 : 200).send(shareInfo(granted.share));
    },
  );

  app.delete(
    '/admin/workers/:worker_id/shares/:account',
    { config: { roles }, schema: { operationId: 'revokeWorkerShare', tags, params: WorkerShareParams, querystring: RevokeShareQuery, response: { 200: WorkerShareInfo, ...errors([404]) } } },
    async (request) => {
      const { worker_id: workerId, account } = request.params;
      const revoked = await withTransaction(app.db, (tx) => app.repos.workers.revokeShare(workerId, account, actor(request.query.by), request.query.reason ?? null, tx));
      if (!revoked) throw new RgridError('not_found', `worker ${workerId} is not shared with account ${account}`);
      // This process stops accepting the account's tokens of this worker at once; other replicas within
      // tokenCacheMs. Claims of that account held by the worker are refused from the next renewal on, and
      // its queued work there is placed elsewhere by the next sweep.
      app.tokenCache.clear();
      request.log.info({ worker_id: workerId, account, by: revoked.revoked_by }, 'worker share revoked');
      return shareInfo(revoked);
    },
  );

  // ---- run limits per account ---------------------------------------------------------------------------

  app.get(
    '/admin/accounts/:account/run-limits',
    { config: { roles }, schema: { operationId: 'getRunLimits', tags, params: AccountParams, response: { 200: RunLimitsResponse } } },
    async (request) => describeLimits(app.db, request.params.account, app.config),
  );

  app.put(
    '/admin/accounts/:account/run-limits',
    { config: { roles }, schema: { operationId: 'setRunLimits', tags, params: AccountParams, body: SetRunLimitsRequest, response: { 200: RunLimitsResponse } } },
    async (request) => {
      const account = request.params.account;
      await writeOverrides(app.db, account, request.body, actor(request.body.by));
      request.log.info({ account, limits: request.body }, 'run limits set');
      return describeLimits(app.db, account, app.config);
    },
  );

  app.delete(
    '/admin/accounts/:account/run-limits',
    { config: { roles }, schema: { operationId: 'clearRunLimits', tags, params: AccountParams, response: { 200: RunLimitsResponse } } },
    async (request) => {
      await clearOverrides(app.db, request.params.account);
      return describeLimits(app.db, request.params.account, app.config);
    },
  );

  app.get(
    '/admin/workers',
    { config: { roles }, schema: { operationId: 'listWorkers', summary: 'Every registered worker, as it last reported', tags, response: { 200: WorkerListResponse } } },
    async () => ({ workers: (await app.repos.workers.list()).map(workerInfo) }),
  );
  done();
};
export default adminRoutes;
