import { api } from "./api.js";
import { submitReview } from "./detail.js";
import { $, clearError, el, pct, qs, showError, when } from "./dom.js";
import { overlayView } from "./inspect.js";
import { fillDimensions, verdictOf } from "./results.js";
import { state } from "./state.js";

// ------------------------------------------------------------------------------------------ review queue

export async function loadQueue() {
  clearError();
  const cls = $("#q-class").value;
  if (!cls) { showError("Choose a class: the review queue is kept per class."); return; }
  const seq = (state.queueSeq = state.queueSeq + 1);
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

export function showQueueItem() {
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
    el("p", { class: "queue-actions" }, el("button", { type: "button", class: "good", id: "q-good", text: "Good (g)" }), " ",
      el("button", { type: "button", class: "bad", id: "q-defect", text: "Defect (d)" }), " ",
      el("button", { type: "button", id: "q-next", text: "Next (n)" })),
    el("h2", { text: `${item.class_name}${item.line ? " on " + item.line : ""}: model says ${verdictOf(item)}` }),
    el("p", { class: "score", text: `Score ${item.normalized_score.toFixed(3)}, ${Math.abs(item.normalized_score - 0.5).toFixed(3)} from the threshold; ` +
      `${when(item.created_at)}; ${item.model_version || item.model}` }),
    overlayView(item.thumbnail_url, item.heatmap_url, item.regions, [item.image_width, item.image_height], "queue"));
  box.replaceChildren(card);
  $("#q-good").addEventListener("click", () => reviewQueued("good"));
  $("#q-defect").addEventListener("click", () => reviewQueued("defect"));
  $("#q-next").addEventListener("click", () => skipQueued());
}

export async function reviewQueued(verdict) {
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

export function skipQueued() {
  state.queueAt += 1;
  if (state.queueAt >= state.queue.length) loadQueue();
  else showQueueItem();
}

export function setupQueue() {
  $("#queue-filters").addEventListener("submit", (e) => { e.preventDefault(); loadQueue(); });
  $("#a-window").addEventListener("change", loadAgreement);
  document.addEventListener("keydown", (e) => {
    if ($("#view-review").hidden || $("#detail").open || e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.target.closest("input, textarea, select")) return;
    const actions = { g: () => reviewQueued("good"), d: () => reviewQueued("defect"), n: () => skipQueued() };
    if (actions[e.key]) { e.preventDefault(); actions[e.key](); }
  });
}

export async function loadAgreement() {
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
