import pg from 'pg';

/** Anything a repository can run a query on: the pool, or a client inside a transaction. */
export type Queryable = pg.Pool | pg.PoolClient;
export type Db = pg.Pool;

// int8 (bigint) columns hold sizes and counts that stay far below 2^53: parse them as numbers instead of
// strings so the wire schemas (integers) hold without a conversion at every call site.
pg.types.setTypeParser(20, (value) => Number(value));

/**
 * How long a request waits for a connection (a new one, or a free one when all `max` are busy). When
 * the database is down or saturated, requests fail with 503 after this instead of piling up.
 */
const CONNECT_TIMEOUT_MS = 10_000;

export function createPool(databaseUrl: string, max: number): Db {
  const pool = new pg.Pool({ connectionString: databaseUrl, max, application_name: 'rgrid-control', connectionTimeoutMillis: CONNECT_TIMEOUT_MS });
  // An idle client that loses its server (database restart) emits 'error' on the pool; without a
  // listener that would crash the process. The next query simply gets a fresh connection.
  pool.on('error', () => undefined);
  return pool;
}

/** Runs `fn` in one transaction on its own client: COMMIT on success, ROLLBACK on any throw. */
export async function withTransaction<T>(db: Db, fn: (tx: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await db.connect();
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}
