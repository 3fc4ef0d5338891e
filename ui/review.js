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
    state.queueMore = !!page.next_token;
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
  const left = state.queue.length - state.queueAt;
  $("#queue-remaining").textContent = left > 0 ? `${left} left to review here${state.queueMore ? ", and more after these" : ""}` : "";
  const undo = el("button", { type: "button", id: "q-undo", text: "Back (u)",
    title: "The last result you reviewed, again: a new verdict corrects your review" });
  undo.disabled = !state.lastReviewed;
  // The buttons come first and keep their place from one result to the next (an empty queue included).
  const actions = el("p", { class: "queue-actions" }, el("button", { type: "button", class: "good", id: "q-good", text: "Good (g)" }),
    el("button", { type: "button", class: "bad", id: "q-defect", text: "Defect (d)" }),
    el("button", { type: "button", id: "q-next", text: "Next (n)" }), undo);
  undo.addEventListener("click", () => undoQueued());
  if (!item) {
    for (const b of actions.querySelectorAll("button:not(#q-undo)")) b.disabled = true;
    box.replaceChildren(el("article", { class: "card queue-card" }, actions, el("p", { class: "muted", text: "Nothing left to review here." })));
    delete box.dataset.id;
    return;
  }
  box.dataset.id = item.inspection_id;
  const again = state.lastReviewed && state.lastReviewed.item.inspection_id === item.inspection_id;
  const size = [item.image_width, item.image_height];
  const card = el("article", { class: "card queue-card" }, actions,
    el("h2", { text: `${item.class_name}${item.line ? " on " + item.line : ""}: model says ${verdictOf(item)}` +
      (again ? ` (you said ${state.lastReviewed.verdict}: a new verdict corrects it)` : "") }),
    el("p", { class: "score", text: `Score ${item.normalized_score.toFixed(3)}, ${Math.abs(item.normalized_score - 0.5).toFixed(3)} from the threshold; ` +
      `${when(item.created_at)}; ${item.model_version || item.model}` }),
    el("div", { class: "side-by-side zoomable" },
      el("figure", {}, el("img", { src: item.thumbnail_url, alt: "inspected image", class: "plain" }), el("figcaption", { text: "Image" })),
      el("figure", {}, overlayView(item.thumbnail_url, item.heatmap_url, item.regions, size, "queue"), el("figcaption", { text: "Heatmap and regions" }))));
  box.replaceChildren(card);
  setupZoom(card.querySelector(".zoomable"));
  $("#q-good").addEventListener("click", () => reviewQueued("good"));
  $("#q-defect").addEventListener("click", () => reviewQueued("defect"));
  $("#q-next").addEventListener("click", () => skipQueued());
}

export async function reviewQueued(verdict) {
  const item = state.queue[state.queueAt];
  if (!item) return;
  try {
    await submitReview(item.inspection_id, verdict, null, null);
    state.lastReviewed = { item, verdict };
    skipQueued();
    loadAgreement();
  } catch (err) {
    showError(err.message);
  }
}

// The last reviewed result back on screen, first: a new verdict on it is a correction (the API keeps both in the
// result's history and counts the newest).
export function undoQueued() {
  const last = state.lastReviewed;
  if (!last || state.queue[state.queueAt] === last.item) return;
  state.queue.splice(state.queueAt, 0, last.item);
  showQueueItem();
}

// Zoom (the slider, or the mouse wheel) and pan (drag) on the image and the overlay together.
function setupZoom(panels) {
  const imgs = [...panels.querySelectorAll("figure > img, figure .stack")];
  for (const node of imgs) { // each clipped to its own place: the overlay's opacity slider stays in view
    const clip = el("div", { class: "zoom-clip" });
    node.replaceWith(clip);
    clip.append(node);
  }
  const view = { scale: 1, x: 0, y: 0 };
  const apply = () => { for (const i of imgs) i.style.transform = `translate(${view.x}px, ${view.y}px) scale(${view.scale})`; };
  const slider = el("input", { type: "range", id: "q-zoom", min: "1", max: "4", step: "0.25", value: "1" });
  const zoom = (scale) => {
    view.scale = Math.min(4, Math.max(1, scale));
    if (view.scale === 1) { view.x = 0; view.y = 0; }
    slider.value = String(view.scale);
    apply();
  };
  slider.addEventListener("input", () => zoom(Number(slider.value)));
  panels.addEventListener("wheel", (e) => { e.preventDefault(); zoom(view.scale * (e.deltaY < 0 ? 1.25 : 0.8)); }, { passive: false });
  let drag = null;
  panels.addEventListener("pointerdown", (e) => { if (view.scale > 1) { drag = [e.clientX - view.x, e.clientY - view.y]; e.preventDefault(); } });
  for (const end of ["pointerup", "pointerleave"]) panels.addEventListener(end, () => { drag = null; });
  panels.addEventListener("pointermove", (e) => { if (drag) { view.x = e.clientX - drag[0]; view.y = e.clientY - drag[1]; apply(); } });
  panels.before(el("p", { class: "zoom" }, el("label", { for: "q-zoom", text: "Zoom (wheel; drag to move)" }), slider));
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
    const actions = { g: () => reviewQueued("good"), d: () => reviewQueued("defect"), n: () => skipQueued(), u: () => undoQueued() };
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
