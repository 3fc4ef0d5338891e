import { api } from "./api.js";
import { closeDetail, openDetail, stepDetail } from "./detail.js";
import { $, clearError, el, pct, qs, showError, when } from "./dom.js";
import { state } from "./state.js";

// ------------------------------------------------------------------------------------------ results

export const PAGE_SIZE = 20;
export const verdictOf = (item) => (item.status !== "INSPECTED" ? "REJECTED" : (item.is_anomaly ? "DEFECT" : "GOOD"));

export function localInputToIso(value) {
  return value ? new Date(value).toISOString() : null; // datetime-local is the browser's local time
}

// What the filter form says, taken when it is applied: a refresh or the next page never picks up a half-edited form.
export function readForm() {
  return { class_name: $("#f-class").value, line: $("#f-line").value, anomalous: $("#f-anomalous").checked,
           review: $("#f-reviewed").value, window: $("#f-window").value, since: $("#f-since").value, until: $("#f-until").value,
           size: $("#f-size").value };
}

const pageSize = () => Number((state.applied || readForm()).size) || PAGE_SIZE;

// The results view's address: #results?<the applied filter>[&id=<the result open>]. It is kept in the page's URL
// (replaced, not pushed), so a reload or a link someone shares opens the same filter and result.
const FORM_FIELDS = { class_name: "#f-class", line: "#f-line", window: "#f-window", since: "#f-since", until: "#f-until",
                      review: "#f-reviewed", size: "#f-size" };

export function writeHash() {
  if ($("#view-results").hidden) return;
  const form = state.applied || readForm();
  const custom = form.window === "custom";
  history.replaceState(null, "", "#results?" + qs({ ...form, since: custom ? form.since : "", until: custom ? form.until : "",
    anomalous: form.anomalous ? "1" : "", size: Number(form.size) === PAGE_SIZE ? "" : form.size,
    id: state.detailOpen ? state.selectedId : "" }));
}

// Sets the filter form from such an address; returns the id of the result it names, if any.
export function formFromHash(query) {
  const params = new URLSearchParams(query);
  for (const [name, selector] of Object.entries(FORM_FIELDS)) {
    const value = params.get(name);
    if (value === null) continue;
    const box = $(selector);
    if (box.tagName === "SELECT" && ![...box.options].some((o) => o.value === value)) {
      box.append(el("option", { value, text: value })); // a line or class the filters offer once /stats answers
    }
    box.value = value;
  }
  $("#f-anomalous").checked = params.get("anomalous") === "1";
  $("#custom-range").hidden = $("#f-window").value !== "custom";
  return params.get("id");
}

// The time range the filter asks for, as ISO times the API takes (any start and end); presets move with the clock.
export function timeRange(form) {
  const choice = form.window;
  if (!choice) return {};
  if (choice === "custom") return { since: localInputToIso(form.since), until: localInputToIso(form.until) };
  if (choice === "today") { const d = new Date(); d.setHours(0, 0, 0, 0); return { since: d.toISOString() }; }
  return { since: new Date(Date.now() - Number(choice) * 60000).toISOString() };
}

export function filterParams(form = state.applied || readForm()) {
  const params = {};
  if (form.class_name) params.class_name = form.class_name;
  if (form.line) params.line = form.line;
  if (form.anomalous) params.anomalous = "true";
  if (form.review === "disagrees") params.disagrees = "true";
  else if (form.review) params.reviewed = form.review;
  const range = timeRange(form);
  if (range.since) params.since = range.since;
  if (range.until) params.until = range.until;
  return params;
}


export function verdictCell(item) {
  const verdict = verdictOf(item);
  return el("td", { class: "verdict-cell v-" + verdict.toLowerCase(), text: verdict, title: item.reason || "" });
}

export function reviewCell(item) {
  const r = item.review;
  if (!r) return el("td", { class: "c-review", text: "" });
  return el("td", { class: "c-review " + (r.agrees ? "agrees" : "disagrees"),
    text: r.verdict + (r.agrees ? "" : " (disagrees)"), title: `${r.reviewer}, ${when(r.reviewed_at)}` });
}

