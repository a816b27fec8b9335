/**
 * Where an image of one (account, kind, key) lives in an OCI distribution registry. The agent pushes and
 * pulls there; the control plane deletes manifests there when a registry image falls out of use. One
 * definition, so both sides always name the same repository.
 */
import { sha256Hex } from './digest.js';
import { assertOciDigest, assertRegistryAddress } from './names.js';

export type ImageKind = 'deps' | 'image';

/** Where one (account, kind, key) lives in the registry. */
export interface RegistryLocation {
  /** `HOST:PORT[/PREFIX]/rgrid-<account hash>` */
  repository: string;
  /** `<kind>-<key>`: the tag the builder pushes; pulls never use it. */
  tag: string;
}

/**
 * The first 8 hex digits of sha256(account), the one short name of an account outside rgrid's own
 * records: the suffix of its images' engine tags (the same key in two accounts gives two images) and its
 * repository in the registry (account names never appear there, and a registry's per-repository
 * permissions can separate tenants).
 */
export function accountHash(account: string): string {
  return sha256Hex(account).slice(0, 8);
}

export function registryLocation(registry: string, account: string, kind: ImageKind, key: string): RegistryLocation {
  const address = assertRegistryAddress(registry);
  return { repository: `${address}/rgrid-${accountHash(account)}`, tag: `${kind}-${key}` };
}

/** What the distribution HTTP API needs: the `HOST:PORT` to talk to and the repository name under /v2/. */
export interface RegistryEndpoint {
  host: string;
  /** `[PREFIX/]rgrid-<account hash>` */
  name: string;
}

export function registryEndpoint(registry: string, account: string): RegistryEndpoint {
  const address = assertRegistryAddress(registry);
  const slash = address.indexOf('/');
  const host = slash < 0 ? address : address.slice(0, slash);
  const prefix = slash < 0 ? '' : `${address.slice(slash + 1)}/`;
  return { host, name: `${prefix}rgrid-${accountHash(account)}` };
}

/**
 * Engines talk plain HTTP to a registry on a loopback address and HTTPS to any other (unless configured
 * as insecure): the control plane does the same, so it reaches the registry the workers reach.
 */
export function registryScheme(host: string): 'http' | 'https' {
  const name = host.replace(/:[0-9]+$/, '').replace(/^\[|\]$/g, '').toLowerCase();
  return name === 'localhost' || name === '::1' || /^127\.[0-9]+\.[0-9]+\.[0-9]+$/.test(name) ? 'http' : 'https';
}

/** `http(s)://HOST:PORT/v2/<name>/manifests/<digest>` for a manifest of `account` in `registry`. */
export function manifestUrl(registry: string, account: string, digest: string): string {
  const { host, name } = registryEndpoint(registry, account);
  return `${registryScheme(host)}://${host}/v2/${name}/manifests/${assertOciDigest(digest, 'manifest digest')}`;
}
