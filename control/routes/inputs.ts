/**
 * Input blobs and manifests. Blobs are content-addressed and verified while streaming; the bytes are
 * shared on disk, visibility is per account (a `blobs` row): an account sees a blob only after uploading
 * its bytes itself, so it can never learn what another account stored. Each account's blob rows are
 * bounded by a quota (bytes and count); an upload that would pass it is refused and nothing is stored.
 */
import { Readable } from 'node:stream';
import type { FastifyPluginCallbackTypebox } from '@fastify/type-provider-typebox';
import Type from 'typebox';
import { isRgridError, RgridError } from '../../common/errors.js';
import { canonicalManifest, inputSha256 } from '../../common/cache-keys.js';
import { AccountQuery, BlobParams, ManifestRequest, ManifestResponse, PutBlobResponse, Sha256Hex } from '../../common/wire/control-api.js';
import { withTransaction } from '../db/pool.js';
import { BINARY, errors } from '../openapi.js';
import { accountOf } from '../plugins/auth.js';
import { BLOB_LOCK_NAMESPACE } from '../cleanup.js';
import type { StagedBlob } from '../storage/blob-storage.js';

const roles = ['client', 'scheduler', 'worker'] as const;
const tags = ['inputs'];
/** Advisory-lock namespace of the per-account quota check (two-int form: namespace, hashtext(account)). */
const QUOTA_LOCK_NAMESPACE = 7244;

function quotaError(account: string, what: 'bytes' | 'count', detail: Record<string, unknown> = {}): RgridError {
  return new RgridError('quota_exceeded', `account ${account} would exceed its blob quota (${what}); nothing was stored: remove unused inputs or ask the operator for more`, { quota: what, ...detail });
}

// Answers without a JSON body, typed loosely: the handlers send bytes or nothing, not a serialized value.
const HEAD_STORED: object = { type: 'null', description: 'Stored; Content-Length is its size', headers: { 'content-length': { type: 'integer', minimum: 0 } } };
const HEAD_MISSING: object = { type: 'null', description: 'This account has not stored the blob' };
const BLOB_BYTES: object = { description: 'The bytes', content: { 'application/octet-stream': { schema: BINARY } } };

const blobRoutes: FastifyPluginCallbackTypebox = (app, _opts, done) => {
  /** Bytes the account may still store with one more blob of `size` (if known); throws when none fit. */
  const quotaRoom = (account: string, usage: { bytes: number; count: number }, size: number | undefined): number => {
    const { accountBlobQuotaBytes: maxBytes, accountBlobQuotaCount: maxCount } = app.config;
    if (usage.count + 1 > maxCount) throw quotaError(account, 'count', { limit_count: maxCount, used_count: usage.count });
    const room = maxBytes - usage.bytes;
    if (room < 0 || (size !== undefined && size > room)) throw quotaError(account, 'bytes', { limit_bytes: maxBytes, used_bytes: usage.bytes });
    return room;
  };

  // Blob bodies are raw bytes of any type: hand the request stream to the handler unread.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, payload, done) => done(null, payload));

  app.head(
    '/blobs/:sha256',
    {
      config: { roles, swagger: { exposeHeadRoute: true } },
      schema: {
        operationId: 'headBlob',
        summary: 'Whether this account stores the blob, and its size (Content-Length)',
        tags, params: BlobParams, querystring: AccountQuery,
        response: { 200: HEAD_STORED, 404: HEAD_MISSING },
      },
    },
    async (request, reply) => {
      const account = accountOf(request, request.query.account);
      const blob = await app.repos.inputs.hasBlob(account, request.params.sha256);
      if (!blob) return reply.code(404).send();
      return reply.header('content-length', blob.size_bytes).header('content-type', 'application/octet-stream').code(200).send();
    },
  );

  app.get(
    '/blobs/:sha256',
    {
      exposeHeadRoute: false,
      config: { roles },
      schema: {
        operationId: 'getBlob',
        summary: 'The bytes of a blob this account stores',
        tags, params: BlobParams, querystring: AccountQuery,
        response: { 200: BLOB_BYTES, ...errors([404]) },
      },
    },
    async (request, reply) => {
      const account = accountOf(request, request.query.account);
      const sha = request.params.sha256;
      if (!(await app.repos.inputs.hasBlob(account, sha))) throw new RgridError('not_found', `no blob ${sha} in account ${account}`);
      const stored = await app.storage.get(sha);
      if (!stored) {
        request.log.error({ sha256: sha }, 'blob row without bytes in storage');
        throw new RgridError('not_found', `blob ${sha} is recorded but its bytes are missing; upload it again`);
      }
      await app.repos.inputs.touchBlob(account, sha);
      return reply.header('content-length', stored.size).type('application/octet-stream').send(stored.stream);
    },
  );

  app.put(
    '/blobs/:sha256',
    {
      config: { roles },
      schema: {
        operationId: 'putBlob',
        summary: 'Stores a blob for this account: the bytes must hash to the digest in the path',
        tags, params: BlobParams, querystring: AccountQuery,
        // The body is read as a stream by the handler; the document shows it as bytes (control/openapi.ts).
        consumes: ['application/octet-stream'],
        response: {
          200: { ...PutBlobResponse, description: 'The account already had it (the bytes were verified, nothing changed)' },
          201: { ...PutBlobResponse, description: 'Stored' },
          ...errors([422]),
        },
      },
      // Refuse a declared oversize body before reading a byte of it.
      onRequest: (request, _reply, next) => {
        const declared = Number(request.headers['content-length'] ?? 0);
        if (declared > app.config.blobMaxBytes) {
          next(new RgridError('payload_too_large', `blob of ${declared} bytes exceeds the limit of ${app.config.blobMaxBytes}`, { limit_bytes: app.config.blobMaxBytes }));
          return;
        }
        next();
      },
    },
    async (request, reply) => {
      const account = accountOf(request, request.query.account);
      const sha = request.params.sha256;
      const body = request.body instanceof Readable ? request.body : Readable.from([]);
      const declared = request.headers['content-length'] === undefined ? undefined : Number(request.headers['content-length']);
      // A blob the account already has adds nothing to its usage; anything else must fit its quota,
      // checked before a byte is read (declared size) and again under the account's lock before commit.
      const room = (await app.repos.inputs.hasBlob(account, sha)) ? undefined : quotaRoom(account, await app.repos.inputs.usage(account), declared);
      const limit = room === undefined ? app.config.blobMaxBytes : Math.min(app.config.blobMaxBytes, room);
      let staged: StagedBlob;
      try {
        staged = await app.storage.put(sha, body, limit);
      } catch (err) {
        if (isRgridError(err) && err.code === 'payload_too_large' && room !== undefined && limit === room) throw quotaError(account, 'bytes');
        throw err;
      }
      let created: boolean;
      try {
        created = await withTransaction(app.db, async (tx) => {
          // Serializes the account's uploads, so two that each fit cannot pass the quota together.
          await tx.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [QUOTA_LOCK_NAMESPACE, account]);
          // Shared with cleanup: the file cannot be unlinked between our rename and our row.
          await tx.query('SELECT pg_advisory_xact_lock($1, hashtext($2))', [BLOB_LOCK_NAMESPACE, sha]);
          if (!(await app.repos.inputs.hasBlob(account, sha, tx))) quotaRoom(account, await app.repos.inputs.usage(account, tx), staged.size);
          await staged.commit();
          return app.repos.inputs.recordBlob(account, sha, staged.size, staged.ref, tx);
        });
      } catch (err) {
        await staged.discard();
        throw err;
      }
      app.metrics.blobBytesUploaded.inc(staged.size);
      return reply.code(created ? 201 : 200).send({ sha256: sha, size_bytes: staged.size, created });
    },
  );
  done();
};

