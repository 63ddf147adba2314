// Bespoke on-device personalization for browsers (and Node.js 20+): the JavaScript twin of the
// Rust crate `bespoke-client`.
//
// It verifies the server's Ed25519-signed model bundle (`GET /v1/device/bundle`) with WebCrypto,
// keeps the user's events on the device (`History`), folds them into a user vector with the
// server's own iALS user step and ranks the catalog locally. This module does no network I/O at
// all: the app fetches the bundle bytes and the public key, and no event ever leaves the device.
//
// Every number is computed as the Rust crate computes it (f64 on factors dequantized from
// f32/int8, f32 where the server weighs in f32, the same operations in the same order), so the
// two agree to rounding. No dependencies; an ES module.

/** The bundle format this module reads. */
export const FORMAT = 1;

const MAGIC = [0x42, 0x53, 0x50, 0x4b, 0x42, 0x4e, 0x44, 0x4c]; // "BSPKBNDL"
const SIGNATURE_LEN = 64;
/** The row of an item the bundle does not know (Rust's `u32::MAX`). */
const NO_ROW = 0xffffffff;
const U32_MAX = 0xffffffffn;
const U64_MAX = 0xffffffffffffffffn;
const I64_MIN = -0x8000000000000000n;

/**
 * Why a bundle was refused. `code` is `'malformed'` (not a bundle, cut short, or contents the
 * Rust decoder refuses), `'format'` (a format this client does not read; `format` holds it) or
 * `'signature'` (altered, or signed with another key).
 */
export class BundleError extends Error {
  /**
   * @param {'malformed'|'format'|'signature'} code
   * @param {string} message
   * @param {number} [format]
   */
  constructor(code, message, format) {
    super(message);
    this.name = 'BundleError';
    /** @type {'malformed'|'format'|'signature'} */
    this.code = code;
    if (format !== undefined) {
      /** @type {number|undefined} */
      this.format = format;
    }
  }
}

const malformed = (what) => new BundleError('malformed', `not a Bespoke bundle: ${what}`);

/**
 * Decodes a hexadecimal string (such as the `public_key` of `GET /v1/device/key`) to bytes.
 * @param {string} hex
 * @returns {Uint8Array}
 */
