import { api } from "./api.js";
import { mayDecide } from "./auth.js";
import { $, clearError, el, fmt, notice, pct, showError, when } from "./dom.js";
import { state } from "./state.js";

// An endpoint's state (GET /models) in plain words.
const STATE_WORDS = { updating: "Updating", in_service: "In service", failed: "Update failed" };
// How often the view asks again while an endpoint updates (an update takes minutes on AWS, seconds locally).
const FOLLOW_MS = 2000;

// ------------------------------------------------------------------------------------------ models

// The registry's statuses in plain words (the raw one is the cell's tooltip).
const STATUS_WORDS = { PendingManualApproval: "Awaiting approval", Approved: "Approved", Rejected: "Rejected" };

// What each metric column means: the header's tooltip (docs/model.md says how they are measured).
const GLOSSARY = {
  "Image AUROC": "Area under the ROC curve of the image scores on the held-out test images: 1 ranks every defect above every good image, 0.5 is chance.",
  "Pixel AUROC": "Area under the ROC curve of the anomaly map's pixels against the defect masks: how well the heatmap covers the defects.",
  AUPRO: "Area under the per-region overlap curve up to 30 % false positive rate, normalised: small defects count as much as large ones.",
  "Recall at threshold": "Share of the defective test images the version calls DEFECT at its threshold (normalised score 0.5).",
};

// The registry's history entries (decision: a status decided, or Reopened) in plain words.
const HISTORY_WORDS = { Approved: "Approved", Rejected: "Rejected", Reopened: "Re-opened" };

// Every decision and re-open of a version, oldest first, folded away under its count.
export function historyList(version) {
  const entries = version.history || [];
  if (!entries.length) return null;
  const list = el("ol", { class: "history" });
  for (const h of entries) {
    list.append(el("li", { "data-what": h.decision, text: `${HISTORY_WORDS[h.decision] || h.decision} ${when(h.at)} by ${h.by}` +
      (h.note ? ` ("${h.note}")` : "") }));
  }
  return el("details", { class: "history" }, el("summary", { text: `History (${entries.length})` }), list);
}

export function decisionCell(version, enabled, deployed) {
  const cell = el("td", { class: "decision", "data-label": "Decision" });
  if (version.decided_at) {
    cell.append(el("span", { text: `${when(version.decided_at)} by ${version.decided_by}${version.decided_by_verified ? "" : " (unverified)"}` +
      (version.decision_note ? ` ("${version.decision_note}")` : "") }));
  }
  const history = historyList(version);
  if (history) cell.append(history);
  if (!enabled) return cell;
  const id = "why-" + version.version;
  if (version.status !== "PendingManualApproval") {
    // A decided version stands until it is re-opened, with a reason; a deployed one cannot be (the API refuses).
    if (deployed) return cell;
    const why = el("input", { id, type: "text", placeholder: "the reason to re-open" });
    const reopen = el("button", { type: "button", class: "reopen", text: "Re-open" });
    reopen.addEventListener("click", () => {
      if (!why.value.trim()) { showError("Say why " + version.version + " is re-opened (the reason field)."); return; }
      if (!confirm(`Re-open ${version.version}? Its decision is undone (the history keeps it). Reason: ${why.value.trim()}`)) return;
      decide(version.version, "reopen", { why: why.value });
    });
    cell.append(el("label", { for: id, class: "sr-only", text: "Reason to re-open " + version.version }), why, reopen);
    return cell;
  }
  const why = el("input", { id, type: "text", placeholder: "note, or the reason to reject" });
  const approve = el("button", { type: "button", class: "approve", text: "Approve" });
  const reject = el("button", { type: "button", class: "reject", text: "Reject" });
  // Every decision asks first: it is recorded under this user's name and stands until someone re-opens it.
  approve.addEventListener("click", () => {
    if (!confirm(`Approve ${version.version}? It may then be deployed to its endpoint.`)) return;
    decide(version.version, "approve", { note: why.value || null });
  });
  reject.addEventListener("click", () => {
    if (!why.value.trim()) { showError("Say why " + version.version + " is rejected (the note field)."); return; }
    if (!confirm(`Reject ${version.version}? Reason: ${why.value.trim()}`)) return;
    decide(version.version, "reject", { why: why.value });
  });
  cell.append(el("label", { for: id, class: "sr-only", text: "Decision note for " + version.version }), why, approve, reject);
  return cell;
}

