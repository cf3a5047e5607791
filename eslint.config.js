// ESLint (flat config): typescript-eslint's recommended rules on hand-written code; generated code is
// checked by its generator and excluded.
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['node_modules/', 'dist/', 'src/gen/', 'clients/*/src/gen/', 'clients/*/dist/', 'clients/go/', 'clients/python/', '.tools/', '.hazelcast/', '.peers/', 'data/', 'web/test-page/page.js', 'test-artifacts/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-control-regex': 'off',
    },
  },
);
