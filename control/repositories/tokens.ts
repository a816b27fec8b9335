import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { RgridError } from '../../common/errors.js';
import { shown } from '../../common/names.js';
import { withTransaction, type Db, type Queryable } from '../db/pool.js';
import type { Role } from '../../common/wire/control-api.js';

/** Tokens carry a recognisable prefix so a leaked one is easy to find in logs and scanners. */
const TOKEN_PREFIX = 'rgrid_';

export function hashToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/** Constant-time comparison through the hashes, so neither length nor content leaks through timing. */
export function tokensEqual(a: string, b: string): boolean {
  return timingSafeEqual(Buffer.from(hashToken(a), 'hex'), Buffer.from(hashToken(b), 'hex'));
}

export interface TokenRow {
  id: string;
  role: Exclude<Role, 'admin'>;
  account: string;
  worker_id: string | null;
  created_at: Date;
  expires_at: Date | null;
  revoked: boolean;
}

export interface TokenLookup extends TokenRow {
  /** Evaluated on the database clock, so every replica agrees on when a token expires. */
  expired: boolean;
  /**
   * role worker: the accounts this token serves (what it may read, write and claim). The owner's token:
   * the owner and every account the worker is shared to; a shared account's token: that account only.
   */
  worker_accounts: string[];
  /** Milliseconds until expires_at on the database clock (null: no expiry); bounds the token cache. */
  expires_in_ms: number | null;
}

export interface NewToken {
  account: string;
  role: TokenRow['role'];
  workerId?: string | null;
  expiresAt?: Date | null;
  description?: string | null;
}

/**
 * Binds `workerId` to `account` when the id has no owner yet (inside the caller's transaction), else
 * checks that `account` owns it or holds a standing share of it. A worker id is a global name: without
 * this, a token of any account naming another account's worker made that worker serve both.
 */
async function assertMayServe(q: Queryable, workerId: string, account: string, tokenId: string): Promise<void> {
  await q.query(
    'INSERT INTO worker_bindings (worker_id, account_id, bound_by_token) VALUES ($1, $2, $3) ON CONFLICT (worker_id) DO NOTHING',
    [workerId, account, tokenId],
  );
  // FOR SHARE: a concurrent grant or revocation of this worker's shares waits for this token to commit.
  const { rows } = await q.query<{ owner: string; shared: boolean }>(
    `SELECT b.account_id AS owner, EXISTS (SELECT 1 FROM worker_shares s WHERE s.worker_id = b.worker_id
       AND s.account_id = $2 AND s.revoked_at IS NULL) AS shared
     FROM worker_bindings b WHERE b.worker_id = $1 FOR SHARE`,
    [workerId, account],
  );
  const binding = rows[0]!;
  if (binding.owner !== account && !binding.shared) {
    throw new RgridError(
      'conflict',
      `worker id ${shown(workerId)} belongs to another account; a token of account ${shown(account)} needs a share of it (POST /v1/admin/workers/{worker_id}/shares)`,
    );
  }
}

const COLUMNS = `token_id AS id, role, account_id AS account, worker_id, created_at, expires_at, revoked_at IS NOT NULL AS revoked`;

export function createTokenRepository(db: Db) {
  /**
   * One round trip: the token and, for a worker, the accounts it serves (the view
   * live_worker_token_accounts, which placement reads too). A worker token of an account whose share
   * of the worker was revoked serves nothing and is answered as revoked: it stops working at once.
   */
  async function lookupHash(tokenSha256: string, q: Queryable = db): Promise<TokenLookup | undefined> {
    const { rows } = await q.query<TokenLookup>({
      name: 'rgrid-token-lookup',
      text: `SELECT token_id AS id, role, account_id AS account, worker_id, created_at, expires_at,
         (revoked_at IS NOT NULL OR (role = 'worker' AND cardinality(served.accounts) = 0)) AS revoked,
         (expires_at IS NOT NULL AND expires_at <= now()) AS expired,
         (extract(epoch FROM expires_at - now()) * 1000)::float8 AS expires_in_ms,
         served.accounts AS worker_accounts
       FROM tokens t,
         LATERAL (SELECT CASE WHEN t.role = 'worker' THEN ARRAY(
           SELECT DISTINCT v.account_id FROM live_worker_token_accounts v WHERE v.token_id = t.token_id ORDER BY 1)
           ELSE ARRAY[]::text[] END AS accounts) served
       WHERE token_sha256 = $1`,
      values: [tokenSha256],
    });
    return rows[0];
  }

  /**
   * Creates the account if needed; returns the secret once (only its hash is stored). A worker token
   * binds its worker id to its account when the id is new; a worker token of another account is
   * refused (conflict) unless the worker is shared to that account (worker_shares). On the pool it runs
   * in its own transaction; on a client, inside the caller's.
   */
  async function create(input: NewToken, q: Queryable = db): Promise<{ token: string; row: TokenRow }> {
    if (q === db) return withTransaction(db, (tx) => create(input, tx));
    const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
    await q.query('INSERT INTO accounts (account_id) VALUES ($1) ON CONFLICT DO NOTHING', [input.account]);
    const tokenId = randomUUID();
    if (input.role === 'worker' && input.workerId) await assertMayServe(q, input.workerId, input.account, tokenId);
    const { rows } = await q.query<TokenRow>(
      `INSERT INTO tokens (token_id, token_sha256, role, account_id, worker_id, expires_at, description)
       VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING ${COLUMNS}`,
      [tokenId, hashToken(token), input.role, input.account, input.workerId ?? null, input.expiresAt ?? null, input.description ?? null],
    );
    return { token, row: rows[0]! };
  }

  return {
    lookupHash,
    create,

    /** One round trip: the token and, for a worker, the accounts it serves (auth goes through control/token-cache.ts). */
    async lookup(token: string, q: Queryable = db): Promise<TokenLookup | undefined> {
      return lookupHash(hashToken(token), q);
    },

    async revoke(id: string, q: Queryable = db): Promise<TokenRow | undefined> {
      const { rows } = await q.query<TokenRow>(
        `UPDATE tokens SET revoked_at = coalesce(revoked_at, now()) WHERE token_id = $1 RETURNING ${COLUMNS}`,
        [id],
      );
      return rows[0];
    },

    async list(filter: { account?: string }, q: Queryable = db): Promise<TokenRow[]> {
      const { rows } = await q.query<TokenRow>(
        `SELECT ${COLUMNS} FROM tokens WHERE ($1::text IS NULL OR account_id = $1) ORDER BY created_at, token_id`,
        [filter.account ?? null],
      );
      return rows;
    },
  };
}
export type TokenRepository = ReturnType<typeof createTokenRepository>;
