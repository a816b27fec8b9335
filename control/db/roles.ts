/**
 * The database role the control plane works as. A superuser connection turns any SQL injection or
 * stolen database URL into command execution on the database host (`COPY ... TO PROGRAM`) and reads
 * of every database; the application needs none of that. On the embedded server the bootstrap
 * superuser is used only here, at start: it creates (or repairs) a login role with no special rights
 * that owns the application's database, and everything else — migrations included — runs as that
 * role. On an external server the operator does the equivalent once (docs/operations.md, Secrets).
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import pg from 'pg';

export const APP_ROLE = 'rgrid_app';
export const APP_DATABASE = 'rgrid';

export interface AppRoleOptions {
  role?: string;
  database?: string;
  /** The role's password; the server receives its SCRAM verifier only, never the password itself. */
  password: string;
}

/**
 * A SCRAM-SHA-256 verifier as PostgreSQL stores it. Sending this instead of the password keeps the
 * password out of the server's statement log (which records failed statements by default).
 */
export function scramVerifier(password: string, iterations = 4096): string {
  const salt = randomBytes(16);
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

function withDatabase(url: string, database: string): string {
  const u = new URL(url);
  u.pathname = `/${database}`;
  return u.toString();
}

/**
 * Makes sure `role` exists as a login role with no superuser, role-creation, database-creation,
 * replication or RLS-bypass right, that its password is `password`, and that it owns `database` and
 * every table, view, sequence, type and function in its public schema (an installation from before
 * this role existed has them owned by the superuser). Idempotent. Returns the role's URL.
 */
export async function provisionAppRole(superuserUrl: string, opts: AppRoleOptions): Promise<string> {
  const role = opts.role ?? APP_ROLE;
  const database = opts.database ?? APP_DATABASE;
  const admin = new pg.Client({ connectionString: superuserUrl, application_name: 'rgrid-control-provision' });
  await admin.connect();
  let transfer = false;
  try {
    const r = admin.escapeIdentifier(role);
    const rights = 'LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS';
    const verifier = admin.escapeLiteral(scramVerifier(opts.password));
    const exists = (await admin.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role])).rowCount === 1;
    await admin.query(`${exists ? 'ALTER' : 'CREATE'} ROLE ${r} WITH ${rights} PASSWORD ${verifier}`);

    const d = admin.escapeIdentifier(database);
    const owner = (await admin.query<{ owner: string }>('SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = $1', [database])).rows[0]?.owner;
    if (owner === undefined) {
      await admin.query(`CREATE DATABASE ${d} OWNER ${r}`);
    } else if (owner !== role) {
      await admin.query(`ALTER DATABASE ${d} OWNER TO ${r}`);
      transfer = true;
    }
    // Nobody else connects to the application's database (the superuser still can).
    await admin.query(`REVOKE ALL ON DATABASE ${d} FROM PUBLIC`);
  } finally {
    await admin.end();
  }
  if (transfer) await transferOwnership(withDatabase(superuserUrl, database), role);

  const u = new URL(withDatabase(superuserUrl, database));
  u.username = encodeURIComponent(role);
  u.password = encodeURIComponent(opts.password);
  return u.toString();
}

/** Hands the public schema's objects to `role` (tables first: their indexes and owned sequences follow). */
async function transferOwnership(databaseUrl: string, role: string): Promise<void> {
  const client = new pg.Client({ connectionString: databaseUrl, application_name: 'rgrid-control-provision' });
  await client.connect();
  try {
    const r = client.escapeIdentifier(role);
    const others = `pg_get_userbyid(%OWNER%) <> ${client.escapeLiteral(role)}`;
    const inPublic = `n.nspname = 'public'`;
    await client.query('BEGIN');
    const relations = await client.query<{ name: string; kind: string }>(
      `SELECT c.oid::regclass::text AS name, c.relkind::text AS kind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE ${inPublic} AND c.relkind IN ('r', 'p', 'v', 'm', 'f') AND ${others.replace('%OWNER%', 'c.relowner')}`,
    );
    const statement: Record<string, string> = { r: 'TABLE', p: 'TABLE', v: 'VIEW', m: 'MATERIALIZED VIEW', f: 'FOREIGN TABLE' };
    for (const rel of relations.rows) await client.query(`ALTER ${statement[rel.kind]} ${rel.name} OWNER TO ${r}`);
    // Sequences not owned by a column went with no table.
    const sequences = await client.query<{ name: string }>(
      `SELECT c.oid::regclass::text AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE ${inPublic} AND c.relkind = 'S' AND ${others.replace('%OWNER%', 'c.relowner')}`,
    );
    for (const seq of sequences.rows) await client.query(`ALTER SEQUENCE ${seq.name} OWNER TO ${r}`);
    const types = await client.query<{ name: string }>(
      `SELECT t.oid::regtype::text AS name FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
       WHERE ${inPublic} AND t.typtype IN ('e', 'd', 'r', 'm') AND ${others.replace('%OWNER%', 't.typowner')}`,
    );
    for (const type of types.rows) await client.query(`ALTER TYPE ${type.name} OWNER TO ${r}`);
    const routines = await client.query<{ name: string }>(
      `SELECT p.oid::regprocedure::text AS name FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
       WHERE ${inPublic} AND ${others.replace('%OWNER%', 'p.proowner')}`,
    );
    for (const routine of routines.rows) await client.query(`ALTER ROUTINE ${routine.name} OWNER TO ${r}`);
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    await client.end();
  }
}

/** Whether the connection's role is a superuser (the control plane warns when it is). */
export async function connectedAsSuperuser(databaseUrl: string): Promise<boolean> {
  const client = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: 10_000 });
  await client.connect();
  try {
    const { rows } = await client.query<{ rolsuper: boolean }>('SELECT rolsuper FROM pg_roles WHERE rolname = current_user');
    return rows[0]?.rolsuper === true;
  } finally {
    await client.end();
  }
}
