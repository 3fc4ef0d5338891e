import { api } from "./api.js";
import { submitReview } from "./detail.js";
import { $, clearError, el, notice, pct, qs, showError, when } from "./dom.js";
import { explanationsView, outlinedImage, overlayView, patchOf } from "./inspect.js";
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
    state.defectTypes[cls] = page.defect_types || [];
    $("#queue-item").dataset.query = `${cls}/${line}`;
    showQueueItem();
  } catch (err) {
    showError(err.message);
  }
}

// The last review made here, with its defect type and note: what u withdraws.
function lastReviewLine() {
  const last = state.reviewed[state.reviewed.length - 1];
  if (!last) return el("p", { class: "last-review muted", id: "q-last" });
  const type = last.defectType ? ` (${last.defectType})` : "";
  const note = last.note ? ` - "${last.note}"` : "";
  return el("p", { class: "last-review", id: "q-last", "data-id": last.item.inspection_id },
    el("span", { class: "muted", text: "Last review: " }), `${last.item.key} marked ${last.verdict}${type}${note}; `,
    el("kbd", { text: "u" }), " withdraws it and puts it back in the queue");
}

// Marking a defect asks for its type (the class's types, numbered: 1-9 picks one; or free text) and a note, all
// by keyboard: d opens it, Enter saves, Esc cancels.
function defectForm(className) {
  const types = state.defectTypes[className] || [];
  const type = el("input", { id: "q-type", type: "text", maxlength: "64", list: "q-types", autocomplete: "off",
    placeholder: types.length ? "defect type: 1-9 picks, or type one" : "defect type, e.g. crack" });
  const note = el("input", { id: "q-note", type: "text", maxlength: "1000", placeholder: "note (optional)" });
  const picks = el("div", { class: "type-picks", "aria-label": "Defect types used in this class" },
    ...types.slice(0, 9).map((t, i) => {
      const b = el("button", { type: "button", "data-type": t, text: `${i + 1} ${t}` });
      b.addEventListener("click", () => { type.value = t; note.focus(); });
      return b;
    }));
  const save = el("button", { type: "button", class: "bad", id: "q-save", text: "Save defect (Enter)" });
  const cancel = el("button", { type: "button", id: "q-cancel", text: "Cancel (Esc)" });
  const form = el("div", { class: "defect-form", id: "q-defect-form", hidden: "" },
    el("label", { for: "q-type", text: "Defect type" }), type, el("datalist", { id: "q-types" }, ...types.map((t) => el("option", { value: t }))),
    el("label", { for: "q-note", text: "Note" }), note, save, cancel, picks);
  const submit = () => reviewQueued("defect", type.value, note.value);
  save.addEventListener("click", submit);
  cancel.addEventListener("click", () => closeDefectForm());
  form.addEventListener("keydown", (e) => {
    if (e.key === "Escape") { e.preventDefault(); closeDefectForm(); return; }
    if (e.key === "Enter" && e.target.tagName === "INPUT") { e.preventDefault(); submit(); return; }
    const pick = /^[1-9]$/.test(e.key) && e.target === type && !type.value && types[Number(e.key) - 1];
    if (pick) { e.preventDefault(); type.value = pick; note.focus(); }
  });
  return form;
}

function openDefectForm() {
  const form = $("#q-defect-form");
  if (!form || !state.queue[state.queueAt]) return;
  form.hidden = false;
  $("#q-type").focus();
}

function closeDefectForm() {
  const form = $("#q-defect-form");
  if (!form) return;
  form.hidden = true;
  $("#q-type").value = "";
  $("#q-note").value = "";
  document.activeElement.blur();
}

