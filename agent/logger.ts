import pino, { type Logger } from 'pino';

/**
 * JSON lines on stdout (what journald and log shippers want); pino-pretty only when a human watches a
 * terminal. The pretty transport runs in a worker thread, so it never slows the hit path either.
 */
export function createLogger(level: string, pretty: boolean = process.stdout.isTTY === true): Logger {
  if (pretty) {
    return pino({ level, base: { service: 'rgrid-agent' } }, pino.transport({ target: 'pino-pretty', options: { destination: 1 } }));
  }
  return pino({ level, base: { service: 'rgrid-agent' } });
}
