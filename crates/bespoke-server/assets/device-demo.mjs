// The dashboard's on-device demo (`/dashboard/device`, docs/on-device.md "Demo page"): verifies
// the signed bundle, keeps the visitor's events in localStorage only, ranks in the browser after
// each one, and lists every request the page has made, to show that none carried an event.
// A served module, not an inline script: the dashboard's Content-Security-Policy allows scripts
// from its own origin only. `bespoke-device.mjs` is served beside it, from the same bytes the
// JavaScript tests check.

import { History, hexToBytes, verifyBundle } from './bespoke-device.mjs';

/** Where the history lives: this browser's localStorage, nowhere else. */
const STORE = 'bespoke.device-demo.history';
/** Recommendations shown. */
const N = 10;
/** Catalog rows shown at a time (search for the others). */
const SHOWN = 60;
/** The event types the buttons record, as the server's `events.weights` names them. */
const ACTIONS = [
  ['view', 'View'],
  ['purchase', 'Buy'],
];

// ---------------------------------------------------------------------------------------------
// The network log. Installed before the page makes any request: every `fetch` goes through the
// wrapper, which notes its method and whether it has a body (Resource Timing does not say).

const calls = [];
const realFetch = window.fetch.bind(window);
window.fetch = (input, init = {}) => {
  const req = input instanceof Request ? input : null;
  calls.push({
    url: new URL(req ? req.url : String(input), location.href).href,
    method: String(init.method || (req && req.method) || 'GET').toUpperCase(),
    body: init.body != null || (req !== null && req.body !== null),
  });
  queueMicrotask(renderNetwork);
  return realFetch(input, init);
};

/** The addresses this page needs; any other (or any query string) could carry data. */
function expected(url) {
  const u = new URL(url);
  if (u.origin !== location.origin) return false;
  const p = u.pathname;
  if (p === '/dashboard/api/device/bundle') return /^(\?encoding=(f32|int8))?$/.test(u.search);
  if (u.search !== '') return false;
  return (
    p === '/dashboard/device' ||
    p.startsWith('/dashboard/assets/') ||
    p === '/dashboard/api/device/key' ||
    p === '/dashboard/api/device/titles'
  );
}

/**
 * Every request since the page loaded: the navigation, then what Resource Timing lists (the
 * browser's own record, which no script can skip), with the method and body the fetch wrapper
 * noted for API calls, then calls still in flight. A request Resource Timing lists as made by
 * a script API that the wrapper did not see has an unknown method: it counts as suspect.
 */
function requests() {
  const out = [];
  for (const e of performance.getEntriesByType('navigation')) {
    out.push({ url: e.name, by: 'page', method: 'GET', body: false, bytes: e.transferSize });
  }
  const pending = calls.slice();
  for (const e of performance.getEntriesByType('resource')) {
    let method = 'GET';
    let body = false;
    if (['fetch', 'xmlhttprequest', 'beacon'].includes(e.initiatorType)) {
      const i = pending.findIndex((c) => c.url === e.name);
      if (i >= 0) {
        ({ method, body } = pending[i]);
        pending.splice(i, 1);
      } else {
        method = '?';
      }
    }
    // Nothing transferred but a body decoded: the browser's cache answered.
    const bytes = e.transferSize === 0 && e.decodedBodySize > 0 ? 'cached' : e.transferSize;
    out.push({ url: e.name, by: e.initiatorType, method, body, bytes });
  }
  for (const c of pending) out.push({ ...c, by: 'fetch (in flight)', bytes: undefined });
  for (const r of out) r.suspect = r.method !== 'GET' || r.body || !expected(r.url);
  return out;
}

function renderNetwork() {
  const rows = requests();
  const tbody = document.querySelector('#network tbody');
  tbody.replaceChildren(
    ...rows.map((r, i) => {
      const u = new URL(r.url);
      const tr = row([
        String(i + 1),
        r.method,
        r.by,
        u.pathname + u.search,
        typeof r.bytes === 'number' ? r.bytes.toLocaleString('en') : (r.bytes ?? '…'),
        r.suspect ? 'could' : 'no',
      ]);
      tr.className = r.suspect ? 'suspect' : '';
      tr.dataset.method = r.method;
      return tr;
    }),
  );
  const suspect = rows.filter((r) => r.suspect).length;
  const summary = document.getElementById('network-summary');
  summary.dataset.total = String(rows.length);
  summary.dataset.suspect = String(suspect);
  summary.className = suspect ? 'alert' : 'ok';
  summary.textContent = suspect
    ? `${rows.length} requests since this page loaded; ${suspect} could have carried data ` +
      '(a method other than GET, a body, or an address this page does not need): see the rows marked "could".'
    : `${rows.length} requests since this page loaded, all GETs of this page, its scripts and ` +
      'styles, the public key, the bundle and the titles; 0 carried an event.';
}

