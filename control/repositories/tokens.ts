import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Db, Queryable } from '../db/pool.js';
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
  /** role worker: the accounts of all live worker tokens of this worker_id (what it may write). */
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

const COLUMNS = `token_id AS id, role, account_id AS account, worker_id, created_at, expires_at, revoked_at IS NOT NULL AS revoked`;

export function createTokenRepository(db: Db) {
  /** One round trip: the token and, for a worker, the accounts it serves. */
  async function lookupHash(tokenSha256: string, q: Queryable = db): Promise<TokenLookup | undefined> {
    const { rows } = await q.query<TokenLookup>({
      name: 'rgrid-token-lookup',
      text: `SELECT ${COLUMNS}, (expires_at IS NOT NULL AND expires_at <= now()) AS expired,
         (extract(epoch FROM expires_at - now()) * 1000)::float8 AS expires_in_ms,
         CASE WHEN t.role = 'worker' THEN ARRAY(
           SELECT DISTINCT w.account_id FROM tokens w
           WHERE w.worker_id = t.worker_id AND w.role = 'worker' AND w.revoked_at IS NULL
             AND (w.expires_at IS NULL OR w.expires_at > now()) ORDER BY 1)
         ELSE ARRAY[]::text[] END AS worker_accounts
       FROM tokens t WHERE token_sha256 = $1`,
      values: [tokenSha256],
    });
    return rows[0];
  }

  return {
    lookupHash,
    /** Creates the account if needed; returns the secret once (only its hash is stored). */
    async create(input: NewToken, q: Queryable = db): Promise<{ token: string; row: TokenRow }> {
      const token = TOKEN_PREFIX + randomBytes(32).toString('base64url');
      await q.query('INSERT INTO accounts (account_id) VALUES ($1) ON CONFLICT DO NOTHING', [input.account]);
      const { rows } = await q.query<TokenRow>(
        `INSERT INTO tokens (token_sha256, role, account_id, worker_id, expires_at, description)
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING ${COLUMNS}`,
        [hashToken(token), input.role, input.account, input.workerId ?? null, input.expiresAt ?? null, input.description ?? null],
      );
      return { token, row: rows[0]! };
    },

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
