/**
 * The agent's side of the trust boundary with the control plane: a claim is checked against the wire
 * schema and the naming contract (common/names.ts) before any of it reaches a file, a query or a log.
 * An execution id becomes part of request paths, input names become files under /work/inputs, digests
 * become blob cache paths: a claim that fails any check is refused as a whole.
 */
import Value from 'typebox/value';
import { canonicalManifest, inputSha256 } from '../../common/cache-keys.js';
import { isRgridError } from '../../common/errors.js';
import { assertAccount, assertInputFileName, assertRuntimeName, assertUuid, isUuid, shown } from '../../common/names.js';
import { ClaimedExecution } from '../../common/wire/dispatch-api.js';

export type ClaimVerdict =
  | { ok: true; claim: ClaimedExecution }
  /**
   * `report` is present when the claim's ids are valid: the control plane can then be told the claim
   * failed (it would otherwise wait for the lease to run out and hand the same claim out again).
   */
  | { ok: false; reason: string; report?: { execution_id: string; claim_id: string } };

/** The value at a JSON pointer of `raw` (for naming the offending value in a refusal). */
function valueAt(raw: unknown, pointer: string): unknown {
  let value = raw;
  for (const part of pointer.split('/').slice(1)) {
    if (typeof value !== 'object' || value === null) return undefined;
    value = (value as Record<string, unknown>)[part.replaceAll('~1', '/').replaceAll('~0', '~')];
  }
  return value;
}

function schemaProblem(raw: unknown): string | undefined {
  if (Value.Check(ClaimedExecution, raw)) return undefined;
  const first = Value.Errors(ClaimedExecution, raw)[0];
  if (!first) return 'does not match the claim schema';
  // The keyword, not the validator's message: that would repeat a long pattern; the value is shown safely.
  return `${first.instancePath || 'the claim'} ${shown(valueAt(raw, first.instancePath))} fails the claim schema (${first.keyword})`;
}

/** Checks beyond the schema: the naming contract's own assertions and the claim's internal consistency. */
function contractProblem(claim: ClaimedExecution): string | undefined {
  try {
    assertUuid(claim.execution_id, 'execution_id');
    assertUuid(claim.claim_id, 'claim_id');
    assertAccount(claim.account);
    assertRuntimeName(claim.runtime);
    for (const input of claim.inputs) assertInputFileName(input.name);
    // Names, digests and sizes again, duplicates, and the manifest digest the control plane computed.
    const files = canonicalManifest(claim.inputs);
    if (claim.input_sha256 === null ? files.length > 0 : inputSha256(files) !== claim.input_sha256) {
      return `inputs do not match input_sha256 ${shown(claim.input_sha256)}`;
    }
  } catch (err) {
    if (isRgridError(err)) return err.message;
    throw err;
  }
  if ((claim.requirements_sha256 === null) !== (claim.requirements_blob_sha256 === null)) {
    return 'requirements_sha256 and requirements_blob_sha256 must both be set or both be null';
  }
  return undefined;
}

export function checkClaim(raw: unknown): ClaimVerdict {
  const problem = schemaProblem(raw) ?? contractProblem(raw as ClaimedExecution);
  if (problem === undefined) return { ok: true, claim: raw as ClaimedExecution };
  const ids = typeof raw === 'object' && raw !== null ? (raw as Record<string, unknown>) : {};
  const report = isUuid(ids.execution_id) && isUuid(ids.claim_id) ? { execution_id: ids.execution_id, claim_id: ids.claim_id } : undefined;
  return { ok: false, reason: `claim refused: ${problem}`, ...(report ? { report } : {}) };
}