export function resultRow(item, index) {
  const tr = el("tr", { tabindex: "0", "data-id": item.inspection_id, "data-verdict": verdictOf(item).toLowerCase() });
  const thumb = item.thumbnail_url ? el("img", { src: item.thumbnail_url, alt: "thumbnail of " + item.key }) : "";
  tr.append(el("td", { class: "c-img" }, thumb), el("td", { text: when(item.created_at) }),
    el("td", { text: item.class_name }), el("td", { class: "c-line", text: item.line || "" }), verdictCell(item),
    el("td", { text: item.normalized_score != null ? item.normalized_score.toFixed(3) : "" }), reviewCell(item),
    el("td", { class: "c-model", text: item.model_version || item.model || "" }), el("td", { class: "c-key key", text: item.key }));
  tr.addEventListener("click", () => openDetail(index));
  tr.addEventListener("keydown", (e) => { if (e.key === "Enter") openDetail(index); });
  return tr;
}

export function markSelected() {
  for (const tr of document.querySelectorAll("#results-table tbody tr")) {
    const on = state.detailOpen && tr.dataset.id === state.selectedId;
    tr.classList.toggle("selected", on);
    tr.setAttribute("aria-selected", String(on));
  }
}

// One page of results. A refresh keeps the keyboard focus where it was (the same row, or nothing at all).
export async function loadResults(token, { refresh = false } = {}) {
  if (!refresh) clearError();
  const seq = (state.resultsSeq = state.resultsSeq + 1);
  try {
    const page = await api("/results?" + qs({ ...filterParams(), limit: String(pageSize()), next_token: token }));
    if (seq !== state.resultsSeq) return; // a newer request (another filter, page or refresh) owns the table
    const focused = document.activeElement && document.activeElement.closest("#results-table tbody tr");
    const focusedId = focused ? focused.dataset.id : null; // where the focus is now, not when the request left
    state.items = page.items;
    state.token = token;
    state.nextToken = page.next_token;
    $("#next-page").disabled = !page.next_token;
    $("#prev-page").disabled = state.tokens.length === 0;
    $("#page-info").textContent = `page ${state.tokens.length + 1}, ${page.items.length} result(s)`;
    const short = $("#short-page");
    short.hidden = !page.short;
    short.textContent = page.short ? `This page came back short (${page.items.length} of ${pageSize()}): the review filter ` +
      "skipped many results on the way. Older goes on from where it stopped." : "";
    $("#results-table tbody").replaceChildren(...page.items.map(resultRow));
    if (!page.items.length) {
      $("#results-table tbody").append(el("tr", {}, el("td", { colspan: "9", text: "no results for this filter" })));
    }
    markSelected();
    if (focusedId) {
      const again = document.querySelector(`#results-table tbody tr[data-id="${focusedId}"]`);
      if (again) again.focus({ preventScroll: true });
    }
  } catch (err) {
    showError(err.message);
  }
}

export function applyFilters() {
  state.applied = readForm();
  state.tokens = [];
  const loaded = loadResults(null);
  loadCounts();
  loadHistograms();
  $("#export-result").replaceChildren();
  writeHash();
  return loaded;
}

// ------------------------------------------------------------------------------------------ counts and chart

// The trend's step fits the time range: minutes up to an hour (counted from the results themselves: the stats
// table keeps hours), hours up to three days, days beyond. The counts above the chart come from the same figures
// as its bars, so the two always agree.
const MINUTE_SPAN_MS = 61 * 60000; // the last hour, and a minute to spare for the time the request takes
const HOUR_SPAN_MS = 3 * 86400000;
const MAX_MINUTE_PAGES = 10; // 200 results a page: beyond 2,000 results in an hour the chart falls back to hours

function rangeSpan(range) {
  if (!range.since) return Infinity;
  return (range.until ? new Date(range.until) : new Date()) - new Date(range.since);
}

