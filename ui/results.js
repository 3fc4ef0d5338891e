import { api } from "./api.js";
import { closeDetail, openDetail, stepDetail } from "./detail.js";
import { $, clearError, el, pct, qs, showError } from "./dom.js";
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
           review: $("#f-reviewed").value, window: $("#f-window").value, since: $("#f-since").value, until: $("#f-until").value };
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
    text: r.verdict + (r.agrees ? "" : " (disagrees)"), title: `${r.reviewer}, ${r.reviewed_at}` });
}

export function resultRow(item, index) {
  const tr = el("tr", { tabindex: "0", "data-id": item.inspection_id, "data-verdict": verdictOf(item).toLowerCase() });
  const thumb = item.thumbnail_url ? el("img", { src: item.thumbnail_url, alt: "thumbnail of " + item.key }) : "";
  tr.append(el("td", { class: "c-img" }, thumb), el("td", { text: new Date(item.created_at).toLocaleString() }),
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
    const page = await api("/results?" + qs({ ...filterParams(), limit: String(PAGE_SIZE), next_token: token }));
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
    short.textContent = page.short ? `This page came back short (${page.items.length} of ${PAGE_SIZE}): the review filter ` +
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
  loadResults(null);
  loadCounts();
  $("#export-result").replaceChildren();
}

// ------------------------------------------------------------------------------------------ counts and chart

export function rangeDays(range) {
  const since = range.since ? new Date(range.since) : null;
  const until = range.until ? new Date(range.until) : new Date();
  return since ? (until - since) / 86400000 : Infinity;
}

export async function loadCounts() {
  const params = filterParams();
  const range = { since: params.since, until: params.until };
  const interval = rangeDays(range) > 3 ? "day" : "hour";
  const seq = (state.countsSeq = state.countsSeq + 1);
  try {
    const view = await api("/stats?" + qs({ class_name: params.class_name, line: params.line, ...range, interval }));
    if (seq !== state.countsSeq) return;
    const t = view.total;
    const figure = (label, value, cls) => el("div", { class: "count " + (cls || "") }, el("span", { class: "n", text: value }), el("span", { text: label }));
    $("#counts").replaceChildren(
      figure("inspected", String(t.inspected)), figure("defects", String(t.anomalies), "bad"),
      figure("rejected", String(t.rejected)), figure("defect rate", pct(t.anomaly_rate)),
      figure("reviewed", String(t.reviewed)), figure("model right (reviewed)", pct(t.review_agreement)));
    drawChart(view.series, interval);
    state.dimensions = view.dimensions;
    fillDimensions();
  } catch (err) {
    showError(err.message);
  }
}

// Volume as bars, defect rate as a line, one point per hour or day: plain SVG, no library.
export function drawChart(series, interval) {
  const fig = $("#chart");
  fig.hidden = !series.length;
  if (!series.length) return;
  const W = 900, H = 180, pad = 34, n = series.length;
  const maxVol = Math.max(...series.map((s) => s.inspected + s.rejected), 1);
  const maxRate = Math.max(...series.map((s) => s.anomaly_rate || 0), 0.01);
  const x = (i) => pad + (i + 0.5) * (W - 2 * pad) / n;
  const bw = Math.max(2, (W - 2 * pad) / n * 0.7);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  const peak = series.reduce((a, b) => ((b.anomaly_rate || 0) > (a.anomaly_rate || 0) ? b : a));
  svg.setAttribute("aria-label", `${n} ${interval}(s); volume up to ${maxVol} images; highest defect rate ${pct(peak.anomaly_rate)} at ${peak.at}`);
  const add = (tag, attrs) => { const e = document.createElementNS(ns, tag); for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v); svg.append(e); return e; };
  series.forEach((s, i) => {
    const h = (H - 2 * pad) * (s.inspected + s.rejected) / maxVol;
    const bar = add("rect", { x: x(i) - bw / 2, y: H - pad - h, width: bw, height: h, class: "vol" });
    const t = document.createElementNS(ns, "title");
    t.textContent = `${s.at}: ${s.inspected} inspected, ${s.anomalies} defects (${pct(s.anomaly_rate)}), ${s.rejected} rejected`;
    bar.append(t);
  });
  const points = series.map((s, i) => `${x(i)},${H - pad - (H - 2 * pad) * (s.anomaly_rate || 0) / maxRate}`).join(" ");
  add("polyline", { points, class: "rate" });
  add("line", { x1: pad, y1: H - pad, x2: W - pad, y2: H - pad, class: "axis" });
  const label = (text, xx, yy, anchor) => { const e = add("text", { x: xx, y: yy, "text-anchor": anchor || "middle", class: "tick" }); e.textContent = text; };
  label(series[0].at.replace("T", " "), x(0), H - 10, "start");
  if (n > 1) label(series[n - 1].at.replace("T", " "), x(n - 1), H - 10, "end");
  label(`${maxVol} img`, 2, pad - 8, "start");
  label(`defect rate max ${pct(maxRate)}`, W - 2, pad - 8, "end");
  $("#chart-caption").textContent = `Volume (bars) and defect rate (line) per ${interval}`;
  $("#chart-svg").replaceChildren(svg);
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
