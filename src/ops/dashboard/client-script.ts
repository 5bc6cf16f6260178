// The dashboard's one browser script, served as /static/dashboard.js (a string here so `tsc`
// carries it into dist/ and nobody runs a build step for the browser). It finds every
// <div class="io-graph" data-tunnel="NAME">, loads the last hour from /api/io, draws it with
// uPlot, then appends one point per second from the SSE stream /api/io/events.
// Each graph element records its progress in data-* attributes (updates, last-second, last-in,
// last-out), which is also what the browser test reads. Buttons above each graph narrow the
// view to the last 5 or 15 minutes (the data kept is always the hour).
// Owns: the browser side of the live graph. Must not: use inline event handlers or eval (the
// listener's CSP forbids both), or build markup from strings (tunnel names are data).
export const DASHBOARD_JS = String.raw`'use strict';
(function () {
  var WINDOW = 3600;
  var VIEWS = [[300, '5 min'], [900, '15 min'], [3600, '1 hour']];
  var graphs = [];

  function fmtRate(v) {
    if (v == null) return '-';
    var units = ['B/s', 'KiB/s', 'MiB/s', 'GiB/s', 'TiB/s'];
    var i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return (i === 0 ? String(Math.round(v)) : v.toFixed(v < 10 ? 2 : 1)) + ' ' + units[i];
  }

  function note(el, text) {
    var p = document.createElement('p');
    p.className = 'graph-note';
    p.textContent = text;
    el.appendChild(p);
  }

  function width(el) {
    return Math.max(300, Math.min(1200, el.clientWidth || 600));
  }

  function build(g, series) {
    var xs = [], ins = [], outs = [];
    for (var i = 0; i < series.in.length; i++) {
      xs.push(series.start + i);
      ins.push(series.in[i]);
      outs.push(series.out[i]);
    }
    g.data = [xs, ins, outs];
    var opts = {
      width: width(g.el),
      height: 180,
      scales: { x: { time: true } },
      series: [
        {},
        { label: 'in (to service)', stroke: '#1f6fb2', fill: 'rgba(31,111,178,0.10)', width: 1.5, value: function (u, v) { return fmtRate(v); } },
        { label: 'out (to client)', stroke: '#c2410c', width: 1.5, value: function (u, v) { return fmtRate(v); } }
      ],
      axes: [{}, { size: 96, values: function (u, vals) { return vals.map(fmtRate); } }]
    };
    if (g.plot) g.plot.destroy();
    g.plot = new uPlot(opts, g.data, g.el);
    g.el.dataset.points = String(xs.length);
    zoom(g);
  }

  function zoom(g) {
    var xs = g.data[0];
    if (!xs.length) return;
    var last = xs[xs.length - 1];
    g.plot.setScale('x', { min: last - g.view + 1, max: last });
    g.el.dataset.view = String(g.view);
  }

  function controls(g) {
    var bar = document.createElement('div');
    bar.className = 'graph-views';
    VIEWS.forEach(function (v) {
      var b = document.createElement('button');
      b.type = 'button';
      b.textContent = v[1];
      b.dataset.seconds = String(v[0]);
      b.setAttribute('aria-pressed', String(v[0] === g.view));
      b.addEventListener('click', function () {
        g.view = v[0];
        var all = bar.querySelectorAll('button');
        for (var i = 0; i < all.length; i++) all[i].setAttribute('aria-pressed', String(all[i] === b));
        if (g.plot) zoom(g);
      });
      bar.appendChild(b);
    });
    g.el.parentNode.insertBefore(bar, g.el);
  }

  function load(g) {
    return fetch('/api/io?tunnel=' + encodeURIComponent(g.tunnel), { credentials: 'same-origin' })
      .then(function (res) {
        if (res.status === 404) return { start: Math.floor(Date.now() / 1000) - WINDOW, in: zeros(WINDOW), out: zeros(WINDOW) };
        if (!res.ok) throw new Error('HTTP ' + res.status);
        return res.json();
      })
      .then(function (series) { build(g, series); });
  }

  function zeros(n) {
    var a = [];
    for (var i = 0; i < n; i++) a.push(0);
    return a;
  }

  function append(g, second, pair) {
    if (!g.data) return;
    var xs = g.data[0];
    var last = xs.length ? xs[xs.length - 1] : second - 1;
    if (second <= last) return;
    if (second - last > 30) { load(g); return; }
    for (var s = last + 1; s <= second; s++) {
      var here = s === second;
      xs.push(s);
      g.data[1].push(here ? pair[0] : 0);
      g.data[2].push(here ? pair[1] : 0);
    }
    while (xs.length > WINDOW) { xs.shift(); g.data[1].shift(); g.data[2].shift(); }
    g.plot.setData(g.data);
    zoom(g);
    g.updates += 1;
    g.el.dataset.updates = String(g.updates);
    g.el.dataset.lastSecond = String(second);
    g.el.dataset.lastIn = String(pair[0]);
    g.el.dataset.lastOut = String(pair[1]);
  }

  function listen() {
    var source = new EventSource('/api/io/events');
    source.onmessage = function (ev) {
      var point;
      try { point = JSON.parse(ev.data); } catch (e) { return; }
      for (var i = 0; i < graphs.length; i++) {
        var g = graphs[i];
        var pair = Object.prototype.hasOwnProperty.call(point.tunnels, g.tunnel) ? point.tunnels[g.tunnel] : [0, 0];
        append(g, point.second, pair);
      }
    };
    source.onerror = function () {
      for (var i = 0; i < graphs.length; i++) graphs[i].el.dataset.stream = 'reconnecting';
    };
    source.onopen = function () {
      for (var i = 0; i < graphs.length; i++) graphs[i].el.dataset.stream = 'open';
    };
  }

  function start() {
    var els = document.querySelectorAll('.io-graph[data-tunnel]');
    if (els.length === 0) return;
    if (typeof uPlot !== 'function') {
      for (var k = 0; k < els.length; k++) note(els[k], 'The graph library did not load.');
      return;
    }
    for (var i = 0; i < els.length; i++) {
      var g = { el: els[i], tunnel: els[i].dataset.tunnel, plot: null, data: null, updates: 0, view: 3600 };
      graphs.push(g);
      controls(g);
    }
    Promise.all(graphs.map(function (g) {
      return load(g).catch(function (err) { note(g.el, 'Could not load the last hour: ' + err.message); });
    })).then(listen);
    var timer = null;
    window.addEventListener('resize', function () {
      clearTimeout(timer);
      timer = setTimeout(function () {
        for (var i = 0; i < graphs.length; i++) if (graphs[i].plot) graphs[i].plot.setSize({ width: width(graphs[i].el), height: 180 });
      }, 150);
    });
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
`;

