// IVADAS web UI: talks only to the API (/predict, /results, /classes, /models). The API base URL and key come from
// config.json next to this page (written by the deploy, served by the local stack).
"use strict";

const MAX_UPLOAD_BYTES = 4 * 1024 * 1024; // base64 grows 4/3: stays under API Gateway and Lambda's 6 MB
const MAX_SIDE = 2048;
const state = { config: null, nextToken: null, tokens: [], timer: null, file: null, models: {} };

const $ = (sel) => document.querySelector(sel);

function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("#error").hidden = true;
}

function notice(message) {
  const box = $("#notice");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(path, options = {}) {
  let resp;
  try {
    resp = await fetch(state.config.apiBaseUrl.replace(/\/$/, "") + path, {
      ...options,
      headers: { "Content-Type": "application/json", "X-Api-Key": state.config.apiKey, ...(options.headers || {}) },
    });
  } catch (err) {
    throw new Error("The API cannot be reached (" + err.message + "). Is the service running?");
  }
  let body = null;
  try {
    body = await resp.json();
  } catch (err) {
    body = null;
  }
  if (!resp.ok) {
    const detail = body && (body.error || body.message);
    const kinds = { 400: "Bad request", 403: "Not allowed (API key)", 404: "Not found", 413: "Image too large",
                    422: "The model cannot use this image", 429: "Too many requests", 503: "Model unavailable" };
    throw new Error((kinds[resp.status] || "Error " + resp.status) + (detail ? ": " + detail : ""));
  }
  return body;
}

// ------------------------------------------------------------------------------------------ inspect

function readAsDataURL(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error("cannot read the file"));
    reader.readAsDataURL(blob);
  });
}

async function loadImage(src) {
  const img = new Image();
  img.src = src;
  try {
    await img.decode();
  } catch (err) {
    throw new Error("This file is not an image the browser can read (PNG or JPEG expected).");
  }
  return img;
}