export function showQueueItem() {
  const box = $("#queue-item");
  const item = state.queue[state.queueAt];
  $("#queue-list").replaceChildren(...state.queue.slice(state.queueAt + 1, state.queueAt + 8).map((q) =>
    el("li", { "data-id": q.inspection_id, text: `${q.key}: score ${q.normalized_score.toFixed(3)}` })));
  const left = state.queue.length - state.queueAt;
  $("#queue-remaining").textContent = left > 0 ? `${left} left to review here${state.queueMore ? ", and more after these" : ""}` : "";
  const undo = el("button", { type: "button", id: "q-undo", text: "Undo (u)",
    title: "Withdraw the last review you made here: the result goes back in the queue" });
  undo.disabled = !state.reviewed.length;
  // The buttons come first and keep their place from one result to the next (an empty queue included).
  const actions = el("p", { class: "queue-actions" }, el("button", { type: "button", class: "good", id: "q-good", text: "Good (g)" }),
    el("button", { type: "button", class: "bad", id: "q-defect", text: "Defect (d)" }),
    el("button", { type: "button", id: "q-next", text: "Next (n)" }), undo);
  undo.addEventListener("click", () => undoQueued());
  if (!item) {
    for (const b of actions.querySelectorAll("button:not(#q-undo)")) b.disabled = true;
    box.replaceChildren(el("article", { class: "card queue-card" }, actions, lastReviewLine(), el("p", { class: "muted", text: "Nothing left to review here." })));
    delete box.dataset.id;
    return;
  }
  box.dataset.id = item.inspection_id;
  const size = [item.image_width, item.image_height];
  const why = explanationsView(item, (b, alt) => patchOf(item.thumbnail_url, b, size, alt), "This result");
  const card = el("article", { class: "card queue-card" }, actions, lastReviewLine(), defectForm(item.class_name),
    el("h2", { text: `${item.class_name}${item.line ? " on " + item.line : ""}: model says ${verdictOf(item)}` }),
    el("p", { class: "score", text: `Score ${item.normalized_score.toFixed(3)}, ${Math.abs(item.normalized_score - 0.5).toFixed(3)} from the threshold; ` +
      `${when(item.created_at)}; ${item.model_version || item.model}; ${(item.regions || []).length} region(s)` }),
    el("div", { class: "side-by-side zoomable" },
      el("figure", {}, outlinedImage(item.thumbnail_url, "inspected image", item.regions, size), el("figcaption", { text: "Image and regions" })),
      el("figure", {}, overlayView(item.thumbnail_url, item.heatmap_url, item.regions, size, "queue"), el("figcaption", { text: "Heatmap and regions" }))),
    ...(why ? [why] : []));
  box.replaceChildren(card);
  setupZoom(card.querySelector(".zoomable"));
  $("#q-good").addEventListener("click", () => reviewQueued("good"));
  $("#q-defect").addEventListener("click", () => openDefectForm());
  $("#q-next").addEventListener("click", () => skipQueued());
}

let busy = false;

// One review or undo at a time (a key held down sends one request); an API error is shown.
async function oneAtATime(work) {
  if (busy) return;
  busy = true;
  try {
    await work();
  } catch (err) {
    showError(err.message);
  } finally {
    busy = false;
  }
}

export function reviewQueued(verdict, defectType = null, note = null) {
  const item = state.queue[state.queueAt];
  if (!item) return Promise.resolve();
  return oneAtATime(async () => {
    await submitReview(item.inspection_id, verdict, defectType, note);
    const type = defectType && defectType.trim();
    state.reviewed.push({ item, verdict, defectType: type || null, note: (note && note.trim()) || null });
    if (type && !(state.defectTypes[item.class_name] || []).includes(type)) {
      state.defectTypes[item.class_name] = [...(state.defectTypes[item.class_name] || []), type].sort();
    }
    skipQueued();
    loadAgreement();
  });
}

// A true undo: the API withdraws the last review made here (kept in the result's history, marked), and the result
// is back in the queue, shown first, the count up again.
export function undoQueued() {
  const last = state.reviewed[state.reviewed.length - 1];
  if (!last) return Promise.resolve();
  return oneAtATime(async () => {
    await api(`/results/${encodeURIComponent(last.item.inspection_id)}/review`, { method: "DELETE" });
    state.reviewed.pop();
    state.queue.splice(state.queueAt, 0, last.item);
    notice(`Review withdrawn: ${last.item.key} is back in the queue.`);
    showQueueItem();
    loadAgreement();
  });
}

// Zoom (the slider, or the mouse wheel) and pan (drag) on the image and the overlay together.
function setupZoom(panels) {
  const clipped = [...panels.querySelectorAll("figure > img, figure .stack, figure .outlined")];
  for (const node of clipped) { // each clipped to its own place: the overlay's opacity slider stays in view
    const clip = el("div", { class: "zoom-clip" });
    node.replaceWith(clip);
    clip.append(node);
  }
  // the outlined image's picture and its outlines move together (one box, one transform origin)
  const imgs = clipped.flatMap((node) => (node.classList.contains("outlined") ? [...node.children] : [node]));
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
    const actions = { g: () => reviewQueued("good"), d: () => openDefectForm(), n: () => skipQueued(), u: () => undoQueued() };
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
