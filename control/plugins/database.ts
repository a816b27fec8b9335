import fp from 'fastify-plugin';
import { createPool, type Db } from '../db/pool.js';
import { createTokenRepository, type TokenRepository } from '../repositories/tokens.js';
import { createWorkerRepository, type WorkerRepository } from '../repositories/workers.js';
import { createEntryRepository, type EntryRepository } from '../repositories/entries.js';
import { createInputRepository, type InputRepository } from '../repositories/inputs.js';
import { createExecutionRepository, type ExecutionRepository } from '../repositories/executions.js';
import { createTokenCache, type TokenCache } from '../token-cache.js';

export interface Repositories {
  tokens: TokenRepository;
  workers: WorkerRepository;
  entries: EntryRepository;
  inputs: InputRepository;
  executions: ExecutionRepository;
}

declare module 'fastify' {
  interface FastifyInstance {
    db: Db;
    repos: Repositories;
    tokenCache: TokenCache;
  }
}

/**
 * The PostgreSQL pool and the repositories over it. A pool handed in by the caller (tests, the bench)
 * stays the caller's to close; a pool created here ends with the app.
 */
export default fp<{ databaseUrl: string; poolMax: number; pool?: Db; tokenCacheMs: number }>(
  (app, opts, done) => {
    const db = opts.pool ?? createPool(opts.databaseUrl, opts.poolMax);
    app.decorate('db', db);
    const tokens = createTokenRepository(db);
    app.decorate('repos', {
      tokens,
      workers: createWorkerRepository(db),
      entries: createEntryRepository(db),
      inputs: createInputRepository(db),
      executions: createExecutionRepository(db),
    });
    app.decorate('tokenCache', createTokenCache((hash) => tokens.lookupHash(hash), { ttlMs: opts.tokenCacheMs }));
    if (!opts.pool) app.addHook('onClose', async () => db.end());
    done();
  },
  { name: 'rgrid-database' },
);