export const DASHBOARD_CSS = String.raw`:root { color-scheme: light dark; --ok: #15803d; --bad: #b91c1c; --warn: #b45309; --line: #8884; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; }
header { display: flex; flex-wrap: wrap; justify-content: space-between; gap: .5em; padding: .6em 1em; border-bottom: 1px solid var(--line); }
nav a { margin-right: .9em; }
main { padding: 0 1em 2em; max-width: 1300px; }
h1 { font-size: 1.4em; }
h2 { font-size: 1.15em; margin-top: 1.6em; border-bottom: 1px solid var(--line); }
h3 { font-size: 1.05em; margin: .4em 0; }
table { border-collapse: collapse; width: 100%; font-size: .92em; }
th, td { text-align: left; padding: .25em .5em; border-bottom: 1px solid var(--line); vertical-align: top; overflow-wrap: anywhere; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.ok { color: var(--ok); font-weight: 600; }
.bad { color: var(--bad); font-weight: 600; }
.warn { color: var(--warn); font-weight: 600; }
.meta, small { opacity: .8; }
.problems { border: 1px solid var(--bad); padding: .5em 1em; }
article.tunnel { border: 1px solid var(--line); border-radius: 4px; padding: .5em 1em; margin: .8em 0; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .1em 1em; margin: .3em 0; }
dt { font-weight: 600; }
dd { margin: 0; }
ul.history { margin: .2em 0; padding-left: 1.1em; }
.io-graph { min-height: 40px; }
.graph-views { margin: .4em 0 .2em; }
.graph-views button { font: inherit; font-size: .85em; margin-right: .3em; padding: .1em .6em; border: 1px solid var(--line); background: none; color: inherit; border-radius: 3px; cursor: pointer; }
.graph-views button[aria-pressed="true"] { background: #1f6fb2; color: #fff; }
form.inline { display: inline; }
form.filters label, form label { margin-right: 1em; }
`;
