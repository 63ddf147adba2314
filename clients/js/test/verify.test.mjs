// Verification and decoding: what the Rust crate accepts, the module accepts; what it refuses,
// the module refuses with the same reason.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { Bundle, BundleError, verifyBundle } from '../bespoke-device.mjs';
import { bytes, exampleKey, fixtures, foreignKey, publicKey } from '../test-support/fixtures.mjs';

async function refusal(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  return assert.fail('the bundle was accepted');
}

test('both encodings verify and decode', async () => {
  for (const b of fixtures.bundles) {
    const raw = bytes(b.file);
    const bundle = await verifyBundle(raw, publicKey);
    assert.ok(bundle instanceof Bundle);
    assert.equal(bundle.length, b.items);
    assert.equal(bundle.dim, b.dim);
    assert.equal(bundle.header.encoding, b.encoding);
    assert.equal(bundle.header.model_version, 42);
    assert.equal(bundle.header.alpha, Math.fround(1.7), 'alpha is the f32 the server wrote');
    assert.equal(bundle.item('sku-00010'), 10);
    assert.equal(bundle.item('produit-é-3'), 3);
    assert.equal(bundle.item('nope'), undefined);
    assert.equal(bundle.factors(10).length, b.dim);
    assert.equal(bundle.propensity(2), Math.fround(1 + 2 * Math.fround(0.23)));
    // An ArrayBuffer (what fetch's arrayBuffer() gives) works as well as a Uint8Array.
    const copy = raw.slice().buffer;
    assert.equal((await verifyBundle(copy, publicKey.buffer)).length, b.items);
  }
});

test('a flipped byte anywhere is refused', async () => {
  const raw = bytes(fixtures.bundles[0].file);
  for (const at of [0, 5, 8, 11, 12, 40, 1000, raw.length >> 1, raw.length - 65, raw.length - 64, raw.length - 1]) {
    const b = raw.slice();
    b[at] ^= 1;
    const e = await refusal(verifyBundle(b, publicKey));
    assert.ok(e instanceof BundleError, `byte ${at}: ${e}`);
    assert.equal(e.code, at < 8 ? 'malformed' : 'signature', `byte ${at}`);
  }
});

test("a foreign key, a cut bundle and a wrong-sized key are refused", async () => {
  const raw = bytes(fixtures.bundles[1].file);
  let e = await refusal(verifyBundle(raw, foreignKey));
  assert.equal(e.code, 'signature');
  assert.match(e.message, /signature does not verify/);
  e = await refusal(verifyBundle(raw.subarray(0, 40), publicKey));
  assert.equal(e.code, 'malformed');
  e = await refusal(verifyBundle(new Uint8Array(0), publicKey));
  assert.equal(e.code, 'malformed');
  e = await refusal(verifyBundle(raw.subarray(0, raw.length - 1), publicKey));
  assert.equal(e.code, 'signature');
  e = await refusal(verifyBundle(raw, publicKey.subarray(0, 31)));
  assert.equal(e.code, 'signature');
  await assert.rejects(verifyBundle('not bytes', publicKey), TypeError);
});

test('every bundle the Rust decoder accepts or refuses gets the same verdict', async () => {
  const seen = new Set();
  assert.ok(fixtures.verdicts.length > 40, 'the Rust test wrote its cases');
  for (const v of fixtures.verdicts) {
    seen.add(v.verdict);
    let got;
    try {
      const b = await verifyBundle(bytes(v.file), exampleKey);
      got = { verdict: 'ok', items: b.length };
    } catch (e) {
      assert.ok(e instanceof BundleError, `${v.name}: ${e.stack}`);
      got = { verdict: e.code, format: e.format, message: e.message };
    }
    assert.equal(got.verdict, v.verdict, `${v.name}: Rust says ${JSON.stringify(v)}, JS ${JSON.stringify(got)}`);
    if (v.verdict === 'ok') assert.equal(got.items, v.items, v.name);
    if (v.verdict === 'format') assert.equal(got.format, v.format, v.name);
  }
  assert.deepEqual([...seen].sort(), ['format', 'malformed', 'ok', 'signature']);
});

test('the header is read-only', async () => {
  const bundle = await verifyBundle(bytes(fixtures.bundles[0].file), publicKey);
  assert.throws(() => {
    bundle.header.keys[0] = 'x';
  }, TypeError);
  assert.throws(() => {
    bundle.header.recency.floor = 1;
  }, TypeError);
});
