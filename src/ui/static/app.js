// hxjobs console: the live parts of its pages. Pages work without it;
// it only follows what changes (server-sent events) and refreshes.
"use strict";

// Live figures: `table#live[data-stream]` cells named
// `data-live="<window>.<field>"`, refilled from each snapshot. With
// `data-socket` the snapshots come over a WebSocket, else (or when it
// cannot open) as server-sent events.
function followStats(table) {
  const apply = (text, via) => {
    let snapshot;
    try {
      snapshot = JSON.parse(text);
    } catch {
      return;
    }
    for (const cell of table.querySelectorAll("[data-live]")) {
      const [win, field] = cell.dataset.live.split(".");
      const stats = (snapshot.total || {})[win] || {};
      cell.textContent = format(field, stats[field]);
    }
    const models = document.getElementById("live-models");
    if (models) fillModels(models, snapshot.models || {});
    table.dataset.updated = snapshot.generated_at || "";
    table.dataset.consumed = String(snapshot.consumed_total ?? "");
    table.dataset.received = String(performance.timeOrigin + performance.now());
    table.dataset.via = via;
    const shown = document.getElementById("live-updated");
    if (shown) shown.textContent = snapshot.generated_at || "n/a";
    const how = document.getElementById("live-transport");
    if (how) how.textContent = via;
  };
  const events = () => {
    const source = new EventSource(table.dataset.stream);
    source.addEventListener("stats", (e) => apply(e.data, "server-sent events"));
  };
  if (!table.dataset.socket || typeof WebSocket !== "function") return events();
  const url = new URL(table.dataset.socket, location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  let opened = false;
  const socket = new WebSocket(url);
  socket.addEventListener("open", () => {
    opened = true;
  });
  socket.addEventListener("message", (e) => apply(e.data, "websocket"));
  socket.addEventListener("close", () => {
    // Never opened (refused, or full): server-sent events instead; closed
    // later: open again shortly.
    if (!opened) events();
    else setTimeout(() => followStats(table), 2000);
  });
}

// The per-model table of the live dashboard, rebuilt from a snapshot's
// 5-minute windows (as text: model names are data).
function fillModels(table, models) {
  const body = table.tBodies[0];
  const names = Object.keys(models).sort();
  const rows = names.map((name) => {
    const w = models[name]["5m"] || {};
    const tr = document.createElement("tr");
    tr.dataset.model = name;
    for (const value of [
      name,
      format("requests", w.requests),
      format("error_rate", w.error_rate),
      format("latency_p95_ms", w.latency_p95_ms),
      format("tokens_per_sec", w.tokens_per_sec),
      format("cost_per_sec", w.cost_per_sec),
    ]) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.appendChild(td);
    }
    return tr;
  });
  if (rows.length === 0) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.colSpan = 6;
    td.textContent = "n/a";
    tr.appendChild(td);
    rows.push(tr);
  }
  body.replaceChildren(...rows);
}

function format(field, value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "n/a";
  if (field === "error_rate") return (value * 100).toFixed(2) + " %";
  if (field.endsWith("_ms")) return value.toFixed(0) + " ms";
  if (field === "requests") return String(value);
  if (field === "cost_per_sec") return value.toFixed(4);
  return value.toFixed(2);
}

// A running attempt's log: `pre.log[data-follow]` is refilled from the log
// stream (which starts from the first line) and grows until its `end`.
function followLog(pre) {
  const state = document.getElementById("log-state");
  const source = new EventSource(pre.dataset.follow);
  source.addEventListener("open", () => {
    pre.textContent = "";
  });
  source.addEventListener("log", (e) => {
    const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.textContent += e.data + "\n";
    if (atBottom) pre.scrollTop = pre.scrollHeight;
  });
  source.addEventListener("end", (e) => {
    source.close();
    let outcome = "";
    try {
      outcome = JSON.parse(e.data).outcome || "";
    } catch {
      outcome = "";
    }
    pre.dataset.ended = outcome || "ended";
    if (state) state.textContent = "The attempt ended: " + (outcome || "see above") + ".";
    // The run's other facts changed too.
    setTimeout(() => location.reload(), 1500);
  });
}

// Pages that show something running reload on their own
// (`main[data-refresh]`, seconds), unless a log is being followed.
function refresh(main) {
  const secs = Number(main.dataset.refresh);
  if (!(secs > 0)) return;
  setTimeout(() => {
    if (!document.querySelector("pre.log[data-follow]:not([data-ended])")) location.reload();
  }, secs * 1000);
}

// Times are printed in UTC; on hover each says the viewer's local time.
function localTimes() {
  for (const t of document.querySelectorAll("time[datetime]")) {
    const at = new Date(t.dateTime);
    if (!Number.isNaN(at.getTime())) t.title = at.toLocaleString() + " (your local time)";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes();
  const live = document.querySelector("table#live[data-stream]");
  if (live) followStats(live);
  const log = document.querySelector("pre.log[data-follow]");
  if (log) followLog(log);
  const main = document.querySelector("main[data-refresh]");
  if (main) refresh(main);
});
