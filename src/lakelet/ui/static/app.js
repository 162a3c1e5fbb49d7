// lakelet ui: one page, hash routes, every number from /api/. Read-only.
"use strict";

const view = document.getElementById("view");
window.lakelet = { graph: null, charts: {} };  // handles the browser tests (and a curious user) can inspect

const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const pathOf = (name) => name.split("/").map(encodeURIComponent).join("/");
const fileLink = (name) => `<a href="#/file/${encodeURIComponent(name)}">${esc(name)}</a>`;
const datasetLink = (name) => `<a href="#/datasets/${encodeURIComponent(name)}">${esc(name)}</a>`;
const when = (iso) => iso ? esc(iso.slice(0, 19).replace("T", " ")) : "";
const num = (n) => n == null ? "" : Number(n).toLocaleString("en-US");
const fmt = (v) => typeof v === "number" ? (Number.isInteger(v) ? num(v) : Number(v.toPrecision(6)).toString()) : esc(v);
const badge = (text) => `<span class="badge ${esc(String(text).replace(" ", "-"))}">${esc(text)}</span>`;

function size(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0, n = bytes;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

async function api(path) {
  const response = await fetch(`/api/${path}`, {credentials: "same-origin"});
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || body.detail?.[0]?.msg || response.statusText);
  return body;
}

function table(headers, rows, numeric = []) {
  const head = headers.map((h, i) => `<th class="${numeric.includes(i) ? "num" : ""}">${esc(h)}</th>`).join("");
  const body = rows.map((r) => `<tr>${r.map((c, i) => `<td class="${numeric.includes(i) ? "num" : ""}">${c}</td>`).join("")}</tr>`).join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function kv(pairs) {
  return `<table class="kv">${pairs.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${v}</td></tr>`).join("")}</table>`;
}

// ---- names -------------------------------------------------------------------------------------------

async function showNames(params) {
  const prefix = params.get("prefix") || "";
  const query = params.get("q") || "";
  const [lake, listing] = await Promise.all([api("lake"), api(`names?prefix=${encodeURIComponent(prefix)}&q=${encodeURIComponent(query)}`)]);
  const cards = [["names", num(lake.names)], ["stored", size(lake.bytes)], ["datasets", num(lake.datasets)],
                 ["pipeline runs", num(lake.runs)], ["remote", lake.remote ? esc(lake.remote) : "none"]];
  if (lake.remote) cards.push(["unpushed", num(lake.unpushed)], ["last sync", lake.last_sync ? when(lake.last_sync) : "never"]);
  const prefixes = [{prefix: "", names: lake.names}, ...lake.prefixes.filter((p) => p.prefix)]
    .map((p) => `<a href="#/?prefix=${encodeURIComponent(p.prefix)}" class="${p.prefix === prefix ? "active" : ""}">
      <span>${p.prefix ? esc(p.prefix) : "all names"}</span><span class="muted">${num(p.names)}</span></a>`).join("");
  const rows = listing.names.map((f) => [fileLink(f.name), badge(f.state), size(f.size), when(f.created_at), esc(f.creator), esc(f.kind)]);
  view.innerHTML = `
    <div class="cards">${cards.map(([k, v]) => `<div class="card"><span class="muted">${k}</span><b>${v}</b></div>`).join("")}</div>
    <div class="layout">
      <div class="prefixes">${prefixes}</div>
      <div>
        <input type="search" id="search" placeholder="search names…" value="${esc(query)}">
        <span class="muted">${num(listing.total)} names${listing.total > listing.names.length ? `, first ${num(listing.names.length)} shown` : ""}</span>
        ${rows.length ? table(["name", "state", "size", "created", "creator", "kind"], rows, [2]) : `<p class="muted">no names here</p>`}
      </div>
    </div>`;
  const search = document.getElementById("search");
  search.addEventListener("change", () => {
    location.hash = `#/?prefix=${encodeURIComponent(prefix)}&q=${encodeURIComponent(search.value)}`;
  });
}

// ---- one file ----------------------------------------------------------------------------------------