// Whether any endpoint is changing now: one change at a time (the API refuses a second with 409).
const updating = () => Object.values(state.models).some((m) => m.state && m.state.state === "updating");

// Deploy (an approved version onto its own endpoint) and Promote (an approved candidate onto production): each
// asks first, naming the version and the endpoint; Promote shows the gate's verdict before it offers Confirm.
export function deployCell(model, version, enabled, deployed) {
  const cell = el("td", { class: "deploy", "data-label": "Deployed", text: deployed ? "deployed" : "" });
  if (!enabled || deployed || version.status !== "Approved") return cell;
  const info = state.models[model];
  const deploy = el("button", { type: "button", class: "deploy", text: "Deploy" });
  deploy.disabled = updating();
  deploy.addEventListener("click", () => {
    const serving = info.deployed.version || "an unregistered artifact";
    if (!confirm(`Deploy ${version.version} to endpoint ${info.endpoint}? It replaces ${serving}; the old version serves until the new one is in service.`)) return;
    change(`/models/${encodeURIComponent(version.version)}/deploy`, `${version.version} to ${info.endpoint}`);
  });
  cell.append(deploy);
  const production = state.models.patchcore;
  if (model === "softpatch" && production && production.deployed.version !== version.version) {
    const promote = el("button", { type: "button", class: "promote", text: "Promote" });
    promote.disabled = updating();
    promote.addEventListener("click", () => openPromotion(version.version));
    cell.append(promote);
  }
  return cell;
}

// The endpoint above each model's table: its state while it changes, and Roll back to the previous deployment.
export function endpointLine(model, info, enabled) {
  const st = info.state || {};
  const line = el("p", { class: "endpoint-state", "data-model": model, "data-state": st.state || "" });
  line.append(el("span", { class: "state", role: "status", text: `${info.endpoint}: ${STATE_WORDS[st.state] || st.state || "-"}` +
    (st.state === "updating" ? ` (now going to ${info.deployed.version || "an unregistered artifact"})` : "") +
    (st.state === "failed" && st.reason ? ` (${st.reason})` : "") }));
  const previous = info.deployed.previous;
  if (enabled && previous) {
    const to = previous.version || "the artifact served before";
    const back = el("button", { type: "button", class: "rollback", text: `Roll back to ${to}` });
    back.disabled = updating();
    back.addEventListener("click", () => {
      if (!confirm(`Roll endpoint ${info.endpoint} back from ${info.deployed.version || "its artifact"} to ${to}?`)) return;
      change(`/deployments/${encodeURIComponent(model)}/rollback`, `${info.endpoint} back to ${to}`);
    });
    line.append(back);
  }
  return line;
}

// The gate's verdict on promoting `version`, in the promotion dialog: refusals, or what it checked, then Confirm.
export async function openPromotion(version) {
  clearError();
  const dialog = $("#promote-dialog");
  const production = state.models.patchcore;
  $("#promote-title").textContent = `Promote ${version} to ${production.endpoint}?`;
  $("#promote-verdict").replaceChildren(el("p", { text: "Asking the promotion gate..." }));
  const confirmButton = $("#promote-confirm");
  confirmButton.hidden = true;
  confirmButton.onclick = null;
  if (!dialog.open) dialog.showModal();
  let verdict;
  try {
    verdict = await api(`/models/${encodeURIComponent(version)}/promotion`);
  } catch (err) {
    $("#promote-verdict").replaceChildren(el("p", { class: "refusal", text: err.message }));
    return;
  }
  const list = (items, cls) => el("ul", { class: cls }, ...items.map((t) => el("li", { text: t })));
  const body = [el("p", { text: `Production serves ${verdict.production}.` })];
  if (verdict.refusals.length) {
    body.push(el("p", { class: "gate-verdict", "data-verdict": "refused", text: `The gate refuses ${version}:` }), list(verdict.refusals, "refusals"));
  } else {
    body.push(el("p", { class: "gate-verdict", "data-verdict": "passed", text: `The gate passes ${version}: no check refuses it.` }));
  }
  if (verdict.checked.length) body.push(el("p", { text: "Checked:" }), list(verdict.checked, "checked"));
  $("#promote-verdict").replaceChildren(...body);
  if (verdict.promotable) {
    confirmButton.hidden = false;
    confirmButton.onclick = () => {
      dialog.close();
      change(`/models/${encodeURIComponent(version)}/promote`, `${version} promoted to ${production.endpoint}`);
    };
  }
}

