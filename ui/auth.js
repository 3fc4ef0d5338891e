import { $, clearError, notice } from "./dom.js";
import { enterApp } from "./main.js";
import { state } from "./state.js";

// ------------------------------------------------------------------------------------------ sign-in
// InitiateAuth (USER_PASSWORD_AUTH) straight from the browser to cognito-idp, as config.json names it: the regional
// endpoint on AWS, moto locally. The id token is kept for this tab only (sessionStorage) and sent as Authorization.

export const SESSION_KEY = "ivadas.session";
export const OPERATORS = "operators";
export const ML_ENGINEERS = "ml-engineers";
export const CHALLENGES = { NEW_PASSWORD_REQUIRED: ["New password (your first sign-in)", "NEW_PASSWORD", "password"],
                     SOFTWARE_TOKEN_MFA: ["Code from your authenticator app", "SOFTWARE_TOKEN_MFA_CODE", "text"],
                     SMS_MFA: ["Code sent by SMS", "SMS_MFA_CODE", "text"] };

export function tokenClaims(token) {
  const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  const bytes = Uint8Array.from(atob(part + "=".repeat((4 - (part.length % 4)) % 4)), (c) => c.charCodeAt(0));
  return JSON.parse(new TextDecoder().decode(bytes));
}

// A shift outlasts an id token (IdTokenMinutes): the refresh token Cognito hands out at sign-in gets a new one
// (InitiateAuth REFRESH_TOKEN_AUTH) this long before the current one expires, for as long as the refresh token is
// valid (the app client's RefreshTokenValidity); then the console asks to sign in again. It is kept with the id
// token, for this tab only.
export const REFRESH_MARGIN_MS = 5 * 60000;
const RETRY_MS = 30000;

export function sessionFrom(idToken, refreshToken = null) {
  const claims = tokenClaims(idToken);
  return { idToken, refreshToken, username: claims["cognito:username"] || claims.sub,
           groups: claims["cognito:groups"] || [], expiresAt: claims.exp * 1000, issuedAt: claims.iat * 1000 };
}

// How long before its end an id token is renewed: REFRESH_MARGIN_MS, or half its life when it lives shorter than
// twice that (IdTokenMinutes may be 5: renewing 5 minutes early would renew every new token at once, forever).
export function refreshMargin(session) {
  if (!session.issuedAt) return REFRESH_MARGIN_MS;
  return Math.min(REFRESH_MARGIN_MS, (session.expiresAt - session.issuedAt) / 2);
}

export function storedSession() {
  try {
    const session = JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    return session && (session.expiresAt > Date.now() || session.refreshToken) ? session : null;
  } catch (err) {
    return null;
  }
}

export const inGroup = (...groups) => !!state.session && groups.some((g) => state.session.groups.includes(g));
export const mayReview = () => inGroup(OPERATORS, ML_ENGINEERS);
export const mayDecide = () => inGroup(ML_ENGINEERS);

