import type Docker from 'dockerode';
import { isAccount, isSha256 } from '../../common/names.js';
import { depsImageTag, execImageTag } from '../builder/recipe.js';
import type { IndexEntry } from '../index/types.js';

/**
 * Index entries as the engine's image labels describe them (every kept image carries its
 * full keys), for reconcile and reindex. Only images labelled `io.rgrid.owner=<this agent's id>` are
 * read: other agents on the same engine (and the install stages, labelled `io.rgrid.agent`) are not ours.
 */
export const OWNER_LABEL = 'io.rgrid.owner';

export interface LabelledImage {
  id: string;
  created_at: number;
  size_bytes: number;
  /** The entry fields the labels give (usage fields are the caller's decision). */
  entry: Omit<IndexEntry, 'created_at' | 'last_used_at' | 'use_count'>;
}

export function entryFromLabels(image: Pick<Docker.ImageInfo, 'Id' | 'Labels' | 'Created' | 'Size'>): LabelledImage | undefined {
  const l = image.Labels ?? {};
  const kind = l['io.rgrid.kind'];
  const account = l['io.rgrid.account'] ?? '';
  const runtime = l['io.rgrid.runtime'] ?? '';
  const depsKey = l['io.rgrid.deps-key'] ?? '';
  const requirements = l['io.rgrid.requirements-sha256'] ?? '';
  const lock = l['io.rgrid.lock-sha256'] ?? '';
  if (lock !== '' && !isSha256(lock)) return undefined;
  if ((kind !== 'image' && kind !== 'deps') || !isAccount(account) || runtime === '') return undefined;
  if (depsKey !== '' && !isSha256(depsKey)) return undefined;
  if (requirements !== '' && !isSha256(requirements)) return undefined;
  let key: string;
  let script: string | null = null;
  if (kind === 'image') {
    key = l['io.rgrid.image-key'] ?? '';
    script = l['io.rgrid.script-sha256'] ?? '';
    if (!isSha256(key) || !isSha256(script)) return undefined;
  } else {
    key = depsKey;
    if (!isSha256(key) || requirements === '') return undefined;
  }
  return {
    id: image.Id,
    created_at: image.Created * 1000,
    size_bytes: image.Size,
    entry: {
      kind,
      account,
      key,
      image_id: image.Id,
      image_tag: kind === 'image' ? execImageTag(key, account) : depsImageTag(key, account),
      runtime,
      base_image_id: l['io.rgrid.base-image-id'] ?? '',
      script_sha256: script,
      requirements_sha256: requirements === '' ? null : requirements,
      deps_key: depsKey === '' ? null : depsKey,
      lock_sha256: lock === '' ? null : lock,
      size_bytes: image.Size,
    },
  };
}

/** This agent's labelled images (top-level only: build intermediates inherit labels but are not results). */
export async function listOwnImages(docker: Docker, owner: string): Promise<{ images: LabelledImage[]; unreadable: string[] }> {
  const listed = await docker.listImages({ filters: { label: [`${OWNER_LABEL}=${owner}`] } });
  const images: LabelledImage[] = [];
  const unreadable: string[] = [];
  for (const info of listed) {
    const parsed = entryFromLabels(info);
    if (parsed) images.push(parsed);
    else unreadable.push(info.Id);
  }
  return { images, unreadable };
}
