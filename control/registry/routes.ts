/**
 * Images shared through an OCI registry (docs/architecture.md, "Images in the registry"): the build
 * lease (acquire, renew, complete) and the record of a push made without one. A worker token acts as
 * its own worker only and for the accounts it serves only, as on every other worker route.
 */
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { RgridError } from '../../common/errors.js';
import { WorkerId } from '../../common/wire/control-api.js';
import {
  BuildAcquireRequest, BuildAcquireResponse, BuildCompleteRequest, BuildCompleteResponse, BuildLeaseParams, BuildRenewResponse,
  RecordPushRequest, RecordPushResponse,
} from '../../common/wire/registry-api.js';
import { withTransaction } from '../db/pool.js';
import { clientLeft } from '../dispatch/routes.js';
import { POLL_MS } from '../dispatch/plugin.js';
import { accountOf, ownWorker } from '../plugins/auth.js';
import { acquire, buildWaitKey, complete, leaseLost, recordPush, renew } from './repository.js';

const WorkerParams = Type.Object({ worker_id: WorkerId });

/** The description of an image must fit its kind: what placement later matches submissions against. */
function assertDescription(d: { kind: 'image' | 'deps'; script_sha256: string | null; deps_key: string | null }): void {
  if (d.kind === 'image' && d.script_sha256 === null) throw new RgridError('bad_request', 'an image needs script_sha256');
  if (d.kind === 'deps' && (d.script_sha256 !== null || d.deps_key !== null)) throw new RgridError('bad_request', 'a deps image has no script_sha256 and no deps_key');
}

const registryRoutes: FastifyPluginCallbackTypebox = (app, _opts, done) => {
  const tags = ['registry'];
  const roles = ['worker'] as const;

  app.post(
    '/workers/:worker_id/image-builds',
    {
      config: { roles },
      schema: {
        operationId: 'acquireImageBuild',
        summary: 'Where to get an image: pushed (pull it), a build lease, another worker building (long poll), or a recent failure',
        tags, params: WorkerParams, body: BuildAcquireRequest, response: { 200: BuildAcquireResponse },
      },
    },
    async (request, reply) => {
      const worker = ownWorker(request, request.params.worker_id);
      const body = request.body;
      accountOf(request, body.account);
      assertDescription(body);
      const leaseMs = app.config.buildLeaseMs;
      // Capped like the claim long poll: the connection timeout is checked against that cap.
      const deadline = Date.now() + Math.min(body.wait_ms ?? 0, app.config.claimWaitMaxMs);
      const gone = clientLeft(reply);
      let waited = false;
      for (;;) {
        // A short transaction per round: a waiting request holds no pool connection between rounds.
        const { answer, event } = await withTransaction(app.db, (tx) => acquire(tx, worker.workerId, body, leaseMs));
        if (event === 'granted' || event === 'taken_over') {
          app.metrics.buildLeases.inc({ how: event });
          request.log.info({ worker_id: worker.workerId, account: body.account, kind: body.kind, key: body.key, attempt: answer.state === 'lease' ? answer.attempt : undefined }, `build lease ${event}`);
        }
        const left = deadline - Date.now();
        if (answer.state !== 'building' || left <= 0 || app.dispatch.closing) {
          if (waited) app.metrics.buildWaits.inc({ result: answer.state });
          return answer;
        }
        waited = true;
        // Woken by the NOTIFY of a complete or a recorded push; the fallback period notices a lease that
        // expired without anyone saying so.
        await app.dispatch.wait([buildWaitKey(body)], Math.min(left, POLL_MS), gone);
        if (gone.aborted) {
          // No lease for a client that cannot receive it: it would block the key until it expired.
          request.log.debug({ worker_id: worker.workerId }, 'client left; image build long poll ended');
          app.metrics.buildWaits.inc({ result: 'client_left' });
          return answer;
        }
      }
    },
  );

  app.post(
    '/workers/:worker_id/image-builds/:lease_id/renew',
    {
      config: { roles },
      schema: { operationId: 'renewImageBuild', summary: "Extends this worker's build lease", tags, params: BuildLeaseParams, response: { 200: BuildRenewResponse } },
    },
    async (request) => {
      const worker = ownWorker(request, request.params.worker_id);
      const expires = await renew(app.db, worker.workerId, worker.accounts, request.params.lease_id, app.config.buildLeaseMs);
      if (!expires) throw leaseLost(request.params.lease_id);
      return { lease_expires_at: expires.toISOString() };
    },
  );

  app.post(
    '/workers/:worker_id/image-builds/:lease_id/complete',
    {
      config: { roles },
      schema: {
        operationId: 'completeImageBuild',
        summary: 'Ends a build lease: pushed (recorded for every worker), failed (answered to every worker for a while) or released',
        tags, params: BuildLeaseParams, body: BuildCompleteRequest, response: { 200: BuildCompleteResponse },
      },
    },
    async (request) => {
      const worker = ownWorker(request, request.params.worker_id);
      const body = request.body;
      const result = await withTransaction(app.db, (tx) => complete(tx, worker.workerId, worker.accounts, request.params.lease_id, body, app.config.buildFailureTtlMs));
      if (result.changed) {
        if (body.outcome === 'failed') app.metrics.buildFailures.inc();
        request.log.info({ worker_id: worker.workerId, lease_id: request.params.lease_id, outcome: body.outcome, ...result.ref }, 'build lease completed');
      }
      return { ok: true as const };
    },
  );

  app.put(
    '/workers/:worker_id/registry-images',
    {
      config: { roles },
      schema: {
        operationId: 'recordRegistryImage',
        summary: 'Records a push made without a lease; the first digest of a key stays',
        tags, params: WorkerParams, body: RecordPushRequest, response: { 200: RecordPushResponse },
      },
    },
    async (request) => {
      const worker = ownWorker(request, request.params.worker_id);
      const body = request.body;
      accountOf(request, body.account);
      assertDescription(body);
      return withTransaction(app.db, (tx) => recordPush(tx, worker.workerId, body));
    },
  );
  done();
};

export default registryRoutes;