export async function cognito(target, payload) {
  let resp;
  try {
    resp = await fetch(state.config.auth.cognitoEndpoint, {
      method: "POST", body: JSON.stringify(payload),
      headers: { "Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "AWSCognitoIdentityProviderService." + target },
    });
  } catch (err) {
    throw new Error("The sign-in service cannot be reached (" + err.message + ").");
  }
  const body = await resp.json().catch(() => ({}));
  if (!resp.ok) {
    const kind = String(body.__type || "").split("#").pop();
    if (kind === "NotAuthorizedException" || kind === "UserNotFoundException") throw new Error("Wrong user name or password.");
    if (kind === "CodeMismatchException") throw new Error("That code is not right; try the current one.");
    if (kind === "InvalidPasswordException") throw new Error("That password does not meet the policy: " + (body.message || ""));
    throw new Error("Sign-in failed: " + (body.message || kind || resp.status));
  }
  return body;
}

export function askChallenge(answer) {
  if (!CHALLENGES[answer.ChallengeName]) throw new Error("This account needs " + answer.ChallengeName + ", which this page cannot do.");
  const [label, , type] = CHALLENGES[answer.ChallengeName];
  state.challenge = { name: answer.ChallengeName, session: answer.Session };
  $("#si-answer-label").textContent = label;
  $("#si-answer").type = type;
  $("#si-answer").value = "";
  $("#si-step").hidden = false;
  $("#signin-reason").textContent = label + ":";
  $("#si-answer").focus();
}

// One step of signing in: the password first, then whatever challenge Cognito asks (a new password, an MFA code).
export async function signInStep(event) {
  event.preventDefault();
  const user = $("#si-user").value.trim();
  const pending = state.challenge;
  const clientId = state.config.auth.clientId;
  $("#si-submit").disabled = true;
  try {
    const answer = pending
      ? await cognito("RespondToAuthChallenge", { ChallengeName: pending.name, ClientId: clientId, Session: pending.session,
          ChallengeResponses: { USERNAME: user, [CHALLENGES[pending.name][1]]: $("#si-answer").value } })
      : await cognito("InitiateAuth", { AuthFlow: "USER_PASSWORD_AUTH", ClientId: clientId,
          AuthParameters: { USERNAME: user, PASSWORD: $("#si-password").value } });
    if (answer.ChallengeName) {
      askChallenge(answer);
      return;
    }
    state.challenge = null;
    $("#si-step").hidden = true;
    $("#si-password").value = "";
    beginSession(sessionFrom(answer.AuthenticationResult.IdToken, answer.AuthenticationResult.RefreshToken || null));
    await enterApp();
  } catch (err) {
    $("#signin-reason").textContent = err.message;
  } finally {
    $("#si-submit").disabled = false;
  }
}

export function beginSession(session) {
  state.session = session;
  sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
  clearTimeout(state.expiryTimer);
  const left = session.expiresAt - Date.now();
  if (!session.refreshToken) {
    state.expiryTimer = setTimeout(() => signOut("Your sign-in has expired: sign in again."), Math.max(0, left));
    return;
  }
  state.expiryTimer = setTimeout(() => keepSession(session), Math.max(0, left - refreshMargin(session)));
}

// Refreshes the session's id token; retries every 30 s while the old one is still valid, then signs out.
async function keepSession(session) {
  if (state.session !== session) return;
  if (await refreshSession()) return;
  if (state.session !== session) return;
  if (session.expiresAt - Date.now() > 0) {
    state.expiryTimer = setTimeout(() => keepSession(session), Math.min(RETRY_MS, session.expiresAt - Date.now()));
  } else {
    signOut("Your sign-in has expired: sign in again.");
  }
}

// A new id token from the refresh token (the refresh token stays); false when Cognito refuses or cannot be reached.
export async function refreshSession() {
  const old = state.session;
  if (!old || !old.refreshToken) return false;
  try {
    const answer = await cognito("InitiateAuth", { AuthFlow: "REFRESH_TOKEN_AUTH", ClientId: state.config.auth.clientId,
      AuthParameters: { REFRESH_TOKEN: old.refreshToken } });
    if (state.session !== old) return !!state.session; // signed out, or refreshed by another call, meanwhile
    const result = answer.AuthenticationResult;
    beginSession(sessionFrom(result.IdToken, result.RefreshToken || old.refreshToken));
    return true;
  } catch (err) {
    return false;
  }
}

export function signOut(reason) {
  state.session = null;
  state.challenge = null;
  sessionStorage.removeItem(SESSION_KEY);
  clearTimeout(state.expiryTimer);
  if ($("#detail").open) $("#detail").close();
  $("main").hidden = true;
  $("nav").hidden = true;
  $("#whoami").hidden = true;
  $("#si-step").hidden = true;
  $("#signin").hidden = false;
  $("#signin-reason").textContent = reason || "";
  clearError();
  notice("");
  document.body.dataset.ready = "signin";
  $("#si-user").focus();
}

// What the signed-in user's groups allow, shown (the API checks it again on every call).
export function applyGroups() {
  const who = state.session;
  $("#whoami-name").textContent = `${who.username} (${who.groups.join(", ") || "no group"})`;
  for (const span of document.querySelectorAll(".reviewing-as")) span.textContent = who.username;
  $("#tab-review").hidden = !mayReview();
  document.body.dataset.groups = who.groups.join(" ");
}
