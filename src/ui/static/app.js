// hxjobs console: the live parts of its pages. Pages work without it;
// it only follows what changes (server-sent events) and refreshes.
"use strict";

// Live event rates on the overview: `table#live[data-stream]` cells named
// `data-live="<window>.<field>"`, refreshed from each `stats` event.
function followStats(table) {
  const source = new EventSource(table.dataset.stream);
  source.addEventListener("stats", (e) => {
    let snapshot;
    try {
      snapshot = JSON.parse(e.data);
    } catch {
      return;
    }
    for (const cell of table.querySelectorAll("[data-live]")) {
      const [win, field] = cell.dataset.live.split(".");
      const stats = (snapshot.total || {})[win] || {};
      cell.textContent = format(field, stats[field]);
    }
    table.dataset.updated = snapshot.generated_at || "";
  });
}

function format(field, value) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "n/a";
  if (field === "error_rate") return (value * 100).toFixed(2) + " %";
  if (field.endsWith("_ms")) return value.toFixed(0) + " ms";
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
