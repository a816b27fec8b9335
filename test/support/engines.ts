/** Extra Docker engines for the tests; the implementation lives in tools/harness/engines.ts (the benchmarks use it too). */
export * from '../../tools/harness/engines.js';
