// Fold-in, weighting and ranking, mirroring the Rust crate's unit tests on its example bundle.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { History, verifyBundle } from '../bespoke-device.mjs';
import { bytes, exampleKey, fixtures, publicKey } from '../test-support/fixtures.mjs';

const example = await verifyBundle(bytes(fixtures.example.file), exampleKey);

// The folded-in vector is the minimiser: the gradient of the iALS loss of this user,
// (YᵀCY + λI)x − YᵀCp, is zero at it.
test('the user vector solves the normal equations', () => {
  const b = example;
  const h = new History();
  h.push('item-3', 'purchase', undefined, 1);
  h.push('item-8', 'view', undefined, 2);
  h.push('item-8', 'view', undefined, 3);
  h.push('item-11', 'view', undefined, 4);
  const x = b.userVector(h, 0);
  assert.ok(x instanceof Float64Array);
  const d = b.dim;
  const alpha = b.header.alpha;
  const residual = [];
  for (let r = 0; r < d; r++) {
    let s = 0;
    for (let k = 0; k < d; k++) s += b.gramReg[r * d + k] * x[k];
    residual.push(s);
  }
  const weights = h.weights(b, 0);
  assert.deepEqual(weights.map(([row]) => row), [3, 8, 11]);
  for (const [row, w] of weights) {
    const c = 1 + alpha * Math.abs(w);
    const y = b.factors(row);
    let yx = 0;
    for (let k = 0; k < d; k++) yx += y[k] * x[k];
    for (let r = 0; r < d; r++) residual[r] += (c - 1) * y[r] * yx - c * y[r];
  }
  assert.ok(residual.every((r) => Math.abs(r) < 1e-9), String(residual));
  // And it is not trivially zero.
  assert.ok(x.some((v) => Math.abs(v) > 1e-3));
});

test('ranking honours filters and leaves out what was seen', () => {
  const b = example;
  const h = new History();
  h.push('item-2', 'purchase', undefined, 1);
  h.push('item-unknown', 'purchase', undefined, 2);
  h.push('item-5', 'not-a-type', undefined, 3);
  const all = b.recommend(h, { n: 100 });
  assert.equal(all.length, 39, 'every item but the one seen');
  assert.ok(all.every((s) => s.item !== 'item-2'));
  assert.ok(all.some((s) => s.item === 'item-5'), 'an event of an unknown type is not a view');
  for (let i = 1; i < all.length; i++) assert.ok(all[i - 1].score >= all[i].score);
  const odd = b.recommend(h, { n: 5, categories: ['odd'], exclude: [all[0].item] });
  assert.equal(odd.length, 5);
  assert.ok(odd.every((s) => s.row % 2 === 1 && s.item !== all[0].item));
  assert.deepEqual(
    odd,
    all.filter((s) => s.row % 2 === 1 && s.item !== all[0].item).slice(0, 5),
    'a filter keeps the order of the full ranking',
  );
  assert.deepEqual(b.recommend(h, { categories: ['no-such'] }), []);
  assert.deepEqual(b.recommend(h, { categories: ['no-such', 'even'] }), b.recommend(h, { categories: ['even'] }));
  assert.deepEqual(b.recommend(new History(), {}), []);
  assert.equal(b.recommend(h).length, 10, 'n defaults to 10');
  const withSeen = b.recommend(h, { n: 100, includeSeen: true });
  assert.equal(withSeen.length, 40);
  assert.ok(withSeen.some((s) => s.item === 'item-2'));
  assert.deepEqual(b.recommend(h, { n: 0 }), []);
  assert.throws(() => b.recommend(h, { n: -1 }), TypeError);
});

