import pino, { type Logger } from 'pino';

/**
 * The one logger factory of both daemons (`rgrid-agent serve`, `rgrid-control serve`): JSON lines on
 * stdout, which is what journald and log shippers want, and pino-pretty only when a human watches a
 * terminal. The pretty transport runs in a worker thread, so it never slows a request either.
 */
export interface LoggerOptions {
  /** Written into every line as `service`, so that merged logs say which daemon spoke. */
  service: 'rgrid-agent' | 'rgrid-control';
  level: string;
  /** Default: whether stdout is a terminal. */
  pretty?: boolean;
}

export function createLogger(options: LoggerOptions): Logger {
  const settings = { level: options.level, base: { service: options.service } };
  if (options.pretty ?? process.stdout.isTTY === true) {
    return pino(settings, pino.transport({ target: 'pino-pretty', options: { destination: 1 } }));
  }
  return pino(settings);
}
