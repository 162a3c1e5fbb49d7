// lakelet ui: one page, hash routes, every number from /api/. Read-only.
"use strict";

// Every string from /api/ may come from a record a peer wrote (names, metadata, lineage, run
// reports, dataset and column names, error texts). So the page is built as DOM nodes: such a
// string only ever becomes text (h() below appends it as a text node, never as markup), and a
// link's target is either one of this page's own routes or a checked http(s) URL.

const view = document.getElementById("view");
window.lakelet = { graph: null, charts: {} };  // handles the browser tests (and a curious user) can inspect

// h("td", {class: "num"}, child, ...): an element; a child is a node or text (arrays are flattened,
// null and false skipped). Links and sources are not attributes here: use route() or webLink().
function h(tag, attributes, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes || {})) {
    if (/^(on|href$|src$|action$|formaction$)/i.test(name)) throw new Error(`h(): no ${name} from data`);
    if (value != null && value !== false) element.setAttribute(name, value === true ? "" : String(value));
  }
  element.append(...children.flat(Infinity).filter((c) => c != null && c !== false).map((c) => c instanceof Node ? c : String(c)));
  return element;
}

// A link to a route of this page: `path` is built here from encodeURIComponent'd parts.
function route(path, ...children) {
  const a = h("a", {}, ...children);
  a.href = `#${path}`;
  return a;
}

// The URL if the browser reads it as http(s) (it drops blanks and tabs, ignores case), else null.
function webUrl(value) {
  if (typeof value !== "string") return null;
  try {
    const url = new URL(value);
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
  } catch {
    return null;
  }
}

function webLink(value, text = value) {
  const url = webUrl(value);
  if (!url) return text == null ? null : String(text);
  const a = h("a", {rel: "noopener noreferrer"}, text);
  a.href = url;
  return a;
}

const text = (v) => v == null ? "" : String(v);
const pathOf = (name) => text(name).split("/").map(encodeURIComponent).join("/");
const fileLink = (name) => route(`/file/${encodeURIComponent(text(name))}`, text(name));
const datasetLink = (name) => route(`/datasets/${encodeURIComponent(text(name))}`, text(name));
const when = (iso) => iso ? text(iso).slice(0, 19).replace("T", " ") : "";
const num = (n) => n == null ? "" : Number(n).toLocaleString("en-US");
const fmt = (v) => typeof v === "number" ? (Number.isInteger(v) ? num(v) : Number(v.toPrecision(6)).toString()) : text(v);
const badge = (label) => h("span", {class: `badge ${text(label).replace(" ", "-")}`}, text(label));
const muted = (...children) => h("span", {class: "muted"}, ...children);
const count = (list) => Array.isArray(list) ? list.length : 0;

function size(bytes) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0, n = Number(bytes);
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
  const cls = (i) => numeric.includes(i) ? "num" : null;
  return h("table", {},
    h("thead", {}, h("tr", {}, headers.map((header, i) => h("th", {class: cls(i)}, text(header))))),
    h("tbody", {}, rows.map((row) => h("tr", {}, row.map((cell, i) => h("td", {class: cls(i)}, cell))))));
}

function kv(pairs) {
  return h("table", {class: "kv"}, pairs.map(([key, value]) => h("tr", {}, h("th", {}, key), h("td", {}, value))));
}

function show(...children) {
  view.replaceChildren(...children.flat(Infinity).filter((c) => c != null && c !== false));
}

// ---- names -------------------------------------------------------------------------------------------