performance.setResourceTimingBufferSize?.(2000);
new PerformanceObserver(renderNetwork).observe({ type: 'resource', buffered: true });

// ---------------------------------------------------------------------------------------------
// Page state.

let bundle = null;
let titles = {};
let history = loadHistory();

function loadHistory() {
  const saved = localStorage.getItem(STORE);
  if (saved === null) return new History();
  try {
    return History.fromJSON(saved);
  } catch {
    // Not a history this module wrote: start afresh rather than fail the page.
    localStorage.removeItem(STORE);
    return new History();
  }
}

function record(item, type) {
  history.push(item, type, undefined, Date.now());
  localStorage.setItem(STORE, JSON.stringify(history));
  renderHistory();
  rank();
}

function forget() {
  history = new History();
  localStorage.removeItem(STORE);
  renderHistory();
  rank();
}

const el = (tag, text, className) => {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (className) e.className = className;
  return e;
};

function row(cells) {
  const tr = document.createElement('tr');
  for (const c of cells) {
    const td = document.createElement('td');
    if (c instanceof Node) td.append(c);
    else td.textContent = c;
    tr.append(td);
  }
  return tr;
}

/** An item's name: its title (as text, never markup) and key. */
function itemName(key) {
  const span = el('span', undefined, 'item-name');
  if (titles[key] !== undefined) {
    span.append(el('span', titles[key], 'title'), ' ');
  }
  span.append(el('code', key));
  return span;
}

function actions(key) {
  const span = el('span', undefined, 'item-actions');
  for (const [type, label] of ACTIONS) {
    if (bundle.weight(type) === undefined) continue; // a type this server does not weigh
    const b = el('button', label, 'small');
    b.type = 'button';
    b.dataset.item = key;
    b.dataset.type = type;
    span.append(b);
  }
  return span;
}

function categoriesOf(row) {
  const h = bundle.header;
  return h.item_categories[row].map((c) => h.categories[c]);
}

const category = () => document.getElementById('category').value;

function renderCatalog() {
  const want = category();
  const q = document.getElementById('search').value.trim().toLowerCase();
  const keys = bundle.header.keys;
  const matched = [];
  for (let r = 0; r < keys.length; r++) {
    if (want && !categoriesOf(r).includes(want)) continue;
    if (q && !keys[r].toLowerCase().includes(q) && !(titles[keys[r]] || '').toLowerCase().includes(q)) continue;
    matched.push(r);
  }
  const shown = matched.slice(0, SHOWN);
  document.querySelector('#catalog tbody').replaceChildren(
    ...shown.map((r) => {
      const tr = row([itemName(keys[r]), categoriesOf(r).join(', '), actions(keys[r])]);
      tr.dataset.item = keys[r];
      return tr;
    }),
  );
  document.getElementById('catalog-count').textContent =
    matched.length > shown.length
      ? `Showing ${shown.length} of ${matched.length.toLocaleString('en')} items; search to find the others.`
      : `${matched.length.toLocaleString('en')} items.`;
}

function renderHistory() {
  const events = history.events;
  const list = document.getElementById('history');
  list.replaceChildren(
    ...events
      .slice()
      .reverse()
      .map((e) => {
        const li = el('li');
        li.append(`${e.type} `, itemName(e.item), el('span', ` ${new Date(e.atMs).toLocaleTimeString()}`, 'score'));
        return li;
      }),
  );
  if (events.length === 0) list.append(el('li', 'Nothing yet.', 'note'));
  document.getElementById('forget').disabled = events.length === 0;
}

