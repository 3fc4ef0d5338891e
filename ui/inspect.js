import { api } from "./api.js";
import { $, clearError, el, notice, showError } from "./dom.js";
import { state } from "./state.js";

// ------------------------------------------------------------------------------------------ inspect

const MAX_UPLOAD_BYTES = 4 * 1024 * 1024; // base64 grows 4/3: stays under API Gateway and Lambda's 6 MB
const MAX_SIDE = 2048;

export function readAsDataURL(blob) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error("cannot read the file"));
    reader.readAsDataURL(blob);
  });
}

export async function loadImage(src) {
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
export async function prepareUpload(file) {
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

// One region's box over an image drawn at any size: placed in percent of the image's own pixels.
export function regionBox(r, size, n = null) {
  const peak = r.max_score != null ? `, peak ${Number(r.max_score).toFixed(2)}` : "";
  const box = el("div", { class: "box", title: `region${n === null ? "" : " " + n}${peak}` });
  box.style.left = (100 * r.x / size[0]) + "%";
  box.style.top = (100 * r.y / size[1]) + "%";
  box.style.width = (100 * r.width / size[0]) + "%";
  box.style.height = (100 * r.height / size[1]) + "%";
  if (n !== null) box.append(el("span", { class: "box-n", text: String(n) }));
  return box;
}

// The plain image with each region outlined and numbered as in the regions table (the overlay shows the
// heatmap; this one shows the part itself, where the boxes are easiest to judge).
export function outlinedImage(src, alt, regions, size) {
  const layer = el("div", { class: "outlines", "aria-hidden": "true" });
  (regions || []).forEach((r, i) => layer.append(regionBox(r, size, i + 1)));
  return el("div", { class: "outlined", "data-regions": String((regions || []).length) },
    el("img", { src, alt, class: "plain" }), layer);
}

// The inspected image cut to `box` without a canvas (a presigned S3 link is another origin: a canvas drawn from
// it could not be read): the image as a background, scaled and shifted so that `box` fills the square.
export function patchOf(src, box, size, alt) {
  const span = el("span", { class: "crop defect-crop", role: "img", "aria-label": alt });
  const [w, h] = size;
  span.style.backgroundImage = `url("${src}")`;
  span.style.backgroundSize = `${(100 * w / box.width).toFixed(3)}% ${(100 * h / box.height).toFixed(3)}%`;
  const at = (offset, whole, part) => (whole > part ? (100 * offset / (whole - part)).toFixed(3) : "0");
  span.style.backgroundPosition = `${at(box.x, w, box.width)}% ${at(box.y, h, box.height)}%`;
  return span;
}

export function overlayView(imageSrc, heatmapSrc, regions, size, label) {
  const stack = el("div", { class: "stack" });
  const base = el("img", { src: imageSrc, alt: label + ": inspected image" });
  stack.append(base);
  let heat = null;
  if (heatmapSrc) {
    heat = el("img", { src: heatmapSrc, class: "heat", alt: label + ": anomaly heatmap" });
    heat.style.opacity = "0.5";
    stack.append(heat);
  }
  for (const r of regions || []) stack.append(regionBox(r, size));
  const wrap = el("div", {}, stack);
  if (heat) {
    const id = "opacity-" + Math.random().toString(36).slice(2);
    const slider = el("input", { type: "range", min: "0", max: "100", value: "50", id });
    slider.addEventListener("input", () => { heat.style.opacity = String(slider.value / 100); });
    wrap.append(el("div", {}, el("label", { for: id, text: "Heatmap opacity" }), slider));
  }
  return wrap;
}

// The defect side of an explanation: the uploaded image cut to `box` (the API's pixels: the image it was sent,
// scaled here if the browser holds it at another size), as a PNG data URL.
export function cropOf(img, box, size) {
  const sx = img.naturalWidth / (size[0] || img.naturalWidth);
  const sy = img.naturalHeight / (size[1] || img.naturalHeight);
  const canvas = document.createElement("canvas");
  canvas.width = Math.max(1, Math.round(box.width * sx));
  canvas.height = Math.max(1, Math.round(box.height * sy));
  canvas.getContext("2d").drawImage(img, box.x * sx, box.y * sy, box.width * sx, box.height * sy,
    0, 0, canvas.width, canvas.height);
  return canvas.toDataURL("image/png");
}

// "Why the model says so": per flagged region (strongest first), the defect crop beside the nearest good
// training patch, named by its training image and distance; the API's note when there are none or no crops.
// `defectSide(box, alt)` draws the inspected image around a region's peak: cut in the browser in the Inspect
// view (cropOf), a background window of the stored image in the detail dialog and the review screen (patchOf).
// The nearest good patch comes as base64 from /predict and as a presigned link (`crop_url`) in a stored result.
export function explanationsView(result, defectSide, title) {
  const list = result.explanations || [];
  if (!list.length && !result.explanations_note) return null;
  const section = el("section", { class: "explanations", "aria-label": title + ": why the model says so" });
  section.append(el("h3", { text: "Why the model says so" }));
  if (result.explanations_note) section.append(el("p", { class: "muted explanations-note", text: result.explanations_note }));
  list.forEach((x) => {
    const n = Number(x.region) + 1; // as the regions table and the outlines number it
    const good = x.nearest_good || {};
    const id = good.image_id || "an unknown training image";
    const defect = defectSide(x.patch_box, `region ${n}: the inspected image around its peak`);
    const goodSrc = good.crop_url || (good.crop_png_base64 ? "data:image/png;base64," + good.crop_png_base64 : null);
    const nearest = goodSrc
      ? el("img", { class: "crop good-crop", src: goodSrc, alt: `region ${n}: the nearest good patch, from ${id}` })
      : el("span", { class: "crop no-crop", text: "no crop kept" });
    section.append(el("figure", { class: "explanation", "data-region": String(x.region) },
      el("div", { class: "crops" }, el("span", { class: "side" }, defect, el("span", { text: "this image" })),
        el("span", { class: "side" }, nearest, el("span", { text: "nearest good" }))),
      el("figcaption", {}, `Region ${n} (peak ${Number(x.peak_score).toFixed(2)}): nearest good patch from `,
        el("span", { class: "image-id", text: id }), `, distance ${Number(good.distance).toFixed(2)}`)));
  });
  return section;
}

export function resultCard(result, imageSrc, title, img) {
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
  const size = [result.image_width, result.image_height];
  const why = img ? explanationsView(result, (box, alt) => el("img", { class: "crop defect-crop", src: cropOf(img, box, size), alt }), title) : null;
  if (why) card.append(why);
  return card;
}

export async function inspect(event) {
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
    for (const [title, result] of pairs) outcome.append(resultCard(result, upload.dataUrl, title, upload.img));
    outcome.append(el("p", { class: "muted latency", text: `Request latency ${body.latency_ms.toFixed(0)} ms` }));
  } catch (err) {
    showError(err.message);
  } finally {
    button.disabled = false;
    button.textContent = "Inspect";
  }
}

export function setupDrop() {
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
