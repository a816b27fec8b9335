/**
 * Real processes for tests: `rgrid-control serve` and `rgrid-agent serve` from dist/, awaited on their
 * health endpoints (never on log text), tokens through files, always stopped; `runCli` for the three
 * CLIs; cleanup of an account's containers, volumes and images by label. The implementation lives in
 * tools/harness/processes.ts, where the demo and the benchmarks use it too.
 */
export * from '../../tools/harness/processes.js';
