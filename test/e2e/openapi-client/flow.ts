/**
 * A client of the control plane written only against its published contract: the types come from
 * openapi-typescript run on GET /docs/json (generated/api.d.ts, written by api-contract.int.test.ts, never
 * committed) and every call goes through openapi-fetch. The test type-checks this file against those
 * types before running it, so a document that cannot express a step (a blob upload, a download, an error
 * body) fails the test. Nothing here imports the project's own code or wire schemas.
 */
import { createHash } from 'node:crypto';
import createClient from 'openapi-fetch';
import type { components, paths } from './generated/api.js';

type Execution = components['schemas']['Execution'];
type ApiError = components['schemas']['Error'];

export interface FlowInput {
  baseUrl: string;
  token: string;
  runtime: string;
  script: Uint8Array;
  input: { name: string; bytes: Uint8Array };
}

export interface FlowResult {
  uploaded: number;
  inputSha256: string;
  execution: Execution;
  logs: { stdout: string; stderr: string } | undefined;
  outputs: Record<string, Buffer>;
}

const sha256 = (bytes: Uint8Array): string => createHash('sha256').update(bytes).digest('hex');

function failed(step: string, status: number, error: ApiError | undefined): Error {
  return new Error(`${step}: ${status} ${error ? `${error.error}: ${error.message}` : '(no body)'}`);
}

const TERMINAL: ReadonlySet<Execution['status']> = new Set(['succeeded', 'failed', 'cancelled']);

export async function runFlow(input: FlowInput): Promise<FlowResult> {
  const client = createClient<paths>({ baseUrl: input.baseUrl, headers: { authorization: `Bearer ${input.token}` } });

  // Blobs: HEAD says whether this account stores one; only the missing ones are uploaded, as bytes.
  let uploaded = 0;
  for (const bytes of [input.script, input.input.bytes]) {
    const params = { path: { sha256: sha256(bytes) } };
    const head = await client.HEAD('/v1/blobs/{sha256}', { params });
    if (head.response.status === 200) continue;
    if (head.response.status !== 404) throw failed('headBlob', head.response.status, undefined);
    const put = await client.PUT('/v1/blobs/{sha256}', {
      params,
      body: new Blob([bytes]),
      bodySerializer: (body: Blob) => body,
      headers: { 'content-type': 'application/octet-stream' },
    });
    if (!put.data) throw failed('putBlob', put.response.status, put.error);
    if (put.data.sha256 !== params.path.sha256 || put.data.size_bytes !== bytes.length) throw new Error(`putBlob answered ${JSON.stringify(put.data)}`);
    uploaded++;
  }

  const manifest = await client.POST('/v1/manifests', {
    body: { files: [{ name: input.input.name, sha256: sha256(input.input.bytes), size: input.input.bytes.length }] },
  });
  if (!manifest.data) throw failed('recordManifest', manifest.response.status, manifest.error);
  if (manifest.data.missing.length > 0) throw new Error(`blobs still missing: ${manifest.data.missing.join(', ')}`);

  const submitted = await client.POST('/v1/executions/submit', {
    body: { runtime: input.runtime, script_sha256: sha256(input.script), input_sha256: manifest.data.input_sha256, timeout_s: 120 },
  });
  if (!submitted.data) throw failed('submitExecution', submitted.response.status, submitted.error);

  let execution: Execution = submitted.data;
  let logs: FlowResult['logs'];
  const deadline = Date.now() + 170_000;
  while (!TERMINAL.has(execution.status)) {
    if (Date.now() > deadline) throw new Error(`execution ${execution.id} still ${execution.status}`);
    const waited = await client.GET('/v1/executions/{id}/wait', { params: { path: { id: execution.id }, query: { timeout_ms: 20_000, logs: true } } });
    if (!waited.data) throw failed('waitExecution', waited.response.status, waited.error);
    const { logs: finished, ...rest } = waited.data;
    execution = rest;
    if (finished) logs = { stdout: finished.stdout, stderr: finished.stderr };
  }

  const outputs: Record<string, Buffer> = {};
  for (const output of execution.outputs) {
    const got = await client.GET('/v1/blobs/{sha256}', { params: { path: { sha256: output.sha256 } }, parseAs: 'arrayBuffer' });
    if (!got.data) throw failed('getBlob', got.response.status, got.error);
    const bytes = Buffer.from(got.data);
    if (sha256(bytes) !== output.sha256) throw new Error(`output ${output.name} does not hash to ${output.sha256}`);
    outputs[output.name] = bytes;
  }
  return { uploaded, inputSha256: manifest.data.input_sha256, execution, logs, outputs };
}
