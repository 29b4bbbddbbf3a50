"""The dashboard page: one HTML document with a small script that polls the JSON API.

Everything is inline (style, script; the charts are SVG from the server), so the
page works offline. The script writes data with ``textContent`` only; the SVG
it inserts is made by `monitor.svg`, which escapes every text.
"""

from __future__ import annotations

from string import Template

_PAGE = Template(
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>streamscore monitor</title>
<style>
body{font-family:sans-serif;margin:16px;color:#222;background:#fafafa}
h1{font-size:20px;margin:0 0 4px} h2{font-size:15px;margin:18px 0 6px}
table{border-collapse:collapse;font-size:12px;background:#fff}
td,th{border:1px solid #ddd;padding:3px 7px;text-align:left;vertical-align:top}
th{background:#eee} .num{text-align:right} .serving{background:#e6f4ea;font-weight:bold}
#status{color:#777;font-size:12px} .charts svg{background:#fff;border:1px solid #ddd;margin:4px}
.grid{display:flex;flex-wrap:wrap;gap:24px}
</style></head>
<body data-refresh-ms="$refresh_ms">
<h1>streamscore monitor</h1>
<div id="status">loading...</div>
<h2>Serving</h2><div id="serving">-</div>
<h2>Models</h2>
<table id="models"><thead><tr><th>model</th><th>version</th><th>kind</th>
<th>created</th><th>trained on</th><th>train RMSE</th><th>rolling R2</th><th>rolling RMSE</th>
<th>rolling MAE</th><th>drifts</th></tr></thead><tbody></tbody></table>
<h2>Rolling scores</h2>
<div class="charts" id="charts"><div id="chart-r2"></div><div id="chart-rmse"></div>
<div id="chart-mae"></div></div>
<div class="grid"><div>
<h2>Consumer groups</h2>
<table id="groups"><thead><tr><th>group</th><th>state</th><th>members</th><th>topic</th>
<th class="num">lag</th><th class="num">records/s</th></tr></thead><tbody></tbody></table>
<h2>Topics</h2>
<table id="topics"><thead><tr><th>topic</th><th class="num">end offset</th>
<th class="num">records/s</th></tr></thead><tbody></tbody></table>
</div><div>
<h2>Requests</h2><table id="requests"><tbody></tbody></table>
<h2>Dead letters <span id="dead-total"></span></h2>
<table id="deadletters"><thead><tr><th>time</th><th>reason</th><th>origin</th><th>key</th>
</tr></thead><tbody></tbody></table>
</div></div>
<script>
"use strict";
const refreshMs = Number(document.body.dataset.refreshMs) || 2000;
const versionsShown = 5;
function fmt(v) {
  if (v === null || v === undefined) return "-";
  if (typeof v === "number" && !Number.isInteger(v)) return v.toPrecision(4);
  return String(v);
}
function time(ts) { return ts ? new Date(ts).toISOString().slice(11, 19) : "-"; }
function row(tbody, cells, cls) {
  const tr = document.createElement("tr");
  if (cls) tr.className = cls;
  for (const [text, c] of cells) {
    const td = document.createElement("td");
    td.textContent = fmt(text);
    if (c) td.className = c;
    tr.appendChild(td);
  }
  tbody.appendChild(tr);
  return tr;
}
function body(id) {
  const b = document.querySelector("#" + id + " tbody");
  b.replaceChildren();
  return b;
}
async function json(path) {
  const r = await fetch(path);
  if (!r.ok) throw new Error(path + ": " + r.status);
  return r.json();
}
function showModels(m) {
  const s = m.serving;
  document.getElementById("serving").textContent = s
    ? s.model + " v" + s.version + " - " + s.why + " (prediction at " + time(s.ts) + ")"
    : "no prediction seen yet";
  const b = body("models");
  for (const model of m.models) {
    const shown = model.versions.slice(-versionsShown).reverse();
    for (const v of shown) {
      const serving = s && s.model === model.name && s.version === v.version;
      const sc = v.score || {};
      const tr = row(b, [[model.name], [v.version, "num"], [v.kind], [time(v.created_at)],
        [v.trained_on, "num"], [v.train_rmse, "num"], [sc.r2, "num"], [sc.rmse, "num"],
        [sc.mae, "num"], [model.drift ? model.drift.count : 0, "num"]], serving ? "serving" : "");
      tr.dataset.model = model.name; tr.dataset.version = v.version;
    }
    const older = model.versions.length - shown.length;
    if (older > 0) {
      const tr = document.createElement("tr"), td = document.createElement("td");
      td.colSpan = 10;
      td.textContent = model.name + ": " + older + " older versions in /api/models";
      tr.appendChild(td);
      b.appendChild(tr);
    }
  }
}
function showGroups(g) {
  const b = body("groups");
  for (const group of g.groups) {
    for (const t of group.topics) {
      row(b, [[group.group], [group.state], [group.members.length], [t.topic],
        [t.lag, "num"], [t.rate, "num"]]);
    }
  }
  const tb = body("topics");
  for (const t of g.topics) row(tb, [[t.topic], [t.end_offset, "num"], [t.rate, "num"]]);
}
function showRequests(r) {
  const b = body("requests"), l = r.latency_ms || {};
  for (const [k, v] of [["requests", r.requests], ["replies", r.replies], ["matched", r.matched],
      ["error replies", r.errors], ["waiting", r.waiting], ["latency p50 ms", l.p50],
      ["latency p95 ms", l.p95], ["latency max ms", l.max]]) row(b, [[k], [v, "num"]]);
}
function showDead(d) {
  document.getElementById("dead-total").textContent = "(" + d.total + " seen)";
  const b = body("deadletters");
  for (const x of d.latest) {
    row(b, [[time(x.ts)], [x.error],
      [(x.source.topic || "?") + "[" + fmt(x.source.partition) + "]@" + fmt(x.source.offset)],
      [x.key]]);
  }
}
async function chart(metric) {
  const r = await fetch("/chart/" + metric + ".svg");
  if (r.ok) document.getElementById("chart-" + metric).innerHTML = await r.text();
}
async function refresh() {
  try {
    const [g, m, r, d] = await Promise.all(["groups", "models", "requests", "deadletters"]
      .map(p => json("/api/" + p)));
    showModels(m); showGroups(g); showRequests(r); showDead(d);
    await Promise.all(["r2", "rmse", "mae"].map(chart));
    document.getElementById("status").textContent = "updated " + time(Date.now()) + " UTC"
      + (m.loaded ? "" : " (still reading models)");
  } catch (e) {
    document.getElementById("status").textContent = "cannot reach the monitor: " + e.message;
  }
  setTimeout(refresh, refreshMs);
}
refresh();
</script>
</body></html>
"""
)


def render_page(refresh_ms: int) -> str:
    """The dashboard's HTML, polling every ``refresh_ms``."""
    return _PAGE.substitute(refresh_ms=int(refresh_ms))