async function showNames(params) {
  const prefix = params.get("prefix") || "";
  const query = params.get("q") || "";
  const [lake, listing] = await Promise.all([api("lake"), api(`names?prefix=${encodeURIComponent(prefix)}&q=${encodeURIComponent(query)}`)]);
  const cards = [["names", num(lake.names)], ["stored", size(lake.bytes)], ["datasets", num(lake.datasets)],
                 ["pipeline runs", num(lake.runs)], ["remote", lake.remote ? text(lake.remote) : "none"]];
  if (lake.remote) cards.push(["unpushed", num(lake.unpushed)], ["last sync", lake.last_sync ? when(lake.last_sync) : "never"]);
  const prefixes = [{prefix: "", names: lake.names}, ...lake.prefixes.filter((p) => p.prefix)].map((p) => {
    const a = route(`/?prefix=${encodeURIComponent(text(p.prefix))}`, h("span", {}, p.prefix ? text(p.prefix) : "all names"), muted(num(p.names)));
    if (p.prefix === prefix) a.className = "active";
    return a;
  });
  const rows = listing.names.map((f) => [fileLink(f.name), badge(f.state), size(f.size), when(f.created_at), text(f.creator), text(f.kind)]);
  const search = h("input", {type: "search", id: "search", placeholder: "search names…"});
  search.value = query;
  search.addEventListener("change", () => {
    location.hash = `#/?prefix=${encodeURIComponent(prefix)}&q=${encodeURIComponent(search.value)}`;
  });
  const shown = `${num(listing.total)} names${listing.total > listing.names.length ? `, first ${num(listing.names.length)} shown` : ""}`;
  show(
    h("div", {class: "cards"}, cards.map(([k, v]) => h("div", {class: "card"}, muted(k), h("b", {}, v)))),
    h("div", {class: "layout"},
      h("div", {class: "prefixes"}, prefixes),
      h("div", {}, search, " ", muted(shown),
        rows.length ? table(["name", "state", "size", "created", "creator", "kind"], rows, [2]) : h("p", {class: "muted"}, "no names here"))));
}

// ---- one file ----------------------------------------------------------------------------------------

const LAKELET_META = new Set(["source", "host", "lakelet", "python", "stage", "run", "expires_at", "expired_at"]);

async function showFile(name) {
  const f = await api(`files/${pathOf(name)}`);
  const record = f.lineage || {};
  const source = record.source && typeof record.source === "object" ? record.source : {};
  const git = source.git && typeof source.git === "object" ? source.git : {};
  const code = webUrl(git.url) ? webLink(git.url) : source.file ? `${text(source.file)}:${text(source.line)}` : null;
  const made = record.kind === "stage"
    ? ["stage ", h("b", {}, text(record.stage)), " ", muted(`key ${text(record.key).slice(0, 12)}`), `, ${fmt(record.duration_s)} s`]
    : `lakelet add${record.source ? ` from ${text(record.source)}` : ""}`;
  const env = record.environment || {};
  const versions = Object.entries({python: env.python, lakelet: env.lakelet, ...(record.packages || {})})
    .filter(([, v]) => v).map(([k, v]) => `${k} ${text(v)}`).join(", ");
  const inputs = Array.isArray(f.inputs) ? f.inputs.map(text) : [];
  const downstream = Array.isArray(f.downstream) ? f.downstream.map(text) : [];
  // the user's own keys (add(meta=...)); lakelet's own are shown above
  const meta = Object.entries(f.meta && typeof f.meta === "object" ? f.meta : {})
    .filter(([k]) => !LAKELET_META.has(k)).map(([k, v]) => [text(k), typeof v === "string" ? v : JSON.stringify(v)]);
  show(
    h("h1", {}, text(f.name)),
    h("p", {}, route(`/lineage/${encodeURIComponent(text(f.name))}`, "lineage graph")),
    kv([["state", badge(f.state)], ["size", `${size(f.size)} (${num(f.size)} bytes)`], ["digest", h("code", {}, text(f.digest))],
        ["created", when(f.created_at)], ["creator", text(f.creator)], ["kind", text(f.kind)],
        ["local copy", f.path ? h("code", {}, text(f.path)) : "only on the remote"]]),
    meta.length ? [h("h2", {}, "Metadata"), kv(meta)] : null,
    h("h2", {}, "How it was made"),
    kv([["method", made], ["code", code || muted("not recorded")],
        ["commit", git.commit ? [h("code", {}, text(git.commit).slice(0, 12)), git.dirty ? " (uncommitted changes)" : ""] : ""],
        ["by", text(record.user || env.user || "")], ["host", text(env.host)], ["versions", versions]]),
    h("h2", {}, "Inputs"),
    inputs.length ? h("ul", {}, inputs.map((i) => h("li", {}, i.startsWith("/") || i.includes("://") ? i : fileLink(i)))) : h("p", {class: "muted"}, "none"),
    h("h2", {}, "Derived from it"),
    downstream.length ? h("ul", {}, downstream.map((d) => h("li", {}, fileLink(d)))) : h("p", {class: "muted"}, "nothing yet"),
    record.code_source ? [h("h2", {}, "Code"), h("pre", {}, text(record.code_source))] : null);
}

// ---- lineage graph -----------------------------------------------------------------------------------

