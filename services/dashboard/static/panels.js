// fraudstream dashboard: counters, the two charts, the alert detail and the health panel.
// Shares app.js's globals (state, el, $); like app.js it writes every value with textContent.
"use strict";

const RATE_WINDOW_S = 10;
const RULE_INTERVAL_S = 10;
const RULE_COLORS = ["#58a6ff", "#ff5c5c", "#e3c84b", "#a29bfe", "#c678dd", "#ff9f43", "#56d4dd", "#f78fb3"];

function renderTotals(t, lastPoint) {
  $("c-decisions").textContent = fmtInt(t.decisions);
  $("c-legit").textContent = fmtInt(t.legit);
  $("c-fraud").textContent = fmtInt(t.fraud);
  $("c-rate").textContent = (100 * (t.fraud_rate || 0)).toFixed(2) + " %";
  $("c-alerts").textContent = fmtInt(t.alerts);
  $("c-dead").textContent = fmtInt(t.dead_letters);
  $("c-errors").textContent = fmtInt(t.errors);
  $("c-dropped").textContent = fmtInt(t.dropped);
  if (lastPoint) $("c-tps").textContent = fmtInt(lastPoint[1]);
}

function ruleColor(id) {
  const ids = [...state.ruleIds].sort();
  const i = ids.indexOf(id);
  return RULE_COLORS[(i < 0 ? ids.length : i) % RULE_COLORS.length];
}

// Cumulative hits per rule (the legend of the rule chart); the default branch last.
function renderRules(rules) {
  const entries = Object.entries(rules || {}).sort((a, b) =>
    (a[0] === "(default)") - (b[0] === "(default)") || b[1] - a[1]);
  const frag = document.createDocumentFragment();
  for (const [rule, hits] of entries) {
    const li = el("li");
    const swatch = el("span", "swatch");
    swatch.style.background = rule === "(default)" ? "var(--legit)" : ruleColor(rule.split("@")[0]);
    li.appendChild(swatch);
    li.appendChild(el("span", "name", rule));
    li.appendChild(el("span", "hits", fmtInt(hits)));
    frag.appendChild(li);
  }
  $("rules").replaceChildren(frag);
}

function onStats(msg) {
  if (msg.point) {
    const last = state.history[state.history.length - 1];
    if (!last || last[0] < msg.point[0]) state.history.push(msg.point);
    while (state.history.length > state.historyLimit) state.history.shift();
  }
  renderTotals(msg.totals, msg.point || state.history[state.history.length - 1]);
  renderRules(msg.rules);
  if (msg.health) renderHealth(msg.health);
  drawCharts();
}

// ---- charts (hand-written canvas)

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

// Fraud rate (%) over the last `window` seconds at each point: per-second rates at low traffic are noise.
function rollingRates(pts, window) {
  const out = [];
  let tx = 0, fraud = 0;
  for (let i = 0; i < pts.length; i++) {
    tx += pts[i][1]; fraud += pts[i][2];
    if (i >= window) { tx -= pts[i - window][1]; fraud -= pts[i - window][2]; }
    out.push(tx ? (100 * fraud) / tx : 0);
  }
  return out;
}

function canvasContext(canvas, height) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight || height;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  ctx.font = "11px system-ui, sans-serif";
  return { ctx: ctx, w: w, h: h };
}

function cssVar(name) { return getComputedStyle(document.documentElement).getPropertyValue(name); }

function gridLines(ctx, pad, pw, ph, left, right) {
  ctx.strokeStyle = cssVar("--line");
  ctx.fillStyle = cssVar("--muted");
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + (ph * i) / 4;
    ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(pad.l + pw, y); ctx.stroke();
    ctx.textAlign = "right";
    ctx.fillText(left(4 - i), pad.l - 6, y + 4);
    if (right) { ctx.textAlign = "left"; ctx.fillText(right(4 - i), pad.l + pw + 6, y + 4); }
  }
}

function timeAxis(ctx, pad, pw, h, n) {
  ctx.textAlign = "center";
  for (const s of [n, Math.round(n / 2), 0]) ctx.fillText(s ? "-" + s + "s" : "now", pad.l + pw * (1 - s / n), h - 6);
}