// Start a deploy, rollback or promotion, then follow the endpoint until it is in service (or failed).
export async function change(path, what) {
  clearError();
  try {
    await api(path, { method: "POST", body: "{}" });
    notice(`Started: ${what}. The endpoint updates now.`);
    await loadModels();
  } catch (err) {
    showError(err.message);
  }
}

function follow(wasUpdating) {
  clearTimeout(state.modelsTimer);
  state.modelsTimer = null;
  if (updating()) {
    state.modelsTimer = setTimeout(() => { if (!$("#view-models").hidden) loadModels(true); }, FOLLOW_MS);
  } else if (wasUpdating) {
    const failed = Object.values(state.models).find((m) => m.state && m.state.state === "failed");
    if (failed) showError(`${failed.endpoint}: the update failed${failed.state.reason ? " (" + failed.state.reason + ")" : ""}.`);
    else notice("The endpoint is in service with the new version.");
  }
}

export function modelTable(model, info, enabled) {
  const table = el("table", { class: "models", "data-model": model });
  table.append(el("caption", { text: `${model}: endpoint ${info.endpoint}, serving ${info.deployed.version || "an unregistered artifact"}` +
    (info.deployed.promoted ? " (promoted)" : "") }));
  const head = el("tr");
  for (const h of ["Version", "Status", "Classes", "Image AUROC", "Pixel AUROC", "AUPRO", "Recall at threshold",
                   "Deployed", "Created", "Decision"]) {
    head.append(GLOSSARY[h] ? el("th", { scope: "col" }, el("abbr", { class: "term", title: GLOSSARY[h], text: h }))
      : el("th", { scope: "col", text: h }));
  }
  table.append(el("thead", {}, head));
  const body = el("tbody");
  for (const v of info.versions) {
    const deployed = Object.values(state.models).some((m) => m.deployed.version === v.version);
    const tr = el("tr", { "data-version": v.version });
    const td = (label, text, cls) => el("td", { "data-label": label, text, ...(cls ? { class: cls } : {}) });
    tr.append(td("Version", v.version), el("td", { "data-label": "Status", class: "status", title: v.status, text: STATUS_WORDS[v.status] || v.status }), td("Classes", v.classes.join(", ")),
      td("Image AUROC", fmt(v.metrics.image_auroc)), td("Pixel AUROC", fmt(v.metrics.pixel_auroc)),
      td("AUPRO", fmt(v.metrics.aupro)), td("Recall at threshold", fmt(v.metrics.recall_at_threshold)),
      deployCell(model, v, enabled, deployed), td("Created", when(v.created)),
      decisionCell(v, enabled, deployed));
    body.append(tr);
  }
  if (!info.versions.length) body.append(el("tr", {}, el("td", { colspan: "10", text: "no versions registered" })));
  table.append(body);
  return table;
}

export async function loadModels(following = false) {
  if (!following) clearError();
  const wasUpdating = following || updating();
  try {
    const view = await api("/models");
    state.models = view.models;
    const canDecide = view.can_decide && mayDecide();
    $("#approvals-note").textContent = canDecide
      ? `Pending versions can be approved or rejected here, decided ones that are not deployed re-opened with a reason, ` +
        `approved ones deployed (a candidate also promoted) and an endpoint rolled back; each is recorded as ${state.session.username}.`
      : "Approving, deploying, rolling back and promoting a version take the ml-engineers group (or ivadas approve / deploy / rollback / promote).";
    $("#models").replaceChildren(...Object.entries(view.models).flatMap(([m, info]) => [endpointLine(m, info, canDecide), modelTable(m, info, canDecide)]));
    $("#agreement-table tbody").replaceChildren(...view.agreement.map((a) => el("tr", {},
      el("td", { text: a.class_name }), el("td", { text: String(a.inspected) }),
      el("td", { text: String(a.candidate_answers) }), el("td", { text: pct(a.candidate_agreement) }),
      el("td", { text: String(a.candidate_errors) }))));
    follow(wasUpdating);
  } catch (err) {
    showError(err.message);
  }
}

export async function decide(version, action, body) {
  clearError();
  try {
    const decided = await api(`/models/${encodeURIComponent(version)}/${action}`, { method: "POST", body: JSON.stringify(body) });
    const word = action === "reopen" ? "re-opened, awaiting approval" : (STATUS_WORDS[decided.status] || decided.status).toLowerCase();
    notice(`${decided.version}: ${word}`);
    await loadModels();
  } catch (err) {
    showError(err.message);
  }
}
