import { api } from "./api.js";
import { mayReview } from "./auth.js";
import { $, el, notice, showError, when } from "./dom.js";
import { explanationsView, outlinedImage, overlayView, patchOf } from "./inspect.js";
import { loadResults, markSelected, verdictOf, writeHash } from "./results.js";
import { state } from "./state.js";

// ------------------------------------------------------------------------------------------ detail

export function metaList(item) {
  const dl = el("dl", { class: "meta" });
  const rows = [["Time", when(item.created_at)], ["Class", item.class_name], ["Line", item.line || "-"],
    ["Model", item.model], ["Version", item.model_version || "-"], ["Key", item.key]];
  if (item.status === "INSPECTED") {
    rows.push(["Score", `${item.normalized_score.toFixed(3)} (threshold 0.5); raw ${item.anomaly_score.toFixed(2)} vs ${item.threshold.toFixed(2)}`]);
  } else {
    rows.push(["Reason", item.reason]);
  }
  if (item.review) rows.push(["Review", reviewText(item.review)]);
  for (const [k, v] of rows) dl.append(el("dt", { text: k }), el("dd", { text: String(v) }));
  return dl;
}

// A review in one line: verdict, defect type, who, and the note.
export function reviewText(r) {
  return `${r.verdict}${r.defect_type ? " (" + r.defect_type + ")" : ""} by ${r.reviewer}` +
    `${r.reviewer_verified === false ? " (unverified)" : ""}${r.note ? ' - "' + r.note + '"' : ""}`;
}

export function regionsTable(regions) {
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

export function reviewForm(item, onDone) {
  if (!mayReview()) return el("p", { class: "muted", text: "Your account's group may not review." });
  const form = el("form", { class: "review-form" });
  const type = el("input", { id: "r-type", type: "text", placeholder: "defect type (optional)", maxlength: "64", list: "r-types" });
  const known = el("datalist", { id: "r-types" }, ...(state.defectTypes[item.class_name] || []).map((t) => el("option", { value: t })));
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
    el("label", { for: "r-type", class: "sr-only", text: "Defect type" }), type, known,
    el("label", { for: "r-note", class: "sr-only", text: "Note" }), note, good, defect);
  return form;
}

export async function submitReview(id, verdict, defectType, note) {
  const body = { verdict };
  if (defectType && defectType.trim()) body.defect_type = defectType.trim();
  if (note && note.trim()) body.note = note.trim();
  const done = await api(`/results/${encodeURIComponent(id)}/review`, { method: "POST", body: JSON.stringify(body) });
  notice(`Reviewed ${verdict} (${done.reviews} review(s) of this result).`);
  return done;
}

export function historyList(reviews) {
  if (!reviews || !reviews.length) return el("p", { class: "muted", text: "Not reviewed yet." });
  const ol = el("ol", { class: "history" });
  for (const r of reviews) {
    const withdrawn = r.withdrawn_at ? ` - withdrawn by ${r.withdrawn_by} ${when(r.withdrawn_at)}` : "";
    ol.append(el("li", { class: r.withdrawn_at ? "withdrawn" : "", text: `${when(r.reviewed_at)}: ${reviewText({ ...r, reviewer_verified: !!r.reviewer_verified })}${withdrawn}` }));
  }
  return ol;
}

export function detailImages(item) {
  const size = [item.image_width, item.image_height];
  const side = el("div", { class: "side-by-side" },
    el("figure", {}, outlinedImage(item.image_url, "inspected image", item.regions, size), el("figcaption", { text: "Image and regions" })));
  if (item.heatmap_url) {
    const map = el("img", { src: item.heatmap_url, alt: "anomaly heatmap", class: "plain map" });
    map.style.aspectRatio = `${size[0]} / ${size[1]}`; // the map's own resolution, drawn at the image's shape
    side.append(el("figure", {}, map, el("figcaption", { text: "Heatmap" })));
  }
  side.append(el("figure", {}, overlayView(item.image_url, item.heatmap_url, item.regions, size, "overlay"), el("figcaption", { text: "Overlay and regions" })));
  return side;
}

// One result of the page (its index), or any result by its id (a link to it: no Previous / Next then).
export async function openDetail(index, id = null) {
  const summary = state.items[index];
  if (!summary && !id) return;
  const inspectionId = summary ? summary.inspection_id : id;
  state.detailIndex = summary ? index : -1;
  state.selectedId = inspectionId;
  try {
    const item = await api("/results/" + encodeURIComponent(inspectionId));
    const dialog = $("#detail");
    $("#detail-title").textContent = `${item.class_name} ${item.line ? "on " + item.line : ""}: ${verdictOf(item)}`;
    $("#detail-title").className = "v-" + verdictOf(item).toLowerCase();
    const body = [metaList(item)];
    if (item.status === "INSPECTED") {
      const size = [item.image_width, item.image_height];
      const why = explanationsView(item, (box, alt) => patchOf(item.image_url, box, size, alt), "This result");
      body.push(detailImages(item), regionsTable(item.regions), ...(why ? [why] : []), el("h3", { text: "Review" }),
        reviewForm(item, () => { openDetail(index, id); loadResults(state.token, { refresh: true }); }), historyList(item.reviews));
    }
    $("#detail-body").replaceChildren(...body);
    $("#detail-prev").disabled = !summary || (index === 0 && state.tokens.length === 0);
    $("#detail-next").disabled = !summary || (index === state.items.length - 1 && !state.nextToken);
    if (!dialog.open) dialog.showModal();
    state.detailOpen = true;
    markSelected();
    writeHash();
  } catch (err) {
    showError(err.message);
  }
}

// Next and previous go on across pages of the same filter.
export async function stepDetail(delta) {
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

export function openDetailById(id) {
  const index = state.items.findIndex((item) => item.inspection_id === id);
  return openDetail(index, id);
}

export function closeDetail() {
  const dialog = $("#detail");
  if (dialog.open) dialog.close();
}