// stage outputs are named stages/<module.function>/<key>/<file>: the function and the file say enough
function shortLabel(n) {
  if (n.kind === "stage") return text(n.stage).split(".").pop();
  const parts = text(n.label).split("/");
  if (n.kind === "file" && parts[0] === "stages" && parts.length > 3) return `${parts[1].split(".").pop()}/…/${parts.at(-1)}`;
  return text(n.label);
}

const COLORS = {stage: "#7a4fd6", add: "#9aa3b5", file: "#2f6fde", source: "#9aa3b5", dataset: "#0f9d76"};

function select(id, values, chosen) {
  return h("select", {id}, values.map((v) => h("option", {selected: String(v) === chosen}, String(v))));
}

function stageDetails(n) {
  if (n.kind !== "stage") return [h("h2", {}, text(n.name)), h("p", {}, text(n.source))];
  return [h("h2", {}, text(n.stage)), kv([["key", h("code", {}, text(n.key).slice(0, 16))],
    ["started", when(n.started_at)], ["duration", `${fmt(n.duration_s)} s`],
    ["code", webUrl(n.code_url) ? webLink(n.code_url) : muted("no forge URL")]])];
}

async function showLineage(name, params) {
  const depth = params.get("depth") || "3";
  const direction = params.get("direction") || "both";
  const query = name ? `lineage?name=${encodeURIComponent(name)}&depth=${encodeURIComponent(depth)}&direction=${encodeURIComponent(direction)}` : "lineage";
  const graph = await api(query);
  const controls = name
    ? [h("label", {}, "direction ", select("direction", ["both", "upstream", "downstream"], direction)),
       h("label", {}, "depth ", select("depth", [1, 2, 3, 5, 10], depth)),
       route("/lineage", "whole lake")]
    : [muted("every stage run in the lake; click a file to open it")];
  const legend = Object.entries({stage: "stage run", file: "file", dataset: "dataset", add: "add / local source"}).map(([k, label]) => {
    const dot = h("i", {class: "dot"});
    dot.style.background = COLORS[k];
    return h("span", {}, dot, label);
  });
  const container = h("div", {id: "graph"});
  const details = h("div", {class: "panel", id: "details"}, h("p", {class: "muted"}, "click a node"));
  show(
    h("h1", {}, "Lineage", name ? ` of ${name}` : ""),
    h("div", {class: "controls"}, controls, h("span", {class: "legend"}, legend)),
    h("div", {class: "graph-wrap"}, container, details));
  if (name) {
    for (const id of ["direction", "depth"]) {
      document.getElementById(id).addEventListener("change", () => {
        const d = document.getElementById("depth").value, dir = document.getElementById("direction").value;
        location.hash = `#/lineage/${encodeURIComponent(name)}?depth=${encodeURIComponent(d)}&direction=${encodeURIComponent(dir)}`;
      });
    }
  }
  if (!graph.nodes.length) {
    container.replaceChildren(h("p", {class: "muted", style: "padding:1rem"}, "no stage has run in this lake yet"));
    return;
  }
  const cy = cytoscape({
    container,
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
    if (n.kind === "file") { location.hash = `#/file/${encodeURIComponent(text(n.name))}`; return; }
    if (n.kind === "dataset") { location.hash = `#/datasets/${encodeURIComponent(text(n.name))}`; return; }
    details.replaceChildren(...stageDetails(n));
  });
}

// ---- datasets ----------------------------------------------------------------------------------------

async function showDatasets() {
  const rows = (await api("datasets")).map((d) => [datasetLink(d.name), num(d.version), num(d.rows), num(d.files), size(d.bytes), when(d.last_write), text(d.creator)]);
  show(h("h1", {}, "Datasets"),
    rows.length ? table(["dataset", "version", "rows", "files", "size", "last write", "by"], rows, [1, 2, 3, 4]) : h("p", {class: "muted"}, "no datasets yet: lake.write_dataset(...)"));
}

