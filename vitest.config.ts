import { defineConfig } from 'vitest/config';

// Two tiers, split by file name: *.test.ts is pure logic, *.int.test.ts talks to a real
// Docker engine or a real PostgreSQL. Integration files run one at a time: they share one engine and
// a 2-core machine, and parallel image builds would only measure contention.
export default defineConfig({
  test: {
    // The JSON report is what .ci/run reads to print its "N passed, N failed" line; it names one file per
    // run when it runs the unit tier again on other Node versions.
    reporters: ['default', ['json', { outputFile: process.env.RGRID_TEST_REPORT ?? 'test-results/vitest.json' }]],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/**/*.test.ts'],
          exclude: ['test/**/*.int.test.ts'],
          testTimeout: 20_000,
        },
      },
      {
        test: {
          name: 'integration',
          include: ['test/**/*.int.test.ts'],
          globalSetup: ['test/support/docker-global-setup.ts', 'test/support/postgres-global-setup.ts'],
          fileParallelism: false,
          testTimeout: 180_000,
          hookTimeout: 300_000,
        },
      },
    ],
  },
});
