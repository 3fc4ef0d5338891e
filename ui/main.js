// IVADAS web UI: talks only to the API (/predict, /results, /review-queue, /stats, /classes, /models) as a signed-in user.
// config.json next to this page (written by the deploy, served by the local stack) names the API and the Cognito user
// pool; it holds no credential. The API enforces every group; this page only hides what a group may not do.
// Native ES modules, no build step: main.js (tabs, start) imports the others; state.js holds every state field.
import { api } from "./api.js";
import { SESSION_KEY, applyGroups, beginSession, refreshMargin, refreshSession, signInStep, signOut, storedSession } from "./auth.js";
import { $, el, setupMessages, showError } from "./dom.js";
import { inspect, setupDrop } from "./inspect.js";
import { loadModels } from "./models.js";
import { openDetailById } from "./detail.js";
import { applyFilters, fillDimensions, formFromHash, setupResults } from "./results.js";
import { loadAgreement, loadQueue, setupQueue } from "./review.js";
import { state } from "./state.js";

// ------------------------------------------------------------------------------------------ start

const TABS = ["inspect", "results", "review", "models"];

export function selectTab(name) {
  for (const tab of TABS) {
    const on = tab === name;
    $("#tab-" + tab).setAttribute("aria-selected", String(on));
    $("#tab-" + tab).tabIndex = on ? 0 : -1;
    $("#view-" + tab).hidden = !on;
  }
  if (name !== "results") history.replaceState(null, "", "#" + name); // the view survives a reload
  if (name === "review") { loadAgreement(); if ($("#q-class").value) loadQueue(); }
  if (name === "models") loadModels();
  return name === "results" ? applyFilters() : null;
}

// The view the page's address names (#results?<filter>&id=<result>, #review, #models), as the user left it.
async function restoreView() {
  const [view, query] = location.hash.slice(1).split("?");
  if (!TABS.includes(view) || $("#tab-" + view).hidden) return;
  const id = view === "results" ? formFromHash(query || "") : null;
  await selectTab(view);
  if (id) await openDetailById(id);
}

export async function start() {
  for (const tab of TABS) $("#tab-" + tab).addEventListener("click", () => selectTab(tab));
  document.querySelector("nav").addEventListener("keydown", (e) => {
    if (e.key === "ArrowRight" || e.key === "ArrowLeft") {
      const current = TABS.findIndex((t) => $("#tab-" + t).getAttribute("aria-selected") === "true");
      const next = TABS[(current + (e.key === "ArrowRight" ? 1 : TABS.length - 1)) % TABS.length];
      selectTab(next);
      $("#tab-" + next).focus();
    }
  });
  $("#inspect-form").addEventListener("submit", inspect);
  setupMessages();
  setupDrop();
  setupResults();
  setupQueue();
  $("#signin-form").addEventListener("submit", signInStep);
  $("#signout").addEventListener("click", () => signOut("Signed out."));
  $("#promote-cancel").addEventListener("click", () => $("#promote-dialog").close());
  try {
    const resp = await fetch("config.json");
    if (!resp.ok) throw new Error("config.json: " + resp.status);
    state.config = await resp.json();
    if (!state.config.auth || !state.config.auth.clientId) throw new Error("config.json names no user pool");
  } catch (err) {
    showError("Cannot load the service configuration: " + err.message);
    document.body.dataset.ready = "error";
    return;
  }
  const session = storedSession();
  if (!session) {
    signOut(sessionStorage.getItem(SESSION_KEY) ? "Your sign-in has expired: sign in again." : "");
    return;
  }
  beginSession(session);
  // a reload near or past the id token's expiry: a fresh one first, or sign in again
  if (session.expiresAt - Date.now() < refreshMargin(session) && !(await refreshSession()) && session.expiresAt <= Date.now()) {
    signOut("Your sign-in has expired: sign in again.");
    return;
  }
  await enterApp();
}

// Signed in: the views for this user's groups, and the classes the models serve.
export async function enterApp() {
  $("#signin").hidden = true;
  $("main").hidden = false;
  $("nav").hidden = false;
  $("#whoami").hidden = false;
  applyGroups();
  if ($("#tab-review").hidden && !$("#view-review").hidden) selectTab("inspect");
  try {
    const classes = await api("/classes");
    const options = classes.classes.map((c) => el("option", { value: c, text: c }));
    $("#class").replaceChildren(...options);
    state.classes = classes.classes;
    fillDimensions();
    await restoreView();
    document.body.dataset.ready = "true";
  } catch (err) {
    if (!state.session) return; // signed out on the way (401): the sign-in form says why
    showError("Cannot load the product classes: " + err.message);
    document.body.dataset.ready = "error";
  }
}

document.addEventListener("DOMContentLoaded", start);
