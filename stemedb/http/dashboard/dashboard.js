// StemeDB dashboard: polls /api/summary every 2 s and draws what changed.
// Every piece of stored data is put into the page with textContent, never as
// HTML: assertions are written by clients and must not run as script here.
"use strict";

const POLL_MS = 2000;
const HISTORY = 90;             // points kept per chart (3 minutes)
const rateHistory = [];
const fsyncHistory = [];
let previous = null;            // the previous summary, for differences

function apiKey() { return sessionStorage.getItem("stemedb-key") || ""; }

async function getJSON(path) {
  const headers = {};
  if (apiKey()) headers["X-API-Key"] = apiKey();
  const resp = await fetch(path, { headers, cache: "no-store" });
  let body = null;
  try { body = await resp.json(); } catch (e) { body = null; }
  if (!resp.ok) {
    const err = new Error((body && body.error && body.error.message) || ("HTTP " + resp.status));
    err.status = resp.status;
    throw err;
  }
  return body;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function fmtInt(n) { return (n === null || n === undefined) ? "–" : Number(n).toLocaleString("en-US"); }

function fmtSeconds(s) {
  if (s === null || !isFinite(s)) return "–";
  if (s < 0.001) return (s * 1e6).toFixed(0) + " µs";
  if (s < 1) return (s * 1e3).toFixed(2) + " ms";
  return s.toFixed(2) + " s";
}

function push(list, v) { list.push(v); while (list.length > HISTORY) list.shift(); }

function drawChart(canvasId, points) {
  const c = document.getElementById(canvasId);
  if (!c || !c.getContext) return;
  const ctx = c.getContext("2d");
  const w = c.width, h = c.height;
  ctx.clearRect(0, 0, w, h);
  const vals = points.filter(v => v !== null && isFinite(v));
  if (vals.length < 2) return;
  const max = Math.max(...vals) || 1;
  ctx.strokeStyle = "#2f6fdb";
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  points.forEach((v, i) => {
    const x = (i / (HISTORY - 1)) * w;
    const y = h - 2 - ((v === null || !isFinite(v) ? 0 : v) / max) * (h - 4);
    if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
  });
  ctx.stroke();
}

// p99 of the fsyncs between two polls, from the cumulative bucket counts.
function intervalQuantile(prev, cur, q) {
  const n = cur.count - (prev ? prev.count : 0);
  if (n <= 0) return null;
  const target = n * q;
  for (let i = 0; i < cur.buckets.length; i++) {
    const [le, cum] = cur.buckets[i];
    const before = prev && prev.buckets[i] ? prev.buckets[i][1] : 0;
    if (cum - before >= target) return le === "+Inf" ? Infinity : Number(le);
  }
  return null;
}

function showHealth(doc) {
  const badge = document.getElementById("health");
  badge.dataset.status = doc.status;
  badge.textContent = doc.status + (doc.reason ? ": " + doc.reason : "");
  document.getElementById("version").textContent = "v" + doc.version;
  const info = document.getElementById("server-info");
  info.textContent = "";
  const lines = [
    "implementation: " + (doc.implementation || "–"),
    "durability: " + ((doc.wal && doc.wal.durability) || "–"),
    "writes: " + ((doc.wal && doc.wal.writes) || "–"),
    "uptime: " + Math.round(doc.uptime_seconds) + " s",
  ];
  lines.forEach(l => info.appendChild(el("div", l)));
}

function showRecent(items) {
  const tbody = document.querySelector("#recent tbody");
  tbody.textContent = "";
  if (!items.length) {
    const tr = el("tr");
    const td = el("td", "no writes through this server yet", "muted");
    td.colSpan = 6;
    tr.appendChild(td);
    tbody.appendChild(tr);
    return;
  }
  for (const a of items) {
    const tr = el("tr");
    tr.appendChild(el("td", a.seq));
    tr.appendChild(el("td", a.concept_path));
    tr.appendChild(el("td", a.predicate));
    tr.appendChild(el("td", a.value));
    tr.appendChild(el("td", a.confidence));
    const h = el("td", a.hash.slice(0, 16) + "…", "hash");
    h.title = a.hash;
    h.style.cursor = "pointer";
    h.addEventListener("click", () => { document.getElementById("trace-hash").value = a.hash; });
    tr.appendChild(h);
    tbody.appendChild(tr);
  }
}

async function poll() {
  let s;
  try {
    s = await getJSON("/api/summary");
  } catch (e) {
    const badge = document.getElementById("health");
    if (e.status === 401 || e.status === 403) {
      document.getElementById("key-form").hidden = false;
      badge.dataset.status = "unknown";
      badge.textContent = "API key needed";
    } else {
      badge.dataset.status = "unreachable";
      badge.textContent = "unreachable: " + e.message;
    }
    return;
  }
  document.getElementById("key-form").hidden = !s.keys_required || !!apiKey();
  const h = s.health;
  showHealth(h);
  const countEl = document.getElementById("assertion-count");
  countEl.textContent = fmtInt(h.assertion_count);
  countEl.dataset.count = h.assertion_count === undefined ? "" : String(h.assertion_count);
  document.getElementById("last-seq").textContent = fmtInt(h.last_seq);
  document.getElementById("wal-segments").textContent = fmtInt(h.wal_segments);
  if (previous && previous.health.assertion_count !== undefined && h.assertion_count !== undefined) {
    const dt = Math.max(1e-3, s.now - previous.now);
    const rate = Math.max(0, (h.assertion_count - previous.health.assertion_count) / dt);
    push(rateHistory, rate);
    document.getElementById("ingest-rate").textContent = fmtInt(Math.round(rate)) + " /s";
    const n = s.fsync.count - previous.fsync.count;
    const mean = n > 0 ? (s.fsync.sum - previous.fsync.sum) / n : null;
    push(fsyncHistory, mean);
    const p99 = intervalQuantile(previous.fsync, s.fsync, 0.99);
    document.getElementById("fsync-latency").textContent =
      n > 0 ? fmtSeconds(mean) + " / ≤" + fmtSeconds(p99) : "idle";
    drawChart("rate-chart", rateHistory);
    drawChart("fsync-chart", fsyncHistory);
  }
  showRecent(s.recent);
  previous = s;
}

function renderConflict(target, sk, layered) {
  target.textContent = "";
  const head = el("p");
  head.appendChild(el("strong", sk.status));
  head.appendChild(document.createTextNode(" · conflict score " + Number(sk.conflict_score).toFixed(3)));
  target.appendChild(head);
  if (sk.claims.length) {
    const t = el("table");
    const hr = el("tr");
    ["value", "share", "weight", "support"].forEach(x => hr.appendChild(el("th", x)));
    t.appendChild(hr);
    for (const c of sk.claims) {
      const tr = el("tr");
      tr.appendChild(el("td", JSON.stringify(c.value)));
      const share = el("td");
      const bar = el("div", null, "bar");
      bar.style.width = Math.round(c.share * 100) + "%";
      share.appendChild(bar);
      share.appendChild(el("span", (c.share * 100).toFixed(1) + "%", "small"));
      tr.appendChild(share);
      tr.appendChild(el("td", Number(c.weight).toFixed(3)));
      tr.appendChild(el("td", c.support));
      t.appendChild(tr);
    }
    target.appendChild(t);
  }
  if (layered && layered.results && layered.results.length) {
    const r = layered.results[0];
    target.appendChild(el("h3", "Layered view", "small"));
    const layers = r.layers || [];
    if (!layers.length && r.winner) {
      target.appendChild(el("p", "winner: " + JSON.stringify(r.winner.value) + " (" + r.winner.source_class + ")"));
    }
    const list = el("ul");
    (Array.isArray(layers) ? layers : Object.entries(layers).map(([k, v]) => Object.assign({ source_class: k }, v)))
      .forEach(l => {
        const w = l.winner ? JSON.stringify(l.winner.value) : "–";
        list.appendChild(el("li", (l.source_class || l.class || "?") + ": " + w +
          (l.conflict_score !== undefined ? " · conflict " + Number(l.conflict_score).toFixed(3) : "")));
      });
    target.appendChild(list);
  }
}

async function onConflict(ev) {
  ev.preventDefault();
  const path = document.getElementById("conflict-path").value.trim();
  const pred = document.getElementById("conflict-predicate").value.trim();
  const target = document.getElementById("conflict-result");
  const q = "concept_path=" + encodeURIComponent(path) + "&predicate=" + encodeURIComponent(pred);
  try {
    const [sk, layered] = await Promise.all([
      getJSON("/api/skeptic?" + q),
      getJSON("/api/layered?" + q).catch(() => null)]);
    renderConflict(target, sk, layered);
  } catch (e) {
    target.textContent = "";
    target.appendChild(el("p", e.message, "error"));
  }
}

async function onTrace(ev) {
  ev.preventDefault();
  const hash = document.getElementById("trace-hash").value.trim();
  const target = document.getElementById("trace-result");
  target.textContent = "";
  try {
    const t = await getJSON("/api/trace/" + encodeURIComponent(hash));
    const a = t.assertion;
    target.appendChild(el("p", a.concept_path + " · " + a.predicate + " = " + JSON.stringify(a.value)));
    const status = el("p", "status: " + a.status, a.status === "retracted" ? "status-retracted" : "");
    target.appendChild(status);
    const r = t.retraction || a.retraction;
    if (r) target.appendChild(el("p", "retracted at " + r.retracted_at + (r.reason ? " — " + r.reason : "")));
    target.appendChild(el("p", "dependents: " + t.dependents_count +
      " (those a cascading retraction of this assertion would reach)"));
    const list = el("ul");
    for (const d of t.dependents || []) {
      const item = (typeof d === "string") ? { hash: d } : d;
      const li = el("li", (item.concept_path ? item.concept_path + " · " : "") + (item.hash || "").slice(0, 16) + "…" +
        (item.status ? " [" + item.status + "]" : ""), item.status === "retracted" ? "status-retracted" : "");
      list.appendChild(li);
    }
    target.appendChild(list);
  } catch (e) {
    target.appendChild(el("p", e.message, "error"));
  }
}

function onKey(ev) {
  ev.preventDefault();
  sessionStorage.setItem("stemedb-key", document.getElementById("api-key").value.trim());
  poll();
}

document.getElementById("conflict-form").addEventListener("submit", onConflict);
document.getElementById("trace-form").addEventListener("submit", onTrace);
document.getElementById("key-form").addEventListener("submit", onKey);
poll();
setInterval(poll, POLL_MS);
