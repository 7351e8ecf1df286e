// Our own scripts only. Browser code: the pages' ES modules (static/js; api-docs.js is a classic script) and the
// simulator's meeting page; Node code: the tests run by `node --test` and this file.
import js from '@eslint/js';
import globals from 'globals';

export default [
  { ignores: ['node_modules/', 'static/vendor/', '.venv/', 'data/'] },
  js.configs.recommended,
  {
    files: ['static/js/**/*.js'],
    languageOptions: { sourceType: 'module', globals: globals.browser },
  },
  {
    files: ['static/js/api-docs.js', 'static/admin/*.js', 'server/simulator/static/*.js'],
    languageOptions: { sourceType: 'script', globals: globals.browser },
  },
  {
    files: ['tests/js/**/*.js', 'eslint.config.js'],
    languageOptions: { sourceType: 'module', globals: globals.node },
  },
];