async function showDataset(name, params) {
  const version = params.get("version");
  const suffix = version ? `?version=${encodeURIComponent(version)}` : "";
  const [ds, preview] = await Promise.all([api(`datasets/${pathOf(name)}${suffix}`), api(`rows/${pathOf(name)}${suffix}`)]);
  const versions = h("select", {id: "version"}, ds.versions.map((v) => h("option", {value: v, selected: v === ds.version}, `version ${text(v)}`)));
  versions.addEventListener("change", (e) => { location.hash = `#/datasets/${encodeURIComponent(name)}?version=${encodeURIComponent(e.target.value)}`; });
  const stats = Object.entries(ds.stats).map(([column, s]) => [column, text(s.type), num(s.count), num(s.nulls), fmt(s.min), fmt(s.max),
    fmt((s.quantiles || {})["0.5"]), fmt((s.quantiles || {})["0.95"])]);
  const partitions = Object.entries(ds.partitions).map(([c, values]) => [c, num(values.length), values.slice(0, 12).map(text).join(", ") + (values.length > 12 ? " …" : "")]);
  const histograms = Object.entries(ds.stats).filter(([, s]) => s.histogram).map(([column, s]) => [column, s, h("canvas", {"data-column": column})]);
  show(
    h("h1", {}, text(ds.name)),
    h("div", {class: "controls"}, versions,
      muted(`${num(ds.rows)} rows in ${num(ds.files)} files (${size(ds.bytes)}), written ${when(ds.last_write)} by ${text(ds.creator)}`)),
    h("h2", {}, "Schema"), table(["column", "type", "nullable"], ds.schema.map((f) => [text(f.name), text(f.type), f.nullable ? "yes" : "no"])),
    partitions.length ? [h("h2", {}, "Partitions"), table(["column", "values", ""], partitions, [1])] : null,
    h("h2", {}, "Column statistics"), table(["column", "type", "count", "nulls", "min", "max", "p50", "p95"], stats, [2, 3, 4, 5, 6, 7]),
    histograms.length ? [h("h2", {}, "Histograms"), h("div", {class: "charts"}, histograms.map(([c, , canvas]) => h("div", {class: "chart"}, h("b", {}, c), canvas)))] : null,
    h("h2", {}, "First rows"),
    preview.note ? h("p", {class: "muted"}, text(preview.note)) : table(preview.columns, preview.rows.map((r) => r.map(fmt))));
  window.lakelet.charts = {};
  for (const [column, s, canvas] of histograms) {
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
  const rows = (await api("runs")).map((r) => [route(`/runs/${encodeURIComponent(text(r.run_id))}`, text(r.run_id)), when(r.started_at), duration(r),
    num(count(r.ran)), num(count(r.skipped)), count(r.failed) ? h("span", {class: "error"}, num(count(r.failed))) : "0"]);
  show(h("h1", {}, "Pipeline runs"),
    rows.length ? table(["run", "started", "duration", "ran", "skipped", "failed"], rows, [2, 3, 4, 5]) : h("p", {class: "muted"}, "no runs yet: lakelet.run(stage)"));
}

async function showRun(id) {
  const r = await api(`runs/${encodeURIComponent(id)}`);
  const stages = r.stages || {};
  const rows = Object.entries(stages).map(([name, s]) => [name, badge(s.status), s.duration_s == null ? "" : `${fmt(s.duration_s)} s`, text(s.why)]);
  const notRun = count(r.not_run) ? `, ${count(r.not_run)} not run` : "";
  show(h("h1", {}, `Run ${text(r.run_id)}`),
    h("p", {class: "muted"}, `started ${when(r.started_at)}, took ${duration(r)}: ${count(r.ran)} ran, ${count(r.skipped)} skipped, ${count(r.failed)} failed${notRun}`),
    table(["stage", "status", "duration", "why"], rows, [2]));
}

// ---- routing -----------------------------------------------------------------------------------------

async function navigate() {
  const [path, query] = (location.hash.slice(1) || "/").split("?");
  const params = new URLSearchParams(query || "");
  const [, section, ...rest] = path.split("/");
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.nav === (section || "names"));
  window.lakelet.graph = null;
  try {
    const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;  // a malformed %-escape throws
    if (section === "file" && arg) await showFile(arg);
    else if (section === "lineage") await showLineage(arg, params);
    else if (section === "datasets") await (arg ? showDataset(arg, params) : showDatasets());
    else if (section === "runs") await (arg ? showRun(arg) : showRuns());
    else await showNames(params);
  } catch (error) {
    show(h("p", {class: "error"}, text(error.message)));
  }
  document.body.dataset.ready = location.hash;  // the browser tests wait for this, not for a timer
}

window.addEventListener("hashchange", navigate);
api("lake").then((lake) => { document.getElementById("lake-root").textContent = text(lake.root) + (lake.remote ? `  ⇄  ${text(lake.remote)}` : ""); }).catch(() => {});
navigate();