// Large images are scaled down in the browser so the request stays under the API's payload limit.
async function prepareUpload(file) {
  if (!/^image\/(png|jpeg)$/.test(file.type)) {
    throw new Error(`"${file.name}" is not a PNG or JPEG image.`);
  }
  const dataUrl = await readAsDataURL(file);
  const img = await loadImage(dataUrl);
  if (file.size <= MAX_UPLOAD_BYTES && Math.max(img.naturalWidth, img.naturalHeight) <= MAX_SIDE) {
    return { dataUrl, img, scaled: false };
  }
  let scale = Math.min(1, MAX_SIDE / Math.max(img.naturalWidth, img.naturalHeight));
  for (let attempt = 0; attempt < 6; attempt += 1) {
    const canvas = document.createElement("canvas");
    canvas.width = Math.max(1, Math.round(img.naturalWidth * scale));
    canvas.height = Math.max(1, Math.round(img.naturalHeight * scale));
    canvas.getContext("2d").drawImage(img, 0, 0, canvas.width, canvas.height);
    const scaledUrl = canvas.toDataURL("image/jpeg", 0.92);
    if (scaledUrl.length * 0.75 <= MAX_UPLOAD_BYTES) {
      return { dataUrl: scaledUrl, img: await loadImage(scaledUrl), scaled: true, from: [img.naturalWidth, img.naturalHeight],
               to: [canvas.width, canvas.height] };
    }
    scale *= 0.7;
  }
  throw new Error("The image is too large to send even after scaling down.");
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

function overlayView(imageSrc, heatmapSrc, regions, size, label) {
  const stack = el("div", { class: "stack" });
  const base = el("img", { src: imageSrc, alt: label + ": inspected image" });
  stack.append(base);
  let heat = null;
  if (heatmapSrc) {
    heat = el("img", { src: heatmapSrc, class: "heat", alt: label + ": anomaly heatmap" });
    heat.style.opacity = "0.5";
    stack.append(heat);
  }
  for (const r of regions || []) {
    const box = el("div", { class: "box", title: `region, peak ${r.max_score.toFixed(2)}` });
    box.style.left = (100 * r.x / size[0]) + "%";
    box.style.top = (100 * r.y / size[1]) + "%";
    box.style.width = (100 * r.width / size[0]) + "%";
    box.style.height = (100 * r.height / size[1]) + "%";
    stack.append(box);
  }
  const wrap = el("div", {}, stack);
  if (heat) {
    const id = "opacity-" + Math.random().toString(36).slice(2);
    const slider = el("input", { type: "range", min: "0", max: "100", value: "50", id });
    slider.addEventListener("input", () => { heat.style.opacity = String(slider.value / 100); });
    wrap.append(el("div", {}, el("label", { for: id, text: "Heatmap opacity" }), slider));
  }
  return wrap;
}

function resultCard(result, imageSrc, title) {
  const anomalous = result.is_anomaly;
  const card = el("article", { class: "card", "data-model": result.model });
  card.append(el("h2", { text: title }));
  card.append(el("p", { class: "verdict " + (anomalous ? "defect" : "good"), text: anomalous ? "DEFECT" : "GOOD" }));
  const bar = el("div", { class: "bar", role: "img",
    "aria-label": `normalised score ${result.normalized_score.toFixed(3)}; 0.5 is the threshold` });
  const mark = el("div", { class: "mark" });
  mark.style.left = `calc(${(100 * result.normalized_score).toFixed(1)}% - 1px)`;
  bar.append(el("div", { class: "thr" }), mark);
  card.append(bar);
  card.append(el("p", { class: "score", text: `Score ${result.normalized_score.toFixed(3)} (threshold 0.5); ` +
    `raw ${result.anomaly_score.toFixed(2)} vs ${result.threshold.toFixed(2)}` }));
  const heat = result.heatmap_png_base64 ? "data:image/png;base64," + result.heatmap_png_base64 : null;
  card.append(overlayView(imageSrc, heat, result.regions, [result.image_width, result.image_height], title));
  card.append(el("p", { class: "muted", text: `${(result.regions || []).length} region(s); model ${result.model_version}; ` +
    `endpoint ${result.endpoint_latency_ms.toFixed(0)} ms` }));
  return card;
}

async function inspect(event) {
  event.preventDefault();
  clearError();
  notice("");
  const file = state.file || $("#file").files[0];
  if (!file) { showError("Choose or drop an image first."); return; }
  const className = $("#class").value;
  if (!className) { showError("No product class is available from the API."); return; }
  const model = document.querySelector('input[name="model"]:checked').value;
  const button = $("#run");
  button.disabled = true;
  button.textContent = "Inspecting...";
  const outcome = $("#outcome");
  outcome.replaceChildren();
  try {
    const upload = await prepareUpload(file);
    if (upload.scaled) {
      notice(`The image was scaled down from ${upload.from.join("x")} to ${upload.to.join("x")} pixels before upload ` +
             "to stay under the API's size limit.");
    }
    const body = await api("/predict", { method: "POST", body: JSON.stringify({
      class_name: className, image_base64: upload.dataUrl.split(",")[1], model, return_heatmap: true }) });
    const pairs = model === "both"
      ? [["PatchCore (baseline)", body.patchcore], ["SoftPatch (candidate)", body.softpatch]]
      : [[model === "patchcore" ? "PatchCore (baseline)" : "SoftPatch (candidate)", body]];
    for (const [title, result] of pairs) outcome.append(resultCard(result, upload.dataUrl, title));
    outcome.append(el("p", { class: "muted latency", text: `Request latency ${body.latency_ms.toFixed(0)} ms` }));
  } catch (err) {
    showError(err.message);
  } finally {
    button.disabled = false;
    button.textContent = "Inspect";
  }
}

function setupDrop() {
  const drop = $("#drop");
  const input = $("#file");
  input.addEventListener("change", () => { state.file = input.files[0] || null; });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, (e) => { e.preventDefault(); drop.classList.remove("over"); });
  }
  drop.addEventListener("drop", (e) => {
    const file = e.dataTransfer.files[0];
    if (file) { state.file = file; $("#drop-help").textContent = "Selected: " + file.name; }
  });
  drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); input.click(); } });
}

// ------------------------------------------------------------------------------------------ results

function resultsQuery(token) {
  const params = new URLSearchParams({ limit: "20" });
  const cls = $("#f-class").value;
  if (cls) params.set("class_name", cls);
  if ($("#f-anomalous").checked) params.set("anomalous", "true");
  const minutes = Number($("#f-window").value);
  if (minutes) params.set("since", new Date(Date.now() - minutes * 60000).toISOString());
  if (token) params.set("next_token", token);
  return "/results?" + params.toString();
}

