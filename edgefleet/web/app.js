// The dashboard's shell: session (login / logout), hash routes, live updates over
// server-sent events, the confirmation dialog and screen-reader announcements.

import { ApiError, del, get, post, whenUnauthenticated } from "./api.js";
import { h } from "./dom.js";
import * as audit from "./views/audit.js";
import * as devices from "./views/devices.js";
import * as lab from "./views/lab.js";
import * as overview from "./views/overview.js";
import * as releases from "./views/releases.js";
import * as rollouts from "./views/rollouts.js";
import * as workloads from "./views/workloads.js";

const ROUTES = [
  [/^\/$/, overview.render],
  [/^\/devices$/, devices.renderList],
  [/^\/devices\/([^/]+)$/, devices.renderDevice],
  [/^\/rollouts$/, rollouts.renderList],
  [/^\/rollouts\/([^/]+)$/, rollouts.renderRollout],
  [/^\/workloads$/, workloads.renderList],
  [/^\/workloads\/([^/]+)$/, workloads.renderWorkload],
  [/^\/releases$/, releases.render],
  [/^\/audit$/, audit.render],
  [/^\/lab$/, lab.render],
];

const main = document.getElementById("main");
const state = { session: null, view: null, events: null, renderSeq: 0 };

function announce(text) {
  const el = document.getElementById("announcer");
  el.textContent = "";
  window.setTimeout(() => { el.textContent = text; }, 50);
}

function confirmAction(text, label = "Confirm") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = label;
  const note = document.getElementById("confirm-note");
  note.value = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      resolve({ ok: dialog.returnValue === "ok", note: note.value.trim() });
    }, { once: true });
    dialog.returnValue = "cancel";
    dialog.showModal();
  });
}

function parseHash() {
  const raw = window.location.hash.replace(/^#/, "") || "/";
  const [path, search] = raw.split("?");
  return { path: path || "/", query: new URLSearchParams(search || "") };
}

function markNav(path) {
  for (const a of document.querySelectorAll("#nav a")) {
    const target = a.getAttribute("href").slice(1);
    const current = target === "/" ? path === "/" : path.startsWith(target);
    if (current) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

async function route() {
  if (!state.session) return;
  const seq = ++state.renderSeq;
  const { path, query } = parseHash();
  markNav(path);
  const found = ROUTES.map(([re, render]) => [path.match(re), render]).find(([m]) => m);
  const ctx = {
    session: state.session,
    params: found ? found[0].slice(1).map(decodeURIComponent) : [],
    query,
    can: (permission) => state.session.permissions.includes(permission),
    confirm: confirmAction,
    announce,
    refresh: () => route(),
  };
  try {
    const view = found ? await found[1](ctx) : { title: "Not found", node: h("p", {}, `No page at ${path}.`) };
    if (seq !== state.renderSeq) return;
    state.view = view;
    main.replaceChildren(view.node);
    document.title = `${view.title} · edgefleet`;
    if (view.painted) view.painted();
  } catch (error) {
    if (seq !== state.renderSeq) return;
    if (error instanceof ApiError && error.status === 401) return;
    state.view = null;
    main.replaceChildren(h("h1", {}, "Something went wrong"),
      h("p", { class: "error", role: "alert" }, error.message || String(error)));
  }
}

function connectEvents() {
  const live = document.getElementById("live-state");
  const source = new EventSource("/ui/events");
  source.addEventListener("open", () => { live.textContent = "live"; live.classList.add("on"); });
  source.addEventListener("error", () => { live.textContent = "reconnecting"; live.classList.remove("on"); });
  for (const kind of ["fleet", "rollout"]) {
    source.addEventListener(kind, (event) => {
      const data = JSON.parse(event.data);
      const handler = state.view && state.view[kind === "fleet" ? "onFleet" : "onRollout"];
      if (handler) handler(data);
    });
  }
  state.events = source;
}

function showLogin(message) {
  state.session = null;
  if (state.events) { state.events.close(); state.events = null; }
  document.getElementById("nav").hidden = true;
  document.getElementById("who").hidden = true;
  const error = h("p", { class: "error", role: "alert", id: "login-error" }, message || "");
  const input = h("input", { id: "token", name: "token", type: "password", required: true,
    autocomplete: "current-password", "aria-describedby": "token-hint login-error" });
  const form = h("form", { class: "panel login", "aria-labelledby": "login-title" },
    h("h1", { id: "login-title" }, "Log in to edgefleet"),
    h("label", { for: "token" }, "API token"),
    input,
    h("p", { class: "hint", id: "token-hint" },
      "Your token is exchanged for a session that ends when you log out or after 8 hours; it is not stored in this browser."),
    h("div", { class: "actions" }, h("button", { type: "submit" }, "Log in")),
    error);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    try {
      await post("/ui/session", { token: input.value });
      input.value = "";
      await start();
    } catch (failure) {
      error.textContent = failure.message;
    }
  });
  main.replaceChildren(form);
  document.title = "Log in · edgefleet";
  input.focus();
}

async function start() {
  try {
    state.session = await get("/ui/session");
  } catch (failure) {
    showLogin(failure instanceof ApiError && failure.status === 401 ? "" : failure.message);
    return;
  }
  document.getElementById("nav").hidden = false;
  document.getElementById("who").hidden = false;
  document.getElementById("who-name").textContent = `${state.session.name} (${state.session.role})`;
  connectEvents();
  await route();
  main.focus();
}

whenUnauthenticated(() => showLogin("Your session ended; log in again."));
window.addEventListener("hashchange", async () => {
  await route();
  main.focus();
});
document.getElementById("logout").addEventListener("click", async () => {
  try { await del("/ui/session"); } finally { showLogin("You are logged out."); }
});
start();
