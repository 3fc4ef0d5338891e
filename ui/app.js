// IVADAS web UI: talks only to the API (/predict, /results, /review-queue, /stats, /classes, /models) as a signed-in user.
// config.json next to this page (written by the deploy, served by the local stack) names the API and the Cognito user
// pool; it holds no credential. The API enforces every group; this page only hides what a group may not do.
"use strict";

const MAX_UPLOAD_BYTES = 4 * 1024 * 1024; // base64 grows 4/3: stays under API Gateway and Lambda's 6 MB
const MAX_SIDE = 2048;
const state = { config: null, session: null, expiryTimer: null, challenge: null, nextToken: null, token: null, tokens: [], items: [], timer: null, file: null, models: {},
                classes: [], dimensions: null, detailOpen: false, detailIndex: -1, selectedId: null, queue: [], queueAt: 0 };

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
  if (!state.session || state.session.expiresAt <= Date.now()) {
    signOut("Your sign-in has expired: sign in again.");
    throw new Error("Signed out: sign in again.");
  }
  let resp;
  try {
    resp = await fetch(state.config.apiBaseUrl.replace(/\/$/, "") + path, {
      ...options,
      headers: { "Content-Type": "application/json", Authorization: state.session.idToken, ...(options.headers || {}) },
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
  if (resp.status === 401) {
    signOut("Your sign-in is no longer valid: sign in again.");
    throw new Error("Signed out: sign in again.");
  }
  if (!resp.ok) {
    const detail = body && (body.error || body.message);
    const kinds = { 400: "Bad request", 403: "Not allowed for your group", 404: "Not found", 413: "Image too large",
                    422: "The model cannot use this image", 429: "Too many requests", 503: "Model unavailable" };
    throw new Error((kinds[resp.status] || "Error " + resp.status) + (detail ? ": " + detail : ""));
  }
  return body;
}

// ------------------------------------------------------------------------------------------ sign-in
// InitiateAuth (USER_PASSWORD_AUTH) straight from the browser to cognito-idp, as config.json names it: the regional
// endpoint on AWS, moto locally. The id token is kept for this tab only (sessionStorage) and sent as Authorization.

const SESSION_KEY = "ivadas.session";
const OPERATORS = "operators";
const ML_ENGINEERS = "ml-engineers";
const CHALLENGES = { NEW_PASSWORD_REQUIRED: ["New password (your first sign-in)", "NEW_PASSWORD", "password"],
                     SOFTWARE_TOKEN_MFA: ["Code from your authenticator app", "SOFTWARE_TOKEN_MFA_CODE", "text"],
                     SMS_MFA: ["Code sent by SMS", "SMS_MFA_CODE", "text"] };

function tokenClaims(token) {
  const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  const bytes = Uint8Array.from(atob(part + "=".repeat((4 - (part.length % 4)) % 4)), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

function sessionFrom(idToken) {
  const claims = tokenClaims(idToken);
  return { idToken, username: claims["cognito:username"] || claims.sub, groups: claims["cognito:groups"] || [],
           expiresAt: claims.exp * 1000 };
}

function storedSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    return session && session.expiresAt > Date.now() ? session : null;
  } catch (err) {
    return null;
  }
}

const inGroup = (...groups) => !!state.session && groups.some((g) => state.session.groups.includes(g));
const mayReview = () => inGroup(OPERATORS, ML_ENGINEERS);
const mayDecide = () => inGroup(ML_ENGINEERS);

async function cognito(target, payload) {
  let resp;
  try {
    resp = await fetch(state.config.auth.cognitoEndpoint, {
      method: "POST", body: JSON.stringify(payload),
      headers: { "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "AWSCognitoIdentityProviderService." + target },
    });
  } catch (err) {
    throw new Error("The sign-in service cannot be reached (" + err.message + ").");
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const kind = String(body.__type || "").split("#").pop();
    if (kind === "NotAuthorizedException" || kind === "UserNotFoundException") throw new Error("Wrong user name or password.");
    if (kind === "CodeMismatchException") throw new Error("That code is not right; try the current one.");
    if (kind === "InvalidPasswordException") throw new Error("That password does not meet the policy: " + (body.message || ""));
    throw new Error("Sign-in failed: " + (body.message || kind || resp.status));
  }
  return body;
}

function askChallenge(answer) {
  if (!CHALLENGES[answer.ChallengeName]) throw new Error("This account needs " + answer.ChallengeName + ", which this page cannot do.");
  const [label, , type] = CHALLENGES[answer.ChallengeName];
  state.challenge = { name: answer.ChallengeName, session: answer.Session };
  $("#si-answer-label").textContent = label;
  $("#si-answer").type = type;
  $("#si-answer").value = "";
  $("#si-step").hidden = false;
  $("#signin-reason").textContent = label + ":";
  $("#si-answer").focus();
}

// One step of signing in: the password first, then whatever challenge Cognito asks (a new password, an MFA code).
async function signInStep(event) {
  event.preventDefault();
  const user = $("#si-user").value.trim();
  const pending = state.challenge;
  const clientId = state.config.auth.clientId;
  $("#si-submit").disabled = true;
  try {
    const answer = pending
      ? await cognito("RespondToAuthChallenge", { ChallengeName: pending.name, ClientId: clientId, Session: pending.session,
          ChallengeResponses: { USERNAME: user, [CHALLENGES[pending.name][1]]: $("#si-answer").value } })
      : await cognito("InitiateAuth", { AuthFlow: "USER_PASSWORD_AUTH", ClientId: clientId,
          AuthParameters: { USERNAME: user, PASSWORD: $("#si-password").value } });
    if (answer.ChallengeName) {
      askChallenge(answer);
      return;
    }
    state.challenge = null;
    $("#si-step").hidden = true;
    $("#si-password").value = "";
    beginSession(sessionFrom(answer.AuthenticationResult.IdToken));
    await enterApp();
  } catch (err) {
    $("#signin-reason").textContent = err.message;
  } finally {
    $("#si-submit").disabled = false;
  }
}

function beginSession(session) {
  state.session = session;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  clearTimeout(state.expiryTimer);
  state.expiryTimer = setTimeout(() => signOut("Your sign-in has expired: sign in again."),
    Math.max(0, session.expiresAt - Date.now()));
}

function signOut(reason) {
  state.session = null;
  state.challenge = null;
  sessionStorage.removeItem(SESSION_KEY);
  clearTimeout(state.expiryTimer);
  if ($("#detail").open) $("#detail").close();
  $("main").hidden = true;
  $("nav").hidden = true;
  $("#whoami").hidden = true;
  $("#si-step").hidden = true;
  $("#signin").hidden = false;
  $("#signin-reason").textContent = reason || "";
  clearError();
  notice("");
  document.body.dataset.ready = "signin";
  $("#si-user").focus();
}

// What the signed-in user's groups allow, shown (the API checks it again on every call).
function applyGroups() {
  const who = state.session;
  $("#whoami-name").textContent = `${who.username} (${who.groups.join(", ") || "no group"})`;
  for (const span of document.querySelectorAll(".reviewing-as")) span.textContent = who.username;
  $("#tab-review").hidden = !mayReview();
  document.body.dataset.groups = who.groups.join(" ");
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

const PAGE_SIZE = 20;
const verdictOf = (item) => (item.status !== "INSPECTED" ? "REJECTED" : (item.is_anomaly ? "DEFECT" : "GOOD"));

function localInputToIso(value) {
  return value ? new Date(value).toISOString() : null; // datetime-local is the browser's local time
}

// What the filter form says, taken when it is applied: a refresh or the next page never picks up a half-edited form.
function readForm() {
  return { class_name: $("#f-class").value, line: $("#f-line").value, anomalous: $("#f-anomalous").checked,
           review: $("#f-reviewed").value, window: $("#f-window").value, since: $("#f-since").value, until: $("#f-until").value };
}

// The time range the filter asks for, as ISO times the API takes (any start and end); presets move with the clock.
function timeRange(form) {
  const choice = form.window;
  if (!choice) return {};
  if (choice === "custom") return { since: localInputToIso(form.since), until: localInputToIso(form.until) };
  if (choice === "today") { const d = new Date(); d.setHours(0, 0, 0, 0); return { since: d.toISOString() }; }
  return { since: new Date(Date.now() - Number(choice) * 60000).toISOString() };
}

function filterParams(form = state.applied || readForm()) {
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

const qs = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "")).toString();

function verdictCell(item) {
  const verdict = verdictOf(item);
  return el("td", { class: "verdict-cell v-" + verdict.toLowerCase(), text: verdict, title: item.reason || "" });
}

function reviewCell(item) {
  const r = item.review;
  if (!r) return el("td", { class: "c-review", text: "" });
  return el("td", { class: "c-review " + (r.agrees ? "agrees" : "disagrees"),
    text: r.verdict + (r.agrees ? "" : " (disagrees)"), title: `${r.reviewer}, ${r.reviewed_at}` });
}

function resultRow(item, index) {
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

function markSelected() {
  for (const tr of document.querySelectorAll("#results-table tbody tr")) {
    const on = state.detailOpen && tr.dataset.id === state.selectedId;
    tr.classList.toggle("selected", on);
    tr.setAttribute("aria-selected", String(on));
  }
}

// One page of results. A refresh keeps the keyboard focus where it was (the same row, or nothing at all).
async function loadResults(token, { refresh = false } = {}) {
  if (!refresh) clearError();
  const seq = (state.resultsSeq = (state.resultsSeq || 0) + 1);
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

function applyFilters() {
  state.applied = readForm();
  state.tokens = [];
  loadResults(null);
  loadCounts();
  $("#export-result").replaceChildren();
}

// ------------------------------------------------------------------------------------------ counts and chart

function rangeDays(range) {
  const since = range.since ? new Date(range.since) : null;
  const until = range.until ? new Date(range.until) : new Date();
  return since ? (until - since) / 86400000 : Infinity;
}

async function loadCounts() {
  const params = filterParams();
  const range = { since: params.since, until: params.until };
  const interval = rangeDays(range) > 3 ? "day" : "hour";
  const seq = (state.countsSeq = (state.countsSeq || 0) + 1);
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
function drawChart(series, interval) {
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

function fillSelect(select, values, allLabel) {
  const current = select.value;
  const options = values.map((v) => el("option", { value: v, text: v }));
  if (allLabel !== null) options.unshift(el("option", { value: "", text: allLabel }));
  select.replaceChildren(...options);
  if ([...select.options].some((o) => o.value === current)) select.value = current;
}

// The classes the models serve and those with results; the lines that have results.
function fillDimensions() {
  const classes = [...new Set([...(state.classes || []), ...((state.dimensions || {}).classes || [])])].sort();
  const lines = (state.dimensions || {}).lines || [];
  fillSelect($("#f-class"), classes, "all classes");
  fillSelect($("#f-line"), lines, "all lines");
  fillSelect($("#q-class"), classes, null);
  fillSelect($("#q-line"), lines, "all lines");
}

// ------------------------------------------------------------------------------------------ export

async function exportCsv(token) {
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

// ------------------------------------------------------------------------------------------ detail

function metaList(item) {
  const dl = el("dl", { class: "meta" });
  const rows = [["Time", new Date(item.created_at).toLocaleString()], ["Class", item.class_name], ["Line", item.line || "-"],
    ["Model", item.model], ["Version", item.model_version || "-"], ["Key", item.key]];
  if (item.status === "INSPECTED") {
    rows.push(["Score", `${item.normalized_score.toFixed(3)} (threshold 0.5); raw ${item.anomaly_score.toFixed(2)} vs ${item.threshold.toFixed(2)}`]);
  } else {
    rows.push(["Reason", item.reason]);
  }
  for (const [k, v] of rows) dl.append(el("dt", { text: k }), el("dd", { text: String(v) }));
  return dl;
}

function regionsTable(regions) {
  if (!regions || !regions.length) return el("p", { class: "muted", text: "No regions above the threshold." });
  const table = el("table", { class: "regions" }, el("caption", { text: `${regions.length} region(s)` }));
  const head = el("tr");
  for (const h of ["#", "x", "y", "width", "height", "peak"]) head.append(el("th", { scope: "col", text: h }));
  table.append(el("thead", {}, head));
  const body = el("tbody");
  regions.forEach((r, i) => body.append(el("tr", {}, el("td", { text: String(i + 1) }), el("td", { text: String(r.x) }),
    el("td", { text: String(r.y) }), el("td", { text: String(r.width) }), el("td", { text: String(r.height) }),
    el("td", { text: r.max_score != null ? r.max_score.toFixed(2) : "" }))));
  table.append(body);
  return table;
}

function reviewForm(item, onDone) {
  if (!mayReview()) return el("p", { class: "muted", text: "Your account's group may not review." });
  const form = el("form", { class: "review-form" });
  const type = el("input", { id: "r-type", type: "text", placeholder: "defect type (optional)", maxlength: "64" });
  const note = el("input", { id: "r-note", type: "text", placeholder: "note (optional)", maxlength: "1000" });
  const good = el("button", { type: "button", class: "good", id: "r-good", text: "Good" });
  const defect = el("button", { type: "button", class: "bad", id: "r-defect", text: "Defect" });
  const send = async (verdict) => {
    try {
      await submitReview(item.inspection_id, verdict, type.value, note.value);
      onDone();
    } catch (err) { showError(err.message); }
  };
  good.addEventListener("click", () => send("good"));
  defect.addEventListener("click", () => send("defect"));
  form.append(el("span", { class: "muted", text: "Review as " + state.session.username }),
    el("label", { for: "r-type", class: "sr-only", text: "Defect type" }), type,
    el("label", { for: "r-note", class: "sr-only", text: "Note" }), note, good, defect);
  return form;
}

async function submitReview(id, verdict, defectType, note) {
  const body = { verdict };
  if (defectType && defectType.trim()) body.defect_type = defectType.trim();
  if (note && note.trim()) body.note = note.trim();
  const done = await api(`/results/${encodeURIComponent(id)}/review`, { method: "POST", body: JSON.stringify(body) });
  notice(`Reviewed ${verdict} (${done.reviews} review(s) of this result).`);
  return done;
}

function historyList(reviews) {
  if (!reviews || !reviews.length) return el("p", { class: "muted", text: "Not reviewed yet." });
  const ol = el("ol", { class: "history" });
  for (const r of reviews) {
    ol.append(el("li", { text: `${r.reviewed_at}: ${r.verdict}${r.defect_type ? " (" + r.defect_type + ")" : ""} by ${r.reviewer}` +
      `${r.reviewer_verified ? "" : " (unverified)"}${r.note ? ' - "' + r.note + '"' : ""}` }));
  }
  return ol;
}

function detailImages(item) {
  const size = [item.image_width, item.image_height];
  const side = el("div", { class: "side-by-side" },
    el("figure", {}, el("img", { src: item.image_url, alt: "inspected image", class: "plain" }), el("figcaption", { text: "Image" })));
  if (item.heatmap_url) {
    side.append(el("figure", {}, el("img", { src: item.heatmap_url, alt: "anomaly heatmap", class: "plain map" }), el("figcaption", { text: "Heatmap" })));
  }
  side.append(el("figure", {}, overlayView(item.image_url, item.heatmap_url, item.regions, size, "overlay"), el("figcaption", { text: "Overlay and regions" })));
  return side;
}

async function openDetail(index) {
  if (index < 0 || index >= state.items.length) return;
  const summary = state.items[index];
  state.detailIndex = index;
  state.selectedId = summary.inspection_id;
  try {
    const item = await api("/results/" + encodeURIComponent(summary.inspection_id));
    const dialog = $("#detail");
    $("#detail-title").textContent = `${item.class_name} ${item.line ? "on " + item.line : ""}: ${verdictOf(item)}`;
    $("#detail-title").className = "v-" + verdictOf(item).toLowerCase();
    const body = [metaList(item)];
    if (item.status === "INSPECTED") {
      body.push(detailImages(item), regionsTable(item.regions), el("h3", { text: "Review" }),
        reviewForm(item, () => { openDetail(index); loadResults(state.token, { refresh: true }); }), historyList(item.reviews));
    }
    $("#detail-body").replaceChildren(...body);
    $("#detail-prev").disabled = index === 0 && state.tokens.length === 0;
    $("#detail-next").disabled = index === state.items.length - 1 && !state.nextToken;
    if (!dialog.open) dialog.showModal();
    state.detailOpen = true;
    markSelected();
  } catch (err) {
    showError(err.message);
  }
}

// Next and previous go on across pages of the same filter.
async function stepDetail(delta) {
  const next = state.detailIndex + delta;
  if (next >= 0 && next < state.items.length) return openDetail(next);
  if (delta > 0 && state.nextToken) {
    state.tokens.push(state.token);
    await loadResults(state.nextToken);
    return openDetail(0);
  }
  if (delta < 0 && state.tokens.length) {
    await loadResults(state.tokens.pop());
    return openDetail(state.items.length - 1);
  }
  return null;
}

function closeDetail() {
  const dialog = $("#detail");
  if (dialog.open) dialog.close();
}

function setupResults() {
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

// ------------------------------------------------------------------------------------------ review queue

async function loadQueue() {
  clearError();
  const cls = $("#q-class").value;
  if (!cls) { showError("Choose a class: the review queue is kept per class."); return; }
  const seq = (state.queueSeq = (state.queueSeq || 0) + 1);
  const line = $("#q-line").value;
  try {
    const page = await api("/review-queue?" + qs({ class_name: cls, line, limit: "20" }));
    if (seq !== state.queueSeq) return; // a newer queue was asked for
    state.queue = page.items;
    state.queueAt = 0;
    $("#queue-item").dataset.query = `${cls}/${line}`;
    showQueueItem();
  } catch (err) {
    showError(err.message);
  }
}

function showQueueItem() {
  const box = $("#queue-item");
  const item = state.queue[state.queueAt];
  $("#queue-list").replaceChildren(...state.queue.slice(state.queueAt + 1, state.queueAt + 8).map((q) =>
    el("li", { "data-id": q.inspection_id, text: `${q.key}: score ${q.normalized_score.toFixed(3)}` })));
  if (!item) {
    box.replaceChildren(el("p", { class: "muted", text: "Nothing left to review here." }));
    delete box.dataset.id;
    return;
  }
  box.dataset.id = item.inspection_id;
  const card = el("article", { class: "card queue-card" },
    el("h2", { text: `${item.class_name}${item.line ? " on " + item.line : ""}: model says ${verdictOf(item)}` }),
    el("p", { class: "score", text: `Score ${item.normalized_score.toFixed(3)}, ${Math.abs(item.normalized_score - 0.5).toFixed(3)} from the threshold; ` +
      `${new Date(item.created_at).toLocaleString()}; ${item.model_version || item.model}` }),
    overlayView(item.thumbnail_url, item.heatmap_url, item.regions, [item.image_width, item.image_height], "queue"),
    el("p", {}, el("button", { type: "button", class: "good", id: "q-good", text: "Good (g)" }), " ",
      el("button", { type: "button", class: "bad", id: "q-defect", text: "Defect (d)" }), " ",
      el("button", { type: "button", id: "q-next", text: "Next (n)" })));
  box.replaceChildren(card);
  $("#q-good").addEventListener("click", () => reviewQueued("good"));
  $("#q-defect").addEventListener("click", () => reviewQueued("defect"));
  $("#q-next").addEventListener("click", () => skipQueued());
}

async function reviewQueued(verdict) {
  const item = state.queue[state.queueAt];
  if (!item) return;
  try {
    await submitReview(item.inspection_id, verdict, null, null);
    skipQueued();
    loadAgreement();
  } catch (err) {
    showError(err.message);
  }
}

function skipQueued() {
  state.queueAt += 1;
  if (state.queueAt >= state.queue.length) loadQueue();
  else showQueueItem();
}

function setupQueue() {
  $("#queue-filters").addEventListener("submit", (e) => { e.preventDefault(); loadQueue(); });
  $("#a-window").addEventListener("change", loadAgreement);
  document.addEventListener("keydown", (e) => {
    if ($("#view-review").hidden || $("#detail").open || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.target.closest("input, textarea, select")) return;
    const actions = { g: () => reviewQueued("good"), d: () => reviewQueued("defect"), n: () => skipQueued() };
    if (actions[e.key]) { e.preventDefault(); actions[e.key](); }
  });
}

async function loadAgreement() {
  try {
    const since = new Date(Date.now() - Number($("#a-window").value) * 60000).toISOString();
    const view = await api("/stats?" + qs({ since }));
    state.dimensions = view.dimensions;
    fillDimensions();
    $("#review-agreement tbody").replaceChildren(...view.by_class.map((c) => el("tr", { "data-class": c.class_name },
      el("td", { text: c.class_name }), el("td", { text: String(c.reviewed) }), el("td", { text: pct(c.review_agreement) }),
      el("td", { text: String(c.false_alarms) }), el("td", { text: String(c.escapes) }))));
  } catch (err) {
    showError(err.message);
  }
}

// ------------------------------------------------------------------------------------------ models

const fmt = (v) => (v === null || v === undefined ? "-" : Number(v).toFixed(4));
const pct = (v) => (v === null || v === undefined ? "-" : (100 * v).toFixed(1) + " %");

function decisionCell(version, enabled) {
  const cell = el("td", { class: "decision" });
  if (version.decided_at) {
    cell.append(el("span", { text: `${version.decided_at} by ${version.decided_by}${version.decided_by_verified ? "" : " (unverified)"}` +
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
    const canDecide = view.can_decide && mayDecide();
    $("#approvals-note").textContent = canDecide
      ? `Pending versions can be approved or rejected here; the decision is recorded as ${state.session.username}.`
      : "Approving and rejecting a version takes the ml-engineers group (or ivadas approve / reject).";
    $("#models").replaceChildren(...Object.entries(view.models).map(([m, info]) => modelTable(m, info, canDecide)));
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

const TABS = ["inspect", "results", "review", "models"];

function selectTab(name) {
  for (const tab of TABS) {
    const on = tab === name;
    $("#tab-" + tab).setAttribute("aria-selected", String(on));
    $("#tab-" + tab).tabIndex = on ? 0 : -1;
    $("#view-" + tab).hidden = !on;
  }
  if (name === "results") applyFilters();
  if (name === "review") { loadAgreement(); if ($("#q-class").value) loadQueue(); }
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
  setupQueue();
  $("#signin-form").addEventListener("submit", signInStep);
  $("#signout").addEventListener("click", () => signOut("Signed out."));
  try {
    const resp = await fetch("config.json");
    if (!resp.ok) throw new Error("config.json: " + resp.status);
    state.config = await resp.json();
    if (!state.config.auth || !state.config.auth.clientId) throw new Error("config.json names no user pool");
  } catch (err) {
    showError("Cannot load the service configuration: " + err.message);
    document.body.dataset.ready = "error";
    return;
  }
  const session = storedSession();
  if (!session) {
    signOut(sessionStorage.getItem(SESSION_KEY) ? "Your sign-in has expired: sign in again." : "");
    return;
  }
  beginSession(session);
  await enterApp();
}

// Signed in: the views for this user's groups, and the classes the models serve.
async function enterApp() {
  $("#signin").hidden = true;
  $("main").hidden = false;
  $("nav").hidden = false;
  $("#whoami").hidden = false;
  applyGroups();
  if ($("#tab-review").hidden && !$("#view-review").hidden) selectTab("inspect");
  try {
    const classes = await api("/classes");
    const options = classes.classes.map((c) => el("option", { value: c, text: c }));
    $("#class").replaceChildren(...options);
    state.classes = classes.classes;
    fillDimensions();
    document.body.dataset.ready = "true";
  } catch (err) {
    if (!state.session) return; // signed out on the way (401): the sign-in form says why
    showError("Cannot load the product classes: " + err.message);
    document.body.dataset.ready = "error";
  }
}

document.addEventListener("DOMContentLoaded", start);