// Recency by position, propensity and the recent boost weigh the history as the server does.
test('history weights follow the server\'s weighting', async () => {
  const b = await verifyBundle(bytes(fixtures.weighting.file), exampleKey);
  assert.deepEqual({ ...b.header.recency }, { half_life: 1, floor: 0 });
  assert.equal(b.propensity(4), 3);
  const h = new History();
  h.push('item-4', 'view', undefined, 1);
  h.push('item-4', 'view', undefined, 2);
  h.push('not-in-bundle', 'view', undefined, 3);
  h.push('item-1', 'purchase', undefined, 4);
  h.push('item-1', 'not-a-type', undefined, 9);
  const w = h.weights(b, 1004);
  // item-1 is the latest (age 0): 4 · 1 · 1 · (1 + 2^(−1000/1000)) = 6.
  // item-4 has two later interactions (one outside the bundle): 2 · 2^(−2) · 3 · (1 + 2^(−1002/1000)).
  const item4 = 2 * 0.25 * 3 * (1 + Math.pow(2, -1.002));
  assert.equal(w.length, 2);
  assert.equal(w[0][0], 1);
  assert.ok(Math.abs(w[0][1] - 6) < 1e-12, String(w));
  assert.equal(w[1][0], 4);
  assert.ok(Math.abs(w[1][1] - item4) < 1e-6, String(w));
});

test('event weights follow the server table, in f32, clipped', async () => {
  const b = await verifyBundle(bytes(fixtures.bundles[0].file), publicKey);
  assert.equal(b.weight('purchase'), 4);
  assert.equal(b.weight('impression'), Math.fround(0.3), 'cast through f32');
  assert.notEqual(b.weight('impression'), 0.3);
  assert.equal(b.weight('rating', 3.5), 3.5);
  assert.equal(b.weight('rating', 99), 5, 'clipped to max_weight');
  assert.equal(b.weight('rating', -99), -5);
  assert.equal(b.weight('rating', 0.1), Math.fround(0.1));
  assert.equal(b.weight('rating'), undefined);
  assert.equal(b.weight('rating', NaN), undefined);
  assert.equal(b.weight('rating', Infinity), undefined);
  assert.equal(b.weight('unknown'), undefined);
  assert.equal(b.weight('constructor'), undefined, 'no prototype lookups');
});

// The top n of a ranking is the first n of the full ranking.
test('top n is a prefix of the full ranking', () => {
  let seed = 12345;
  const rand = (n) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % n;
  };
  for (let run = 0; run < 100; run++) {
    const h = new History();
    const events = 1 + rand(11);
    for (let i = 0; i < events; i++) h.push(`item-${rand(40)}`, rand(2) ? 'purchase' : 'view', undefined, i);
    const n = 1 + rand(44);
    const full = example.recommend(h, { n: 1000, nowMs: 0 });
    const top = example.recommend(h, { n, nowMs: 0 });
    assert.deepEqual(top, full.slice(0, n));
  }
});

// Position-based recency is computed in f32 as the Rust crate's `Recency::factor` does: every
// factor is an f32 and within one f32 step of Rust's (libm's exp2f may round differently from
// Math.pow; on glibc they agree exactly).
test('recency factors are the f32 numbers of the Rust crate', (t) => {
  const ages = 65;
  const h = new History();
  for (let i = 0; i < ages; i++) h.push(`i${i}`, 'view', undefined, i);
  let exact = 0;
  let total = 0;
  assert.ok(fixtures.recency.length >= 30);
  for (const { half_life: halfLife, floor, factors } of fixtures.recency) {
    const stub = {
      header: {
        recency: { half_life: Math.fround(halfLife), floor: Math.fround(floor) },
        recent_boost: 0,
        recent_half_life_ms: 0,
      },
      weight: () => 1,
      item: (key) => Number(key.slice(1)),
      propensity: () => 1,
    };
    const w = h.weights(stub, ages);
    assert.equal(w.length, ages);
    for (let age = 0; age < ages; age++) {
      const [row, v] = w[ages - 1 - age];
      assert.equal(row, ages - 1 - age);
      const want = factors[age];
      const what = `half_life ${halfLife}, floor ${floor}, age ${age}: JS ${v}, Rust ${want}`;
      assert.equal(Math.fround(v), v, `${what}: not an f32`);
      const ulp = want === 0 ? 2 ** -149 : 2 ** (Math.ceil(Math.log2(Math.abs(want))) - 23);
      assert.ok(Math.abs(v - want) <= ulp, what);
      total++;
      if (v === want) exact++;
    }
  }
  t.diagnostic(`${exact} of ${total} recency factors bit-identical`);
});
