// fraudstream dashboard: Server-Sent Events in, DOM out. Lists, filters and pause live here;
// charts, the alert detail and the health panel in panels.js.
// Every value from the stream is written with textContent (never innerHTML), so a field such as
// "<script>" shows as text. The page's Content-Security-Policy forbids inline scripts as a second guard.
"use strict";

const MAX_ROWS = 200;       // rows of the live list
const KEEP_LIVE = 2000;     // recent events kept in the page, so a filter has something to show
const QUEUE_ROWS = 500;     // rows of the alert queue drawn at once (the page keeps the whole queue)
const state = {
  history: [], historyLimit: 300, es: null,
  live: [],                 // events, newest first
  queue: [], queueIndex: new Map(), queueCapacity: 5000,
  ruleIds: new Set(),
  filter: { decision: "all", rule: "", q: "" },
  paused: false, missed: 0, selected: null, renderTimer: null,
};

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

function fmtAmount(tx) {
  return tx.amount !== null && tx.amount !== undefined ? tx.amount + " " + (tx.currency || "") : "";
}

function decisionLabel(ev) {
  if (ev.kind === "error") return "undecodable";
  if (ev.kind === "dead-letter") return "dead-letter";
  return ev.branch || ev.kind;
}

function ruleText(ev) {
  if (ev.kind === "error") return ev.error;
  if (ev.kind === "dead-letter") return ev.dead_letter ? ev.dead_letter.reason : "";
  return ev.rules && ev.rules.length ? ev.rules.join(", ") : "(default)";
}

function cellsRow(tr, cells) {
  for (const [cls, value] of cells) {
    const td = el("td", cls, value === null || value === undefined ? "" : value);
    td.title = td.textContent;
    tr.appendChild(td);
  }
  return tr;
}

function rowFor(ev) {
  const tx = ev.tx || {};
  const tr = el("tr", ev.kind);
  tr.dataset.kind = ev.kind;
  tr.dataset.id = ev.id;
  if (tx.transaction_id !== null && tx.transaction_id !== undefined) tr.dataset.key = tx.transaction_id;
  const dl = ev.dead_letter;
  const where = dl ? "from " + dl.source_topic + " " + dl.source_partition + "/" + dl.source_offset
    : ev.topic + " " + ev.partition + "/" + ev.offset;
  return cellsRow(tr, [
    ["time", fmtTime(tx.event_time, ev.received_ms)], ["decision", decisionLabel(ev)], ["rule", ruleText(ev)],
    ["amount", fmtAmount(tx)], ["from", tx.source_account], ["to", tx.target_account], ["channel", tx.channel],
    ["country", tx.country], ["mcc", tx.merchant_category], ["txid", tx.transaction_id], ["where", where],
  ]);
}

function queueRowFor(entry) {
  const tx = entry.tx || {};
  const tr = el("tr", "alert-row" + (entry.key === state.selected ? " selected" : ""));
  tr.dataset.key = entry.key;
  return cellsRow(tr, [
    ["time", fmtTime(tx.event_time, entry.received_ms)], ["rule", entry.rules.join(", ") || "(none named)"],
    ["amount", fmtAmount(tx)], ["from", tx.source_account], ["to", tx.target_account], ["txid", tx.transaction_id],
  ]);
}

// ---- filters

function kindMatches(kind, wanted) {
  if (wanted === "all") return true;
  if (wanted === "fraud") return kind === "fraud" || kind === "alert";
  return kind === wanted;
}

function matches(kind, rules, tx) {
  const f = state.filter;
  if (!kindMatches(kind, f.decision)) return false;
  if (f.rule && !(rules || []).some((r) => r.split("@")[0] === f.rule)) return false;
  if (!f.q) return true;
  return [tx.transaction_id, tx.source_account, tx.target_account]
    .some((v) => v !== null && v !== undefined && String(v).toLowerCase() === f.q);
}

function readFilter() {
  state.filter = {
    decision: $("filter-decision").value, rule: $("filter-rule").value, q: $("search").value.trim().toLowerCase(),
  };
  renderLists();
}

function learnRules(refs) {
  let added = false;
  for (const ref of refs || []) {
    const id = String(ref).split("@")[0];
    if (id && !state.ruleIds.has(id)) { state.ruleIds.add(id); added = true; }
  }
  if (!added) return;
  const select = $("filter-rule");
  const current = select.value;
  const frag = document.createDocumentFragment();
  frag.appendChild(el("option", null, "all rules")).value = "";
  for (const id of [...state.ruleIds].sort()) frag.appendChild(el("option", null, id)).value = id;
  select.replaceChildren(frag);
  select.value = current;
}

// ---- lists (drawn from state, at most every 100 ms, never while paused)

