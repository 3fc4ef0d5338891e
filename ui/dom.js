// Page helpers every view uses: element lookup and creation, the error and notice boxes, number formats.

export const $ = (sel) => document.querySelector(sel);

export function showError(message) {
  const box = $("#error");
  box.textContent = message;
  box.hidden = false;
}

export function clearError() {
  $("#error").hidden = true;
}

export function notice(message) {
  const box = $("#notice");
  box.textContent = message || "";
  box.hidden = !message;
}


export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) node.append(child);
  return node;
}

export const qs = (params) => new URLSearchParams(Object.entries(params).filter(([, v]) => v !== null && v !== undefined && v !== "")).toString();

export const fmt = (v) => (v === null || v === undefined ? "-" : Number(v).toFixed(4));
export const pct = (v) => (v === null || v === undefined ? "-" : (100 * v).toFixed(1) + " %");
