// fwdist admin dashboard. Plain JavaScript, no dependencies, no build step: the server embeds
// this file. It talks only to /api/v1 of the origin that served it, with the token the user
// typed, kept in sessionStorage (never in a URL, a cookie or a log). Charts are SVG drawn
// here. Every page asks only for what the token's role may read (learnt from /whoami), and
// shows no button the role may not use.
'use strict';
(() => {
  const KEY = 'fwdist.token';
  const STATES = ['pending', 'downloading', 'downloaded', 'installed', 'failed'];
  const SVG = 'http://www.w3.org/2000/svg';

  // Script errors, rejected promises and CSP violations, kept for the banner and for tests.
  const errors = [];
  window.fwdistErrors = errors;
  const noteError = (m) => { errors.push(String(m)); };
  window.addEventListener('error', (e) => noteError(e.message));
  window.addEventListener('unhandledrejection', (e) => noteError(e.reason));
  document.addEventListener('securitypolicyviolation', (e) => noteError(`CSP ${e.violatedDirective} ${e.blockedURI}`));

  // ---- DOM helpers: text goes in as text nodes, never as HTML. ----
  function build(el, attrs, kids) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'on') for (const [ev, f] of Object.entries(v)) el.addEventListener(ev, f);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    for (const kid of kids.flat(Infinity)) {
      if (kid === undefined || kid === null || kid === false) continue;
      el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
    }
    return el;
  }
  const h = (tag, attrs, ...kids) => build(document.createElement(tag), attrs, kids);
  const s = (tag, attrs, ...kids) => build(document.createElementNS(SVG, tag), attrs, kids);
  const $ = (sel) => document.querySelector(sel);
  const fill = (el, ...kids) => { el.replaceChildren(); build(el, {}, kids); return el; };

  const when = (iso) => (iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '—');
  const num = (n) => Number(n || 0).toLocaleString('en-US');
  const bytes = (n) => (n >= 1048576 ? `${(n / 1048576).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} B`);
  const pill = (text) => h('span', { class: `pill ${text}` }, text);
  const enc = encodeURIComponent;

  // ---- The API ----
  let session = null; // {token, name, role, can}
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(path, opts = {}) {
    const headers = { Authorization: `Bearer ${session.token}` };
    if (opts.body !== undefined) headers['Content-Type'] = 'application/json';
    const r = await fetch(`/api/v1${path}`, {
      method: opts.method || 'GET', headers, cache: 'no-store',
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    });
    if (r.status === 204) return null;
    const body = await r.json().catch(() => null);
    if (r.status === 401) {
      logout('Your token was refused (401): it was revoked or is no longer valid. Log in again.');
      throw new ApiError(401, 'token refused');
    }
    if (!r.ok) throw new ApiError(r.status, (body && body.error) || r.statusText);
    return body;
  }

  const can = (what) => !!session && session.can.includes(what);

  function banner(msg) {
    const b = $('#banner');
    b.hidden = !msg;
    b.textContent = msg || '';
  }
  function report(e) {
    if (e instanceof ApiError && e.status === 401) return;
    banner(e instanceof ApiError ? `${e.status}: ${e.message}` : `Error: ${e.message || e}`);
    if (!(e instanceof ApiError)) noteError(e.stack || e);
  }

  // ---- Login ----
  async function whoami(token) {
    const r = await fetch('/api/v1/whoami', { headers: { Authorization: `Bearer ${token}` }, cache: 'no-store' });
    if (r.status === 401) return { error: 'That token was refused: it is not a valid fwdist API token (unknown, mistyped or revoked).' };
    if (!r.ok) return { error: `The server answered ${r.status} to /whoami; try again.` };
    const me = await r.json();
    if (!me.can.includes('read')) {
      return { error: `The token "${me.name}" has the ${me.role} role, which may only post install reports. The dashboard needs a viewer, publisher or admin token.` };
    }
    return { me };
  }

  function showLogin(message) {
    stopPage();
    $('#bar').hidden = true;
    banner('');
    const input = h('input', { id: 'login-token', type: 'password', autocomplete: 'off', placeholder: 'API token', 'aria-label': 'API token' });
    const err = h('div', { id: 'login-error', class: 'error', role: 'alert' }, message || '');
    const go = async (ev) => {
      ev.preventDefault();
      const token = input.value.trim();
      if (!token) { err.textContent = 'Paste an API token (fwdist token create prints one).'; return; }
      err.textContent = '';
      const { me, error } = await whoami(token);
      if (error) { err.textContent = error; return; }
      sessionStorage.setItem(KEY, token);
      start(token, me);
    };
    fill($('#main'), h('form', { class: 'card login', on: { submit: go } },
      h('h1', {}, 'fwdist dashboard'),
      h('p', { class: 'muted' }, 'Log in with an admin API token (viewer and publisher tokens see everything but the buttons). It stays in this tab only.'),
      input,
      h('button', { id: 'login-button', class: 'primary', type: 'submit' }, 'Log in'),
      err));
    input.focus();
  }

  function logout(message) {
    sessionStorage.removeItem(KEY);
    session = null;
    if (location.hash) history.replaceState(null, '', location.pathname);
    showLogin(message);
  }

  const NAV = [
    ['fleet', 'Fleet'], ['rollouts', 'Rollouts'], ['devices', 'Devices'],
    ['releases', 'Releases'], ['sites', 'Sites'], ['audit', 'Audit', 'admin'],
  ];

  function start(token, me) {
    session = { token, ...me };
    $('#bar').hidden = false;
    fill($('#nav'), NAV.filter(([, , need]) => !need || can(need))
      .map(([id, label]) => h('a', { href: `#/${id}`, id: `nav-${id}` }, label)));
    fill($('#who'), `${me.name} (${me.role})`);
    if (!location.hash || location.hash === '#') location.hash = '#/rollouts';
    else route();
  }

  // ---- Routing and polling ----
  let stops = [];
  function stopPage() { stops.forEach((f) => f()); stops = []; }

  /// Runs `f` now and every `ms` until the page changes; errors go to the banner.
  function poll(f, ms) {
    let timer = null;
    let live = true;
    const run = async () => {
      try { await f(); } catch (e) { report(e); }
      if (live) timer = setTimeout(run, ms);
    };
    stops.push(() => { live = false; clearTimeout(timer); });
    return run();
  }

  const ROUTES = [
    [/^fleet$/, pageFleet],
    [/^rollouts$/, pageRollouts],
    [/^rollouts\/(\d+)$/, pageRollout],
    [/^devices$/, pageDevices],
    [/^devices\/([^/]+)$/, pageDevice],
    [/^releases$/, pageReleases],
    [/^releases\/([^/]+)\/([^/]+)$/, pageRelease],
    [/^sites$/, pageSites],
    [/^audit$/, pageAudit, 'admin'],
  ];

  function route() {
    if (!session) return;
    stopPage();
    banner('');
    const [path, query] = location.hash.replace(/^#\/?/, '').split('?');
    const params = new URLSearchParams(query || '');
    for (const a of document.querySelectorAll('#nav a')) {
      a.classList.toggle('on', path.split('/')[0] === a.id.slice(4));
    }
    const main = $('#main');
    main.replaceChildren();
    for (const [re, page, need] of ROUTES) {
      const m = path.match(re);
      if (m && (!need || can(need))) {
        Promise.resolve().then(() => page(main, params, ...m.slice(1).map(decodeURIComponent))).catch(report);
        return;
      }
    }
    fill(main, h('h1', {}, 'Not found'), h('p', {}, 'No such page. ', h('a', { href: '#/rollouts' }, 'Rollouts')));
  }

  /// An inline confirmation (no modal dialog): `text`, then `act` when confirmed.
  function confirmBar(host, text, label, act) {
    const bar = h('div', { class: 'confirm', id: 'confirm' },
      h('span', {}, text),
      h('button', {
        id: 'confirm-yes', class: 'danger', type: 'button',
        on: { click: async (ev) => { ev.target.disabled = true; try { await act(); } catch (e) { report(e); } host.replaceChildren(); } },
      }, label),
      h('button', { id: 'confirm-no', type: 'button', on: { click: () => host.replaceChildren() } }, 'Cancel'));
    fill(host, bar);
  }

  // ---- Charts (SVG) ----
  function legend(keys, labels) {
    return h('div', { class: 'legend' }, keys.map((k, i) => h('span', {}, h('i', { class: `k-${k}` }), labels ? labels[i] : k)));
  }

  /// A bar per state, widths by count: a rollout's progress.
  function progress(states, total) {
    const svg = s('svg', { class: 'progress', viewBox: '0 0 100 8', preserveAspectRatio: 'none', height: 12, role: 'img' });
    let x = 0;
    if (!total) svg.append(s('rect', { x: 0, y: 0, width: 100, height: 8, class: 'k-pending', opacity: 0.4 }));
    for (const k of STATES) {
      const w = total ? (100 * (states[k] || 0)) / total : 0;
      if (w > 0) svg.append(s('rect', { x, y: 0, width: w, height: 8, class: `k-${k}` }, s('title', {}, `${k}: ${num(states[k])}`)));
      x += w;
    }
    return svg;
  }

  /// Horizontal bars: [{label, value}].
  function hbars(items) {
    const W = 520; const L = 150; const R = 60; const RH = 22;
    const max = Math.max(1, ...items.map((i) => i.value));
    const svg = s('svg', { width: W, height: RH * items.length + 4, viewBox: `0 0 ${W} ${RH * items.length + 4}`, class: 'hbars', role: 'img' });
    items.forEach((it, i) => {
      const y = i * RH + 2;
      const w = ((W - L - R) * it.value) / max;
      svg.append(s('text', { x: L - 6, y: y + 14, 'text-anchor': 'end' }, it.label),
        s('rect', { x: L, y: y + 3, width: Math.max(w, 1), height: RH - 8, class: 'k-bar' }, s('title', {}, `${it.label}: ${num(it.value)}`)),
        s('text', { x: L + w + 6, y: y + 14 }, num(it.value)));
    });
    return svg;
  }

  /// Stacked columns: buckets [{start, ...keys}], `label(bucket)` under each.
  function columns(buckets, keys, label) {
    const W = 520; const H = 180; const B = 22; const T = 10; const Lm = 40;
    const max = Math.max(1, ...buckets.map((b) => keys.reduce((a, k) => a + (b[k] || 0), 0)));
    const cw = (W - Lm) / Math.max(1, buckets.length);
    const svg = s('svg', { width: W, height: H, viewBox: `0 0 ${W} ${H}`, class: 'columns', role: 'img' });
    const y = (v) => H - B - ((H - B - T) * v) / max;
    svg.append(s('line', { x1: Lm, x2: W, y1: H - B, y2: H - B, class: 'axis' }),
      s('text', { x: Lm - 4, y: T + 4, 'text-anchor': 'end' }, num(max)),
      s('text', { x: Lm - 4, y: H - B, 'text-anchor': 'end' }, '0'));
    buckets.forEach((b, i) => {
      let acc = 0;
      const x = Lm + i * cw + 1;
      for (const k of keys) {
        const v = b[k] || 0;
        if (v > 0) svg.append(s('rect', { x, y: y(acc + v), width: Math.max(cw - 2, 1), height: y(acc) - y(acc + v), class: `k-${k}` }, s('title', {}, `${label(b)}: ${num(v)} ${k.replace('_', ' ')}`)));
        acc += v;
      }
      const every = Math.ceil(buckets.length / 8);
      if (i % every === 0) svg.append(s('text', { x: x + cw / 2, y: H - 6, 'text-anchor': 'middle' }, label(b)));
    });
    return svg;
  }

  /// A rollout's states over time: a line per state, phase boundaries, the thresholds (as
  /// counts of the selection at each point) and paused stretches.
  function plot(hist) {
    const W = 900; const H = 300; const L = 50; const R = 20; const T = 16; const B = 28;
    const pts = hist.points.map((p) => ({ ...p, t: Date.parse(p.at), total: STATES.reduce((a, k) => a + p[k], 0) }));
    const svg = s('svg', { id: 'plot', class: 'plot', width: W, height: H, viewBox: `0 0 ${W} ${H}`, 'data-points': pts.length, role: 'img' });
    if (!pts.length) {
      svg.append(s('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle' }, 'No samples yet: the server samples the counts every second while they change.'));
      return svg;
    }
    // Samples are written when the counts change, so the last one holds until now.
    const last = pts[pts.length - 1];
    const t0 = pts[0].t;
    const t1 = Math.max(t0 + 5000, last.state === 'aborted' ? last.t : Math.max(last.t, Date.now()));
    const held = [...pts, { ...last, t: t1 }];
    const max = Math.max(1, ...pts.map((p) => p.total));
    const x = (t) => L + ((W - L - R) * (t - t0)) / (t1 - t0);
    const y = (v) => H - B - ((H - B - T) * v) / max;
    // Paused stretches first, under everything.
    pts.forEach((p, i) => {
      if (p.state === 'paused') {
        const next = pts[i + 1] ? pts[i + 1].t : t1;
        svg.append(s('rect', { class: 'paused', x: x(p.t), y: T, width: Math.max(1, x(next) - x(p.t)), height: H - B - T }, s('title', {}, 'paused')));
      }
    });
    svg.append(s('line', { x1: L, x2: W - R, y1: H - B, y2: H - B, class: 'axis' }),
      s('line', { x1: L, x2: L, y1: T, y2: H - B, class: 'axis' }),
      s('text', { x: L - 6, y: T + 4, 'text-anchor': 'end' }, num(max)),
      s('text', { x: L - 6, y: H - B, 'text-anchor': 'end' }, '0'),
      s('text', { x: L, y: H - 8 }, when(new Date(t0).toISOString())),
      s('text', { x: W - R, y: H - 8, 'text-anchor': 'end' }, when(new Date(t1).toISOString())));
    hist.phases.forEach((m, i) => {
      const px = x(Date.parse(m.at));
      svg.append(s('line', { class: 'phase', x1: px, x2: px, y1: T, y2: H - B }),
        s('text', { x: px + 3, y: T + 10 + (i % 2) * 12 }, `phase ${m.phase + 1} · ${m.percent}%`));
    });
    const line = (vals, cls) => s('polyline', { class: cls, points: held.map((p, i) => `${x(p.t).toFixed(1)},${y(vals[i]).toFixed(1)}`).join(' ') });
    svg.append(line(held.map((p) => p.total * hist.success_threshold), 'threshold k-installed'),
      line(held.map((p) => p.total * hist.failure_threshold), 'threshold k-failed'));
    for (const k of STATES) {
      svg.append(line(held.map((p) => p[k]), `line k-${k}`));
      const g = s('g', { class: `dots k-${k}` });
      for (const p of pts) g.append(s('circle', { class: 'dot', cx: x(p.t).toFixed(1), cy: y(p[k]).toFixed(1), r: 2 }, s('title', {}, `${when(p.at)} ${k}: ${p[k]}`)));
      svg.append(g);
    }
    return svg;
  }

  function table(headers, rows, empty) {
    if (!rows.length) return h('p', { class: 'muted' }, empty || 'Nothing yet.');
    return h('table', {},
      h('thead', {}, h('tr', {}, headers.map((x) => h('th', { class: x.endsWith('#') ? 'num' : '' }, x.replace(/#$/, ''))))),
      h('tbody', {}, rows));
  }
  const td = (v, cls, id) => h('td', { class: cls, id }, v);
  const kv = (pairs) => h('dl', { class: 'kv' }, pairs.filter(Boolean).map(([k, v, id]) => [h('dt', {}, k), h('dd', { id }, v)]));

  /// A list with "More" that follows `next`.
  function pager(host, load, render) {
    let next = null;
    const more = h('button', { type: 'button', id: 'more' }, 'More');
    const body = h('div');
    const step = async (first) => {
      const page = await load(first ? null : next);
      next = page.next;
      if (first) body.replaceChildren();
      body.append(render(page.items, first));
      more.hidden = !next;
    };
    more.addEventListener('click', () => step(false).catch(report));
    fill(host, body, more);
    return step(true);
  }

  // ---- Fleet ----
  async function pageFleet(main, params) {
    const days = params.get('stale_days') || '7';
    const pick = h('select', { id: 'stale-days', on: { change: (e) => { location.hash = `#/fleet?stale_days=${e.target.value}`; } } },
      ['1', '3', '7', '14', '30', '90'].map((d) => h('option', { value: d, selected: d === days }, `${d} days`)));
    const body = h('div');
    fill(main, h('h1', {}, 'Fleet'), body);
    await poll(async () => {
      const f = await api(`/fleet?stale_days=${enc(days)}`);
      const hour = (b) => b.start.slice(11, 13) + 'h';
      const day = (b) => b.start.slice(5, 10);
      fill(body,
        h('p', { class: 'muted' }, `${num(f.devices)} devices registered · computed ${when(f.computed_at)} (reused for 30 s)`),
        h('div', { class: 'grid' },
          h('div', { class: 'card', id: 'fleet-models' }, h('h2', {}, 'Devices per model'),
            f.models.length ? hbars(f.models.map((m) => ({ label: m.model, value: m.devices }))) : h('p', { class: 'muted' }, 'No devices registered.')),
          f.models.map((m) => h('div', { class: 'card' }, h('h2', {}, `${m.model}: installed version`),
            hbars(m.versions.map((v) => ({ label: v.version || 'none reported', value: v.devices })))))),
        h('div', { class: 'grid' },
          h('div', { class: 'card', id: 'fleet-24h' }, h('h2', {}, 'Downloads and failures, last 24 h (per hour, UTC)'),
            columns(f.last_24h, ['complete', 'aborted', 'failed_reports'], hour),
            legend(['complete', 'aborted', 'failed_reports'], ['complete downloads', 'aborted downloads', 'failed installs'])),
          h('div', { class: 'card', id: 'fleet-7d' }, h('h2', {}, 'Downloads and failures, last 7 days (per day, UTC)'),
            columns(f.last_7d, ['complete', 'aborted', 'failed_reports'], day),
            legend(['complete', 'aborted', 'failed_reports'], ['complete downloads', 'aborted downloads', 'failed installs']))),
        h('div', { class: 'card', id: 'fleet-stale' },
          h('div', { class: 'row' }, h('h2', {}, `Not reported in ${f.stale.days} days: `, h('span', { id: 'stale-count' }, num(f.stale.devices))), pick),
          table(['device', 'model', 'last report'], f.stale.listed.map((d) => h('tr', {},
            td(h('a', { href: `#/devices/${enc(d.id)}` }, d.id), 'mono'), td(d.model), td(d.last_report_at ? when(d.last_report_at) : 'never'))),
          'Every device reported recently.'),
          f.stale.devices > f.stale.listed.length ? h('p', { class: 'muted' }, `…and ${num(f.stale.devices - f.stale.listed.length)} more (never reported first, then the longest silent).`) : null));
    }, 30000);
  }

  // ---- Rollouts ----
  function phaseText(r) {
    return r.phases ? `phase ${r.phase + 1} of ${r.phases.length} (${r.percent}%)` : `${r.percent}%`;
  }

  async function pageRollouts(main, params) {
    const state = params.get('state') || '';
    const pick = h('select', { id: 'rollouts-filter', on: { change: (e) => { location.hash = e.target.value ? `#/rollouts?state=${e.target.value}` : '#/rollouts'; } } },
      ['', 'scheduled', 'active', 'paused', 'aborted'].map((v) => h('option', { value: v, selected: v === state }, v || 'any state')));
    const body = h('div');
    fill(main, h('div', { class: 'row' }, h('h1', {}, 'Rollouts'), pick), legend(STATES), body);
    await poll(async () => {
      const list = await api(`/rollouts?limit=100${state ? `&state=${state}` : ''}`);
      fill(body, table(['id', 'release', 'state', 'selection', 'targeted#', 'installed#', 'failed#', 'progress', 'created'],
        list.items.map((r) => h('tr', { 'data-rollout': r.id },
          td(h('a', { href: `#/rollouts/${r.id}` }, `#${r.id}`)),
          td(`${r.model} ${r.version}`), td(pill(r.state)), td(phaseText(r)),
          td(num(r.status.targeted), 'num'), td(num(r.status.states.installed), 'num'), td(num(r.status.states.failed), 'num'),
          td(progress(r.status.states, r.status.targeted)), td(when(r.created_at)))),
        'No rollouts yet.'));
    }, 5000);
  }

  async function pageRollout(main, _params, id) {
    const head = h('h1', {}, `Rollout #${id}`);
    const actions = h('div', { class: 'row', id: 'actions' });
    const confirmHost = h('div');
    const body = h('div');
    fill(main, head, actions, confirmHost, body);
    const change = (patch) => api(`/rollouts/${id}`, { method: 'PATCH', body: patch });
    let refresh = async () => {};
    const button = (bid, label, text, patch, cls) => h('button', {
      id: bid, type: 'button', class: cls,
      on: { click: () => confirmBar(confirmHost, text, label, async () => { await change(patch); await refresh(); }) },
    }, label);
    refresh = async () => {
      const [r, hist] = await Promise.all([api(`/rollouts/${id}`), api(`/rollouts/${id}/history`)]);
      const failed = r.status.states.failed ? await api(`/rollouts/${id}/devices?state=failed&limit=10`) : { items: [] };
      fill(head, `Rollout #${r.id}: ${r.model} ${r.version} `, pill(r.state));
      if (can('admin')) {
        const next = r.phases && r.phase + 1 < r.phases.length && r.state !== 'aborted';
        fill(actions,
          r.state === 'active' || r.state === 'scheduled' ? button('action-pause', 'Pause', `Pause rollout #${r.id}? Its devices get no update until it is resumed.`, { state: 'paused' }) : null,
          r.state === 'paused' ? button('action-resume', 'Resume', `Resume rollout #${r.id}?`, { state: 'active' }, 'primary') : null,
          next ? button('action-next', `Open phase ${r.phase + 2} (${r.phases[r.phase + 1]}%)`, `Open phase ${r.phase + 2} of rollout #${r.id} now (${r.phases[r.phase + 1]}% of the fleet), whatever its bake time?`, { phase: r.phase + 1 }) : null,
          r.state !== 'aborted' ? button('action-abort', 'Abort', `Abort rollout #${r.id} for good? This cannot be undone.`, { state: 'aborted' }, 'danger') : null);
      }
      const st = r.status.states;
      fill(body,
        r.paused_reason ? h('p', { class: 'warn', id: 'paused-reason' }, `Paused: ${r.paused_reason}`) : null,
        h('div', { class: 'grid' },
          h('div', { class: 'card' }, kv([
            ['state', r.state, 'rollout-state'],
            ['selection', phaseText(r)],
            r.phases && ['phases', r.phases.map((p, i) => (i === r.phase ? `[${p}%]` : `${p}%`)).join(' → ')],
            ['thresholds', `next phase at ${Math.round(r.success_threshold * 100)}% installed · pause at ${Math.round(r.failure_threshold * 100)}% failed`],
            ['bake time', `${r.min_phase_secs} s per phase`],
            r.start_at && ['starts', when(r.start_at)],
            r.labels.length && ['labels', r.labels.join(', ')],
            r.devices.length && ['listed devices', String(r.devices.length)],
            ['created', when(r.created_at)], ['updated', when(r.updated_at)],
          ])),
          h('div', { class: 'card' },
            table(['state', 'devices#'], [...STATES.map((k) => h('tr', {}, td([h('i', { class: `k-${k} swatch` }), k]), td(num(st[k]), 'num', `count-${k}`))),
              h('tr', {}, td(h('b', {}, 'targeted')), h('td', { class: 'num', id: 'count-targeted' }, num(r.status.targeted)))]),
            progress(st, r.status.targeted),
            h('p', { class: 'muted' }, `started ${num(r.status.started)} · completed ${num(r.status.completed)} · aborted only ${num(r.status.aborted_only)}`))),
        h('div', { class: 'card' }, h('h2', {}, 'States over time'), plot(hist),
          legend([...STATES, 'installed', 'failed'], [...STATES, '- - success threshold', '- - failure threshold'])),
        failed.items.length ? h('div', { class: 'card' }, h('h2', {}, 'Failed devices'),
          table(['device', 'report', 'at'], failed.items.map((m) => h('tr', {},
            td(h('a', { href: `#/devices/${enc(m.device)}` }, m.device), 'mono'),
            td(m.last_report ? m.last_report.detail || '' : ''), td(m.last_report ? when(m.last_report.at) : ''))))) : null);
    };
    await poll(() => refresh(), 2000);
  }

  // ---- Devices ----
  function macOf(text) {
    const hex = text.toLowerCase().replace(/[^0-9a-f]/g, '');
    return /^[0-9a-f]{12}$/.test(hex) && /^[0-9a-fA-F:.\-\s]+$/.test(text) ? hex.match(/../g).join(':') : null;
  }

  async function pageDevices(main, params) {
    const field = (id, ph, v) => h('input', { id, placeholder: ph, value: v || '' });
    const mac = field('search-mac', 'MAC (any form)', params.get('mac'));
    const model = field('search-model', 'model', params.get('model'));
    const label = field('search-label', 'label', params.get('label'));
    const enabled = h('select', { id: 'search-enabled' }, [['', 'any state'], ['true', 'enabled'], ['false', 'disabled']]
      .map(([v, t]) => h('option', { value: v, selected: v === (params.get('enabled') || '') }, t)));
    const out = h('div');
    const search = (ev) => {
      ev.preventDefault();
      if (mac.value.trim()) {
        const id = macOf(mac.value.trim());
        if (!id) { fill(out, h('p', { class: 'error' }, 'Not a MAC address: give 12 hex digits, with or without : - or . separators.')); return; }
        location.hash = `#/devices/${enc(id)}`;
        return;
      }
      const q = new URLSearchParams();
      for (const [k, el] of [['model', model], ['label', label], ['enabled', enabled]]) if (el.value.trim()) q.set(k, el.value.trim());
      location.hash = `#/devices?${q}`;
    };
    fill(main, h('h1', {}, 'Devices'),
      h('form', { class: 'row', on: { submit: search } }, mac, model, label, enabled, h('button', { class: 'primary', type: 'submit', id: 'search' }, 'Search')),
      out);
    const q = new URLSearchParams();
    for (const k of ['model', 'label', 'enabled']) if (params.get(k)) q.set(k, params.get(k));
    q.set('limit', '50');
    await pager(out, (after) => api(`/devices?${q}${after ? `&after=${enc(after)}` : ''}`),
      (items) => table(['device', 'model', 'labels', 'state', 'installed', 'registered'], items.map((d) => h('tr', {},
        td(h('a', { href: `#/devices/${enc(d.id)}` }, d.id), 'mono'), td(d.model), td(d.labels.join(', ')),
        td(pill(d.enabled ? 'enabled' : 'disabled')), td(d.installed_version || '—'), td(when(d.created_at)))), 'No device matches.'));
  }

  async function pageDevice(main, _params, id) {
    const confirmHost = h('div');
    const actions = h('div', { class: 'row' });
    const body = h('div');
    fill(main, h('h1', { id: 'device-title' }, `Device ${id}`), actions, confirmHost, body);
    let d;
    try {
      d = await api(`/devices/${enc(id)}`);
    } catch (e) {
      if (e instanceof ApiError && e.status === 404) { fill(body, h('p', { class: 'error' }, e.message)); return; }
      throw e;
    }
    const reload = () => route();
    const path = `/devices/${enc(d.id)}`;
    fill($('#device-title'), `Device ${d.id} `, pill(d.enabled ? 'enabled' : 'disabled'));
    if (can('admin')) {
      fill(actions,
        d.enabled
          ? h('button', { type: 'button', id: 'device-disable', on: { click: () => confirmBar(confirmHost, `Disable ${d.id}? Its logins are refused and its sessions closed.`, 'Disable', async () => { await api(`${path}/disable`, { method: 'POST' }); reload(); }) } }, 'Disable')
          : h('button', { type: 'button', id: 'device-enable', on: { click: () => confirmBar(confirmHost, `Enable ${d.id}?`, 'Enable', async () => { await api(`${path}/enable`, { method: 'POST' }); reload(); }) } }, 'Enable'),
        d.lockouts.length ? h('button', { type: 'button', id: 'device-unlock', on: { click: () => confirmBar(confirmHost, `Clear the login lockouts of ${d.id}?`, 'Clear lockouts', async () => { await api(`${path}/lockout`, { method: 'DELETE' }); reload(); }) } }, 'Clear lockouts') : null);
    }
    const t = d.target;
    const why = t ? (t.source === 'pin' ? 'pinned' : h('span', {}, 'rollout ', h('a', { href: `#/rollouts/${t.rollout}` }, `#${t.rollout}`))) : null;
    const pinCard = h('div', { class: 'card', id: 'pin' }, h('h2', {}, 'Pin'),
      d.pin ? kv([['version', d.pin.version], ['holds', d.pin.holds ? 'yes' : 'no (expired or yanked)'], ['reason', d.pin.reason || '—'],
        ['expires', d.pin.expires_at ? when(d.pin.expires_at) : 'never'], ['set by', `${d.pin.set_by}, ${when(d.pin.set_at)}`]]) : h('p', { class: 'muted' }, 'Not pinned: the rollouts decide.'));
    if (can('admin')) {
      if (d.pin) pinCard.append(h('button', { type: 'button', id: 'pin-remove', on: { click: () => confirmBar(confirmHost, `Remove the pin of ${d.id}?`, 'Remove pin', async () => { await api(`${path}/pin`, { method: 'DELETE' }); reload(); }) } }, 'Remove pin'));
      const releases = await api(`/releases?model=${enc(d.model)}&limit=100`);
      const version = h('select', { id: 'pin-version' }, releases.items.filter((r) => !r.yanked).map((r) => h('option', { value: r.version }, r.version)));
      const reason = h('input', { id: 'pin-reason', placeholder: 'reason' });
      const expires = h('input', { id: 'pin-expires', type: 'datetime-local', title: 'expires (UTC), empty: never', 'aria-label': 'expires (UTC), empty: never' });
      pinCard.append(h('form', { class: 'row', on: { submit: (ev) => {
        ev.preventDefault();
        const body = { version: version.value, reason: reason.value };
        if (expires.value) body.expires_at = `${expires.value}${expires.value.length === 16 ? ':00' : ''}Z`;
        confirmBar(confirmHost, `Pin ${d.id} to ${version.value}? Its rollouts no longer decide until the pin is removed or expires.`, 'Pin', async () => { await api(`${path}/pin`, { method: 'PUT', body }); reload(); });
      } } }, 'Pin to', version, reason, 'until (UTC, empty: never)', expires, h('button', { type: 'submit', id: 'pin-set' }, 'Pin…')));
    }
    const dg = d.diagnostics;
    fill(body,
      h('div', { class: 'grid' },
        h('div', { class: 'card' }, kv([
          ['model', d.model], ['labels', d.labels.join(', ') || '—'],
          ['installed', d.installed_version || 'none reported', 'device-installed'],
          ['target', t ? h('span', {}, `${t.version} (`, why, ')') : 'nothing (no rollout or pin selects it)', 'device-target'],
          ['registered', when(d.created_at)],
          ['lockouts', d.lockouts.length ? d.lockouts.map((l) => `${l.client_ip} until ${when(l.until)}`).join('; ') : 'none'],
        ])),
        pinCard,
        h('div', { class: 'card' }, h('h2', {}, 'FTPS diagnostics (since server start)'), kv([
          ['unused passive offers', `${dg.passive_offers_unused}${dg.last_unused_port ? ` (last port ${dg.last_unused_port})` : ''}`],
          ['data TLS failures', String(dg.data_tls_failures)], ['unbound data connections', String(dg.data_connections_unbound)],
          ['421 refusals', String(dg.sessions_refused)], ['last', when(dg.last_at)]]))),
      h('h2', {}, 'Last downloads'),
      table(['finished', 'version', 'file', 'bytes#', 'outcome', 'client', 'data port#'], d.downloads.map((x) => h('tr', {},
        td(when(x.finished_at)), td(x.version), td(x.file), td(`${bytes(x.bytes)} / ${bytes(x.size)}`, 'num'), td(pill(x.outcome)),
        td(x.client_ip, 'mono'), td(x.data_port === null ? '—' : String(x.data_port), 'num'))), 'No downloads recorded.'),
      h('h2', {}, 'Reports'),
      table(['at', 'version', 'outcome', 'detail', 'source'], d.reports.map((x) => h('tr', {},
        td(when(x.at)), td(x.version), td(pill(x.outcome)), td(x.detail || ''), td(`${x.source} ${x.client_ip}`))), 'No install reports.'));
  }

  // ---- Releases ----
  async function pageReleases(main, params) {
    const model = params.get('model') || '';
    const input = h('input', { id: 'release-model', placeholder: 'model', value: model });
    const out = h('div');
    fill(main, h('form', { class: 'row', on: { submit: (ev) => { ev.preventDefault(); location.hash = input.value.trim() ? `#/releases?model=${enc(input.value.trim())}` : '#/releases'; } } },
      h('h1', {}, 'Releases'), input, h('button', { type: 'submit' }, 'Filter')), out);
    await pager(out, (after) => api(`/releases?limit=100${model ? `&model=${enc(model)}` : ''}${after ? `&after=${enc(after)}` : ''}`),
      (items) => table(['release', 'sequence#', 'file', 'size#', 'sha256', 'published', 'state'], items.map((r) => h('tr', {},
        td(h('a', { href: `#/releases/${enc(r.model)}/${enc(r.version)}` }, `${r.model} ${r.version}`)), td(String(r.sequence), 'num'),
        td(r.file), td(bytes(r.size), 'num'), td(r.sha256.slice(0, 16) + '…', 'mono'), td(when(r.created_at)),
        td(pill(r.yanked ? 'yanked' : 'served')))), 'No releases published.'));
  }

  async function pageRelease(main, _params, model, version) {
    const confirmHost = h('div');
    const r = await api(`/releases/${enc(model)}/${enc(version)}`);
    const rollouts = await api(`/rollouts?model=${enc(model)}&limit=1000`);
    const using = rollouts.items.filter((x) => x.version === version);
    fill(main, h('h1', {}, `Release ${r.model} ${r.version} `, pill(r.yanked ? 'yanked' : 'served')),
      can('admin') && !r.yanked ? h('div', { class: 'row' }, h('button', {
        id: 'release-yank', class: 'danger', type: 'button',
        on: { click: () => confirmBar(confirmHost, `Yank ${r.model} ${r.version}? No device is served it any more, pinned or not.`, 'Yank', async () => { await api(`/releases/${enc(model)}/${enc(version)}/yank`, { method: 'POST' }); route(); }) },
      }, 'Yank…')) : null,
      confirmHost,
      h('div', { class: 'grid' },
        h('div', { class: 'card' }, kv([['sequence', String(r.sequence)], ['file', `${r.file} (${bytes(r.size)})`], ['sha256', h('span', { class: 'mono' }, r.sha256)],
          ['published', when(r.created_at)], r.yanked && ['yanked', when(r.yanked_at)]])),
        h('div', { class: 'card' }, h('h2', {}, 'Rollouts of this release'),
          table(['rollout', 'state', 'selection', 'progress'], using.map((x) => h('tr', {},
            td(h('a', { href: `#/rollouts/${x.id}` }, `#${x.id}`)), td(pill(x.state)), td(phaseText(x)), td(progress(x.status.states, x.status.targeted)))), 'No rollout uses it.'))),
      h('h2', {}, 'manifest.json, as signed'), h('pre', { id: 'manifest-raw' }, r.manifest_raw || ''),
      h('h2', {}, 'manifest.json.sig'), h('pre', {}, JSON.stringify(r.signature, null, 2)));
  }

  // ---- Sites ----
  async function pageSites(main) {
    const body = h('div');
    const rules = h('pre', { id: 'network-requirements' });
    fill(main, h('h1', {}, 'Sites with FTPS failures'),
      h('p', { class: 'muted' }, 'Client addresses (usually a site\'s NAT address) whose IQs hit a failure a firewall or NAT causes, newest first, since the server started.'),
      body, h('h2', {}, 'What every site must allow'), rules);
    const text = await fetch('/api/v1/network-requirements?format=text', { headers: { Authorization: `Bearer ${session.token}` }, cache: 'no-store' });
    rules.textContent = text.ok ? await text.text() : `(${text.status})`;
    await poll(async () => {
      const sites = await api('/sites?limit=200');
      fill(body, sites.items.length ? sites.items.map((x) => h('div', { class: 'card site', 'data-ip': x.client_ip },
        h('h2', {}, h('span', { class: 'mono' }, x.client_ip), h('span', { class: 'muted' }, ` · last ${when(x.last_at)}`)),
        h('ul', {}, x.problems.map((p) => h('li', { 'data-kind': p.kind }, h('b', {}, p.what), h('br'), 'Fix: ', h('span', { class: 'mono' }, p.fix)))),
        h('p', {}, 'Check from that site: ', h('code', {}, x.doctor)))) : h('p', { class: 'muted', id: 'no-sites' }, 'No FTPS failures counted since the server started.'),
      sites.total > sites.items.length ? h('p', { class: 'muted' }, `…and ${num(sites.total - sites.items.length)} more addresses.`) : null);
    }, 10000);
  }

  // ---- Audit ----
  async function pageAudit(main, params) {
    const action = params.get('action') || '';
    const doc = await fetch('/api/v1/openapi.json', { cache: 'no-store' }).then((r) => r.json()).catch(() => null);
    const actions = (doc && doc.components.schemas.AuditAction && doc.components.schemas.AuditAction.enum) || [];
    const pick = h('select', { id: 'audit-action', on: { change: (e) => { location.hash = e.target.value ? `#/audit?action=${e.target.value}` : '#/audit'; } } },
      h('option', { value: '' }, 'every action'), actions.map((a) => h('option', { value: a, selected: a === action }, a)));
    const text = h('input', { id: 'audit-text', placeholder: 'filter actor or target' });
    const out = h('div');
    const applyText = () => {
      const q = text.value.trim().toLowerCase();
      for (const tr of out.querySelectorAll('tbody tr')) tr.hidden = !!q && !tr.dataset.find.includes(q);
    };
    text.addEventListener('input', applyText);
    fill(main, h('div', { class: 'row' }, h('h1', {}, 'Audit log'), pick, text), out);
    await pager(out, (after) => api(`/audit?limit=100${action ? `&action=${enc(action)}` : ''}${after ? `&after=${enc(after)}` : ''}`),
      (items) => {
        const t = table(['at', 'actor', 'action', 'target', 'detail'], items.map((a) => h('tr', { 'data-find': `${a.actor} ${a.target}`.toLowerCase() },
          td(when(a.at)), td(a.actor), td(a.action, 'mono'), td(a.target, 'mono'), td(JSON.stringify(a.detail), 'mono'))), 'No entries.');
        setTimeout(applyText);
        return t;
      });
  }

  // ---- Start ----
  window.addEventListener('hashchange', route);
  document.addEventListener('DOMContentLoaded', async () => {
    $('#logout').addEventListener('click', () => logout('Logged out.'));
    const token = sessionStorage.getItem(KEY);
    if (!token) { showLogin(); return; }
    const { me, error } = await whoami(token);
    if (error) { sessionStorage.removeItem(KEY); showLogin(error); return; }
    start(token, me);
  });
})();
