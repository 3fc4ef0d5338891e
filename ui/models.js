import { api } from "./api.js";
import { mayDecide } from "./auth.js";
import { $, clearError, el, fmt, notice, pct, showError, when } from "./dom.js";
import { state } from "./state.js";

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
      td("Deployed", deployed ? "deployed" : ""), td("Created", when(v.created)),
      decisionCell(v, enabled, deployed));
    body.append(tr);
  }
  if (!info.versions.length) body.append(el("tr", {}, el("td", { colspan: "10", text: "no versions registered" })));
  table.append(body);
  return table;
}

export async function loadModels() {
  clearError();
  try {
    const view = await api("/models");
    state.models = view.models;
    const canDecide = view.can_decide && mayDecide();
    $("#approvals-note").textContent = canDecide
      ? `Pending versions can be approved or rejected here, and decided ones that are not deployed re-opened with a reason; ` +
        `each is recorded as ${state.session.username}.`
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
