// The history: kept on the device, stored as JSON in the Rust crate's shape.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { History } from '../bespoke-device.mjs';
import { fixtures } from '../test-support/fixtures.mjs';

test('a history survives storage', () => {
  const h = new History();
  h.push('a', 'rating', 4.5, 10);
  h.push('b', 'view', undefined, 11);
  h.push('c', 'view', null, 12);
  const text = JSON.stringify(h);
  assert.equal(
    text,
    '{"events":[{"item":"a","type":"rating","value":4.5,"at_ms":10},' +
      '{"item":"b","type":"view","at_ms":11},{"item":"c","type":"view","at_ms":12}]}',
  );
  const back = History.fromJSON(text);
  assert.deepEqual(back.toJSON(), h.toJSON());
  assert.deepEqual(back.events, h.events);
  assert.deepEqual(History.fromJSON(JSON.parse(text)).toJSON(), h.toJSON());
  back.forget('a');
  assert.equal(back.events.length, 2);
  assert.ok(back.events.every((e) => e.item !== 'a'));
  assert.equal(h.events.length, 3, 'forgetting in a copy leaves the original');
});

test('histories written by the Rust crate read back to the same JSON', () => {
  assert.ok(fixtures.histories.length >= 5);
  for (const { name, json } of fixtures.histories) {
    const h = History.fromJSON(json);
    const rust = JSON.parse(json);
    assert.equal(h.events.length, rust.events.length, name);
    assert.deepEqual(JSON.parse(JSON.stringify(h)), rust, name);
  }
});

test('events are a copy and are validated', () => {
  const h = new History();
  h.push('a', 'view', undefined, 1);
  const events = h.events;
  events.pop();
  assert.equal(h.events.length, 1);
  assert.throws(() => {
    h.events[0].item = 'b';
  }, TypeError);
  assert.throws(() => h.push(3, 'view', undefined, 1), TypeError);
  assert.throws(() => h.push('a', 'view', '4', 1), TypeError);
  assert.throws(() => h.push('a', 'view', undefined, 1.5), TypeError);
  const t = Date.now();
  h.push('x', 'view');
  assert.ok(h.events[1].atMs >= t);
});

test('what is not a stored history is refused', () => {
  for (const bad of [
    '',
    'null',
    '{}',
    '{"events":{}}',
    '{"events":[{"item":"a","type":"view"}]}',
    '{"events":[{"item":"a","type":"view","at_ms":1.0}]}',
    '{"events":[{"item":"a","type":"view","at_ms":"1"}]}',
    '{"events":[{"item":"a","kind":"view","at_ms":1}]}',
    '{"events":[{"item":"a","type":"rating","value":"4","at_ms":1}]}',
    '{"events":[]} x',
  ]) {
    assert.throws(() => History.fromJSON(bad), /./, bad);
  }
  // Unknown fields are ignored and a null value is no value, as serde reads them.
  const h = History.fromJSON('{"events":[{"item":"a","type":"view","value":null,"at_ms":1,"extra":2}],"more":1}');
  assert.deepEqual(h.toJSON(), { events: [{ item: 'a', type: 'view', at_ms: 1 }] });
});