const manifestRoutes: FastifyPluginCallbackTypebox = (app, _opts, done) => {
  app.post(
    '/manifests',
    {
      config: { roles },
      schema: {
        operationId: 'recordManifest',
        summary: 'Records an input manifest; the answer lists the blobs still to upload',
        tags, querystring: AccountQuery, body: ManifestRequest,
        response: { 200: { ...ManifestResponse, description: 'Recorded before' }, 201: { ...ManifestResponse, description: 'Recorded' } },
      },
    },
    async (request, reply) => {
      const account = accountOf(request, request.query.account);
      const files = canonicalManifest(request.body.files); // names, digests, sizes, duplicates → 400
      const input = inputSha256(files);
      if (request.body.input_sha256 !== undefined && request.body.input_sha256 !== input) {
        throw new RgridError('bad_request', `input_sha256 ${request.body.input_sha256} does not match the files (computed ${input})`, { computed: input });
      }
      const { created, missing } = await withTransaction(app.db, async (tx) => ({
        created: await app.repos.inputs.recordManifest(account, input, files, tx),
        missing: await app.repos.inputs.missingBlobs(account, files.map((f) => f.sha256), tx),
      }));
      const total = files.reduce((s, f) => s + f.size, 0);
      return reply.code(created ? 201 : 200).send({ input_sha256: input, files, total_size: total, missing, created });
    },
  );

  app.get(
    '/manifests/:input_sha256',
    {
      config: { roles },
      schema: {
        operationId: 'getManifest',
        tags, params: Type.Object({ input_sha256: Sha256Hex }), querystring: AccountQuery,
        response: { 200: ManifestResponse, ...errors([404]) },
      },
    },
    async (request) => {
      const account = accountOf(request, request.query.account);
      const files = await app.repos.inputs.getManifest(account, request.params.input_sha256);
      if (!files) throw new RgridError('not_found', `no manifest ${request.params.input_sha256} in account ${account}`);
      const missing = await app.repos.inputs.missingBlobs(account, files.map((f) => f.sha256));
      return { input_sha256: request.params.input_sha256, files, total_size: files.reduce((s, f) => s + f.size, 0), missing, created: false };
    },
  );
  done();
};

export { blobRoutes, manifestRoutes };