async function showFile(name) {
  const f = await api(`files/${pathOf(name)}`);
  const record = f.lineage || {};
  const git = (record.source || {}).git || {};
  const code = git.url ? `<a href="${esc(git.url)}">${esc(git.url)}</a>`
    : record.source && record.source.file ? esc(`${record.source.file}:${record.source.line}`) : "";
  const made = record.kind === "stage"
    ? `stage <b>${esc(record.stage)}</b> <span class="muted">key ${esc(record.key.slice(0, 12))}</span>, ${fmt(record.duration_s)} s`
    : `lakelet add${record.source ? ` from ${esc(record.source)}` : ""}`;
  const env = record.environment || {};
  const versions = Object.entries({python: env.python, lakelet: env.lakelet, ...(record.packages || {})})
    .filter(([, v]) => v).map(([k, v]) => `${esc(k)} ${esc(v)}`).join(", ");
  view.innerHTML = `
    <h1>${esc(f.name)}</h1>
    <p><a href="#/lineage/${encodeURIComponent(f.name)}">lineage graph</a></p>
    ${kv([["state", badge(f.state)], ["size", `${size(f.size)} (${num(f.size)} bytes)`], ["digest", `<code>${esc(f.digest)}</code>`],
          ["created", when(f.created_at)], ["creator", esc(f.creator)], ["kind", esc(f.kind)],
          ["local copy", f.path ? `<code>${esc(f.path)}</code>` : "only on the remote"]])}
    <h2>How it was made</h2>
    ${kv([["method", made], ["code", code || "<span class=muted>not recorded</span>"],
          ["commit", git.commit ? `<code>${esc(git.commit.slice(0, 12))}</code>${git.dirty ? " (uncommitted changes)" : ""}` : ""],
          ["by", esc(record.user || env.user || "")], ["host", esc(env.host)], ["versions", versions]])}
    <h2>Inputs</h2>
    ${f.inputs.length ? `<ul>${f.inputs.map((i) => `<li>${i.startsWith("/") || i.includes("://") ? esc(i) : fileLink(i)}</li>`).join("")}</ul>` : `<p class="muted">none</p>`}
    <h2>Derived from it</h2>
    ${f.downstream.length ? `<ul>${f.downstream.map((d) => `<li>${fileLink(d)}</li>`).join("")}</ul>` : `<p class="muted">nothing yet</p>`}
    ${record.code_source ? `<h2>Code</h2><pre>${esc(record.code_source)}</pre>` : ""}`;
}

// ---- lineage graph -----------------------------------------------------------------------------------

// stage outputs are named stages/<module.function>/<key>/<file>: the function and the file say enough
function shortLabel(n) {
  if (n.kind === "stage") return n.stage.split(".").pop();
  const parts = n.label.split("/");
  if (n.kind === "file" && parts[0] === "stages" && parts.length > 3) return `${parts[1].split(".").pop()}/…/${parts.at(-1)}`;
  return n.label;
}

const COLORS = {stage: "#7a4fd6", add: "#9aa3b5", file: "#2f6fde", source: "#9aa3b5", dataset: "#0f9d76"};

