/**
 * What `rgrid`, `rgrid-agent` and `rgrid-control` share on the command line, so that they behave alike:
 *  - `--version` prints the package version;
 *  - a usage error (unknown option, missing argument, a value refused before anything runs) is ONE line
 *    on stderr, `<cli>: bad_request: <reason> (see <command> --help)`, and exit 2 — never the whole help;
 *  - every failure is one line `<cli>: <code>: <reason>` and the exit status of its kind (`exitStatusOfError`,
 *    statuses in `EXIT`, common/executions.ts);
 *  - a flag's help names the environment variable behind it (`envHelp`).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { isRgridError, RgridError, type RgridErrorCode } from './errors.js';
import { EXIT } from './executions.js';

/** Codes that mean the caller's input was refused (whichever side noticed): a usage error, exit 2. */
const INPUT_ERRORS: ReadonlySet<RgridErrorCode> = new Set<RgridErrorCode>(['bad_request', 'bad_digest', 'bad_file_name', 'bad_requirements', 'unknown_runtime']);

/** The exit status of a CLI that failed with `err`: 2 for refused input, 1 for everything else. */
export function exitStatusOfError(err: unknown): number {
  return isRgridError(err) && INPUT_ERRORS.has(err.code) ? EXIT.usage : EXIT.failure;
}

/** A reason on one line: a message with line breaks is folded (its detail travels elsewhere, e.g. --json). */
export const oneLine = (text: string): string => text.replace(/\s*\n\s*/g, ' ').trim();

/** `description (env NAME, NAME_FILE)`: the variables a flag falls back to, in the order they are read. */
export const envHelp = (description: string, ...variables: string[]): string => `${description} (env ${variables.join(', ')})`;

/** The version in the package's package.json, from source (tsx, vitest) or from dist/. */
export function packageVersion(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    const file = join(dir, 'package.json');
    if (existsSync(file)) {
      try {
        const { version } = JSON.parse(readFileSync(file, 'utf8')) as { version?: unknown };
        return typeof version === 'string' ? version : 'unknown';
      } catch {
        return 'unknown';
      }
    }
    dir = dirname(dir);
  }
  return 'unknown';
}

/**
 * A program with the shared conventions. Commander's own error text and its help-on-error are silenced
 * here (settings that subcommands inherit, so call this before adding commands); `runProgram` turns the
 * error into the one line instead.
 */
export function createProgram(name: string, description: string): Command {
  return new Command(name)
    .description(description)
    .version(packageVersion(), '-V, --version', 'print the version and exit')
    .helpOption('-h, --help', 'print this help and exit')
    .configureOutput({ outputError: () => undefined, writeErr: () => undefined })
    .showHelpAfterError(false)
    .exitOverride();
}

const commandPath = (cmd: Command): string => {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
};

function* commandsOf(cmd: Command): Generator<Command> {
  yield cmd;
  for (const sub of cmd.commands) yield* commandsOf(sub);
}

/** Commander's message (`error: unknown option '--x'\n(Did you mean --y?)`) as the reason of a usage error. */
function usageError(err: CommanderError, cmd: Command): RgridError {
  const reason = err.code === 'commander.help' ? 'missing command' : oneLine(err.message.replace(/^error:\s*/, ''));
  return new RgridError('bad_request', `${reason} (see ${commandPath(cmd)} --help)`);
}

/**
 * Parses `argv` and runs the chosen action. Help and `--version` end with 0; a usage error and any error
 * an action throws reach `fail` (which prints the one line and exits with `exitStatusOfError`).
 */
export async function runProgram(program: Command, argv: readonly string[], fail: (err: unknown) => void): Promise<void> {
  for (const cmd of commandsOf(program)) {
    cmd.exitOverride((err) => {
      // Help and version: printed already, a success. Everything else is a usage error.
      if (err.exitCode === 0) throw err;
      throw usageError(err, cmd);
    });
  }
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError && err.exitCode === 0) {
      process.exitCode = EXIT.ok;
      return;
    }
    fail(err);
  }
}