async function loadResults(token) {
  clearError();
  try {
    const page = await api(resultsQuery(token));
    state.nextToken = page.next_token;
    $("#next-page").disabled = !page.next_token;
    const rows = page.items.map((item) => {
      const verdict = item.status !== "INSPECTED" ? "REJECTED" : (item.is_anomaly ? "DEFECT" : "good");
      const tr = el("tr", { tabindex: "0", "data-id": item.inspection_id });
      const thumb = item.thumbnail_url ? el("img", { src: item.thumbnail_url, alt: "thumbnail of " + item.key }) : "";
      tr.append(el("td", {}, thumb), el("td", { text: new Date(item.created_at).toLocaleString() }),
        el("td", { text: item.class_name }), el("td", { text: verdict, title: item.reason || "" }),
        el("td", { text: item.normalized_score != null ? item.normalized_score.toFixed(3) : "" }),
        el("td", { text: item.model || "" }), el("td", { class: "key", text: item.key }));
      tr.addEventListener("click", () => showDetail(item.inspection_id));
      tr.addEventListener("keydown", (e) => { if (e.key === "Enter") showDetail(item.inspection_id); });
      return tr;
    });
    $("#results-table tbody").replaceChildren(...rows);
  } catch (err) {
    showError(err.message);
  }
}

async function showDetail(id) {
  try {
    const item = await api("/results/" + encodeURIComponent(id));
    const detail = $("#detail");
    const title = `${item.class_name}: ${item.key}`;
    const card = el("article", { class: "card" }, el("h2", { text: title }));
    if (item.status === "INSPECTED") {
      card.append(el("p", { class: "verdict " + (item.is_anomaly ? "defect" : "good"), text: item.is_anomaly ? "DEFECT" : "GOOD" }));
      card.append(el("p", { text: `Score ${item.normalized_score.toFixed(3)} (threshold 0.5), model ${item.model_version}` }));
      card.append(overlayView(item.image_url, item.heatmap_url, item.regions, [item.image_width, item.image_height], title));
    } else {
      card.append(el("p", { class: "verdict defect", text: "REJECTED" }), el("p", { text: item.reason }));
    }
    detail.replaceChildren(card);
  } catch (err) {
    showError(err.message);
  }
}

function setupResults() {
  $("#filters").addEventListener("submit", (e) => { e.preventDefault(); state.tokens = []; loadResults(null); });
  $("#first-page").addEventListener("click", () => { state.tokens = []; loadResults(null); });
  $("#next-page").addEventListener("click", () => { state.tokens.push(state.nextToken); loadResults(state.nextToken); });
  state.timer = setInterval(() => {
    if (!$("#view-results").hidden && $("#f-live").checked && state.tokens.length === 0) loadResults(null);
  }, 3000);
}

// ------------------------------------------------------------------------------------------ models

const fmt = (v) => (v === null || v === undefined ? "-" : Number(v).toFixed(4));
const pct = (v) => (v === null || v === undefined ? "-" : (100 * v).toFixed(1) + " %");

function decisionCell(version, enabled) {
  const cell = el("td", { class: "decision" });
  if (version.decided_at) {
    cell.append(el("span", { text: `${version.decided_at} by ${version.decided_by}` +
      (version.decision_note ? ` ("${version.decision_note}")` : "") }));
  }
  if (version.status !== "PendingManualApproval" || !enabled) return cell;
  const id = "why-" + version.version;
  const why = el("input", { id, type: "text", placeholder: "note, or the reason to reject" });
  const approve = el("button", { type: "button", class: "approve", text: "Approve" });
  const reject = el("button", { type: "button", class: "reject", text: "Reject" });
  approve.addEventListener("click", () => decide(version.version, "approve", { note: why.value || null }));
  reject.addEventListener("click", () => {
    if (!why.value.trim()) { showError("Say why " + version.version + " is rejected (the note field)."); return; }
    decide(version.version, "reject", { why: why.value });
  });
  cell.append(el("label", { for: id, class: "sr-only", text: "Decision note for " + version.version }), why, approve, reject);
  return cell;
}

