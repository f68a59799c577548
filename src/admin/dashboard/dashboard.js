// heartline admin dashboard: polls /v1/stats every second, keeps the last
// five minutes of snapshots, computes rates from counter differences and
// draws them on canvases. No framework, no build step, no other origin.
// Ids in the JSON API are decimal strings and stay strings here.
'use strict';

(() => {
  const TOKEN_KEY = 'heartline.admin.token';
  const EVERY_MS = 1000;
  const WINDOW_MS = 5 * 60 * 1000;
  const LATENCY_WINDOW = 10; // snapshots: latencies are over the last ~10 s
  const NONE = '—';

  const $ = (id) => document.getElementById(id);
  const number = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
  const fmt = (v) => (v === null || v === undefined || Number.isNaN(v) ? NONE : number.format(v));
  const show = (id, value) => {
    const el = $(id);
    if (el && el.textContent !== value) el.textContent = value;
  };

  /** Snapshots of /v1/stats, oldest first, at most WINDOW_MS apart. */
  const samples = [];
  let waitingForToken = false;

  class Unauthorized extends Error {}

  function authHeaders() {
    const token = sessionStorage.getItem(TOKEN_KEY);
    return token ? { Authorization: 'Bearer ' + token } : {};
  }

  async function getJson(path) {
    const response = await fetch(path, { headers: authHeaders(), cache: 'no-store' });
    if (response.status === 401) throw new Unauthorized();
    const body = await response.json().catch(() => null);
    if (!response.ok) throw new Error((body && body.error) || 'HTTP ' + response.status);
    return body;
  }

  function setAuthState(text, good) {
    const badge = $('auth-state');
    show('auth-state', text);
    badge.className = 'badge ' + (good ? 'ok' : 'bad');
    $('token-forget').hidden = !sessionStorage.getItem(TOKEN_KEY);
  }

  function askForToken() {
    waitingForToken = true;
    setAuthState('token needed', false);
    $('token-form').hidden = false;
    $('token-input').focus();
  }

  /** Runs `work` now and then every second, never two at once. */
  function every(work) {
    let busy = false;
    const run = async () => {
      if (busy || waitingForToken) return;
      busy = true;
      try {
        await work();
      } catch (e) {
        if (e instanceof Unauthorized) askForToken();
        else setAuthState('error: ' + e.message, false);
      } finally {
        busy = false;
      }
    };
    run();
    return setInterval(run, EVERY_MS);
  }

  // ---- rates and latencies from two snapshots ----

  /** Per second between snapshots `a` and `b` of the counter `read`; null after a restart. */
  function rate(a, b, read) {
    if (!a || !b) return null;
    const dt = (b.now_ms - a.now_ms) / 1000;
    const dv = read(b) - read(a);
    return dt > 0 && dv >= 0 ? dv / dt : null;
  }

  /** Mean and p99 in ms of a latency histogram between two snapshots. */
  function latency(a, b, read) {
    if (!a || !b) return { mean: null, p99: null };
    const [ha, hb] = [read(a), read(b)];
    const count = hb.count - ha.count;
    if (count <= 0) return { mean: null, p99: null };
    const buckets = hb.buckets.map((c, i) => c - (ha.buckets[i] || 0));
    let seen = 0;
    let p99 = null;
    for (let i = 0; i < buckets.length; i++) {
      seen += buckets[i];
      if (seen >= 0.99 * count) {
        // The bucket's upper bound; past the last bound, "more than" it.
        p99 = (hb.bounds_us[Math.min(i, hb.bounds_us.length - 1)]) / 1000;
        break;
      }
    }
    return { mean: (hb.sum_us - ha.sum_us) / count / 1000, p99 };
  }

  const heartbeatsOf = (name) => (s) => {
    const t = s.transports.find((x) => x.name === name);
    return t ? t.heartbeats : 0;
  };

  // ---- rendering ----

  function renderTransports(prev, cur) {
    const body = $('transports');
    const names = cur.transports.map((t) => t.name);
    if (body.dataset.names !== names.join(',')) {
      body.replaceChildren(...names.map((name) => {
        const row = document.createElement('tr');
        row.id = row.dataset.testid = 'transport-' + name;
        const cells = [['', name], ['-connections', NONE], ['-heartbeats-per-second', NONE]];
        for (const [suffix, text] of cells) {
          const cell = document.createElement(suffix ? 'td' : 'th');
          if (suffix) cell.id = cell.dataset.testid = 'transport-' + name + suffix;
          cell.textContent = text;
          row.append(cell);
        }
        return row;
      }));
      body.dataset.names = names.join(',');
    }
    for (const t of cur.transports) {
      show('transport-' + t.name + '-connections', t.connections === null ? NONE : fmt(t.connections));
      show('transport-' + t.name + '-heartbeats-per-second', fmt(rate(prev, cur, heartbeatsOf(t.name))));
    }
  }

  function render() {
    const cur = samples[samples.length - 1];
    const prev = samples[samples.length - 2];
    const older = samples[Math.max(0, samples.length - 1 - LATENCY_WINDOW)];
    show('server-version', cur.version);
    show('last-updated', new Date(cur.now_ms).toLocaleTimeString());
    show('sessions-online', fmt(cur.sessions));
    show('users-online', fmt(cur.online_users));
    show('connections', fmt(cur.connections));
    show('connections-open', fmt(cur.connections_open));
    show('watches', fmt(cur.watches));
    show('heartbeats-per-second', fmt(rate(prev, cur, (s) => s.heartbeats)));
    show('watch-events-per-second', fmt(rate(prev, cur, (s) => s.watch_events)));
    show('posts-per-second', fmt(rate(prev, cur, (s) => s.posts)));
    show('fanout-inserts-per-second', fmt(rate(prev, cur, (s) => s.fanout.inserts)));
    show('fanout-queue-depth', fmt(cur.fanout.queue_depth));
    show('fanout-queue-capacity', fmt(cur.fanout.queue_capacity));
    const lag = latency(older, cur, (s) => s.fanout.lag);
    show('fanout-lag', fmt(lag.mean));
    show('fanout-lag-p99', fmt(lag.p99));
    show('store-state', cur.store.up ? 'up' : 'down');
    $('store-state').className = 'value state-' + (cur.store.up ? 'up' : 'down');
    const commit = latency(older, cur, (s) => s.store.commit);
    show('store-commit-latency', fmt(commit.mean));
    show('store-commit-p99', fmt(commit.p99));
    renderTransports(prev, cur);

    const series = (read) => samples.map((s) => [s.now_ms, read(s)]);
    const rates = (read) => samples.map((s, i) => [s.now_ms, rate(samples[i - 1], s, read)]);
    draw($('chart-presence'), cur.now_ms, [series((s) => s.sessions), series((s) => s.online_users)]);
    draw($('chart-heartbeats'), cur.now_ms, [rates((s) => s.heartbeats)]);
    draw($('chart-posts'), cur.now_ms, [rates((s) => s.posts), rates((s) => s.fanout.inserts)]);
  }

  /** Lines of [ms, value] points over the WINDOW_MS ending at `end`, from 0 to a round maximum. */
  function draw(canvas, end, lines) {
    const ratio = window.devicePixelRatio || 1;
    const [w, h] = [canvas.clientWidth, canvas.clientHeight];
    if (!w || !h) return;
    if (canvas.width !== Math.round(w * ratio)) canvas.width = Math.round(w * ratio);
    if (canvas.height !== Math.round(h * ratio)) canvas.height = Math.round(h * ratio);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const style = getComputedStyle(document.documentElement);
    const color = (name) => style.getPropertyValue(name).trim();
    const colors = [color('--c0'), color('--c1')];
    const values = lines.flat().map(([, v]) => v).filter((v) => v !== null);
    const max = roundUp(Math.max(1, ...values));
    const pad = { left: 44, right: 6, top: 8, bottom: 18 };
    const x = (t) => pad.left + ((t - (end - WINDOW_MS)) / WINDOW_MS) * (w - pad.left - pad.right);
    const y = (v) => h - pad.bottom - (v / max) * (h - pad.top - pad.bottom);

    ctx.strokeStyle = color('--line');
    ctx.fillStyle = color('--muted');
    ctx.font = '11px system-ui, sans-serif';
    ctx.lineWidth = 1;
    ctx.textAlign = 'right';
    for (const v of [0, max / 2, max]) {
      ctx.beginPath();
      ctx.moveTo(pad.left, y(v) + 0.5);
      ctx.lineTo(w - pad.right, y(v) + 0.5);
      ctx.stroke();
      ctx.fillText(number.format(v), pad.left - 4, y(v) + 4);
    }
    ctx.textAlign = 'left';
    ctx.fillText('-5 min', pad.left, h - 4);
    ctx.textAlign = 'right';
    ctx.fillText('now', w - pad.right, h - 4);

    ctx.lineWidth = 1.5;
    lines.forEach((points, i) => {
      ctx.strokeStyle = colors[i % colors.length];
      ctx.beginPath();
      let drawing = false;
      for (const [t, v] of points) {
        if (v === null || t < end - WINDOW_MS) {
          drawing = false;
          continue;
        }
        if (drawing) ctx.lineTo(x(t), y(v));
        else ctx.moveTo(x(t), y(v));
        drawing = true;
      }
      ctx.stroke();
    });
  }

  /** 1, 2 or 5 times a power of ten, at least `v`. */
  function roundUp(v) {
    const power = 10 ** Math.floor(Math.log10(v));
    return [1, 2, 5, 10].map((m) => m * power).find((m) => m >= v);
  }

  // ---- polling ----

  async function sample() {
    const snapshot = await getJson('/v1/stats');
    const last = samples[samples.length - 1];
    if (last && snapshot.now_ms <= last.now_ms) return;
    samples.push(snapshot);
    while (samples.length && samples[0].now_ms < snapshot.now_ms - WINDOW_MS) samples.shift();
    setAuthState(sessionStorage.getItem(TOKEN_KEY) ? 'token' : 'open', true);
    render();
  }

  let presenceUser = null;

  async function lookUp() {
    if (presenceUser === null) return;
    const user = presenceUser;
    let entry;
    try {
      entry = await getJson('/v1/presence/' + encodeURIComponent(user));
    } catch (e) {
      if (e instanceof Unauthorized) throw e;
      show('presence-error', e.message);
      return;
    }
    if (user !== presenceUser) return;
    show('presence-error', '');
    show('presence-user', entry.user);
    show('presence-status', entry.status);
    $('presence-status').className = 'status-' + entry.status;
    show('presence-text', entry.text || NONE);
    show('presence-last-seen', entry.last_seen_ms ? new Date(entry.last_seen_ms).toLocaleString() : 'never');
    show('presence-version', entry.version);
    show('presence-updated', new Date().toLocaleTimeString());
  }

  function start() {
    $('token-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const token = $('token-input').value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      $('token-input').value = '';
      $('token-form').hidden = true;
      waitingForToken = false;
      setAuthState('token', true);
    });
    $('token-forget').addEventListener('click', () => {
      sessionStorage.removeItem(TOKEN_KEY);
      askForToken();
    });
    $('presence-form').addEventListener('submit', (event) => {
      event.preventDefault();
      const user = $('presence-input').value.trim();
      if (!/^[0-9]{1,20}$/.test(user)) {
        show('presence-error', 'a user id is 1 to 20 digits');
        return;
      }
      presenceUser = user;
      for (const id of ['presence-user', 'presence-status', 'presence-text', 'presence-last-seen', 'presence-version']) {
        show(id, NONE);
      }
      show('presence-user', user);
      lookUp().catch((e) => e instanceof Unauthorized && askForToken());
    });
    window.addEventListener('resize', () => samples.length && render());
    every(sample);
    every(lookUp);
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
