/**
 * Bearer-token authentication for the /v1 API. Registered inside the encapsulated /v1 context only, so
 * /healthz, /readyz, /metrics and /docs never pass through it. The role check runs here too (from the
 * route's `config.roles`), before any body is read: a wrong role never gets to stream an upload.
 * Failed authentications are counted per client address (auth-throttle.ts): past the limit, every
 * request from that address gets 429 before its token is even looked up.
 */
import fp from 'fastify-plugin';
import type { FastifyRequest } from 'fastify';
import { RgridError } from '../../common/errors.js';
import type { Role } from '../../common/wire/control-api.js';
import { tokensEqual } from '../repositories/tokens.js';
import { createFailureThrottle } from './auth-throttle.js';

export type AuthContext =
  | { role: 'admin'; tokenId: null }
  | { role: 'scheduler' | 'client'; tokenId: string; account: string }
  | { role: 'worker'; tokenId: string; account: string; workerId: string; accounts: string[] };

declare module 'fastify' {
  interface FastifyRequest {
    auth: AuthContext;
  }
  interface FastifyContextConfig {
    /** Roles allowed on the route; every /v1 route names them. */
    roles?: readonly Role[];
  }
}

function bearer(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  if (!header) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

export default fp(
  (app, _opts, done) => {
    app.decorateRequest('auth', null as never);
    const failures = createFailureThrottle({ maxPerWindow: app.config.authFailuresPerMinute, windowMs: 60_000 });
    const refuse = (request: FastifyRequest, message: string): RgridError => {
      failures.fail(request.ip);
      return new RgridError('unauthorized', message);
    };
    app.addHook('onRequest', async (request, reply) => {
      const blockedMs = failures.blockedForMs(request.ip);
      if (blockedMs > 0) {
        const seconds = Math.ceil(blockedMs / 1000);
        void reply.header('retry-after', String(seconds));
        throw new RgridError('rate_limited', `too many failed authentications from this address; retry in ${seconds} s`, { retry_after_s: seconds });
      }
      const token = bearer(request);
      if (!token) throw refuse(request, 'missing bearer token (Authorization: Bearer <token>)');
      const adminToken = app.config.adminToken;
      if (adminToken !== null && tokensEqual(token, adminToken)) {
        request.auth = { role: 'admin', tokenId: null };
      } else {
        // Cached for at most tokenCacheMs, never past the token's expiry (control/token-cache.ts).
        const row = await app.tokenCache.get(token);
        // One message for unknown, expired and revoked: a caller learns nothing about other tokens.
        if (!row || row.expired || row.revoked) throw refuse(request, 'unknown, expired or revoked token');
        request.auth =
          row.role === 'worker'
            ? { role: 'worker', tokenId: row.id, account: row.account, workerId: row.worker_id ?? '', accounts: row.worker_accounts }
            : { role: row.role, tokenId: row.id, account: row.account };
      }
      const roles = request.routeOptions.config.roles;
      if (!roles || !roles.includes(request.auth.role)) {
        throw new RgridError('forbidden', `role ${request.auth.role} may not ${request.method} ${request.routeOptions.url ?? request.url}`);
      }
    });
    done();
  },
  { name: 'rgrid-auth', dependencies: ['rgrid-database'] },
);

/**
 * The account a request acts on. Scheduler and client tokens are bound to one account (a different
 * `account` parameter is a 403). A worker may act for every account it serves and must name one when
 * it serves several.
 */
export function accountOf(request: FastifyRequest, requested?: string): string {
  const auth = request.auth;
  if (auth.role === 'admin') throw new RgridError('forbidden', 'the admin token does not act for an account');
  if (auth.role === 'worker') {
    if (requested !== undefined) {
      if (!auth.accounts.includes(requested)) throw new RgridError('forbidden', `worker ${auth.workerId} does not serve account ${requested}`);
      return requested;
    }
    if (auth.accounts.length === 1) return auth.accounts[0]!;
    throw new RgridError('bad_request', `worker ${auth.workerId} serves ${auth.accounts.length} accounts: name one with ?account=`);
  }
  if (requested !== undefined && requested !== auth.account) {
    throw new RgridError('forbidden', `this token belongs to account ${auth.account}, not ${requested}`);
  }
  return auth.account;
}

/** A worker token acts for its own worker id only. */
export function ownWorker(request: FastifyRequest, workerId: string): Extract<AuthContext, { role: 'worker' }> {
  const auth = request.auth;
  if (auth.role !== 'worker' || auth.workerId !== workerId) {
    throw new RgridError('forbidden', `this token may not act as worker ${workerId}`);
  }
  return auth;
}
