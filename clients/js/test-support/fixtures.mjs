// Fixtures for the tests in ../test: bundles, histories and the Rust crate's own results, written
// by `cargo test -p bespoke-client --test js` into the directory named by BESPOKE_JS_FIXTURES.
// Without it the tests fail (they never skip): they have nothing to compare with.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';

import { hexToBytes } from '../bespoke-device.mjs';

const dir = process.env.BESPOKE_JS_FIXTURES;
if (!dir) {
  throw new Error(
    'BESPOKE_JS_FIXTURES is not set: these tests need the bundles and results that ' +
      '`cargo test -p bespoke-client --test js` writes (it runs them); to run them by hand, ' +
      'set BESPOKE_JS_KEEP_FIXTURES=1 for that cargo test and point BESPOKE_JS_FIXTURES at the ' +
      'directory it prints',
  );
}

/** The parsed fixtures.json. */
export const fixtures = JSON.parse(readFileSync(join(dir, 'fixtures.json'), 'utf8'));

/** The bytes of a fixture file. */
export function bytes(file) {
  return new Uint8Array(readFileSync(join(dir, file)));
}

export const publicKey = hexToBytes(fixtures.public_key);
export const foreignKey = hexToBytes(fixtures.foreign_key);
export const exampleKey = hexToBytes(fixtures.example.public_key);

/** |a − b| ≤ tol, or ≤ tol·max(|a|, |b|). */
export function close(a, b, tol = 1e-5) {
  const diff = Math.abs(a - b);
  return diff <= tol || diff <= tol * Math.max(Math.abs(a), Math.abs(b));
}
