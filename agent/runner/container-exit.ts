import type { IncomingMessage } from 'node:http';
import type Docker from 'dockerode';

/**
 * A run container's exit, watched from before its start (as `docker run` does): the engine's wait
 * endpoint with `condition=next-exit`, whose answer headers the engine writes as soon as the wait is
 * registered — `watchExit` resolves only then, so the caller starts the container knowing the exit
 * cannot be missed, and the wait's round trip overlaps the run instead of following it.
 *
 * Why the order matters: a `next-exit` wait that reaches the engine after the container has exited is
 * never answered (the engine waits for an exit that already happened). Sending it alongside the start,
 * without waiting for it to be registered, loses the race now and then on a loaded host — a run that
 * never ends, its claim renewed for ever (what hung an earlier version's batch of 100).
 *
 * Belt and braces: while the exit is awaited, the container's state is also looked at now and then
 * (`pollMs`, and at once on `check()`, which the run calls after it kills the container): a wait lost
 * for any reason (the engine's connection dropped, an engine that does not answer) ends with the state
 * the engine reports instead of a hang.
 */
export interface ContainerExit {
  exitCode: number;
  /** How the exit was learnt: the wait's answer, or the container's state (the wait was lost). */
  via: 'wait' | 'inspect';
}

export interface ExitWatch {
  /** Settles once the container has exited (or the engine cannot tell: rejects). */
  readonly exited: Promise<ContainerExit>;
  /** Looks at the container's state now (after a kill: the exit is due). */
  check(): void;
  /** Stops watching (the container never started, or is being removed). */
  cancel(): void;
}

export interface ExitWatchOptions {
  /** How often the state is looked at while the exit is awaited; default 30 s. */
  pollMs?: number;
}

/** After a kill, or once the wait is lost: the exit is due, so the state is looked at this often. */
const FAST_POLL_MS = 1000;
const WAIT_STATUS = { 200: true, 400: 'bad parameter', 404: 'no such container', 500: 'server error' } as const;

/** Registers the wait; resolves once the engine has it (the container may be started then). */
export async function watchExit(docker: Docker, container: Docker.Container, options: ExitWatchOptions = {}): Promise<ExitWatch> {
  const response = await new Promise<IncomingMessage>((resolve, reject) => {
    docker.modem.dial(
      { path: `/containers/${encodeURIComponent(container.id)}/wait?`, method: 'POST', options: { condition: 'next-exit' }, isStream: true, statusCodes: WAIT_STATUS },
      (err: unknown, res: unknown) => (err ? reject(err instanceof Error ? err : new Error('the engine\'s wait request failed')) : resolve(res as IncomingMessage)),
    );
  });
  let settle: ((exit: ContainerExit) => void) | undefined;
  let fail: ((err: Error) => void) | undefined;
  const exited = new Promise<ContainerExit>((resolve, reject) => {
    settle = resolve;
    fail = reject;
  });
  // A caller that cancels does not await: its rejection is not an unhandled one.
  exited.catch(() => undefined);
  let done = false;
  let timer: NodeJS.Timeout | undefined;
  const poll = (everyMs: number): void => {
    if (done) return;
    clearInterval(timer);
    timer = setInterval(() => void look(), everyMs);
    timer.unref();
  };
  const finish = (outcome: ContainerExit | Error): void => {
    if (done) return;
    done = true;
    clearInterval(timer);
    response.destroy();
    if (outcome instanceof Error) fail?.(outcome);
    else settle?.(outcome);
  };

  /** The state as the engine reports it: an exited container ends the watch. */
  async function look(): Promise<void> {
    if (done) return;
    try {
      const state = (await container.inspect()).State;
      if (!state.Running && state.Status !== 'created') finish({ exitCode: state.ExitCode, via: 'inspect' });
    } catch (err) {
      finish(err instanceof Error ? err : new Error(String(err)));
    }
  }
  /** The wait ended without an answer (or broke): the state decides, looked at every second from now on. */
  const lost = (): void => {
    if (done) return;
    void look();
    poll(FAST_POLL_MS);
  };

  let body = '';
  response.setEncoding('utf8');
  response.on('data', (chunk: string) => {
    // The answer is one small JSON object; anything longer is not a wait answer.
    if (body.length < 64 * 1024) body += chunk;
  });
  response.on('end', () => {
    const exitCode = parseWaitAnswer(body);
    if (exitCode !== undefined) finish({ exitCode, via: 'wait' });
    else lost();
  });
  response.on('error', lost);
  response.on('close', lost);
  poll(options.pollMs ?? 30_000);
  return {
    exited,
    check() {
      void look();
      poll(FAST_POLL_MS);
    },
    cancel: () => finish(new Error('the exit watch was cancelled')),
  };
}

/** The exit status of the engine's wait answer (`{"StatusCode": n, "Error": …}`), or undefined. */
function parseWaitAnswer(body: string): number | undefined {
  try {
    const parsed = JSON.parse(body) as { StatusCode?: unknown };
    return typeof parsed.StatusCode === 'number' && Number.isInteger(parsed.StatusCode) ? parsed.StatusCode : undefined;
  } catch {
    return undefined;
  }
}