function drawThroughput() {
  const { ctx, w, h } = canvasContext($("chart"), 220);
  const pad = { l: 48, r: 48, t: 8, b: 22 };
  const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
  const pts = state.history, n = Math.max(state.historyLimit, 2);
  const maxTps = niceMax(Math.max(0, ...pts.map((p) => p[1])));
  const rates = rollingRates(pts, RATE_WINDOW_S);
  const maxRate = niceMax(Math.max(1, ...rates));
  gridLines(ctx, pad, pw, ph, (i) => fmtInt((maxTps * i) / 4),
    (i) => ((maxRate * i) / 4).toFixed(maxRate < 4 ? 1 : 0) + "%");
  timeAxis(ctx, pad, pw, h, n);
  const x = (i) => pad.l + pw * (1 - (pts.length - 1 - i) / n);
  function line(values, max, color) {
    if (!values.length) return;
    ctx.strokeStyle = color;
    ctx.lineWidth = 2;
    ctx.beginPath();
    values.forEach((v, i) => {
      const y = pad.t + ph * (1 - v / max);
      if (i === 0) ctx.moveTo(x(i), y); else ctx.lineTo(x(i), y);
    });
    ctx.stroke();
  }
  line(pts.map((p) => p[1]), maxTps, cssVar("--accent"));
  line(rates, maxRate, cssVar("--fraud"));
}

// Fraud decisions per rule per RULE_INTERVAL_S seconds, as stacked bars (a decision by two rules counts for both).
function ruleBuckets() {
  const buckets = new Map();
  for (const p of state.history) {
    const b = Math.floor(p[0] / RULE_INTERVAL_S) * RULE_INTERVAL_S;
    const hits = buckets.get(b) || {};
    for (const [rule, n] of Object.entries(p[3] || {})) hits[rule] = (hits[rule] || 0) + n;
    buckets.set(b, hits);
  }
  return buckets;
}

function drawRuleChart() {
  const { ctx, w, h } = canvasContext($("rule-chart"), 160);
  const pad = { l: 36, r: 8, t: 8, b: 22 };
  const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
  const buckets = ruleBuckets();
  const slots = Math.max(1, Math.ceil(state.historyLimit / RULE_INTERVAL_S));
  const now = state.history.length ? state.history[state.history.length - 1][0] : 0;
  const last = Math.floor(now / RULE_INTERVAL_S) * RULE_INTERVAL_S;
  const totals = [...buckets.values()].map((hits) => Object.values(hits).reduce((a, b) => a + b, 0));
  const max = niceMax(Math.max(1, ...totals));
  gridLines(ctx, pad, pw, ph, (i) => fmtInt((max * i) / 4), null);
  timeAxis(ctx, pad, pw, h, slots * RULE_INTERVAL_S);
  const bw = pw / slots;
  for (const [start, hits] of buckets) {
    const slot = slots - 1 - (last - start) / RULE_INTERVAL_S;
    if (slot < 0) continue;
    let y = pad.t + ph;
    for (const rule of Object.keys(hits).sort()) {
      const bh = (ph * hits[rule]) / max;
      ctx.fillStyle = ruleColor(rule);
      ctx.fillRect(pad.l + slot * bw + 1, y - bh, Math.max(1, bw - 2), bh);
      y -= bh;
    }
  }
}

function drawCharts() {
  drawThroughput();
  drawRuleChart();
}

// ---- alert detail

function txTable(rows, emptyText) {
  if (!rows.length) return el("p", "sub", emptyText);
  const table = el("table", "tx-table");
  const head = el("tr");
  for (const name of ["time", "decision", "rule", "amount", "from", "to", "transaction"]) head.appendChild(el("th", null, name));
  table.appendChild(el("thead")).appendChild(head);
  const body = table.appendChild(el("tbody"));
  for (const row of rows) {
    if (row.event) {
      const ev = row.event, tx = ev.tx || {};
      body.appendChild(cellsRow(el("tr", ev.kind), [
        ["time", fmtTime(tx.event_time, ev.received_ms)], ["decision", decisionLabel(ev)], ["rule", ruleText(ev)],
        ["amount", fmtAmount(tx)], ["from", tx.source_account], ["to", tx.target_account], ["txid", tx.transaction_id],
      ]));
    } else {
      const tr = cellsRow(el("tr", "unseen"), [["time", ""], ["decision", "not seen here"], ["rule", ""],
        ["amount", ""], ["from", ""], ["to", ""], ["txid", row.transaction_id]]);
      body.appendChild(tr);
    }
  }
  return table;
}

function detailSection(title, content) {
  const div = el("div", "detail-section");
  div.appendChild(el("h3", null, title));
  div.appendChild(content);
  return div;
}