export async function loadCounts() {
  const params = filterParams();
  const range = { since: params.since, until: params.until };
  const seq = (state.countsSeq = state.countsSeq + 1);
  try {
    const scope = { class_name: params.class_name, line: params.line, ...range };
    const view = await api("/stats?" + qs({ ...scope, interval: "hour" }));
    if (seq !== state.countsSeq) return;
    let figures = { total: view.total, series: view.series, interval: "hour" };
    if (rangeSpan(range) <= MINUTE_SPAN_MS) figures = (await minuteFigures(scope)) || figures;
    else if (seriesSpan(view.series) > HOUR_SPAN_MS) figures = { ...figures, series: byDay(view.series), interval: "day" };
    if (seq !== state.countsSeq) return;
    const t = figures.total;
    const figure = (label, value, cls) => el("div", { class: "count " + (cls || "") }, el("span", { class: "n", text: value }), el("span", { text: label }));
    $("#counts").replaceChildren(
      figure("inspected", String(t.inspected)), figure("defects", String(t.anomalies), "bad"),
      figure("rejected", String(t.rejected)), figure("defect rate", pct(t.anomaly_rate)),
      figure("reviewed", String(t.reviewed)), figure("model right (reviewed)", pct(t.review_agreement)));
    drawChart(figures.series, figures.interval);
    state.dimensions = view.dimensions;
    fillDimensions();
  } catch (err) {
    showError(err.message);
  }
}

const rate = (k, n) => (n ? k / n : null);

function seriesSpan(series) {
  if (series.length < 2) return 0;
  return new Date(series[series.length - 1].at + ":00Z") - new Date(series[0].at + ":00Z");
}

function byDay(series) {
  const days = new Map();
  for (const s of series) {
    const day = days.get(s.at.slice(0, 10)) || { at: s.at.slice(0, 10), inspected: 0, anomalies: 0, rejected: 0 };
    day.inspected += s.inspected; day.anomalies += s.anomalies; day.rejected += s.rejected;
    days.set(day.at, day);
  }
  return [...days.values()].map((d) => ({ ...d, anomaly_rate: rate(d.anomalies, d.inspected) }));
}

// The results of a scope, newest first, 200 a page, up to `pages` pages; `more`: some were left.
async function resultsOf(scope, pages) {
  const items = [];
  let token = null;
  for (let page = 0; page < pages; page += 1) {
    const got = await api("/results?" + qs({ ...scope, limit: "200", next_token: token }));
    items.push(...got.items);
    token = got.next_token;
    if (!token) break;
  }
  return { items, more: !!token };
}

// Totals and a per-minute series from the results of the range (class, line and time as /stats takes them).
async function minuteFigures(scope) {
  const { items, more } = await resultsOf(scope, MAX_MINUTE_PAGES);
  if (more) return null; // too many for one chart: hours instead
  const total = { inspected: 0, anomalies: 0, rejected: 0, reviewed: 0, agreed: 0 };
  const minutes = new Map();
  for (const item of items) {
    const at = new Date(item.created_at).toISOString().slice(0, 16);
    const m = minutes.get(at) || { at, inspected: 0, anomalies: 0, rejected: 0 };
    const inspected = item.status === "INSPECTED";
    m.inspected += inspected; m.anomalies += inspected && !!item.is_anomaly; m.rejected += !inspected;
    minutes.set(at, m);
    total.inspected += inspected; total.anomalies += inspected && !!item.is_anomaly; total.rejected += !inspected;
    if (item.review) { total.reviewed += 1; total.agreed += !!item.review.agrees; }
  }
  const series = [...minutes.values()].sort((a, b) => (a.at < b.at ? -1 : 1))
    .map((m) => ({ ...m, anomaly_rate: rate(m.anomalies, m.inspected) }));
  return { interval: "minute", series, total: { ...total, anomaly_rate: rate(total.anomalies, total.inspected),
    review_agreement: rate(total.agreed, total.reviewed) } };
}

