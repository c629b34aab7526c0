// fraudstream dashboard: Server-Sent Events in, DOM out.
// Every value from the stream is written with textContent (never innerHTML), so a field such as
// "<script>" shows as text. The page's Content-Security-Policy forbids inline scripts as a second guard.
"use strict";

const MAX_ROWS = 200;
const RATE_WINDOW_S = 10;
const state = { history: [], historyLimit: 300, es: null };

function $(id) { return document.getElementById(id); }

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function setStatus(text, cls) {
  const status = $("status");
  status.textContent = text;
  status.className = "status " + cls;
}

function fmtInt(n) { return Number(n || 0).toLocaleString("en-US"); }

function fmtTime(iso, receivedMs) {
  const d = iso ? new Date(iso) : new Date(receivedMs);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleTimeString("en-GB", { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
}

function decisionLabel(ev) {
  if (ev.kind === "error") return "undecodable";
  return ev.branch || ev.kind;
}

function rowFor(ev) {
  const tx = ev.tx || {};
  const tr = el("tr", ev.kind);
  tr.dataset.kind = ev.kind;
  tr.dataset.id = ev.id;
  const rules = ev.kind === "error" ? ev.error : (ev.rules && ev.rules.length ? ev.rules.join(", ") : "(default)");
  const amount = tx.amount !== null && tx.amount !== undefined ? tx.amount + " " + (tx.currency || "") : "";
  const cells = [
    ["time", fmtTime(tx.event_time, ev.received_ms)],
    ["decision", decisionLabel(ev)],
    ["rule", rules],
    ["amount", amount],
    ["from", tx.source_account],
    ["to", tx.target_account],
    ["channel", tx.channel],
    ["country", tx.country],
    ["mcc", tx.merchant_category],
    ["txid", tx.transaction_id],
    ["where", ev.topic + " " + ev.partition + "/" + ev.offset],
  ];
  for (const [cls, value] of cells) {
    const td = el("td", cls, value === null || value === undefined ? "" : value);
    td.title = td.textContent;
    tr.appendChild(td);
  }
  return tr;
}

// events: newest first
function prependRows(events) {
  const body = $("rows");
  const frag = document.createDocumentFragment();
  for (const ev of events.slice(0, MAX_ROWS)) frag.appendChild(rowFor(ev));
  body.insertBefore(frag, body.firstChild);
  while (body.rows.length > MAX_ROWS) body.deleteRow(body.rows.length - 1);
}

function renderTotals(t, lastPoint) {
  $("c-decisions").textContent = fmtInt(t.decisions);
  $("c-legit").textContent = fmtInt(t.legit);
  $("c-fraud").textContent = fmtInt(t.fraud);
  $("c-rate").textContent = (100 * (t.fraud_rate || 0)).toFixed(2) + " %";
  $("c-alerts").textContent = fmtInt(t.alerts);
  $("c-errors").textContent = fmtInt(t.errors);
  $("c-dropped").textContent = fmtInt(t.dropped);
  if (lastPoint) $("c-tps").textContent = fmtInt(lastPoint[1]);
}

function renderRules(rules) {
  const list = $("rules");
  // Rules that decided, most hits first; the default branch (no rule) last, scaled with them.
  const entries = Object.entries(rules || {}).sort((a, b) =>
    (a[0] === "(default)") - (b[0] === "(default)") || b[1] - a[1]);
  const decided = entries.filter((e) => e[0] !== "(default)");
  const max = decided.length ? decided[0][1] : (entries.length ? entries[0][1] : 1);
  const frag = document.createDocumentFragment();
  for (const [rule, hits] of entries) {
    const li = el("li");
    const name = el("div", "name");
    name.appendChild(el("span", null, rule));
    name.appendChild(el("span", null, fmtInt(hits)));
    const bar = el("div", rule === "(default)" ? "bar default" : "bar");
    bar.style.width = Math.min(100, Math.max(1, (100 * hits) / max)).toFixed(1) + "%";
    li.appendChild(name);
    li.appendChild(bar);
    frag.appendChild(li);
  }
  list.replaceChildren(frag);
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

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function drawChart() {
  const canvas = $("chart");
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth, h = canvas.clientHeight || 220;
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const css = getComputedStyle(document.documentElement);
  const colLine = css.getPropertyValue("--line"), colMuted = css.getPropertyValue("--muted");
  const colTps = css.getPropertyValue("--accent"), colRate = css.getPropertyValue("--fraud");
  const pad = { l: 48, r: 48, t: 8, b: 22 };
  const pw = w - pad.l - pad.r, ph = h - pad.t - pad.b;
  const pts = state.history;
  const n = Math.max(state.historyLimit, 2);
  const maxTps = niceMax(Math.max(0, ...pts.map((p) => p[1])));
  const rates = rollingRates(pts, RATE_WINDOW_S);
  const maxRate = niceMax(Math.max(1, ...rates));
  ctx.font = "11px system-ui, sans-serif";
  ctx.strokeStyle = colLine;
  ctx.fillStyle = colMuted;
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const y = pad.t + (ph * i) / 4;
    ctx.beginPath(); ctx.moveTo(pad.l, y); ctx.lineTo(pad.l + pw, y); ctx.stroke();
    ctx.textAlign = "right";
    ctx.fillText(fmtInt((maxTps * (4 - i)) / 4), pad.l - 6, y + 4);
    ctx.textAlign = "left";
    ctx.fillText(((maxRate * (4 - i)) / 4).toFixed(maxRate < 4 ? 1 : 0) + "%", pad.l + pw + 6, y + 4);
  }
  ctx.textAlign = "center";
  for (const s of [n, Math.round(n / 2), 0]) {
    ctx.fillText(s ? "-" + s + "s" : "now", pad.l + pw * (1 - s / n), h - 6);
  }
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
  line(pts.map((p) => p[1]), maxTps, colTps);
  line(rates, maxRate, colRate);
}

function onSnapshot(msg) {
  state.history = msg.history || [];
  state.historyLimit = msg.history_s || state.historyLimit;
  $("rows").replaceChildren();
  prependRows(msg.recent || []);
  renderTotals(msg.totals, state.history[state.history.length - 1]);
  renderRules(msg.rules);
  drawChart();
}

function onTx(batch) {
  // batch is oldest first; the list shows newest first
  prependRows(batch.slice().reverse());
}

function onStats(msg) {
  if (msg.point) {
    const last = state.history[state.history.length - 1];
    if (!last || last[0] < msg.point[0]) state.history.push(msg.point);
    while (state.history.length > state.historyLimit) state.history.shift();
  }
  renderTotals(msg.totals, msg.point);
  renderRules(msg.rules);
  drawChart();
}

function connect() {
  const es = new EventSource("/events");
  state.es = es;
  es.addEventListener("open", () => setStatus("live", "live"));
  es.addEventListener("snapshot", (e) => onSnapshot(JSON.parse(e.data)));
  es.addEventListener("tx", (e) => onTx(JSON.parse(e.data)));
  es.addEventListener("stats", (e) => onStats(JSON.parse(e.data)));
  es.addEventListener("error", () => {
    if (es.readyState === EventSource.CLOSED) {
      // The browser gave up (e.g. the server answered with an error): try again ourselves.
      setStatus("reconnecting…", "reconnecting");
      setTimeout(connect, 2000);
    } else {
      setStatus("reconnecting…", "reconnecting");
    }
  });
}

window.addEventListener("resize", drawChart);
window.addEventListener("DOMContentLoaded", () => { drawChart(); connect(); });