/** Ranks the catalog for the history, here, and shows the result. */
function rank() {
  const list = document.getElementById('recs');
  const note = document.getElementById('recs-note');
  const want = category();
  const nowMs = Date.now();
  const t0 = performance.now();
  const top = bundle.recommend(history, { n: N, categories: want ? [want] : [], nowMs });
  const ms = performance.now() - t0;
  list.replaceChildren(
    ...top.map(({ item, score }) => {
      const li = el('li');
      li.dataset.item = item;
      // The shortest decimal that reads back as the same double: the test compares exactly.
      li.dataset.score = String(score);
      li.append(itemName(item), ' ', el('span', score.toFixed(4), 'score'), ' ', actions(item));
      return li;
    }),
  );
  if (history.events.length === 0) {
    note.textContent = 'Click View or Buy on an item: the recommendations are computed here, from what you do.';
  } else if (top.length === 0) {
    note.textContent = want
      ? `Nothing to recommend in ${want} for this history.`
      : 'Nothing to recommend: no item of this history is in the model.';
  } else {
    note.textContent = `Ranked ${bundle.length.toLocaleString('en')} items on this device in ${ms.toFixed(1)} ms.`;
  }
  // For the browser test: what this ranking was computed from.
  list.dataset.events = String(history.events.length);
  list.dataset.category = want;
  list.dataset.nowMs = String(nowMs);
}

// ---------------------------------------------------------------------------------------------
// Loading.

/** The error message of a dashboard JSON answer, or its status. */
async function failure(what, resp) {
  if (resp.status === 401) return 'your dashboard session has ended: log in again and reload';
  try {
    const body = await resp.json();
    if (body?.error?.message) return `${what}: ${body.error.message}`;
  } catch {
    // Not JSON: the status says enough.
  }
  return `${what}: HTTP ${resp.status}`;
}

async function load() {
  const opts = { credentials: 'same-origin', headers: { Accept: 'application/json' } };
  const keyResp = await fetch('/dashboard/api/device/key', opts);
  if (!keyResp.ok) throw new Error(await failure('the public key', keyResp));
  const key = await keyResp.json();
  if (key.algorithm !== 'Ed25519') throw new Error(`unexpected key algorithm ${key.algorithm}`);
  const [bundleResp, titlesResp] = await Promise.all([
    fetch('/dashboard/api/device/bundle', { credentials: 'same-origin' }),
    fetch('/dashboard/api/device/titles', opts),
  ]);
  if (!bundleResp.ok) throw new Error(await failure('the bundle', bundleResp));
  const bytes = await bundleResp.arrayBuffer();
  const verified = await verifyBundle(bytes, hexToBytes(key.public_key));
  titles = titlesResp.ok ? (await titlesResp.json()).titles : {};
  return { verified, key: key.public_key, size: bytes.byteLength };
}

async function main() {
  const card = document.getElementById('device');
  const status = document.getElementById('bundle-status');
  let loaded;
  try {
    loaded = await load();
  } catch (e) {
    status.textContent = `Cannot rank on this device: ${e.message}.`;
    status.className = 'alert';
    card.dataset.state = 'error';
    return;
  }
  bundle = loaded.verified;
  const h = bundle.header;
  status.textContent =
    `Model version ${h.model_version}, trained ${h.created_at}: ${bundle.length.toLocaleString('en')} items × ` +
    `${bundle.dim} factors (${h.encoding}, ${(loaded.size / 1024).toFixed(1)} KiB). Signature verified ` +
    `with the server's Ed25519 key ${loaded.key.slice(0, 16)}…`;
  card.dataset.modelVersion = String(h.model_version);
  const select = document.getElementById('category');
  for (const c of [...h.categories].sort()) select.append(new Option(c, c));
  select.addEventListener('change', () => {
    renderCatalog();
    rank();
  });
  document.getElementById('search').addEventListener('input', renderCatalog);
  document.getElementById('catalog-filter').addEventListener('submit', (e) => e.preventDefault());
  // One listener for every View/Buy button, in the catalog and in the recommendations.
  document.querySelector('main').addEventListener('click', (e) => {
    const b = e.target.closest('button[data-item]');
    if (b) record(b.dataset.item, b.dataset.type);
  });
  document.getElementById('forget').addEventListener('click', forget);
  renderCatalog();
  renderHistory();
  rank();
  card.dataset.state = 'ready';
}

renderNetwork();
main();
