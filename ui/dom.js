// Page helpers every view uses: element lookup and creation, the error and notice boxes, number formats.

export const $ = (sel) => document.querySelector(sel);

// One message at a time: an error replaces a notice and a notice an error. Both float over the page (style.css),
// so showing or hiding one never moves a button; a click dismisses either, and a notice goes by itself.
let noticeTimer = null;

export function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = false;
  $("#notice").hidden = true;
}

export function clearError() {
  $("#error").hidden = true;
}

export function notice(message) {
  const box = $("#notice");
  box.textContent = message || "";
  box.hidden = !message;
  clearTimeout(noticeTimer);
  if (message) {
    clearError();
    noticeTimer = setTimeout(() => { box.hidden = true; }, 8000);
  }
}

export function setupMessages() {
  for (const id of ["#error", "#notice"]) $(id).addEventListener("click", () => { $(id).hidden = true; });
}

// A browser resolves "." and ".." path segments before it asks (WHATWG URL, percent-encoded dots included), which
// breaks a presigned link to a key such as "line/class/../a.png". Joining such a segment to the next one with an
// encoded slash keeps it: S3 decodes %2F back to "/", so the key and its signature are unchanged.
export function keepDotSegments(url) {
  const m = /^([a-z][a-z0-9+.-]*:\/\/[^/?#]*)([^?#]*)(.*)$/is.exec(url);
  if (!m) return url;
  const dots = /^(?:\.|%2e){1,2}$/i;
  const segments = m[2].split("/");
  let path = segments[0];
  for (let i = 1; i < segments.length; i += 1) {
    const joinAfterDots = dots.test(segments[i - 1]) && i - 1 > 0;
    const joinBeforeTrailingDots = i === segments.length - 1 && dots.test(segments[i]);
    path += (joinAfterDots || joinBeforeTrailingDots ? "%2F" : "/") + segments[i];
  }
  return m[1] + path + m[3];
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if ((k === "src" || k === "href") && typeof v === "string") node.setAttribute(k, keepDotSegments(v));
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

export const qs = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "")).toString();

// Every time the console shows, in one format: the browser's locale and time zone, to the second.
export const when = (iso) => (iso ? new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" }) : "-");

export const fmt = (v) => (v === null || v === undefined ? "-" : Number(v).toFixed(4));
export const pct = (v) => (v === null || v === undefined ? "-" : (100 * v).toFixed(1) + " %");