function renderDetail(d) {
  const tx = d.tx || {};
  const frag = document.createDocumentFragment();
  const head = el("div", "detail-head");
  head.appendChild(el("div", "detail-title", fmtAmount(tx) + " · " + (tx.source_account || "") + " → "
    + (tx.target_account || "")));
  head.appendChild(el("div", "sub", "transaction " + d.key + " · " + fmtTime(tx.event_time, d.received_ms)
    + " · " + d.kinds.join(" + ") + " · detector " + (d.version || "unknown")));
  frag.appendChild(head);
  const rules = el("ul", "rules-fired");
  for (const r of d.rules_fired) {
    const li = el("li");
    li.appendChild(el("strong", "ref", r.ref));
    li.appendChild(el("span", "desc", " " + (r.description || "(no description)")));
    li.appendChild(el("span", "sub", " · version " + (r.version === null ? "?" : r.version) + " from " + r.source));
    rules.appendChild(li);
  }
  frag.appendChild(detailSection("Rules fired", rules));
  const evidence = el("ul", "evidence");
  for (const item of d.evidence) evidence.appendChild(el("li", null, item.rule + ": " + item.text));
  if (!d.evidence.length) evidence.appendChild(el("li", "sub", "no aggregates (stateless rules only)"));
  frag.appendChild(detailSection("Evidence", evidence));
  frag.appendChild(detailSection("Related transactions (" + d.related.length + ")",
    txTable(d.related, "the evidence names no earlier transactions")));
  frag.appendChild(detailSection("Recent transactions of " + (d.account || "the account"),
    txTable(d.account_recent.map((ev) => ({ event: ev })), "none seen by this dashboard")));
  $("detail-body").replaceChildren(frag);
}

function openDetail(key) {
  state.selected = key;
  for (const tr of $("queue-rows").rows) tr.classList.toggle("selected", tr.dataset.key === key);
  fetch("/api/alerts/" + encodeURIComponent(key))
    .then((r) => (r.ok ? r.json() : Promise.reject(new Error("HTTP " + r.status))))
    .then((d) => { if (state.selected === key) renderDetail(d); })
    .catch((err) => $("detail-body").replaceChildren(el("p", "sub", "not available: " + err.message)));
}

// ---- health

function kvList(id, pairs) {
  const frag = document.createDocumentFragment();
  for (const [k, v] of pairs) {
    const li = el("li");
    li.appendChild(el("span", "k", k));
    li.appendChild(el("span", "v", v === null || v === undefined ? "–" : v));
    frag.appendChild(li);
  }
  $(id).replaceChildren(frag);
}

function renderDeadLetters(dl) {
  $("dead-total").textContent = fmtInt(dl.total) + " seen";
  kvList("dead-reasons", Object.entries(dl.by_reason).map(([reason, n]) => [reason, fmtInt(n)]));
  $("dead-rows").replaceChildren(...dl.last.map((d) => cellsRow(el("tr", "dead-letter"), [
    ["time", fmtTime(null, d.received_ms)], ["reason", d.reason], ["class", d.class],
    ["where", (d.source_topic || "?") + " " + (d.source_partition || "?") + "/" + (d.source_offset || "?")],
    ["message", d.message],
  ])));
}

function renderGroup(g) {
  const pairs = [["group", g.group_id], ["total lag", g.lag === null || g.lag === undefined ? null : fmtInt(g.lag)],
    ["state", g.state], ["members", g.members ? g.members.length : null]];
  const byLag = (g.partitions || []).slice().sort((a, b) => b.lag - a.lag);
  for (const p of byLag.slice(0, 4)) pairs.push([p.topic + "/" + p.partition, fmtInt(p.lag)]);
  if (byLag.length > 4) pairs.push(["other partitions", byLag.length - 4]);
  if (g.error) pairs.push(["error", g.error]);
  pairs.push(["asked", g.probed_ms ? fmtTime(null, g.probed_ms) : "not yet"]);
  kvList("lag", pairs);
}

function renderHealth(h) {
  renderDeadLetters(h.dead_letters);
  renderGroup(h.group || {});
  const lat = h.latency_ms;
  kvList("latency", [["p50", lat.p50 === null ? null : fmtInt(lat.p50) + " ms"],
    ["p99", lat.p99 === null ? null : fmtInt(lat.p99) + " ms"], ["decisions sampled", fmtInt(lat.samples)]]);
  const pairs = (h.group && h.group.members || []).map((m) =>
    ["member " + (m.instance || m.client_id) + " @ " + m.host, m.partitions.length + " partitions"]);
  for (const v of h.versions.slice(0, 6)) {
    pairs.push(["version " + v.version, fmtInt(v.records) + " records, last " + fmtTime(null, v.last_ms)]);
  }
  if (!pairs.length) pairs.push(["seen", null]);
  kvList("detectors", pairs);
}