function renderLists() {
  clearTimeout(state.renderTimer);
  state.renderTimer = null;
  const live = [];
  for (const ev of state.live) {
    if (live.length >= MAX_ROWS) break;
    if (matches(ev.kind, ev.rules, ev.tx || {})) live.push(rowFor(ev));
  }
  $("rows").replaceChildren(...live);
  const queue = state.queue.filter((e) => matches("fraud", e.rules, e.tx || {}));
  $("queue-rows").replaceChildren(...queue.slice(0, QUEUE_ROWS).map(queueRowFor));
  $("queue-count").textContent = "newest first · " + fmtInt(queue.length) + " of " + fmtInt(state.queue.length)
    + " kept (last " + fmtInt(state.queueCapacity) + ")";
}

function scheduleRender() {
  if (state.paused || state.renderTimer !== null) return;
  state.renderTimer = setTimeout(renderLists, 100);
}

function upsertQueue(ev) {
  const tx = ev.tx || {};
  const key = tx.transaction_id !== null && tx.transaction_id !== undefined ? String(tx.transaction_id) : ev.id;
  let entry = state.queueIndex.get(key);
  if (!entry) {
    entry = { key: key, tx: Object.assign({}, tx), rules: [], kinds: [], received_ms: ev.received_ms };
    state.queueIndex.set(key, entry);
    state.queue.unshift(entry);
    while (state.queue.length > state.queueCapacity) state.queueIndex.delete(state.queue.pop().key);
  }
  // A FraudAlert has no currency or channel: its fraud decision (the twin) fills them in.
  for (const [name, value] of Object.entries(tx)) if (entry.tx[name] === null || entry.tx[name] === undefined) entry.tx[name] = value;
  for (const r of ev.rules || []) if (!entry.rules.includes(r)) entry.rules.push(r);
  if (!entry.kinds.includes(ev.kind)) entry.kinds.push(ev.kind);
}

function onSnapshot(msg) {
  state.history = msg.history || [];
  state.historyLimit = msg.history_s || state.historyLimit;
  state.live = msg.recent || [];
  state.queueCapacity = msg.queue_capacity || state.queueCapacity;
  state.queue = msg.queue || [];
  state.queueIndex = new Map(state.queue.map((e) => [e.key, e]));
  learnRules(msg.rule_ids);
  learnRules(Object.keys(msg.rules || {}).filter((r) => r !== "(default)"));
  if (state.paused) countMissed(0); else renderLists();
  onStats(msg);
}

function onTx(batch) {
  // batch is oldest first; the lists show newest first
  for (const ev of batch) {
    state.live.unshift(ev);
    if (ev.kind === "fraud" || ev.kind === "alert") upsertQueue(ev);
    learnRules(ev.rules);
  }
  if (state.live.length > KEEP_LIVE) state.live.length = KEEP_LIVE;
  if (state.paused) countMissed(batch.length); else scheduleRender();
}

// ---- pause: the lists stay as they are; events are still taken in and counted

function countMissed(n) {
  state.missed += n;
  $("pause-status").textContent = "paused · " + fmtInt(state.missed) + " arrived since";
}

function togglePause() {
  const button = $("pause");
  state.paused = !state.paused;
  button.setAttribute("aria-pressed", String(state.paused));
  button.textContent = state.paused ? "Resume" : "Pause";
  if (state.paused) {
    state.missed = 0;
    countMissed(0);
  } else {
    renderLists();
    $("pause-status").textContent = "caught up · " + fmtInt(state.missed) + " arrived while paused";
  }
}

function connect() {
  const es = new EventSource("/events");
  state.es = es;
  es.addEventListener("open", () => setStatus("live", "live"));
  es.addEventListener("snapshot", (e) => onSnapshot(JSON.parse(e.data)));
  es.addEventListener("tx", (e) => onTx(JSON.parse(e.data)));
  es.addEventListener("stats", (e) => onStats(JSON.parse(e.data)));
  es.addEventListener("error", () => {
    setStatus("reconnecting…", "reconnecting");
    // Closed: the browser gave up (e.g. the server answered with an error): try again ourselves.
    if (es.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
  });
}

function openFromRow(event) {
  const tr = event.target.closest("tr");
  if (tr && tr.dataset.key && state.queueIndex.has(tr.dataset.key)) openDetail(tr.dataset.key);
}

window.addEventListener("DOMContentLoaded", () => {
  $("filter-decision").addEventListener("change", readFilter);
  $("filter-rule").addEventListener("change", readFilter);
  $("search").addEventListener("input", readFilter);
  $("pause").addEventListener("click", togglePause);
  $("queue-rows").addEventListener("click", openFromRow);
  $("rows").addEventListener("click", openFromRow);
  drawCharts();
  connect();
});
window.addEventListener("resize", () => drawCharts());
