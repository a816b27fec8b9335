// The application role on a database laid out the old way (everything created and owned by the
// superuser): provisioning hands the database and its objects to a role without special rights, the
// control plane migrates and works as that role, and provisioning again changes nothing.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { migrate } from '../../control/db/migrate.js';
import { provisionAppRole, scramVerifier } from '../../control/db/roles.js';

const serverUrl = inject('databaseUrl');
const suffix = randomBytes(4).toString('hex');
const database = `rgrid_legacy_${suffix}`;
const role = `rgrid_app_${suffix}`;
const quiet = { info: () => undefined, warn: () => undefined, error: (m: string) => console.error(m) };

const urlFor = (name: string): string => {
  const u = new URL(serverUrl);
  u.pathname = `/${name}`;
  return u.toString();
};

async function asSuperuser<T>(url: string, fn: (c: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

afterAll(async () => {
  await asSuperuser(serverUrl, async (c) => {
    await c.query(`DROP DATABASE IF EXISTS ${database} WITH (FORCE)`);
    await c.query(`DROP ROLE IF EXISTS ${role}`);
  });
});

describe('the application role', () => {
  it('takes over a superuser-owned database, migrates and writes as itself, and is not a superuser', async () => {
    // The old layout: database and tables owned by the superuser.
    await asSuperuser(serverUrl, (c) => c.query(`CREATE DATABASE ${database}`));
    await migrate(urlFor(database), quiet);
    await asSuperuser(urlFor(database), (c) => c.query(`INSERT INTO accounts (account_id) VALUES ('legacy')`));

    const password = randomBytes(18).toString('base64url');
    const appUrl = await provisionAppRole(serverUrl, { role, database, password });
    expect(new URL(appUrl).username).toBe(role);

    const app = new pg.Client({ connectionString: appUrl });
    await app.connect();
    try {
      const me = await app.query<{ rolsuper: boolean; rolcreatedb: boolean; rolcreaterole: boolean; rolbypassrls: boolean }>(
        'SELECT rolsuper, rolcreatedb, rolcreaterole, rolbypassrls FROM pg_roles WHERE rolname = current_user',
      );
      expect(me.rows[0]).toEqual({ rolsuper: false, rolcreatedb: false, rolcreaterole: false, rolbypassrls: false });
      const notMine = await app.query(`SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tableowner <> current_user`);
      expect(notMine.rows).toEqual([]);
      expect((await app.query(`SELECT account_id FROM accounts`)).rows).toEqual([{ account_id: 'legacy' }]);
      await app.query(`INSERT INTO accounts (account_id) VALUES ('new')`);
    } finally {
      await app.end();
    }
    // Later migrations run as the role (here: nothing left to apply, but the runner's own table is used).
    await expect(migrate(appUrl, quiet)).resolves.toEqual({ applied: [] });

    // Again, as at every start: idempotent, and the password follows the file.
    const next = randomBytes(18).toString('base64url');
    const again = await provisionAppRole(serverUrl, { role, database, password: next });
    await asSuperuser(again, async (c) => expect((await c.query<{ u: string }>('SELECT current_user AS u')).rows[0]!.u).toBe(role));
    await expect(asSuperuser(appUrl, (c) => c.query('SELECT 1'))).rejects.toThrow(/password authentication failed/);
  });

  it('sends PostgreSQL a SCRAM verifier, never the password', () => {
    const verifier = scramVerifier('secret-password');
    expect(verifier).toMatch(/^SCRAM-SHA-256\$4096:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/);
    expect(verifier).not.toContain('secret-password');
    expect(scramVerifier('secret-password')).not.toBe(verifier); // salted
  });
});