// Inspected images as bars (rejects are in each bar's tooltip and the counts), the defect rate as a line with a
// dot per point (one point alone is still seen): plain SVG, no library. Times are UTC, as the API gives them.
export function drawChart(series, interval) {
  const fig = $("#chart");
  fig.hidden = !series.length;
  if (!series.length) return;
  const W = 900, H = 180, pad = 34, n = series.length;
  const maxVol = Math.max(...series.map((s) => s.inspected), 1);
  const maxRate = Math.max(...series.map((s) => s.anomaly_rate || 0), 0.01);
  const x = (i) => pad + (i + 0.5) * (W - 2 * pad) / n;
  const bw = Math.min(60, Math.max(2, (W - 2 * pad) / n * 0.7));
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  const peak = series.reduce((a, b) => ((b.anomaly_rate || 0) > (a.anomaly_rate || 0) ? b : a));
  svg.setAttribute("aria-label", `${n} ${interval}(s); up to ${maxVol} inspected; highest defect rate ${pct(peak.anomaly_rate)} at ${peak.at}`);
  const add = (tag, attrs) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); svg.append(e); return e; };
  const tip = (node, s) => {
    const t = document.createElementNS(ns, "title");
    t.textContent = `${s.at.replace("T", " ")} UTC: ${s.inspected} inspected, ${s.anomalies} defects (${pct(s.anomaly_rate)}), ${s.rejected} rejected`;
    node.append(t);
  };
  series.forEach((s, i) => {
    const h = (H - 2 * pad) * s.inspected / maxVol;
    tip(add("rect", { x: x(i) - bw / 2, y: H - pad - h, width: bw, height: h, class: "vol", "data-inspected": s.inspected }), s);
  });
  const y = (s) => H - pad - (H - 2 * pad) * (s.anomaly_rate || 0) / maxRate;
  if (n > 1) add("polyline", { points: series.map((s, i) => `${x(i)},${y(s)}`).join(" "), class: "rate" });
  series.forEach((s, i) => tip(add("circle", { cx: x(i), cy: y(s), r: 5, class: "rate" }), s));
  add("line", { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, class: "axis" });
  const label = (text, xx, yy, anchor) => { const e = add("text", { x: xx, y: yy, "text-anchor": anchor || "middle", class: "tick" }); e.textContent = text; };
  label(series[0].at.replace("T", " ") + " UTC", x(0) - bw / 2, H - 10, "start");
  if (n > 1) label(series[n - 1].at.replace("T", " "), x(n - 1) + bw / 2, H - 10, "end");
  label(`${maxVol} inspected`, 2, pad - 8, "start");
  label(`defect rate max ${pct(maxRate)}`, W - 2, pad - 8, "end");
  $("#chart-caption").textContent = `Images inspected (bars) and defect rate (red line) per ${interval}`;
  $("#chart-svg").replaceChildren(svg);
}

// ------------------------------------------------------------------------------------------ score distribution

// Per class, the normalised scores of the filter's results (class, line and time; up to 1,000, newest first) in
// 0.05-wide bins, 0.5 the threshold, each bar split by review: reviewed good, reviewed defect, not reviewed.
const HIST_PAGES = 5;
const BINS = 24; // 0 to 1.2; higher scores go in the last bin

async function loadHistograms() {
  const params = filterParams();
  const scope = { class_name: params.class_name, line: params.line, since: params.since, until: params.until };
  const seq = (state.histSeq = state.histSeq + 1);
  try {
    const { items, more } = await resultsOf(scope, HIST_PAGES);
    if (seq !== state.histSeq) return;
    const byClass = new Map();
    for (const item of items.filter((i) => i.status === "INSPECTED" && i.normalized_score != null)) {
      if (!byClass.has(item.class_name)) byClass.set(item.class_name, []);
      byClass.get(item.class_name).push(item);
    }
    const box = $("#histograms");
    box.hidden = !byClass.size;
    box.replaceChildren(...[...byClass.entries()].sort().map(([cls, list]) => histogram(cls, list, more)));
  } catch (err) {
    showError(err.message);
  }
}