async function showLineage(name, params) {
  const depth = params.get("depth") || "3";
  const direction = params.get("direction") || "both";
  const query = name ? `lineage?name=${encodeURIComponent(name)}&depth=${depth}&direction=${direction}` : "lineage";
  const graph = await api(query);
  const controls = name ? `
      <label>direction <select id="direction">${["both", "upstream", "downstream"].map((d) => `<option ${d === direction ? "selected" : ""}>${d}</option>`).join("")}</select></label>
      <label>depth <select id="depth">${[1, 2, 3, 5, 10].map((d) => `<option ${String(d) === depth ? "selected" : ""}>${d}</option>`).join("")}</select></label>
      <a href="#/lineage">whole lake</a>` : `<span class="muted">every stage run in the lake; click a file to open it</span>`;
  view.innerHTML = `
    <h1>Lineage${name ? ` of ${esc(name)}` : ""}</h1>
    <div class="controls">${controls}
      <span class="legend">${Object.entries({stage: "stage run", file: "file", dataset: "dataset", add: "add / local source"})
        .map(([k, label]) => `<span><i class="dot" style="background:${COLORS[k]}"></i>${label}</span>`).join("")}</span></div>
    <div class="graph-wrap"><div id="graph"></div><div class="panel" id="details"><p class="muted">click a node</p></div></div>`;
  if (name) {
    for (const id of ["direction", "depth"]) {
      document.getElementById(id).addEventListener("change", () => {
        const d = document.getElementById("depth").value, dir = document.getElementById("direction").value;
        location.hash = `#/lineage/${encodeURIComponent(name)}?depth=${d}&direction=${dir}`;
      });
    }
  }
  if (!graph.nodes.length) {
    document.getElementById("graph").innerHTML = `<p class="muted" style="padding:1rem">no stage has run in this lake yet</p>`;
    return;
  }
  const cy = cytoscape({
    container: document.getElementById("graph"),
    elements: [
      ...graph.nodes.map((n) => ({data: {...n, name: n.label, label: shortLabel(n)}})),
      ...graph.edges.map((e, i) => ({data: {id: `e${i}`, source: e.source, target: e.target}})),
    ],
    layout: {name: "dagre", rankDir: "LR", nodeSep: 30, rankSep: 90},
    wheelSensitivity: 0.3,
    style: [
      {selector: "node", style: {label: "data(label)", "font-size": 11, "text-valign": "bottom", "text-margin-y": 4,
        "background-color": (n) => COLORS[n.data("kind")] || "#999", width: 18, height: 18, color: "#1d2330",
        "text-max-width": 180, "text-wrap": "ellipsis"}},
      {selector: "node[kind = 'stage'], node[kind = 'add']", style: {shape: "round-rectangle", width: 34, height: 22}},
      {selector: "node[kind = 'dataset']", style: {shape: "barrel", width: 26, height: 22}},
      {selector: "node[?focus]", style: {"border-width": 3, "border-color": "#c77700"}},
      {selector: "edge", style: {width: 1.5, "line-color": "#b7bdcc", "target-arrow-color": "#b7bdcc",
        "target-arrow-shape": "triangle", "curve-style": "bezier"}},
      {selector: ":selected", style: {"border-width": 3, "border-color": "#1d2330"}},
    ],
  });
  window.lakelet.graph = cy;
  cy.on("tap", "node", (event) => {
    const n = event.target.data();
    if (n.kind === "file") { location.hash = `#/file/${encodeURIComponent(n.name)}`; return; }
    if (n.kind === "dataset") { location.hash = `#/datasets/${encodeURIComponent(n.name)}`; return; }
    const details = document.getElementById("details");
    details.innerHTML = n.kind === "stage" ? `<h2>${esc(n.stage)}</h2>${kv([["key", `<code>${esc(n.key.slice(0, 16))}</code>`],
      ["started", when(n.started_at)], ["duration", `${fmt(n.duration_s)} s`],
      ["code", n.code_url ? `<a href="${esc(n.code_url)}">${esc(n.code_url)}</a>` : "<span class=muted>no forge URL</span>"]])}`
      : `<h2>${esc(n.name)}</h2><p>${esc(n.source || "")}</p>`;
  });
}

// ---- datasets ----------------------------------------------------------------------------------------

async function showDatasets() {
  const rows = (await api("datasets")).map((d) => [datasetLink(d.name), num(d.version), num(d.rows), num(d.files), size(d.bytes), when(d.last_write), esc(d.creator)]);
  view.innerHTML = `<h1>Datasets</h1>${rows.length ? table(["dataset", "version", "rows", "files", "size", "last write", "by"], rows, [1, 2, 3, 4]) : `<p class="muted">no datasets yet: lake.write_dataset(...)</p>`}`;
}

