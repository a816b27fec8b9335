// Lint for what the type checker does not catch: floating promises and misused async callbacks.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  // openapi-client/ compiles against types generated at test time (test/e2e/api-contract.int.test.ts checks it).
  { ignores: ['dist/**', 'node_modules/**', 'eslint.config.js', 'test/e2e/openapi-client/**'] },
  ...tseslint.configs.recommendedTypeChecked,
  {
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': ['error', { checksVoidReturn: { arguments: false } }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_' }],
      '@typescript-eslint/restrict-template-expressions': 'off',
    },
  },
);
