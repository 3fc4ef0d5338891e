// Calls to the IVADAS API with the signed-in user's id token; a 401 signs out.
import { refreshSession, signOut } from "./auth.js";
import { state } from "./state.js";

export async function api(path, options = {}) {
  if (!state.session || (state.session.expiresAt <= Date.now() && !(await refreshSession()))) {
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
    const kinds = { 400: "Bad request", 403: "Not allowed for your group", 404: "Not found", 409: "Conflict", 413: "Image too large",
                    422: "The model cannot use this image", 429: "Too many requests", 503: "Model unavailable" };
    throw new Error((kinds[resp.status] || "Error " + resp.status) + (detail ? ": " + detail : ""));
  }
  return body;
}
