import type { FastifyInstance } from 'fastify';
import type Docker from 'dockerode';
import Type from 'typebox';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { RgridError } from '../../common/errors.js';
import type { AgentIndex } from '../index/index.js';
import type { LeaseTable } from '../index/leases.js';
import type { IndexEntry } from '../index/types.js';
import { renderEntry } from './app.js';
import { pylockToml, type Lock } from '../../common/lock.js';
import { WHEELHOUSE_IN_BUILD } from '../builder/recipe.js';

const InspectParams = Type.Object({ key: Type.String({ pattern: '^[0-9a-f]{8,64}$' }) }, { additionalProperties: false });
const InspectQuery = Type.Object(
  { kind: Type.Optional(Type.Union([Type.Literal('image'), Type.Literal('deps')])), account: Type.Optional(Type.String({ minLength: 1 })) },
  { additionalProperties: false },
);

export interface InspectDeps {
  index: AgentIndex;
  leases: LeaseTable;
  docker: Docker;
  /** Locks by digest (the resolution service); absent: entries show only their lock's digest. */
  lockBySha?: (lockSha256: string) => Lock | undefined;
  /** The worker's wheelhouse (pip_find_links): artifacts pip found there are written as paths on this host. */
  wheelhouseDir?: string | undefined;
}

/**
 * GET /v1/entries/:key — one entry in detail, for `rgrid-agent inspect`: the index record, whether the
 * engine still has its image (and the image's labels), whether a run holds it leased, and for a
 * dependency layer the script images built on it (what keeps the pruner from removing it). The key may
 * be a prefix of at least 8 hex characters, as `ls` prints 16; an ambiguous prefix is an error.
 */
export function registerInspectRoute(app: FastifyInstance, deps: InspectDeps): void {
  app.withTypeProvider<TypeBoxTypeProvider>().get(
    '/v1/entries/:key',
    { schema: { params: InspectParams, querystring: InspectQuery } },
    async (request) => {
      const prefix = request.params.key;
      // A hit answers before its touch commits: the uses it recorded are counted here (index.ts).
      await deps.index.settled();
      const matches = deps.index
        .list(request.query)
        .filter((e) => e.key.startsWith(prefix));
      if (matches.length === 0) throw new RgridError('not_found', `no entry with a key starting ${prefix}`);
      if (matches.length > 1) {
        throw new RgridError('bad_request', `key prefix ${prefix} matches ${matches.length} entries; give more characters, --kind or --account`);
      }
      const entry = matches[0]!;
      return {
        ...renderEntry(entry),
        ...(await engineView(deps.docker, entry)),
        leased: deps.leases.isLeased(entry),
        dependents: dependents(deps.index, entry),
        ...lockView(deps, entry),
      };
    },
  );
}

async function engineView(docker: Docker, entry: IndexEntry): Promise<Record<string, unknown>> {
  try {
    const info = await docker.getImage(entry.image_id).inspect();
    return { image_present: true, image_tags: info.RepoTags ?? [], image_labels: info.Config?.Labels ?? {}, image_created: info.Created };
  } catch (err) {
    if ((err as { statusCode?: number }).statusCode === 404) return { image_present: false };
    throw new RgridError('engine_unavailable', `cannot inspect ${entry.image_id}: ${(err as Error).message}`);
  }
}

function dependents(index: AgentIndex, entry: IndexEntry): string[] | null {
  if (entry.kind !== 'deps') return null;
  return index.dependentsOf(entry).map((child) => child.key);
}

/**
 * The entry's lock: the pinned list, the requirements text pip installed, and the same set as a PEP 751
 * pylock.toml (what `rgrid-agent inspect --pylock FILE` writes) so a user can rebuild the environment.
 */
function lockView(deps: InspectDeps, entry: IndexEntry): Record<string, unknown> {
  if (!entry.lock_sha256) return {};
  const lock = deps.lockBySha?.(entry.lock_sha256);
  if (!lock) return { lock: null };
  const inWheelhouse = `file://${WHEELHOUSE_IN_BUILD}/`;
  const pylock = pylockToml(lock, {
    artifactLocation: (artifact) =>
      deps.wheelhouseDir && artifact.url.startsWith(inWheelhouse) ? { path: `${deps.wheelhouseDir.replace(/\/+$/, '')}/${artifact.filename}` } : { url: artifact.url },
  });
  return { lock: { sha256: lock.sha256, resolved: lock.resolved, from_file: lock.fromFile, requirements_text: lock.text }, pylock };
}
