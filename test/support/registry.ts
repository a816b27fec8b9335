/** A real registry for the tests; the implementation lives in tools/harness/registry.ts (the benchmarks use it too). */
export * from '../../tools/harness/registry.js';