async function showDataset(name, params) {
  const version = params.get("version");
  const suffix = version ? `?version=${version}` : "";
  const [ds, preview] = await Promise.all([api(`datasets/${pathOf(name)}${suffix}`), api(`rows/${pathOf(name)}${suffix}`)]);
  const versions = ds.versions.map((v) => `<option value="${v}" ${v === ds.version ? "selected" : ""}>version ${v}</option>`).join("");
  const stats = Object.entries(ds.stats).map(([column, s]) => [esc(column), esc(s.type), num(s.count), num(s.nulls), fmt(s.min), fmt(s.max),
    fmt((s.quantiles || {})["0.5"]), fmt((s.quantiles || {})["0.95"])]);
  const partitions = Object.entries(ds.partitions).map(([c, values]) => [esc(c), num(values.length), esc(values.slice(0, 12).join(", ")) + (values.length > 12 ? " …" : "")]);
  const histograms = Object.entries(ds.stats).filter(([, s]) => s.histogram);
  view.innerHTML = `
    <h1>${esc(ds.name)}</h1>
    <div class="controls"><select id="version">${versions}</select>
      <span class="muted">${num(ds.rows)} rows in ${num(ds.files)} files (${size(ds.bytes)}), written ${when(ds.last_write)} by ${esc(ds.creator)}</span></div>
    <h2>Schema</h2>${table(["column", "type", "nullable"], ds.schema.map((f) => [esc(f.name), esc(f.type), f.nullable ? "yes" : "no"]))}
    ${partitions.length ? `<h2>Partitions</h2>${table(["column", "values", ""], partitions, [1])}` : ""}
    <h2>Column statistics</h2>${table(["column", "type", "count", "nulls", "min", "max", "p50", "p95"], stats, [2, 3, 4, 5, 6, 7])}
    ${histograms.length ? `<h2>Histograms</h2><div class="charts">${histograms.map(([c]) => `<div class="chart"><b>${esc(c)}</b><canvas data-column="${esc(c)}"></canvas></div>`).join("")}</div>` : ""}
    <h2>First rows</h2>${preview.note ? `<p class="muted">${esc(preview.note)}</p>` : table(preview.columns, preview.rows.map((r) => r.map(fmt)))}`;
  document.getElementById("version").addEventListener("change", (e) => { location.hash = `#/datasets/${encodeURIComponent(name)}?version=${e.target.value}`; });
  window.lakelet.charts = {};
  for (const [column, s] of histograms) {
    const canvas = view.querySelector(`canvas[data-column="${CSS.escape(column)}"]`);
    const edges = s.histogram.edges;
    window.lakelet.charts[column] = new Chart(canvas, {
      type: "bar",
      data: {labels: s.histogram.counts.map((_, i) => fmt(edges[i])),
             datasets: [{label: "rows", data: s.histogram.counts, backgroundColor: "#2f6fde", barPercentage: 1, categoryPercentage: 1}]},
      options: {animation: false, plugins: {legend: {display: false}}, scales: {x: {ticks: {maxTicksLimit: 6}}}},
    });
  }
}

// ---- pipeline runs -----------------------------------------------------------------------------------

function duration(r) {
  return r.started_at && r.ended_at ? `${((new Date(r.ended_at) - new Date(r.started_at)) / 1000).toFixed(2)} s` : "";
}

async function showRuns() {
  const rows = (await api("runs")).map((r) => [`<a href="#/runs/${encodeURIComponent(r.run_id)}">${esc(r.run_id)}</a>`, when(r.started_at), duration(r),
    num(r.ran.length), num(r.skipped.length), r.failed.length ? `<span class="error">${num(r.failed.length)}</span>` : "0"]);
  view.innerHTML = `<h1>Pipeline runs</h1>${rows.length ? table(["run", "started", "duration", "ran", "skipped", "failed"], rows, [2, 3, 4, 5]) : `<p class="muted">no runs yet: lakelet.run(stage)</p>`}`;
}

async function showRun(id) {
  const r = await api(`runs/${encodeURIComponent(id)}`);
  const stages = r.stages || {};
  const rows = Object.entries(stages).map(([name, s]) => [esc(name), badge(s.status), s.duration_s == null ? "" : `${fmt(s.duration_s)} s`, esc(s.why)]);
  view.innerHTML = `<h1>Run ${esc(r.run_id)}</h1>
    <p class="muted">started ${when(r.started_at)}, took ${duration(r)}: ${r.ran.length} ran, ${r.skipped.length} skipped, ${r.failed.length} failed${r.not_run.length ? `, ${r.not_run.length} not run` : ""}</p>
    ${table(["stage", "status", "duration", "why"], rows, [2])}`;
}

// ---- routing -----------------------------------------------------------------------------------------

async function route() {
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  const [, section, ...rest] = path.split("/");
  const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === (section || "names"));
  window.lakelet.graph = null;
  try {
    if (section === "file" && arg) await showFile(arg);
    else if (section === "lineage") await showLineage(arg, params);
    else if (section === "datasets") await (arg ? showDataset(arg, params) : showDatasets());
    else if (section === "runs") await (arg ? showRun(arg) : showRuns());
    else await showNames(params);
  } catch (error) {
    view.innerHTML = `<p class="error">${esc(error.message)}</p>`;
  }
  document.body.dataset.ready = location.hash;  // the browser tests wait for this, not for a timer
}

window.addEventListener("hashchange", route);
api("lake").then((lake) => { document.getElementById("lake-root").textContent = lake.root + (lake.remote ? `  ⇄  ${lake.remote}` : ""); }).catch(() => {});
route();