function modelTable(model, info, enabled) {
  const table = el("table", { class: "models", "data-model": model });
  table.append(el("caption", { text: `${model}: endpoint ${info.endpoint}, serving ${info.deployed.version || "an unregistered artifact"}` +
    (info.deployed.promoted ? " (promoted)" : "") }));
  const head = el("tr");
  for (const h of ["Version", "Status", "Classes", "Image AUROC", "Pixel AUROC", "AUPRO", "Recall at threshold",
                   "Deployed", "Created", "Decision"]) head.append(el("th", { scope: "col", text: h }));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  for (const v of info.versions) {
    const deployed = Object.values(state.models).some((m) => m.deployed.version === v.version);
    const tr = el("tr", { "data-version": v.version });
    tr.append(el("td", { text: v.version }), el("td", { class: "status", text: v.status }),
      el("td", { text: v.classes.join(", ") }), el("td", { text: fmt(v.metrics.image_auroc) }),
      el("td", { text: fmt(v.metrics.pixel_auroc) }), el("td", { text: fmt(v.metrics.aupro) }),
      el("td", { text: fmt(v.metrics.recall_at_threshold) }), el("td", { text: deployed ? "deployed" : "" }),
      el("td", { text: new Date(v.created).toLocaleString() }), decisionCell(v, enabled));
    body.append(tr);
  }
  if (!info.versions.length) body.append(el("tr", {}, el("td", { colspan: "10", text: "no versions registered" })));
  table.append(body);
  return table;
}

async function loadModels() {
  clearError();
  try {
    const view = await api("/models");
    state.models = view.models;
    $("#approvals-note").textContent = view.approvals_enabled
      ? "Pending versions can be approved or rejected here; the decision is recorded with the version."
      : "Approving and rejecting from the UI is off (stack parameter UiApprovals); use ivadas approve / reject.";
    $("#models").replaceChildren(...Object.entries(view.models).map(([m, info]) => modelTable(m, info, view.approvals_enabled)));
    $("#agreement-table tbody").replaceChildren(...view.agreement.map((a) => el("tr", {},
      el("td", { text: a.class_name }), el("td", { text: String(a.inspected) }),
      el("td", { text: String(a.candidate_answers) }), el("td", { text: pct(a.candidate_agreement) }),
      el("td", { text: String(a.candidate_errors) }))));
  } catch (err) {
    showError(err.message);
  }
}

async function decide(version, action, body) {
  clearError();
  try {
    const decided = await api(`/models/${encodeURIComponent(version)}/${action}`, { method: "POST", body: JSON.stringify(body) });
    notice(`${decided.version} ${decided.status.toLowerCase()}`);
    await loadModels();
  } catch (err) {
    showError(err.message);
  }
}

// ------------------------------------------------------------------------------------------ start

const TABS = ["inspect", "results", "models"];

function selectTab(name) {
  for (const tab of TABS) {
    const on = tab === name;
    $("#tab-" + tab).setAttribute("aria-selected", String(on));
    $("#tab-" + tab).tabIndex = on ? 0 : -1;
    $("#view-" + tab).hidden = !on;
  }
  if (name === "results") loadResults(null);
  if (name === "models") loadModels();
}

async function start() {
  for (const tab of TABS) $("#tab-" + tab).addEventListener("click", () => selectTab(tab));
  document.querySelector("nav").addEventListener("keydown", (e) => {
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      const current = TABS.findIndex((t) => $("#tab-" + t).getAttribute("aria-selected") === "true");
      const next = TABS[(current + (e.key === "ArrowRight" ? 1 : TABS.length - 1)) % TABS.length];
      selectTab(next);
      $("#tab-" + next).focus();
    }
  });
  $("#inspect-form").addEventListener("submit", inspect);
  setupDrop();
  setupResults();
  try {
    const resp = await fetch("config.json");
    if (!resp.ok) throw new Error("config.json: " + resp.status);
    state.config = await resp.json();
    const classes = await api("/classes");
    const options = classes.classes.map((c) => el("option", { value: c, text: c }));
    $("#class").replaceChildren(...options);
    $("#f-class").replaceChildren(el("option", { value: "", text: "all classes" }),
      ...classes.classes.map((c) => el("option", { value: c, text: c })));
    document.body.dataset.ready = "true";
  } catch (err) {
    showError("Cannot load the service configuration: " + err.message);
    document.body.dataset.ready = "error";
  }
}

document.addEventListener("DOMContentLoaded", start);
