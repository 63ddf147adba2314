// The module against the Rust crate: for both encodings and every history the Rust test wrote,
// the same weights, the same user vector and the same ranked items in the same order, every
// number within 1e-5 (absolute or relative).

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { History, verifyBundle } from '../bespoke-device.mjs';
import { bytes, close, fixtures, publicKey } from '../test-support/fixtures.mjs';

const histories = new Map(fixtures.histories.map(({ name, json }) => [name, History.fromJSON(json)]));

for (const spec of fixtures.bundles) {
  test(`the ${spec.name} bundle weighs, folds in and ranks as the Rust crate does`, async (t) => {
    const bundle = await verifyBundle(bytes(spec.file), publicKey);
    const stats = { weights: 0, vector: 0, score: 0, identical: 0, scores: 0, nullVectors: 0, empty: 0 };
    const diff = (a, b) => Math.abs(a - b) / Math.max(1, Math.abs(a), Math.abs(b));
    assert.ok(spec.cases.length >= 5);
    for (const c of spec.cases) {
      const h = histories.get(c.history);
      assert.ok(h, c.history);
      const what = `${spec.name}/${c.history}`;

      const w = h.weights(bundle, fixtures.now_ms);
      assert.deepEqual(w.map(([row]) => row), c.weights.map(([row]) => row), `${what}: weighted rows`);
      w.forEach(([, v], i) => {
        assert.ok(close(v, c.weights[i][1]), `${what}: weight of row ${w[i][0]}: JS ${v}, Rust ${c.weights[i][1]}`);
        stats.weights = Math.max(stats.weights, diff(v, c.weights[i][1]));
      });

      const x = bundle.userVector(h, fixtures.now_ms);
      if (c.user_vector === null) {
        assert.equal(x, null, `${what}: no user vector`);
        stats.nullVectors++;
      } else {
        assert.ok(x, `${what}: a user vector`);
        assert.equal(x.length, c.user_vector.length);
        x.forEach((v, k) => {
          assert.ok(close(v, c.user_vector[k]), `${what}: x[${k}]: JS ${v}, Rust ${c.user_vector[k]}`);
          stats.vector = Math.max(stats.vector, diff(v, c.user_vector[k]));
        });
      }

      for (const q of c.queries) {
        const query = { n: q.n, categories: q.categories, exclude: q.exclude, includeSeen: q.include_seen, nowMs: q.now_ms };
        const label = `${what} ${JSON.stringify(query)}`;
        const got = bundle.recommend(h, query);
        assert.deepEqual(got.map((s) => s.item), q.top.map((s) => s.item), `${label}: the same items in the same order`);
        assert.deepEqual(got.map((s) => s.row), q.top.map((s) => s.row), label);
        got.forEach((s, i) => {
          const want = q.top[i].score;
          assert.ok(close(s.score, want), `${label}: score of ${s.item}: JS ${s.score}, Rust ${want}`);
          stats.score = Math.max(stats.score, diff(s.score, want));
          stats.scores++;
          if (s.score === want) stats.identical++;
        });
        if (q.top.length === 0) stats.empty++;
      }
    }
    // The fixtures exercise what they should: no vector, empty rankings, a full ranking.
    assert.ok(stats.nullVectors >= 2, 'histories without a vector');
    assert.ok(stats.empty > 0, 'empty rankings');
    assert.ok(stats.scores > 10000, 'enough scores compared');
    t.diagnostic(
      `${spec.name}: max relative difference: weights ${stats.weights.toExponential(2)}, ` +
        `user vectors ${stats.vector.toExponential(2)}, scores ${stats.score.toExponential(2)}; ` +
        `${stats.identical} of ${stats.scores} scores bit-identical`,
    );
  });
}
