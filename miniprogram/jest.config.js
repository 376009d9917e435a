// Unit and contract tests run in node; rendering tests declare `@jest-environment jsdom`.
module.exports = {
  testEnvironment: 'node',
  testMatch: ['<rootDir>/tests/**/*.test.js'],
  setupFiles: ['<rootDir>/tests/helpers/setup.js'],
  testTimeout: 30000,
}
