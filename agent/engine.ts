import Docker from 'dockerode';
import { RgridError } from '../common/errors.js';

/**
 * The agent's one way to a Docker engine: `unix:///path` (a socket) or `tcp://host:port`; without one,
 * dockerode's default (the standard socket). The CLI resolves DOCKER_HOST into `docker_host` before this,
 * so a value given on the command line or in the config file wins over the environment.
 */
export function dockerFor(host: string | undefined): Docker {
  if (host === undefined) return new Docker({ socketPath: '/var/run/docker.sock' });
  if (host.startsWith('unix://')) return new Docker({ socketPath: host.slice('unix://'.length) });
  const tcp = /^tcp:\/\/([^:/\s]+|\[[0-9a-fA-F:.]+\]):([0-9]{1,5})$/u.exec(host);
  if (tcp) return new Docker({ host: tcp[1]!.replace(/^\[|\]$/gu, ''), port: Number(tcp[2]), protocol: 'http' });
  throw new RgridError('bad_request', `docker_host ${JSON.stringify(host.slice(0, 200))} is neither unix:///PATH nor tcp://HOST:PORT`);
}