export function hexToBytes(hex) {
  if (typeof hex !== 'string' || hex.length % 2 !== 0 || !/^[0-9a-fA-F]*$/.test(hex)) {
    throw new TypeError('expected an even number of hexadecimal digits');
  }
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function asBytes(bytes, what) {
  if (bytes instanceof Uint8Array) return bytes;
  if (bytes instanceof ArrayBuffer) return new Uint8Array(bytes);
  if (ArrayBuffer.isView(bytes)) return new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  throw new TypeError(`${what} must be a Uint8Array or an ArrayBuffer`);
}

/**
 * Verifies a bundle against the publisher's Ed25519 public key (32 bytes, from
 * `GET /v1/device/key`) and decodes it. Nothing of an unverified bundle is used.
 *
 * @param {Uint8Array|ArrayBuffer} bytes the bundle, as `GET /v1/device/bundle` serves it
 * @param {Uint8Array|ArrayBuffer} publicKey the raw 32-byte Ed25519 public key
 * @returns {Promise<Bundle>}
 * @throws {BundleError} when the bundle is refused (see {@link BundleError} for the codes)
 * @throws {Error} with `code === 'unsupported'` when this environment's WebCrypto has no Ed25519
 */
export async function verifyBundle(bytes, publicKey) {
  const all = asBytes(bytes, 'the bundle');
  if (all.length < MAGIC.length + 4 + SIGNATURE_LEN || MAGIC.some((m, i) => all[i] !== m)) {
    throw malformed('no BSPKBNDL magic');
  }
  const body = all.subarray(0, all.length - SIGNATURE_LEN);
  const signature = all.slice(all.length - SIGNATURE_LEN);
  const key = asBytes(publicKey, 'the public key').slice();
  const refused = () =>
    new BundleError('signature', "the bundle's signature does not verify with the publisher's key");
  if (key.length !== 32) throw refused();
  const subtle = globalThis.crypto?.subtle;
  if (!subtle) {
    const e = new Error('WebCrypto (crypto.subtle) is not available; browsers offer it only in secure (https) contexts');
    e.code = 'unsupported';
    throw e;
  }
  let ok = false;
  try {
    const k = await subtle.importKey('raw', key, { name: 'Ed25519' }, false, ['verify']);
    ok = await subtle.verify({ name: 'Ed25519' }, k, signature, body);
  } catch (err) {
    if (err && err.name === 'NotSupportedError') {
      const e = new Error('this WebCrypto implementation does not support Ed25519', { cause: err });
      e.code = 'unsupported';
      throw e;
    }
    throw refused(); // an invalid key or signature encoding
  }
  if (!ok) throw refused();
  return decode(body);
}

// ---------------------------------------------------------------------------------------------
// Header JSON: parsed as serde_json parses it into a `Value` and then into the Rust `Header`.
// JSON.parse cannot tell `1` from `1.0` (serde refuses the latter for an integer field), accepts
// lone surrogate escapes and turns 1e400 into Infinity, so the header gets a strict parser that
// keeps integer tokens as BigInt and floating-point tokens as Number.

function parseJson(text) {
  let i = 0;
  let depth = 128; // serde_json's recursion limit
  const fail = (what) => {
    throw new SyntaxError(`${what} at character ${i}`);
  };
  const isDigit = (c) => c >= 48 && c <= 57;
  const ws = () => {
    for (;;) {
      const c = text.charCodeAt(i);
      if (c === 32 || c === 9 || c === 10 || c === 13) i++;
      else return;
    }
  };
  const enter = () => {
    if (--depth === 0) fail('recursion limit exceeded');
    i++;
  };
  const hex4 = () => {
    const h = text.slice(i, i + 4);
    if (!/^[0-9a-fA-F]{4}$/.test(h)) fail('invalid escape');
    i += 4;
    return parseInt(h, 16);
  };
  const string = () => {
    i++;
    let out = '';
    for (;;) {
      let j = i;
      while (j < text.length) {
        const c = text.charCodeAt(j);
        if (c === 34 || c === 92 || c < 32) break;
        j++;
      }
      out += text.slice(i, j);
      i = j;
      if (i >= text.length) fail('EOF while parsing a string');
      const c = text.charCodeAt(i);
      if (c === 34) {
        i++;
        return out;
      }
      if (c < 32) fail('control character in a string');
      const e = text[i + 1];
      i += 2;
      switch (e) {
        case '"': out += '"'; break;
        case '\\': out += '\\'; break;
        case '/': out += '/'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'u': {
          const n = hex4();
          if (n >= 0xdc00 && n <= 0xdfff) fail('lone surrogate in hex escape');
          if (n >= 0xd800 && n <= 0xdbff) {
            if (text[i] !== '\\' || text[i + 1] !== 'u') fail('unexpected end of hex escape');
            i += 2;
            const n2 = hex4();
            if (n2 < 0xdc00 || n2 > 0xdfff) fail('lone surrogate in hex escape');
            out += String.fromCharCode(n, n2);
          } else {
            out += String.fromCharCode(n);
          }
          break;
        }
        default:
          fail('invalid escape');
      }
    }
  };
  const number = () => {
    const start = i;
    let integer = true;
    if (text[i] === '-') i++;
    const first = text.charCodeAt(i);
    if (first === 48) {
      i++;
      if (isDigit(text.charCodeAt(i))) fail('invalid number');
    } else if (isDigit(first)) {
      while (isDigit(text.charCodeAt(i))) i++;
    } else {
      fail('invalid number');
    }
    if (text[i] === '.') {
      integer = false;
      i++;
      if (!isDigit(text.charCodeAt(i))) fail('invalid number');
      while (isDigit(text.charCodeAt(i))) i++;
    }
    if (text[i] === 'e' || text[i] === 'E') {
      integer = false;
      i++;
      if (text[i] === '+' || text[i] === '-') i++;
      if (!isDigit(text.charCodeAt(i))) fail('invalid number');
      while (isDigit(text.charCodeAt(i))) i++;
    }
    const token = text.slice(start, i);
    if (integer) {
      const b = BigInt(token);
      // serde_json: u64 if it fits, i64 if negative and fits, else f64 (and -0 is the f64 -0.0).
      if (b >= 0n ? b <= U64_MAX && token[0] !== '-' : b >= I64_MIN) return b;
    }
    const v = Number(token);
    if (!Number.isFinite(v)) fail('number out of range');
    return v;
  };
  const literal = (word, v) => {
    if (text.startsWith(word, i)) {
      i += word.length;
      return v;
    }
    return fail('expected a value');
  };
  const value = () => {
    ws();
    const c = text[i];
    if (c === '{') {
      enter();
      const out = Object.create(null);
      ws();
      if (text[i] === '}') {
        i++;
      } else {
        for (;;) {
          ws();
          if (text[i] !== '"') fail('expected a key');
          const k = string();
          ws();
          if (text[i] !== ':') fail("expected ':'");
          i++;
          out[k] = value(); // a repeated key: the last wins, as in serde_json's Value
          ws();
          const d = text[i++];
          if (d === '}') break;
          if (d !== ',') fail("expected ',' or '}'");
        }
      }
      depth++;
      return out;
    }
    if (c === '[') {
      enter();
      const out = [];
      ws();
      if (text[i] === ']') {
        i++;
      } else {
        for (;;) {
          out.push(value());
          ws();
          const d = text[i++];
          if (d === ']') break;
          if (d !== ',') fail("expected ',' or ']'");
        }
      }
      depth++;
      return out;
    }
    if (c === '"') return string();
    if (c === 't') return literal('true', true);
    if (c === 'f') return literal('false', false);
    if (c === 'n') return literal('null', null);
    if (c === '-' || isDigit(text.charCodeAt(i))) return number();
    return fail(i >= text.length ? 'EOF while parsing a value' : 'expected a value');
  };
  const v = value();
  ws();
  if (i < text.length) fail('trailing characters');
  return v;
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// Field readers with serde's rules (the parser gives integers as BigInt, other numbers as Number).
const read = {
  u32(v, f) {
    if (typeof v === 'bigint' && v >= 0n && v <= U32_MAX) return Number(v);
    throw malformed(`header: ${f} must be an integer from 0 to 4294967295`);
  },
  u64(v, f) {
    if (typeof v === 'bigint' && v >= 0n) return Number(v);
    throw malformed(`header: ${f} must be a non-negative integer`);
  },
  f64(v, f) {
    if (typeof v === 'bigint') return Number(v);
    if (typeof v === 'number') return v;
    throw malformed(`header: ${f} must be a number`);
  },
  f32(v, f) {
    return Math.fround(read.f64(v, f));
  },
  string(v, f) {
    if (typeof v === 'string') return v;
    throw malformed(`header: ${f} must be a string`);
  },
  array(v, f) {
    if (Array.isArray(v)) return v;
    throw malformed(`header: ${f} must be an array`);
  },
  fields(obj, names, what) {
    if (!isObject(obj)) throw malformed(`header: ${what} must be an object`);
    for (const k of Object.keys(obj)) {
      if (!names.includes(k)) throw malformed(`header: unknown field ${JSON.stringify(k)} in ${what}`);
    }
    for (const k of names) {
      if (!(k in obj)) throw malformed(`header: missing field ${JSON.stringify(k)} in ${what}`);
    }
  },
};

const HEADER_FIELDS = [
  'format', 'model_version', 'created_at', 'dim', 'encoding', 'alpha', 'event_weights',
  'max_weight', 'recent_boost', 'recent_half_life_ms', 'recency', 'propensity', 'keys',
  'categories', 'item_categories',
];

function parseHeader(v) {
  read.fields(v, HEADER_FIELDS, 'the header');
  if (v.encoding !== 'f32' && v.encoding !== 'int8') {
    throw malformed('header: encoding must be "f32" or "int8"');
  }
  if (!isObject(v.event_weights)) throw malformed('header: event_weights must be an object');
  const eventWeights = {};
  for (const [k, w] of Object.entries(v.event_weights)) {
    if (w === 'value') {
      eventWeights[k] = 'value';
    } else if (typeof w === 'number' || typeof w === 'bigint') {
      eventWeights[k] = read.f64(w, `event_weights.${k}`);
    } else {
      throw malformed(`header: event_weights.${k} must be a number or "value"`);
    }
  }
  read.fields(v.recency, ['half_life', 'floor'], 'recency');
  if (typeof v.propensity !== 'boolean') throw malformed('header: propensity must be a boolean');
  return {
    format: read.u32(v.format, 'format'),
    model_version: read.u64(v.model_version, 'model_version'),
    created_at: read.string(v.created_at, 'created_at'),
    dim: read.u32(v.dim, 'dim'),
    encoding: v.encoding,
    alpha: read.f32(v.alpha, 'alpha'),
    event_weights: eventWeights,
    max_weight: read.f64(v.max_weight, 'max_weight'),
    recent_boost: read.f64(v.recent_boost, 'recent_boost'),
    recent_half_life_ms: read.f64(v.recent_half_life_ms, 'recent_half_life_ms'),
    recency: {
      half_life: read.f32(v.recency.half_life, 'recency.half_life'),
      floor: read.f32(v.recency.floor, 'recency.floor'),
    },
    propensity: v.propensity,
    keys: read.array(v.keys, 'keys').map((k) => read.string(k, 'keys[]')),
    categories: read.array(v.categories, 'categories').map((c) => read.string(c, 'categories[]')),
    item_categories: read
      .array(v.item_categories, 'item_categories')
      .map((l) => read.array(l, 'item_categories[]').map((c) => read.u32(c, 'item_categories[][]'))),
  };
}

function deepFreeze(v) {
  if (v !== null && typeof v === 'object') {
    Object.freeze(v);
    for (const x of Object.values(v)) deepFreeze(x);
  }
  return v;
}

function decode(body) {
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const h = view.getUint32(8, true);
  if (12 + h > body.length) throw malformed('header cut short');
  let peek;
  try {
    const text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(body.subarray(12, 12 + h));
    peek = parseJson(text);
  } catch (e) {
    throw malformed(`header: ${e.message}`);
  }
  // serde_json: `peek["format"].as_u64().unwrap_or(0) as u32`
  const f = isObject(peek) ? peek.format : undefined;
  const format = typeof f === 'bigint' && f >= 0n ? Number(BigInt.asUintN(32, f)) : 0;
  if (format !== FORMAT) {
    throw new BundleError('format', `bundle format ${format} is not supported (this client reads format ${FORMAT})`, format);
  }
  const header = parseHeader(peek);
  const d = header.dim;
  const n = header.keys.length;
  if (!(header.max_weight >= 0 && Number.isFinite(header.max_weight))) {
    throw malformed('max_weight must be a finite number ≥ 0');
  }
  if (header.item_categories.length !== n) throw malformed('item_categories and keys differ in length');
  const ncat = header.categories.length;
  if (header.item_categories.some((l) => l.some((c) => c >= ncat))) {
    throw malformed('an item names a category that is not listed');
  }
  let at = Math.ceil((12 + h) / 4) * 4;
  const factorsLen = header.encoding === 'f32' ? 4 * n * d : 4 * n + n * d;
  const propensityLen = header.propensity ? 4 * n : 0;
  if (body.length !== at + 4 * d * d + factorsLen + propensityLen) {
    throw malformed('sections do not match dim and the item count');
  }
  const f32s = (from, count) => {
    const out = new Float64Array(count);
    for (let k = 0; k < count; k++) out[k] = view.getFloat32(from + 4 * k, true);
    return out;
  };
  const gram = f32s(at, d * d);
  at += 4 * d * d;
  const propensity = f32s(at + factorsLen, propensityLen / 4);
  let factors;
  if (header.encoding === 'f32') {
    factors = f32s(at, n * d);
  } else {
    const scales = f32s(at, n);
    const codes = at + 4 * n;
    factors = new Float64Array(n * d);
    for (let i = 0; i < n; i++) {
      const s = scales[i];
      for (let k = 0; k < d; k++) factors[i * d + k] = s * view.getInt8(codes + i * d + k);
    }
  }
  for (const a of [gram, factors, propensity]) {
    for (let k = 0; k < a.length; k++) {
      if (!Number.isFinite(a[k])) throw malformed('a factor is not a finite number');
    }
  }
  const index = new Map();
  for (let i = 0; i < n; i++) {
    const k = header.keys[i];
    if (index.has(k)) throw malformed(`item ${JSON.stringify(k)} is listed twice`);
    index.set(k, i);
  }
  const categoryIndex = new Map();
  header.categories.forEach((c, i) => categoryIndex.set(c, i)); // a repeated name: the last wins
  return new Bundle(deepFreeze(header), gram, factors, propensity, index, categoryIndex);
}

// ---------------------------------------------------------------------------------------------

/** Rust's `str::cmp`: byte-wise UTF-8 order, which is code point order (not UTF-16 order). */
function compareKeys(a, b) {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.codePointAt(i);
    const y = b.codePointAt(i);
    if (x !== y) return x < y ? -1 : 1;
    if (x > 0xffff) i++;
  }
  return a.length - b.length;
}

const bits = new DataView(new ArrayBuffer(8));
/** Rust's `f64::total_cmp`. */
function totalCmp(a, b) {
  if (a < b) return -1;
  if (a > b) return 1;
  if (a === b && (a !== 0 || Object.is(a, b))) return 0;
  const key = (x) => {
    bits.setFloat64(0, x);
    const v = bits.getBigInt64(0);
    return v ^ ((v >> 63n) & 0x7fffffffffffffffn);
  };
  const ka = key(a);
  const kb = key(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

/** Rust's `Recency::factor`, every operation in f32. */
function recencyFactor(recency, age) {
  const { half_life: halfLife, floor: f } = recency;
  if (!(halfLife > 0 && f < 1)) return 1;
  const floor = f < 0 ? 0 : f > 1 ? 1 : f;
  const exponent = Math.fround(-Math.fround(age) / halfLife);
  const decay = Math.fround(Math.pow(2, exponent));
  return Math.fround(floor + Math.fround(Math.fround(1 - floor) * decay));
}

/**
 * A verified, decoded bundle: factors dequantized to f64 so that every implementation computes
 * the same numbers. Made by {@link verifyBundle}, not constructed directly.
 */
export class Bundle {
  #factors;
  #propensity;
  #index;
  #categoryIndex;
  #eventWeights;

  /** @package */
  constructor(header, gramReg, factors, propensity, index, categoryIndex) {
    /**
     * The header, as the server wrote it (snake_case fields; `alpha` and `recency` as the f32
     * values the Rust crate computes with): `model_version`, `dim`, `encoding`, `keys`,
     * `categories`, `item_categories`, `event_weights`, …
     * @type {Readonly<Record<string, any>>}
     */
    this.header = header;
    /** `YᵀY + λI`, d×d row-major. @type {Float64Array} */
    this.gramReg = gramReg;
    this.#factors = factors;
    this.#propensity = propensity;
    this.#index = index;
    this.#categoryIndex = categoryIndex;
    this.#eventWeights = new Map(Object.entries(header.event_weights));
  }

  /** Number of items. @type {number} */
  get length() {
    return this.header.keys.length;
  }

  /** Factors per item (d). @type {number} */
  get dim() {
    return this.header.dim;
  }

  /** Whether the bundle holds no item. @returns {boolean} */
  isEmpty() {
    return this.length === 0;
  }

  /**
   * The row of item `key`, or `undefined` when the bundle does not know it.
   * @param {string} key
   * @returns {number|undefined}
   */
  item(key) {
    return this.#index.get(key);
  }

  /**
   * Item `row`'s propensity factor (1 when the model was trained without).
   * @param {number} row
   * @returns {number}
   */
  propensity(row) {
    return row < this.#propensity.length ? this.#propensity[row] : 1;
  }

  /**
   * Item `row`'s factors (dequantized): a view, do not modify.
   * @param {number} row
   * @returns {Float64Array}
   */
  factors(row) {
    const d = this.header.dim;
    if (!(Number.isInteger(row) && row >= 0 && row < this.length)) throw new RangeError(`no row ${row}`);
    return this.#factors.subarray(row * d, (row + 1) * d);
  }

  /**
   * The weight of one event as the server weighs it (in f32, clipped to ±`max_weight`), or
   * `undefined` for a type the server does not know (or a value-weighted type without a finite
   * value).
   * @param {string} type
   * @param {number|null} [value]
   * @returns {number|undefined}
   */
  weight(type, value) {
    const ew = this.#eventWeights.get(type);
    if (ew === undefined) return undefined;
    let w;
    if (ew === 'value') {
      if (typeof value !== 'number' || !Number.isFinite(value)) return undefined;
      w = value;
    } else {
      w = ew;
    }
    w = Math.fround(w); // the server weighs in f32
    const m = this.header.max_weight;
    if (w < -m) w = -m;
    if (w > m) w = m;
    return w;
  }

  /**
   * The user's vector from their history: the exact iALS user step against the bundle's item
   * factors, as the server folds in a user. `null` for a history with nothing the bundle knows.
   * @param {History} history
   * @param {number} [nowMs] the time to weigh the history at (Unix ms; the recent boost uses it)
   * @returns {Float64Array|null}
   */
  userVector(history, nowMs = Date.now()) {
    return this.#foldIn(history.weights(this, nowMs));
  }

  /** The user vector of weighted rows (`History#weights`), or null. */
  #foldIn(weights) {
    if (weights.every(([, w]) => w === 0)) return null;
    const d = this.header.dim;
    const alpha = this.header.alpha;
    const a = Float64Array.from(this.gramReg);
    const b = new Float64Array(d);
    for (const [row, w] of weights) {
      if (w === 0) continue;
      const c = 1 + alpha * Math.abs(w);
      const y = this.factors(row);
      for (let r = 0; r < d; r++) {
        const s = (c - 1) * y[r];
        for (let k = 0; k < d; k++) a[r * d + k] += s * y[k];
      }
      if (w > 0) {
        for (let k = 0; k < d; k++) b[k] += c * y[k];
      }
    }
    return choleskySolve(a, b, d) ? b : null;
  }

  /**
   * Item `row`'s score for the user vector `x`: `x · y_row`, higher is better.
   * @param {ArrayLike<number>} x
   * @param {number} row
   * @returns {number}
   */
  score(x, row) {
    const y = this.factors(row);
    let s = 0;
    for (let k = 0; k < y.length; k++) s += y[k] * x[k];
    return s;
  }

  /**
   * The best `n` items for the history, best first (ties by row). Empty when the history holds
   * nothing the bundle knows: show your own fallback then (the server's popular items, say).
   *
   * @param {History} history
   * @param {object} [query]
   * @param {number} [query.n=10] how many items
   * @param {string[]} [query.categories=[]] only items in any of these categories (none: all)
   * @param {string[]} [query.exclude=[]] item keys never to return
   * @param {boolean} [query.includeSeen=false] also return items in the history
   * @param {number} [query.nowMs=Date.now()] the time to weigh the history at (Unix ms)
   * @returns {{item: string, row: number, score: number}[]}
   */
  recommend(history, { n = 10, categories = [], exclude = [], includeSeen = false, nowMs = Date.now() } = {}) {
    if (!(Number.isInteger(n) && n >= 0)) throw new TypeError('n must be a non-negative integer');
    // Weighed once: the fold-in and the seen items both read it.
    const weights = history.weights(this, nowMs);
    const x = this.#foldIn(weights);
    if (x === null) return [];
    const skip = new Uint8Array(this.length);
    if (!includeSeen) {
      for (const [row] of weights) skip[row] = 1;
    }
    for (const key of exclude) {
      const row = this.item(key);
      if (row !== undefined) skip[row] = 1;
    }
    const wanted = [];
    for (const c of categories) {
      const i = this.#categoryIndex.get(c);
      if (i !== undefined) wanted.push(i);
    }
    if (categories.length > 0 && wanted.length === 0) return [];
    if (n === 0) return [];
    const itemCategories = this.header.item_categories;
    // Typed arrays, not an object per item: 20k allocations per ranking cost more in garbage
    // collection than the scoring itself.
    const rows = new Uint32Array(this.length);
    const scores = new Float64Array(this.length);
    const factors = this.#factors;
    const d = this.header.dim;
    let count = 0;
    for (let row = 0; row < this.length; row++) {
      if (skip[row]) continue;
      if (wanted.length > 0 && !itemCategories[row].some((c) => wanted.includes(c))) continue;
      // `score(x, row)` inlined (same order of additions): no view per item.
      let s = 0;
      const base = row * d;
      for (let k = 0; k < d; k++) s += factors[base + k] * x[k];
      rows[count] = row;
      scores[count] = s;
      count++;
    }
    // Rust's order: score descending (a total order), then row ascending. Negative when
    // candidate i ranks before candidate j.
    const before = (i, j) => totalCmp(scores[j], scores[i]) || rows[i] - rows[j];
    let order;
    if (n * 8 < count) {
      // The best n by insertion into a sorted buffer: what Rust's selection then sort gives.
      order = [];
      for (let i = 0; i < count; i++) {
        if (order.length === n) {
          if (before(i, order[n - 1]) >= 0) continue;
          order[n - 1] = i;
        } else {
          order.push(i);
        }
        for (let k = order.length - 1; k > 0 && before(order[k], order[k - 1]) < 0; k--) {
          const t = order[k];
          order[k] = order[k - 1];
          order[k - 1] = t;
        }
      }
    } else {
      order = Array.from({ length: count }, (_, i) => i);
      order.sort(before);
      order = order.slice(0, n);
    }
    return order.map((i) => ({ item: this.header.keys[rows[i]], row: rows[i], score: scores[i] }));
  }
}

/** Solves `A x = b` in place (A symmetric positive definite, d×d); false if it is not. */
function choleskySolve(a, b, d) {
  for (let j = 0; j < d; j++) {
    let s = a[j * d + j];
    for (let k = 0; k < j; k++) s -= a[j * d + k] * a[j * d + k];
    if (s <= 0 || !Number.isFinite(s)) return false;
    const l = Math.sqrt(s);
    a[j * d + j] = l;
    for (let i = j + 1; i < d; i++) {
      let t = a[i * d + j];
      for (let k = 0; k < j; k++) t -= a[i * d + k] * a[j * d + k];
      a[i * d + j] = t / l;
    }
  }
  for (let i = 0; i < d; i++) {
    let s = b[i];
    for (let k = 0; k < i; k++) s -= a[i * d + k] * b[k];
    b[i] = s / a[i * d + i];
  }
  for (let i = d - 1; i >= 0; i--) {
    let s = b[i];
    for (let k = i + 1; k < d; k++) s -= a[k * d + i] * b[k];
    b[i] = s / a[i * d + i];
  }
  return true;
}

// ---------------------------------------------------------------------------------------------

/**
 * One event kept on the device.
 * @typedef {object} LocalEvent
 * @property {string} item item key
 * @property {string} type event type, as the server's `events.weights` names it
 * @property {number} [value] the value of value-weighted types (ratings)
 * @property {number} atMs when, in Unix milliseconds
 */

function checkEvent(item, type, value, atMs) {
  if (typeof item !== 'string') throw new TypeError('an event item must be a string');
  if (typeof type !== 'string') throw new TypeError('an event type must be a string');
  if (value !== undefined && value !== null && typeof value !== 'number') {
    throw new TypeError('an event value must be a number (or absent)');
  }
  if (!Number.isSafeInteger(atMs)) throw new TypeError('an event time must be an integer (Unix milliseconds)');
  const e = { item, type };
  if (value !== undefined && value !== null) e.value = value;
  e.atMs = atMs;
  return Object.freeze(e);
}

/**
 * The user's events, held on the device. Persist it with `JSON.stringify(history)` (the Rust
 * crate's JSON shape: `{"events":[{"item","type","value"?,"at_ms"}]}`) and
 * {@link History.fromJSON}; nothing here sends it anywhere.
 */
export class History {
  /** @type {LocalEvent[]} */
  #events = [];

  /**
   * Records an event.
   * @param {string} item item key
   * @param {string} type event type (`"view"`, `"purchase"`, `"rating"`, …)
   * @param {number|null} [value] the value of value-weighted types (ratings)
   * @param {number} [atMs=Date.now()] when, in Unix milliseconds
   */
  push(item, type, value = undefined, atMs = Date.now()) {
    this.#events.push(checkEvent(item, type, value, atMs));
  }

  /** The events, oldest first (a copy). @type {LocalEvent[]} */
  get events() {
    return this.#events.slice();
  }

  /**
   * Forgets every event on `item` (the user's "remove from my history").
   * @param {string} item
   */
  forget(item) {
    this.#events = this.#events.filter((e) => e.item !== item);
  }

  /**
   * The history in the Rust crate's JSON shape (`JSON.stringify` calls this).
   * @returns {{events: {item: string, type: string, value?: number, at_ms: number}[]}}
   */
  toJSON() {
    return {
      events: this.#events.map((e) => {
        const o = { item: e.item, type: e.type };
        if ('value' in e) o.value = e.value;
        o.at_ms = e.atMs;
        return o;
      }),
    };
  }

  /**
   * A history stored with `JSON.stringify(history)` (or by the Rust crate's `History::to_json`).
   * @param {string|object} json the JSON text, or the object it parses to
   * @returns {History}
   * @throws {SyntaxError|TypeError} when it is not a stored history
   */
  static fromJSON(json) {
    let v = json;
    if (typeof json === 'string') {
      v = parseJson(json);
    }
    if (!isObject(v) || !Array.isArray(v.events)) throw new TypeError('a history is an object with an "events" array');
    const h = new History();
    for (const e of v.events) {
      if (!isObject(e)) throw new TypeError('an event is an object');
      let at = e.at_ms;
      if (typeof json === 'string' && typeof at !== 'bigint') throw new TypeError('at_ms must be an integer');
      if (typeof at === 'bigint') {
        if (at < I64_MIN || at > 0x7fffffffffffffffn) throw new TypeError('at_ms is out of range');
        at = Number(at);
      }
      const value = typeof e.value === 'bigint' ? Number(e.value) : e.value;
      h.#events.push(checkEvent(e.item, e.type, value, at));
    }
    return h;
  }

  /**
   * The weight of each item the bundle knows, by row ascending, at time `nowMs`: the server's
   * fold-in history. Per item, the summed event weights (events of types the bundle does not
   * know are skipped), times the position-based recency the model was trained with (items the
   * bundle does not know count as interactions for it), times the item's propensity factor,
   * times the recent boost of positive weights.
   * @param {Bundle} bundle
   * @param {number} nowMs Unix milliseconds
   * @returns {[number, number][]} `[row, weight]` pairs
   */
  weights(bundle, nowMs) {
    const aggs = [];
    const at = new Map();
    for (const e of this.#events) {
      const w = bundle.weight(e.type, e.value);
      if (w === undefined) continue;
      let slot = at.get(e.item);
      if (slot === undefined) {
        aggs.push({ key: e.item, row: bundle.item(e.item) ?? NO_ROW, weight: 0, last: -Infinity });
        slot = aggs.length - 1;
        at.set(e.item, slot);
      }
      aggs[slot].weight += w;
      aggs[slot].last = Math.max(aggs[slot].last, e.atMs);
    }
    // The server's order: model rows, then items without one (for recency ties only).
    aggs.sort((a, b) => a.row - b.row || compareKeys(a.key, b.key));
    const h = bundle.header;
    const n = aggs.length;
    const position = new Array(n).fill(1);
    if (h.recency.half_life > 0 && h.recency.floor < 1) {
      const order = aggs.map((_, k) => k);
      order.sort((p, q) => (aggs[p].last < aggs[q].last ? -1 : aggs[p].last > aggs[q].last ? 1 : p - q));
      order.forEach((k, p) => {
        position[k] = recencyFactor(h.recency, n - 1 - p);
      });
    }
    const out = [];
    for (let k = 0; k < n; k++) {
      const a = aggs[k];
      if (a.row === NO_ROW) continue;
      let w = a.weight * position[k] * bundle.propensity(a.row);
      if (h.recent_boost > 0 && w > 0 && h.recent_half_life_ms > 0) {
        const age = Math.max(nowMs - a.last, 0);
        w *= 1 + h.recent_boost * Math.pow(2, -age / h.recent_half_life_ms);
      }
      out.push([a.row, w]);
    }
    return out;
  }
}