function histogram(cls, items, partial) {
  const W = 420, H = 150, pad = 24, ns = "http://www.w3.org/2000/svg";
  const bins = Array.from({ length: BINS }, () => ({ good: 0, defect: 0, open: 0 }));
  for (const item of items) {
    const b = bins[Math.min(BINS - 1, Math.floor(item.normalized_score * 20))];
    b[item.review ? (item.review.verdict === "defect" ? "defect" : "good") : "open"] += 1;
  }
  const top = Math.max(1, ...bins.map((b) => b.good + b.defect + b.open));
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.dataset.class = cls;
  svg.dataset.n = String(items.length);
  const reviewed = items.filter((i) => i.review);
  svg.setAttribute("aria-label", `${cls}: ${items.length} scores, ${items.filter((i) => i.is_anomaly).length} above the threshold; ` +
    `${reviewed.length} reviewed (${reviewed.filter((i) => i.review.verdict === "defect").length} defect)`);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text) e.textContent = text;
    svg.append(e);
    return e;
  };
  const bw = (W - 2 * pad) / BINS;
  const xOf = (score) => pad + score * 20 * bw;
  bins.forEach((b, i) => {
    let y = H - pad;
    for (const part of ["open", "good", "defect"]) {
      if (!b[part]) continue;
      const h = (H - 2 * pad) * b[part] / top;
      y -= h;
      const rect = add("rect", { x: pad + i * bw + 1, y, width: bw - 2, height: h, class: "h-" + part, "data-n": b[part] });
      const t = document.createElementNS(ns, "title");
      t.textContent = `score ${(i / 20).toFixed(2)}${i === BINS - 1 ? " and up" : "-" + ((i + 1) / 20).toFixed(2)}: ${b[part]} ` +
        { open: "not reviewed", good: "reviewed good", defect: "reviewed defect" }[part];
      rect.append(t);
    }
  });
  add("line", { x1: xOf(0.5), y1: pad - 6, x2: xOf(0.5), y2: H - pad, class: "threshold" });
  add("text", { x: xOf(0.5) + 3, y: pad - 8, class: "tick" }, "threshold 0.5");
  add("line", { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, class: "axis" });
  for (const s of [0, 0.5, 1]) add("text", { x: xOf(s), y: H - 8, "text-anchor": "middle", class: "tick" }, String(s));
  add("text", { x: 2, y: 12, class: "tick" }, `${top} max`);
  return el("figure", { class: "histogram" }, el("figcaption", { text: `${cls}: ${items.length} scores` +
    (partial ? " (the newest 1,000)" : "") + "; grey not reviewed, green reviewed good, red reviewed defect" }), svg);
}

export function fillSelect(select, values, allLabel) {
  const current = select.value;
  const options = values.map((v) => el("option", { value: v, text: v }));
  if (allLabel !== null) options.unshift(el("option", { value: "", text: allLabel }));
  select.replaceChildren(...options);
  if ([...select.options].some((o) => o.value === current)) select.value = current;
}

// The classes the models serve and those with results; the lines that have results.
export function fillDimensions() {
  const classes = [...new Set([...(state.classes || []), ...((state.dimensions || {}).classes || [])])].sort();
  const lines = (state.dimensions || {}).lines || [];
  fillSelect($("#f-class"), classes, "all classes");
  fillSelect($("#f-line"), lines, "all lines");
  fillSelect($("#q-class"), classes, null);
  fillSelect($("#q-line"), lines, "all lines");
}

// ------------------------------------------------------------------------------------------ export

export async function exportCsv(token) {
  const out = $("#export-result");
  out.textContent = "Exporting...";
  try {
    const done = await api("/results/export?" + qs({ ...filterParams(), next_token: token }), { method: "POST" });
    const link = el("a", { id: "export-link", href: done.url, download: "ivadas-results.csv",
      text: `Download CSV (${done.rows} rows, ${(done.bytes / 1024).toFixed(0)} KB)` });
    out.replaceChildren(link);
    if (!done.complete) {
      const more = el("button", { type: "button", text: "Export the rest" });
      more.addEventListener("click", () => exportCsv(done.next_token));
      out.append(el("span", { text: " The export stopped at the time limit; " }), more);
    }
  } catch (err) {
    out.textContent = "";
    showError(err.message);
  }
}

export function setupResults() {
  state.tokens = [];
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); applyFilters(); });
  $("#f-window").addEventListener("change", () => { $("#custom-range").hidden = $("#f-window").value !== "custom"; });
  $("#first-page").addEventListener("click", () => { state.tokens = []; loadResults(null); });
  $("#next-page").addEventListener("click", () => { state.tokens.push(state.token); loadResults(state.nextToken); });
  $("#prev-page").addEventListener("click", () => { if (state.tokens.length) loadResults(state.tokens.pop()); });
  $("#export").addEventListener("click", () => exportCsv(null));
  $("#detail-close").addEventListener("click", closeDetail);
  $("#detail-prev").addEventListener("click", () => stepDetail(-1));
  $("#detail-next").addEventListener("click", () => stepDetail(1));
  $("#detail").addEventListener("close", () => {
    state.detailOpen = false;
    writeHash();
    markSelected();
    const row = document.querySelector(`#results-table tbody tr[data-id="${state.selectedId}"]`);
    if (row) row.focus();
  });
  state.timer = setInterval(() => {
    if (!$("#view-results").hidden && $("#f-live").checked && state.tokens.length === 0 && !state.detailOpen) {
      loadResults(null, { refresh: true });
    }
  }, 3000);
}
