/* eslint-disable @typescript-eslint/no-unsafe-assignment, @typescript-eslint/no-unsafe-member-access --
   HTTP response bodies are untyped JSON here; every field used is checked by expect(). */
// A worker id belongs to the account of its first worker token. The attack: a token made for account
// "evil" naming acme's worker made that worker serve both accounts (evil's token read acme's blobs,
// evil's work was claimed with acme's credentials). Now such a token is refused unless the operator
// shares the worker explicitly — a grant that is recorded, listed and revocable.
import { describe, expect, it } from 'vitest';
import { isRgridError } from '../../common/errors.js';
import { createTokenRepository } from '../../control/repositories/tokens.js';
import { ADMIN_TOKEN, build, call, createToken, registerWorker, useTestDatabase } from './support.js';
import { claim, renew, row, submitted, upload, world } from './dispatch-support.js';

const db = useTestDatabase();

async function count(table: string): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${table}`);
  return rows[0]!.n;
}

function share(app: Parameters<typeof call>[0], workerId: string, body: Record<string, unknown>, token = ADMIN_TOKEN) {
  return call(app, 'POST', `/v1/admin/workers/${workerId}/shares`, token, body);
}

describe('a worker id belongs to one account', () => {
  it('refuses a token of another account for an existing worker id with 409, through the API and the repository, creating nothing', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const acme = await world(app, 'acme', 'acme-w1');
    const secret = await upload(app, acme.client, Buffer.from('acme secret\n'));
    const tokensBefore = await count('tokens');

    const res = await call(app, 'POST', '/v1/admin/tokens', ADMIN_TOKEN, { account: 'evil', role: 'worker', worker_id: 'acme-w1' });
    expect(res.statusCode).toBe(409);
    expect(res.json()).toEqual({ error: 'conflict', message: expect.stringContaining('acme-w1') });
    expect(res.json().message).not.toContain('\n');
    // The CLI (`rgrid-control token create`) goes through the repository: the same refusal.
    const direct = await createTokenRepository(db.pool).create({ account: 'evil', role: 'worker', workerId: 'acme-w1' }).catch((e: unknown) => e);
    expect(isRgridError(direct) && direct.code).toBe('conflict');
    expect(await count('tokens')).toBe(tokensBefore);

    // acme's worker still serves acme only, and evil has no way to read acme's blob through it.
    const reg = await call(app, 'POST', '/v1/workers/acme-w1/register', acme.worker, { host: 'acme-w1.test', capacity: 2 });
    expect(reg.json().accounts).toEqual(['acme']);
    const evilClient = await createToken(app, 'evil', 'client');
    expect((await call(app, 'HEAD', `/v1/blobs/${secret}`, evilClient)).statusCode).toBe(404);
    // evil's work is never placed on or claimed by acme's worker.
    const evil = { ...acme, account: 'evil', client: evilClient, script: await upload(app, evilClient, Buffer.from('print("evil")\n')) };
    const id = await submitted(app, evil);
    expect(await row(db, id)).toMatchObject({ status: 'queued', worker_id: null });
    expect(await claim(app, acme.worker, 'acme-w1', 5)).toEqual([]);
    // A second token of the owner account is fine.
    expect((await call(app, 'POST', '/v1/admin/tokens', ADMIN_TOKEN, { account: 'acme', role: 'worker', worker_id: 'acme-w1' })).statusCode).toBe(201);
  });

  it('with a share grant, the other account’s token is allowed; the grant is recorded with who, when and why', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const owner = await world(app, 'own', 'own-w1');
    const partnerClient = await createToken(app, 'partner', 'client');

    // Only the admin grants; not for a worker id nobody owns; not to the owner itself.
    expect((await share(app, 'own-w1', { account: 'partner', reason: 'x' }, owner.client)).statusCode).toBe(403);
    expect((await share(app, 'own-w1', { account: 'partner', reason: 'x' }, owner.worker)).statusCode).toBe(403);
    expect((await share(app, 'nobody-w', { account: 'partner', reason: 'x' })).statusCode).toBe(404);
    expect((await share(app, 'own-w1', { account: 'own', reason: 'x' })).statusCode).toBe(409);
    expect((await share(app, 'own-w1', { account: 'partner' })).statusCode).toBe(400);
    expect(await count('worker_shares')).toBe(0);

    const granted = await share(app, 'own-w1', { account: 'partner', reason: 'lend GPU host for Q3', by: 'alice' });
    expect(granted.statusCode).toBe(201);
    expect(granted.json()).toMatchObject({ worker_id: 'own-w1', account: 'partner', granted_by: 'admin:alice', reason: 'lend GPU host for Q3', revoked_at: null });
    // Granting again changes nothing.
    const again = await share(app, 'own-w1', { account: 'partner', reason: 'again' });
    expect(again.statusCode).toBe(200);
    expect(again.json().share_id).toBe(granted.json().share_id);
    const listed = await call(app, 'GET', '/v1/admin/workers/own-w1/shares', ADMIN_TOKEN);
    expect(listed.json()).toMatchObject({ worker_id: 'own-w1', owner: { account: 'own' }, shares: [{ account: 'partner', granted_by: 'admin:alice' }] });

    const partnerWorker = await call(app, 'POST', '/v1/admin/tokens', ADMIN_TOKEN, { account: 'partner', role: 'worker', worker_id: 'own-w1' });
    expect(partnerWorker.statusCode).toBe(201);
    const partnerToken = partnerWorker.json().token as string;

    // The owner's token serves both; the partner's token serves the partner only.
    const byOwner = await call(app, 'POST', '/v1/workers/own-w1/register', owner.worker, { host: 'own-w1.test', capacity: 2 });
    expect(byOwner.json().accounts).toEqual(['own', 'partner']);
    const byPartner = await call(app, 'POST', '/v1/workers/own-w1/register', partnerToken, { host: 'own-w1.test', capacity: 2 });
    expect(byPartner.json().accounts).toEqual(['partner']);
    const ownBlob = await upload(app, owner.client, Buffer.from('own data\n'));
    expect((await call(app, 'HEAD', `/v1/blobs/${ownBlob}`, partnerToken)).statusCode).toBe(404);
    expect((await call(app, 'HEAD', `/v1/blobs/${ownBlob}?account=own`, partnerToken)).statusCode).toBe(403);
    expect((await call(app, 'HEAD', `/v1/blobs/${ownBlob}?account=own`, owner.worker)).statusCode).toBe(200);

    // The partner's work is placed on the shared worker and claimed by it.
    const partner = { ...owner, account: 'partner', client: partnerClient, script: await upload(app, partnerClient, Buffer.from('print("p")\n')) };
    const id = await submitted(app, partner);
    expect(await row(db, id)).toMatchObject({ status: 'assigned', worker_id: 'own-w1' });
    const [c] = await claim(app, owner.worker, 'own-w1');
    expect(c).toMatchObject({ execution_id: id, account: 'partner' });
  });

  it('revoking a share stops the account’s tokens for that worker, re-places its queued work and ends its claims', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const owner = await world(app, 'lend', 'lend-w1');
    expect((await share(app, 'lend-w1', { account: 'borrow', reason: 'trial' })).statusCode).toBe(201);
    const borrowWorker = await createToken(app, 'borrow', 'worker', 'lend-w1');
    const borrowClient = await createToken(app, 'borrow', 'client');
    await registerWorker(app, owner.worker, 'lend-w1');
    const borrow = { ...owner, account: 'borrow', client: borrowClient, script: await upload(app, borrowClient, Buffer.from('print("b")\n')) };
    const running = await submitted(app, borrow);
    const [held] = await claim(app, owner.worker, 'lend-w1');
    expect(held!.execution_id).toBe(running);
    const waiting = await submitted(app, borrow);
    expect(await row(db, waiting)).toMatchObject({ status: 'assigned', worker_id: 'lend-w1' });

    expect((await call(app, 'DELETE', '/v1/admin/workers/lend-w1/shares/borrow', owner.client)).statusCode).toBe(403);
    const revoked = await call(app, 'DELETE', '/v1/admin/workers/lend-w1/shares/borrow?reason=trial%20over&by=bob', ADMIN_TOKEN);
    expect(revoked.statusCode).toBe(200);
    expect(revoked.json()).toMatchObject({ account: 'borrow', revoked_by: 'admin:bob', revoke_reason: 'trial over', revoked_at: expect.any(String) });
    expect((await call(app, 'DELETE', '/v1/admin/workers/lend-w1/shares/borrow', ADMIN_TOKEN)).statusCode).toBe(404);

    // borrow's worker token no longer works; the owner's token serves the owner only.
    expect((await call(app, 'POST', '/v1/workers/lend-w1/heartbeat', borrowWorker, { load: { running: 0 } })).statusCode).toBe(401);
    const reg = await call(app, 'POST', '/v1/workers/lend-w1/register', owner.worker, { host: 'lend-w1.test', capacity: 2 });
    expect(reg.json().accounts).toEqual(['lend']);
    // The claim it held on borrow's execution is lost; the queued one goes back to the unplaced queue.
    expect((await renew(app, owner.worker, 'lend-w1', held!)).statusCode).toBe(409);
    expect(await claim(app, owner.worker, 'lend-w1', 5)).toEqual([]);
    await app.dispatch.executions.sweep();
    expect(await row(db, waiting)).toMatchObject({ status: 'queued', worker_id: null, attempts: 0 });
    // A new token for borrow is refused again; a new grant is a new, separately recorded share.
    expect((await call(app, 'POST', '/v1/admin/tokens', ADMIN_TOKEN, { account: 'borrow', role: 'worker', worker_id: 'lend-w1' })).statusCode).toBe(409);
    expect((await share(app, 'lend-w1', { account: 'borrow', reason: 'second trial' })).statusCode).toBe(201);
    const history = (await call(app, 'GET', '/v1/admin/workers/lend-w1/shares', ADMIN_TOKEN)).json<{ shares: { reason: string; revoked_at: string | null }[] }>().shares;
    expect(history.map((s) => [s.reason, s.revoked_at === null])).toEqual([['second trial', true], ['trial', false]]);
    // The old borrow token works again while the new grant stands.
    expect((await call(app, 'POST', '/v1/workers/lend-w1/heartbeat', borrowWorker, { load: { running: 0 } })).statusCode).toBe(200);
  });

  it('places an account’s work only on workers whose agent’s token serves that account', async () => {
    const app = await build(db, { dispatchSweepIntervalMs: 0 });
    const owner = await world(app, 'pf', 'pf-w');
    expect((await share(app, 'pf-w', { account: 'pg', reason: 'host lent to pg' })).statusCode).toBe(201);
    const guestWorker = await createToken(app, 'pg', 'worker', 'pf-w');
    const guestClient = await createToken(app, 'pg', 'client');
    const guest = { ...owner, account: 'pg', client: guestClient, script: await upload(app, guestClient, Buffer.from('print("g")\n')) };

    // The agent runs with the guest's token: the owner's work must not wait in a queue it never claims.
    await registerWorker(app, guestWorker, 'pf-w');
    const ownerWork = await submitted(app, owner);
    expect(await row(db, ownerWork)).toMatchObject({ status: 'queued', worker_id: null });
    const guestWork = await submitted(app, guest);
    expect(await row(db, guestWork)).toMatchObject({ status: 'assigned', worker_id: 'pf-w' });
    expect((await claim(app, guestWorker, 'pf-w', 5)).map((c) => c.execution_id)).toEqual([guestWork]);

    // The agent switches to the owner's token (heartbeat): it serves both, and placement follows.
    expect((await call(app, 'POST', '/v1/workers/pf-w/heartbeat', owner.worker, { load: { running: 0 } })).statusCode).toBe(200);
    const next = await submitted(app, owner);
    expect(await row(db, next)).toMatchObject({ status: 'assigned', worker_id: 'pf-w' });
    expect((await claim(app, owner.worker, 'pf-w', 5)).map((c) => c.execution_id).sort()).toEqual([next, ownerWork].sort());
  });
});
