// The Node half of `bespoke bench device`: the same bundles and histories through
// clients/js/bespoke-device.mjs, timed per request; prints one JSON object.
// Usage: node bench.mjs <dir>, where <dir> holds spec.json, f32.bin and int8.bin.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const dir = process.argv[2];
const spec = JSON.parse(readFileSync(join(dir, 'spec.json'), 'utf8'));
const { History, verifyBundle, hexToBytes } = await import(pathToFileURL(spec.module).href);
const publicKey = hexToBytes(spec.public_key);
const histories = spec.histories.map((j) => History.fromJSON(j));

function summary(times) {
  times.sort((a, b) => a - b);
  const at = (q) => times[Math.round((times.length - 1) * q)];
  return { p50: at(0.5), p99: at(0.99), mean: times.reduce((s, t) => s + t, 0) / times.length };
}

const out = {};
for (const name of ['f32', 'int8']) {
  const bytes = new Uint8Array(readFileSync(join(dir, `${name}.bin`)));
  let t = performance.now();
  const bundle = await verifyBundle(bytes, publicKey);
  const verifyMs = performance.now() - t;
  // One pass to let the JIT compile the hot loops, as a page would after its first ranking.
  for (const h of histories.slice(0, 20)) bundle.recommend(h, { n: spec.n, nowMs: spec.now_ms });
  const times = [];
  let checksum = 0;
  for (const h of histories) {
    t = performance.now();
    const top = bundle.recommend(h, { n: spec.n, nowMs: spec.now_ms });
    times.push(performance.now() - t);
    checksum += top.length ? top[0].score : 0;
  }
  out[name] = { verify_ms: verifyMs, recommend_ms: summary(times), checksum };
}
process.stdout.write(JSON.stringify(out));
