// Registry naming shared by the agent (push, pull) and the control plane (manifest deletes): one
// repository per account named by a hash of it, the same hash as the account's engine tags; the HTTP
// endpoint and scheme the control plane derives from the address; hostile addresses and digests refused.
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { registryLocation as agentRegistryLocation } from '../../agent/registry/transfer.js';
import { manifestUrl, registryEndpoint, registryLocation, registryScheme } from '../../common/registry-names.js';

const key = 'a'.repeat(64);
/** The account's short hash, computed here independently of the code under test. */
const accountTagSuffix = (account: string): string => createHash('sha256').update(account).digest('hex').slice(0, 8);
const digest = `sha256:${'b'.repeat(64)}`;

describe('registry names', () => {
  it('names one repository per account by the hash the engine tags use; the agent uses the same function', () => {
    const where = registryLocation('127.0.0.1:5000/team/cache', 'acme', 'deps', key);
    expect(where).toEqual({ repository: `127.0.0.1:5000/team/cache/rgrid-${accountTagSuffix('acme')}`, tag: `deps-${key}` });
    expect(where.repository).not.toContain('acme');
    expect(agentRegistryLocation).toBe(registryLocation);
    expect(registryLocation('127.0.0.1:5000', 'other', 'image', key).repository).not.toBe(registryLocation('127.0.0.1:5000', 'acme', 'image', key).repository);
  });

  it('gives the API host and repository name, with the prefix, and the manifest URL of a digest', () => {
    expect(registryEndpoint('registry.internal:5443/team', 'acme')).toEqual({ host: 'registry.internal:5443', name: `team/rgrid-${accountTagSuffix('acme')}` });
    expect(registryEndpoint('127.0.0.1:5000', 'acme')).toEqual({ host: '127.0.0.1:5000', name: `rgrid-${accountTagSuffix('acme')}` });
    expect(manifestUrl('127.0.0.1:5000', 'acme', digest)).toBe(`http://127.0.0.1:5000/v2/rgrid-${accountTagSuffix('acme')}/manifests/${digest}`);
    expect(manifestUrl('registry.internal:5443/team', 'acme', digest)).toBe(`https://registry.internal:5443/v2/team/rgrid-${accountTagSuffix('acme')}/manifests/${digest}`);
  });

  it('speaks plain HTTP to loopback only, as engines do by default', () => {
    for (const host of ['127.0.0.1:5000', '127.3.2.1:80', 'localhost:5000', '[::1]:5000']) expect(registryScheme(host), host).toBe('http');
    for (const host of ['10.0.0.1:5000', 'registry.internal:443', '127.0.0.1.evil.example:5000', '[2001:db8::1]:5000']) expect(registryScheme(host), host).toBe('https');
  });

  it('refuses an address or digest outside the contract before any URL is made', () => {
    for (const bad of ['http://127.0.0.1:5000', '127.0.0.1:5000/../../v2', '127.0.0.1:5000/a?b', '127.0.0.1:0', 'host:5000#x']) {
      expect(() => manifestUrl(bad, 'acme', digest), bad).toThrow(/registry/);
    }
    for (const bad of ['sha256:../../x', `sha256:${'B'.repeat(64)}`, `sha512:${'b'.repeat(128)}`, `${digest}/../x`]) {
      expect(() => manifestUrl('127.0.0.1:5000', 'acme', bad), bad).toThrow(/manifest digest/);
    }
  });
});
